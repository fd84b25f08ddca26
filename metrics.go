package oboexchange

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Prometheus metrics. A Yaegi plugin cannot register with Traefik's own metrics, so a middleware
// instance configured with `metrics: true` serves them itself, in the text exposition format
// 0.0.4, for every exchanger in the registry. The counters live in the exchanger: they survive a
// reload exactly as its cache does, and go with it when it is dropped.

// metricsContentType is the text exposition format's media type, which scrapers check.
const metricsContentType = "text/plain; version=0.0.4"

// requests_total{result}: what became of each request a middleware handled.
const (
	resultHit            = "hit"             // served from the cache
	resultExchanged      = "exchanged"       // served with a token from an exchange (run or waited for)
	resultRejectedCached = "rejected_cached" // refused from the negative cache
	resultRefused        = "refused"         // no credential, a malformed one, or an expired JWT
	resultFailed         = "failed"          // the exchange failed (see exchanges_total)
	resultSharedHit      = "shared_hit"      // served from the shared cache (another replica's exchange)
)

// requestResults lists the result values in the order they are served; each is served, at 0
// until it happens, so that rate() works from the first scrape.
var requestResults = []string{resultHit, resultExchanged, resultSharedHit, resultRejectedCached, resultRefused, resultFailed}

// durationBuckets are the upper bounds of exchange_duration_seconds, from 5 ms to 10 s (the
// default timeout).
var durationBuckets = []time.Duration{
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// metricFamily is one series of the output: its name after the oboexchange_ prefix, its type, its
// help, and how to write its samples for one exchanger. Adding a series is one row of families.
type metricFamily struct {
	name  string
	kind  string // counter, gauge or histogram
	help  string
	write func(w *sampleWriter, x *exchanger)
}

var families = []metricFamily{
	{"requests_total", "counter", "Requests the middleware answered, by result.", writeRequests},
	{"exchanges_total", "counter", "Token exchanges, by outcome: ok, or why it failed.", writeExchanges},
	{"exchange_duration_seconds", "histogram", "Round trip to the token endpoint, retry included.", writeDuration},
	{"cache_entries", "gauge", "Exchanged tokens in the cache, expired ones not yet dropped included.", writeCacheEntries},
	{"cache_evictions_total", "counter", "Cache entries dropped to keep cacheMaxEntries, expired ones first.", writeEvictions},
	{"exchanges_in_flight", "gauge", "Exchanges waiting for the token endpoint now (at most maxConcurrentExchanges).", writeInFlight},
	{"cooldown_active", "gauge", "1 while the token endpoint's throttling cool-down holds new exchanges back.", writeCoolDown},
	{"shared_cache_up", "gauge", "1 while the shared cache answers, 0 while it is skipped after failures; only with sharedCache.", writeSharedUp},
}

func writeCoolDown(w *sampleWriter, x *exchanger) {
	if x.cooling.active() {
		w.value(1)
		return
	}
	w.value(0)
}

// writeSharedUp writes nothing for an exchanger without a shared cache.
func writeSharedUp(w *sampleWriter, x *exchanger) {
	if x.shared == nil {
		return
	}
	if x.shared.up() {
		w.value(1)
		return
	}
	w.value(0)
}

func writeRequests(w *sampleWriter, x *exchanger) {
	for _, r := range requestResults {
		w.labelled("result", r, x.requests(r))
	}
}

func writeExchanges(w *sampleWriter, x *exchanger) {
	for _, o := range exchangeOutcomes {
		w.labelled("outcome", o, x.counters.exchanges[o].Load())
	}
}

func writeDuration(w *sampleWriter, x *exchanger) { w.histogram(&x.counters.duration) }

func writeCacheEntries(w *sampleWriter, x *exchanger) { w.value(int64(x.cache.len())) }

func writeEvictions(w *sampleWriter, x *exchanger) { w.value(x.cache.evicted()) }

func writeInFlight(w *sampleWriter, x *exchanger) { w.value(x.inFlight()) }

// counters is what an exchanger counts. Cache hits of ServeHTTP's fast path are not here: they are
// counted in the cache's shards (see cache.hits), where a native atomic add next to the lookup
// costs the fast path no interpreted call.
type counters struct {
	requests  map[string]*atomic.Int64 // by result, the fast path's hits excepted
	exchanges map[string]*atomic.Int64 // by outcome
	duration  histogram

	// The names Traefik gave the middleware instances using this exchanger, for the middleware
	// label. Guarded by registryMu, like exchanger.refs.
	names map[string]*nameUse
}

// nameUse is how many live instances have a name, and when the last one went.
type nameUse struct {
	instances int
	left      time.Time
}

func newCounters() *counters {
	c := &counters{
		requests:  map[string]*atomic.Int64{},
		exchanges: map[string]*atomic.Int64{},
		names:     map[string]*nameUse{},
	}
	for _, r := range requestResults {
		c.requests[r] = new(atomic.Int64)
	}
	for _, o := range exchangeOutcomes {
		c.exchanges[o] = new(atomic.Int64)
	}
	for i := 0; i <= len(durationBuckets); i++ {
		c.duration.buckets = append(c.duration.buckets, new(atomic.Int64))
	}
	return c
}

// count adds one request with this result.
func (x *exchanger) count(result string) {
	if n := x.counters.requests[result]; n != nil {
		n.Add(1)
	}
}

// requests is the number of requests with this result; hits add those of the fast path.
func (x *exchanger) requests(result string) int64 {
	n := x.counters.requests[result].Load()
	if result == resultHit {
		n += x.cache.hits()
	}
	return n
}

// exchanged counts one exchange that reached the token endpoint: its outcome (ok when f is nil)
// and its round trip.
func (c *counters) exchanged(f *failure, latency time.Duration) {
	c.duration.observe(latency)
	if f == nil {
		c.exchange(outcomeOK)
		return
	}
	c.exchange(f.outcome)
}

// exchange counts one exchange with this outcome.
func (c *counters) exchange(outcome string) {
	if n := c.exchanges[outcome]; n != nil {
		n.Add(1)
	}
}

// histogram counts observations per bucket; the last bucket is +Inf. The count is the sum of the
// buckets, so that a scrape always sees _count equal to the +Inf bucket.
type histogram struct {
	buckets  []*atomic.Int64 // observations per bucket, not cumulative
	sumNanos atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(durationBuckets) && d > durationBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNanos.Add(int64(d))
}

// join and leave keep the names of the instances using an exchanger. They run with registryMu held.
func (c *counters) join(name string) {
	u := c.names[name]
	if u == nil {
		u = &nameUse{}
		c.names[name] = u
	}
	u.instances++
}

func (c *counters) leave(name string, now time.Time) {
	if u := c.names[name]; u != nil {
		u.instances--
		if u.instances == 0 {
			u.left = now
		}
	}
}

// middlewareLabel is the middleware label of an exchanger: the names of the middlewares using it,
// sorted and comma-separated (one name, unless middlewares with identical settings share it). A
// name stays for reloadGrace after its last instance went, so that a reload, which releases every
// instance before Traefik creates the new ones, does not change the label; an exchanger no
// instance uses keeps the names it last had. It runs with registryMu held.
func (c *counters) middlewareLabel(now time.Time) string {
	var live, all []string
	for name, u := range c.names {
		all = append(all, name)
		if u.instances > 0 || now.Sub(u.left) < reloadGrace {
			live = append(live, name)
		}
	}
	if len(live) == 0 {
		sort.Strings(all)
		return strings.Join(all, ",")
	}
	if len(live) < len(all) {
		for _, name := range all {
			if u := c.names[name]; u.instances == 0 && now.Sub(u.left) >= reloadGrace {
				delete(c.names, name)
			}
		}
	}
	sort.Strings(live)
	return strings.Join(live, ",")
}

// metricsHandler is a middleware instance configured with `metrics: true`: it answers every
// request with the metrics of every exchanger of the plugin, and holds no exchanger of its own.
type metricsHandler struct{}

// newMetricsHandler refuses any other option next to `metrics: true`: such a configuration would
// look like an exchange that never happens.
func newMetricsHandler(config *Config) (http.Handler, error) {
	if set := optionsSet(config); len(set) > 0 {
		return nil, errors.New("metrics: an instance with metrics: true serves the plugin's metrics and exchanges nothing, but " +
			strings.Join(set, ", ") + " is set too: remove it, or configure the exchange in a middleware of its own")
	}
	return &metricsHandler{}, nil
}

// optionsSet names the options of config, other than metrics, that differ from CreateConfig's
// defaults. It reads the Config struct by reflection, so an option added later is covered too; an
// empty list or map counts as unset.
func optionsSet(config *Config) []string {
	got := reflect.ValueOf(config).Elem()
	def := reflect.ValueOf(CreateConfig()).Elem()
	var set []string
	for i := 0; i < got.NumField(); i++ {
		field := got.Type().Field(i)
		name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
		if name == "" {
			name = field.Name
		}
		if field.Name == "Metrics" || isDefault(got.Field(i), def.Field(i)) {
			continue
		}
		set = append(set, name)
	}
	return set
}

func isDefault(v, def reflect.Value) bool {
	if k := v.Kind(); (k == reflect.Slice || k == reflect.Map) && v.Len() == 0 && def.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(v.Interface(), def.Interface())
}

func (h *metricsHandler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	var b strings.Builder
	writeMetrics(&b, time.Now())
	rw.Header().Set("Content-Type", metricsContentType)
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(rw, b.String())
}

// labelled is an exchanger with its labels, as one scrape writes them.
type labelled struct {
	x      *exchanger
	labels string
}

// writeMetrics writes every family, each with its HELP and TYPE lines even when no exchanger
// exists, then one group of samples per exchanger in the registry.
func writeMetrics(b *strings.Builder, now time.Time) {
	xs := registered(now)
	for _, f := range families {
		name := "oboexchange_" + f.name
		b.WriteString("# HELP " + name + " " + helpEscaper.Replace(f.help) + "\n")
		b.WriteString("# TYPE " + name + " " + f.kind + "\n")
		for _, l := range xs {
			f.write(&sampleWriter{b: b, name: name, labels: l.labels}, l.x)
		}
	}
}

// registered returns the exchangers of the registry with their labels, in a stable order. The
// labels are read under registryMu; the counters are read afterwards, without it.
func registered(now time.Time) []labelled {
	registryMu.Lock()
	var xs []labelled
	for _, x := range registry {
		xs = append(xs, labelled{x: x, labels: exchangerLabels(x, now)})
	}
	registryMu.Unlock()
	sort.Slice(xs, func(i, j int) bool { return xs[i].labels < xs[j].labels })
	return xs
}

// exchangerLabels are the labels every sample of an exchanger carries. cache is the exchanger's
// random id: it tells apart two caches of one middleware (its configuration changed, the old
// cache is not dropped yet), and says nothing about the settings or the secret.
func exchangerLabels(x *exchanger, now time.Time) string {
	return `middleware="` + labelEscaper.Replace(x.counters.middlewareLabel(now)) +
		`",flow="` + labelEscaper.Replace(x.flow) +
		`",host="` + labelEscaper.Replace(x.host) +
		`",cache="` + labelEscaper.Replace(x.id) + `"`
}

// The escapes of the text format: in label values backslash, double quote and newline; in HELP
// text backslash and newline.
var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// sampleWriter writes the samples of one family for one exchanger.
type sampleWriter struct {
	b      *strings.Builder
	name   string
	labels string // the exchanger's, escaped
}

func (w *sampleWriter) line(suffix, extra, value string) {
	w.b.WriteString(w.name + suffix + "{" + w.labels + extra + "} " + value + "\n")
}

// value writes the one sample of a counter or gauge.
func (w *sampleWriter) value(v int64) {
	w.line("", "", strconv.FormatInt(v, 10))
}

// labelled writes a sample with one more label; the value is one of this package's constants.
func (w *sampleWriter) labelled(key, value string, v int64) {
	w.line("", ","+key+`="`+value+`"`, strconv.FormatInt(v, 10))
}

// histogram writes the cumulative buckets, the sum in seconds and the count.
func (w *sampleWriter) histogram(h *histogram) {
	var total int64
	for i, n := range h.buckets {
		total += n.Load()
		le := "+Inf"
		if i < len(durationBuckets) {
			le = strconv.FormatFloat(durationBuckets[i].Seconds(), 'g', -1, 64)
		}
		w.line("_bucket", `,le="`+le+`"`, strconv.FormatInt(total, 10))
	}
	w.line("_sum", "", strconv.FormatFloat(time.Duration(h.sumNanos.Load()).Seconds(), 'g', -1, 64))
	w.line("_count", "", strconv.FormatInt(total, 10))
}
