package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// sentCounter counts the requests the suite sends through Traefik, by Host and first path
// segment ("api.example.com/orders"), so that the plugin's metrics can be checked against them at
// the end of the suite. It is the transport of the suite's client.
type sentCounter struct {
	mu   sync.Mutex
	sent map[string]int
}

var sent = &sentCounter{sent: map[string]int{}}

func (c *sentCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	segment, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	c.mu.Lock()
	c.sent[req.Host+"/"+segment]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (c *sentCounter) count(route string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[route]
}

// scraper reads the plugin's metrics every interval while the suite runs, as Prometheus would:
// every scrape must parse, and no counter may go down, reloads included (the counters live with
// the caches, which survive them).
type scraper struct {
	stop     chan struct{}
	done     chan struct{}
	scrapes  int
	problems []string
	last     map[string]float64 // counter values by family, suffix and labels
}

func startScraper(interval time.Duration) *scraper {
	s := &scraper{stop: make(chan struct{}), done: make(chan struct{}), last: map[string]float64{}}
	go func() {
		defer close(s.done)
		for {
			s.scrape()
			select {
			case <-s.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return s
}

func (s *scraper) scrape() {
	ms, err := traefik.PluginMetrics()
	s.scrapes++
	if err != nil {
		s.problem(err.Error())
		return
	}
	for name, f := range ms {
		kind := f.GetType().String()
		if kind != "COUNTER" && kind != "HISTOGRAM" {
			continue
		}
		for _, m := range f.GetMetric() {
			values := map[string]float64{"": env.Value(m)}
			if h := m.GetHistogram(); h != nil {
				values["_sum"] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					values[fmt.Sprintf("_bucket%g", b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			}
			for suffix, v := range values {
				key := name + suffix + "{" + env.Signature(m) + "}"
				if before, ok := s.last[key]; ok && v < before {
					s.problem(fmt.Sprintf("%s went down from %v to %v", key, before, v))
				}
				s.last[key] = v
			}
		}
	}
}

func (s *scraper) problem(p string) {
	if len(s.problems) < 10 {
		s.problems = append(s.problems, p)
	}
}

// finish stops the scraper and returns what went wrong.
func (s *scraper) finish() (int, []string) {
	close(s.stop)
	<-s.done
	return s.scrapes, s.problems
}

// exampleRouters are the routers of the examples the suite loads, with their middlewares.
var exampleRouters = []struct{ route, middleware string }{
	{"api.example.com/orders", "orders-obo@file"},
	{"api.example.com/inventory", "inventory-obo@file"},
	{"api.example.com/reports", "reports-obo@file"},
}

// checkSuiteMetrics runs after the suite: the requests each example's middleware counted are the
// requests the suite sent to its router, and neither a token nor a secret of the suite is in the
// metrics.
func checkSuiteMetrics() []string {
	var problems []string
	ms, err := traefik.PluginMetrics()
	if err != nil {
		return []string{err.Error()}
	}
	for _, r := range exampleRouters {
		got := ms.Sum("oboexchange_requests_total", map[string]string{"middleware": r.middleware})
		want := sent.count(r.route)
		fmt.Fprintf(os.Stderr, "plugin metrics: %s counted %v requests; the suite sent %d to %s\n", r.middleware, got, want, r.route)
		if got != float64(want) {
			problems = append(problems, fmt.Sprintf("%s counted %v requests, the suite sent %d to %s", r.middleware, got, want, r.route))
		}
	}
	resp, err := http.Get(traefik.MetricsURL + env.PluginMetricsPath)
	if err != nil {
		return append(problems, err.Error())
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if leaks := leakedSecrets(string(text)); len(leaks) > 0 {
		problems = append(problems, fmt.Sprintf("the plugin's metrics hold %d token(s) or secret(s) of the suite", len(leaks)))
	}
	return problems
}

// Through Traefik, a middleware of its own: every series moves as the README's response table
// says, read from the metrics router by Prometheus's own parser.
func TestPluginMetricsThroughTraefik(t *testing.T) {
	writeDynamic(t, "metered.yml", route("metered", "metered.test", map[string]string{
		"flow": "entra", "tokenEndpoint": entra.TokenEndpoint, "clientId": entraClientID, "clientSecret": entraSecret,
		"scopes": "api://metered/.default",
	}), "metered", "enabled")
	alice, revoked, mfa := entraUser(t, "alice"), entraUser(t, "revoked-user"), entraUser(t, "mfa-user")
	requests := []struct {
		authorization string
		status        int
	}{
		{"Bearer " + alice, 200}, // exchanged
		{"Bearer " + alice, 200}, // hit
		{"Bearer " + alice, 200}, // hit
		{"", 401},                // refused
		{"Bearer a,b", 400},      // refused
		{"Bearer " + revoked, 401},
		{"Bearer " + revoked, 401}, // rejected_cached
		{"Bearer " + mfa, 401},     // claims challenge
	}
	for i, r := range requests {
		if got := send(t, "metered.test", "/", r.authorization); got.status != r.status {
			t.Fatalf("request %d: status %d, want %d: %s", i, got.status, r.status, got.body)
		}
	}

	ms, err := traefik.PluginMetrics()
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]string{"middleware": "metered-obo@file"}
	caches := ms.Matching("oboexchange_cache_entries", mine)
	if len(caches) != 1 {
		t.Fatalf("%d caches labelled %v, want 1", len(caches), mine)
	}
	endpoint, _ := url.Parse(entra.TokenEndpoint)
	if l := caches[0]; env.Label(l, "flow") != "entra" || env.Label(l, "host") != endpoint.Host || !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(env.Label(l, "cache")) {
		t.Errorf("labels %s", env.Signature(l))
	}
	want := map[string]map[string]float64{
		"result":  {"hit": 2, "exchanged": 1, "refused": 2, "failed": 2, "rejected_cached": 1},
		"outcome": {"ok": 1, "invalid_grant": 1, "claims_challenge": 1},
	}
	for family, label := range map[string]string{"oboexchange_requests_total": "result", "oboexchange_exchanges_total": "outcome"} {
		for _, m := range ms.Matching(family, mine) {
			if got := env.Value(m); got != want[label][env.Label(m, label)] {
				t.Errorf("%s{%s=%q} = %v, want %v", family, label, env.Label(m, label), got, want[label][env.Label(m, label)])
			}
		}
	}
	for family, value := range map[string]float64{
		"oboexchange_exchange_duration_seconds": 3, "oboexchange_cache_entries": 1,
		"oboexchange_cache_evictions_total": 0, "oboexchange_exchanges_in_flight": 0,
	} {
		if got := ms.Sum(family, mine); got != value {
			t.Errorf("%s = %v, want %v", family, got, value)
		}
	}
	if s := ms.LatencySum("oboexchange_exchange_duration_seconds", mine); s <= 0 || s > 30 {
		t.Errorf("exchange_duration_seconds_sum = %v", s)
	}
}

// examples/monitoring: the scrape configuration reaches the metrics entry point of the static
// example at the path the router serves, and the alerting rules name only series and label values
// the plugin serves.
func TestMonitoringExamples(t *testing.T) {
	user := login(t)
	forwardedToken(t, send(t, "api.example.com", "/orders", "Bearer "+user), user) // every family has samples

	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readExampleYAML(t, "monitoring/prometheus.yml", &prom)
	var static struct {
		EntryPoints map[string]struct {
			Address string `yaml:"address"`
		} `yaml:"entryPoints"`
	}
	readExampleYAML(t, "static/traefik.yml", &static)
	if len(prom.ScrapeConfigs) != 1 || len(prom.ScrapeConfigs[0].StaticConfigs) != 1 {
		t.Fatalf("prometheus.yml: want one scrape configuration with one static target list")
	}
	_, port, _ := net.SplitHostPort(static.EntryPoints["metrics"].Address)
	for _, target := range prom.ScrapeConfigs[0].StaticConfigs[0].Targets {
		if _, p, err := net.SplitHostPort(target); err != nil || p != port {
			t.Errorf("prometheus.yml target %q is not on the metrics entry point's port %q", target, port)
		}
	}
	if len(prom.RuleFiles) != 1 || prom.RuleFiles[0] != "alerts.yml" {
		t.Errorf("rule_files = %v, want [alerts.yml]", prom.RuleFiles)
	}
	ms, err := env.ScrapePluginMetrics(traefik.MetricsURL + prom.ScrapeConfigs[0].MetricsPath)
	if err != nil {
		t.Fatal(err)
	}

	var alerts struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
				For   string `yaml:"for"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readExampleYAML(t, "monitoring/alerts.yml", &alerts)
	rules := 0
	for _, g := range alerts.Groups {
		for _, r := range g.Rules {
			rules++
			checkRule(t, r.Alert, r.Expr, ms)
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
		}
	}
	if rules != 2 {
		t.Errorf("%d alerting rules, want 2", rules)
	}
}

var (
	seriesName   = regexp.MustCompile(`oboexchange_[a-z_]+`)
	labelMatcher = regexp.MustCompile(`(result|outcome)=~?"([^"]*)"`)
)

// checkRule fails the test when an expression names a series or a result or outcome value that
// the scrape does not hold.
func checkRule(t *testing.T, alert, expr string, ms env.Metrics) {
	t.Helper()
	names := seriesName.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s names no oboexchange series", alert)
	}
	for _, name := range names {
		if ms[name] == nil && ms[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] == nil {
			t.Errorf("%s: %s is not served", alert, name)
		}
	}
	served := map[string]bool{}
	for _, f := range ms {
		for _, m := range f.GetMetric() {
			served["result="+env.Label(m, "result")] = true
			served["outcome="+env.Label(m, "outcome")] = true
		}
	}
	for _, match := range labelMatcher.FindAllStringSubmatch(expr, -1) {
		for _, v := range strings.Split(match[2], "|") {
			if !served[match[1]+"="+v] {
				t.Errorf("%s: %s %q is not served", alert, match[1], v)
			}
		}
	}
}

func readExampleYAML(t *testing.T, name string, into interface{}) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.RepoRoot(), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("examples/%s: %v", name, err)
	}
}
