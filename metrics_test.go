package oboexchange

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newMetricsEndpoint is a `metrics: true` instance, as a Traefik router on the metrics entry point
// would have it.
func newMetricsEndpoint(t *testing.T) http.Handler {
	t.Helper()
	c := CreateConfig()
	c.Metrics = true
	h, err := New(context.Background(), nil, c, "metrics@file")
	if err != nil {
		t.Fatalf("New with metrics: true: %v", err)
	}
	return h
}

// meteredConfig is testConfig with an audience no other test uses: its exchanger is new, so its
// counters start at zero. (Exchangers of earlier tests stay in the registry; a new token server
// may get the port of an old one, and the same settings would find the old exchanger.)
func meteredConfig(endpoint, test string) *Config {
	c := testConfig(endpoint)
	c.Audience = []string{"metrics-" + test + "-" + strconv.Itoa(int(meteredConfigs.Add(1)))}
	return c
}

var meteredConfigs atomic.Int32

// scrapeText is the whole answer of a metrics endpoint.
func scrapeText(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	newMetricsEndpoint(t).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://metrics.test/metrics", nil))
	wantStatus(t, rec, http.StatusOK)
	return rec.Body.String()
}

// samplesOf returns the samples of one exchanger, keyed by the series name without the prefix and
// the labels beyond the exchanger's own: `requests_total{result="hit"}`, `cache_entries`.
func samplesOf(t *testing.T, x *exchanger) map[string]float64 {
	t.Helper()
	own := `cache="` + x.id + `"`
	out := map[string]float64{}
	for _, line := range strings.Split(scrapeText(t), "\n") {
		at := strings.Index(line, own)
		if strings.HasPrefix(line, "#") || at < 0 {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		name := strings.TrimPrefix(line[:strings.IndexByte(line, '{')], "oboexchange_")
		extra := strings.TrimPrefix(line[at+len(own):sp-1], ",") // sp-1: the closing brace
		if extra != "" {
			name += "{" + extra + "}"
		}
		out[name] = v
	}
	if len(out) == 0 {
		t.Fatalf("no sample of cache %s", x.id)
	}
	return out
}

// checkSamples compares the counters of an exchanger with want: every sample not in want must be
// zero (histogram buckets and sum excepted, which TestHistogramBuckets covers).
func checkSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for name, v := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not served", name)
		} else if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	for name, v := range got {
		skip := strings.HasPrefix(name, "exchange_duration_seconds_bucket") || name == "exchange_duration_seconds_sum"
		if _, wanted := want[name]; !wanted && !skip && v != 0 {
			t.Errorf("%s = %v, want 0", name, v)
		}
	}
}

func query(v string) func(r *http.Request) {
	return func(r *http.Request) { r.URL.RawQuery = "access_token=" + v }
}

// Every series moves as the README's response table says: one row per situation, each with a
// cache of its own, so that every counter starts at zero.
func TestMetricsFollowTheResponseTable(t *testing.T) {
	hang := hanging(t)
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.test/token", http.StatusTemporaryRedirect)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + closed.Addr().String() + "/token"
	closed.Close()
	bearer := auth("Bearer " + userToken)
	expired := auth("Bearer " + testJWT(map[string]interface{}{"sub": "u", "exp": time.Now().Unix() - 60}))
	exchanged := map[string]float64{
		`requests_total{result="exchanged"}`: 1, `exchanges_total{outcome="ok"}`: 1,
		"exchange_duration_seconds_count": 1, "cache_entries": 1,
	}
	failed := func(outcome string, more ...string) map[string]float64 {
		m := map[string]float64{
			`requests_total{result="failed"}`: 1, `exchanges_total{outcome="` + outcome + `"}`: 1,
			"exchange_duration_seconds_count": 1,
		}
		for _, k := range more {
			m[k] = 1
		}
		return m
	}
	tests := []struct {
		name     string
		config   func(c *Config)
		endpoint string // instead of the test's token server
		respond  func(w http.ResponseWriter, r *http.Request)
		requests []func(r *http.Request)
		want     map[string]float64
	}{
		{name: "exchanged", respond: issue(exchangedToken, 60), requests: []func(*http.Request){bearer}, want: exchanged},
		{name: "exchanged, then a hit of the fast path", respond: issue(exchangedToken, 60),
			requests: []func(*http.Request){bearer, bearer, bearer},
			want: map[string]float64{
				`requests_total{result="exchanged"}`: 1, `requests_total{result="hit"}`: 2, `exchanges_total{outcome="ok"}`: 1,
				"exchange_duration_seconds_count": 1, "cache_entries": 1,
			}},
		{name: "a hit outside the fast path (query source)", respond: issue(exchangedToken, 60),
			config:   func(c *Config) { c.TokenSources = []string{"query:access_token"} },
			requests: []func(*http.Request){query(userToken), query(userToken)},
			want: map[string]float64{
				`requests_total{result="exchanged"}`: 1, `requests_total{result="hit"}`: 1, `exchanges_total{outcome="ok"}`: 1,
				"exchange_duration_seconds_count": 1, "cache_entries": 1,
			}},
		{name: "no token", respond: issue(exchangedToken, 60), requests: []func(*http.Request){func(*http.Request) {}},
			want: map[string]float64{`requests_total{result="refused"}`: 1}},
		{name: "basic scheme", respond: issue(exchangedToken, 60), requests: []func(*http.Request){auth("Basic dXNlcjpwYXNz")},
			want: map[string]float64{`requests_total{result="refused"}`: 1}},
		{name: "malformed bearer", respond: issue(exchangedToken, 60), requests: []func(*http.Request){auth("Bearer a,b")},
			want: map[string]float64{`requests_total{result="refused"}`: 1}},
		{name: "expired JWT", respond: issue(exchangedToken, 60), requests: []func(*http.Request){expired},
			want: map[string]float64{`requests_total{result="refused"}`: 1}},
		{name: "invalid_grant, then remembered", respond: reply(400, `{"error":"invalid_grant"}`),
			requests: []func(*http.Request){bearer, bearer},
			want:     failed(outcomeInvalidGrant, `requests_total{result="rejected_cached"}`)},
		{name: "access_denied", respond: reply(401, `{"error":"access_denied"}`), requests: []func(*http.Request){bearer},
			want: failed(outcomeAccessDenied)},
		{name: "claims challenge", respond: reply(400, `{"error":"interaction_required","claims":"{}"}`),
			requests: []func(*http.Request){bearer}, want: failed(outcomeClaimsChallenge)},
		{name: "Entra consent (invalid_grant with suberror)", respond: reply(400, `{"error":"invalid_grant","suberror":"consent_required"}`),
			requests: []func(*http.Request){bearer, bearer}, want: failed(outcomeClaimsChallenge, `requests_total{result="rejected_cached"}`)},
		{name: "invalid_client", respond: reply(401, `{"error":"invalid_client"}`), requests: []func(*http.Request){bearer},
			want: failed(outcomeClientError)},
		{name: "404 without an OAuth error", respond: reply(404, `not found`), requests: []func(*http.Request){bearer},
			want: failed(outcomeClientError)},
		{name: "redirect", respond: redirect, requests: []func(*http.Request){bearer}, want: failed(outcomeClientError)},
		{name: "server error, retried once", respond: reply(500, `oops`), requests: []func(*http.Request){bearer},
			want: failed(outcomeServerError)},
		{name: "server unreachable", endpoint: unreachable, requests: []func(*http.Request){bearer}, want: failed(outcomeServerError)},
		{name: "throttled (429)", respond: reply(429, `{"error":"slow_down"}`), requests: []func(*http.Request){bearer},
			want: failed(outcomeThrottled, "cooldown_active")},
		{name: "during the cool-down", respond: reply(429, `{"error":"slow_down"}`), requests: []func(*http.Request){bearer, auth("Bearer " + userToken + "2")},
			want: map[string]float64{
				`requests_total{result="failed"}`: 2, `exchanges_total{outcome="throttled"}`: 2,
				"exchange_duration_seconds_count": 1, "cooldown_active": 1,
			}},
		{name: "not JSON", respond: reply(200, `<html>login</html>`), requests: []func(*http.Request){bearer},
			want: failed(outcomeMalformedAnswer)},
		{name: "refresh token issued", respond: reply(200, `{"access_token":"rt","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token","token_type":"N_A"}`),
			requests: []func(*http.Request){bearer}, want: failed(outcomeMalformedAnswer)},
		{name: "timeout", respond: hang, requests: []func(*http.Request){bearer}, want: failed(outcomeTimeout)},
		{name: "cache bound: an eviction", respond: issuePerSubject(60), config: func(c *Config) { c.CacheMaxEntries = 1 },
			requests: []func(*http.Request){auth("Bearer " + opaqueToken(1)), auth("Bearer " + opaqueToken(2))},
			want: map[string]float64{
				`requests_total{result="exchanged"}`: 2, `exchanges_total{outcome="ok"}`: 2, "exchange_duration_seconds_count": 2,
				"cache_entries": 1, "cache_evictions_total": 1,
			}},
		{name: "cache disabled", respond: issue(exchangedToken, 60), config: func(c *Config) { c.CacheMaxEntries = 0 },
			requests: []func(*http.Request){bearer, bearer},
			want: map[string]float64{
				`requests_total{result="exchanged"}`: 2, `exchanges_total{outcome="ok"}`: 2, "exchange_duration_seconds_count": 2,
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			endpoint := tc.endpoint
			if endpoint == "" {
				endpoint = newTokenServer(t, tc.respond).url()
			}
			c := meteredConfig(endpoint, tc.name)
			c.Timeout = "300ms"
			if tc.config != nil {
				tc.config(c)
			}
			h, _ := newTestMiddleware(t, c)
			for _, setup := range tc.requests {
				req := httptest.NewRequest(http.MethodGet, "http://gateway.test/api", nil)
				setup(req)
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			checkSamples(t, samplesOf(t, h.(*Middleware).x), tc.want)
		})
	}
}

// Concurrent first requests of one user share one exchange: each request counts as exchanged,
// the exchange once.
func TestMetricsSingleFlight(t *testing.T) {
	captureLogs(t)
	release := make(chan struct{})
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		issue(exchangedToken, 3600)(w, r)
	})
	h, _ := newTestMiddleware(t, meteredConfig(ts.url(), "single-flight"))
	x := h.(*Middleware).x
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call(h, "Bearer "+userToken)
		}()
	}
	waitFor(t, func() bool { return x.active.Load() == 1 })
	if got := samplesOf(t, x)["exchanges_in_flight"]; got != 1 {
		t.Errorf("exchanges_in_flight = %v during the exchange, want 1", got)
	}
	time.Sleep(300 * time.Millisecond) // the other requests join the flight (as in TestSingleFlight)
	close(release)
	wg.Wait()
	checkSamples(t, samplesOf(t, x), map[string]float64{
		`requests_total{result="exchanged"}`: n, `exchanges_total{outcome="ok"}`: 1, "exchange_duration_seconds_count": 1,
		"cache_entries": 1,
	})
}

// Past maxConcurrentExchanges an exchange is refused without reaching the token endpoint: a failed
// request, a busy exchange, no round trip.
func TestMetricsBusy(t *testing.T) {
	captureLogs(t)
	release := make(chan struct{})
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		issuePerSubject(3600)(w, r)
	})
	c := meteredConfig(ts.url(), "busy")
	c.MaxConcurrentExchanges = 1
	h, _ := newTestMiddleware(t, c)
	x := h.(*Middleware).x
	done := make(chan int, 1)
	go func() { done <- call(h, "Bearer "+opaqueToken(1)).Code }()
	waitFor(t, func() bool { return x.active.Load() == 1 })

	wantStatus(t, call(h, "Bearer "+opaqueToken(2)), http.StatusServiceUnavailable)
	checkSamples(t, samplesOf(t, x), map[string]float64{
		`requests_total{result="failed"}`: 1, `exchanges_total{outcome="busy"}`: 1, "exchanges_in_flight": 1,
	})
	close(release)
	if code := <-done; code != http.StatusNoContent {
		t.Fatalf("the exchange in flight ended with %d", code)
	}
	checkSamples(t, samplesOf(t, x), map[string]float64{
		`requests_total{result="failed"}`: 1, `exchanges_total{outcome="busy"}`: 1,
		`requests_total{result="exchanged"}`: 1, `exchanges_total{outcome="ok"}`: 1, "exchange_duration_seconds_count": 1,
		"cache_entries": 1,
	})
}

// A panic inside an exchange (a bug) counts once, as client_error: the gateway's side.
func TestMetricsPanic(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, _ := newTestMiddleware(t, meteredConfig(ts.url(), "panic"))
	x := h.(*Middleware).x
	x.endpoint.http = nil // every exchange now panics

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusBadGateway)
	checkSamples(t, samplesOf(t, x), map[string]float64{
		`requests_total{result="failed"}`: 1, `exchanges_total{outcome="client_error"}`: 1,
	})
}

// Each failure an exchange can end with carries its outcome, set where it is created.
func TestFailureOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		outcome string
	}{
		{"invalid_grant", 400, `{"error":"invalid_grant"}`, outcomeInvalidGrant},
		{"access_denied", 403, `{"error":"access_denied"}`, outcomeAccessDenied},
		{"claims", 400, `{"error":"invalid_grant","claims":"{}"}`, outcomeClaimsChallenge},
		{"consent_required", 400, `{"error":"consent_required"}`, outcomeClaimsChallenge},
		{"invalid_scope", 400, `{"error":"invalid_scope"}`, outcomeClientError},
		{"redirect", 302, ``, outcomeClientError},
		{"429 without OAuth error", 429, `Too Many Requests`, outcomeThrottled},
		{"429 with OAuth error", 429, `{"error":"temporarily_unavailable"}`, outcomeThrottled},
		{"503", 503, `{"error":"temporarily_unavailable"}`, outcomeServerError},
		{"no access_token", 200, `{"token_type":"Bearer"}`, outcomeMalformedAnswer},
		{"bad expires_in", 200, bearerAccessToken + `"access_token":"a","expires_in":"soon"}`, outcomeMalformedAnswer},
		{"DPoP token", 200, `{"access_token":"a","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"DPoP"}`, outcomeMalformedAnswer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, f := parseTokenResponse(tc.status, []byte(tc.body), flowRFC8693, "")
			if f == nil || f.outcome != tc.outcome {
				t.Fatalf("failure %+v, want outcome %s", f, tc.outcome)
			}
		})
	}
	for _, f := range []*failure{failBusy, failInternal, failTimeout("x")} {
		if !contains(exchangeOutcomes, f.outcome) {
			t.Errorf("failure %q has outcome %q, which is not served", f.reason, f.outcome)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The answer is the text exposition format 0.0.4: HELP and TYPE once per family, in the order of
// the families, each sample under its own family, cumulative histogram buckets that end with
// +Inf equal to _count.
func TestMetricsFormat(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, _ := newTestMiddleware(t, meteredConfig(ts.url(), "format"))
	call(h, "Bearer "+userToken)

	rec := httptest.NewRecorder()
	newMetricsEndpoint(t).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://metrics.test/metrics", nil))
	wantStatus(t, rec, http.StatusOK)
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4" {
		t.Errorf("Content-Type = %q", ct)
	}
	body := rec.Body.String()
	if !strings.HasSuffix(body, "\n") {
		t.Error("the answer does not end with a newline")
	}
	family, next := "", 0
	var bucket float64
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			if next >= len(families) || !strings.HasPrefix(line, "# HELP oboexchange_"+families[next].name+" ") {
				t.Fatalf("unexpected %q", line)
			}
			family = "oboexchange_" + families[next].name
			next++
		case strings.HasPrefix(line, "# TYPE "):
			if line != "# TYPE "+family+" "+families[next-1].kind {
				t.Fatalf("unexpected %q after the HELP of %s", line, family)
			}
		case strings.HasPrefix(line, family+"{") || strings.HasPrefix(line, family+"_bucket{") ||
			strings.HasPrefix(line, family+"_sum{") || strings.HasPrefix(line, family+"_count{"):
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if strings.HasPrefix(line, family+"_bucket{") {
				if strings.Contains(line, `le="0.005"`) {
					bucket = 0
				}
				if v < bucket {
					t.Errorf("buckets not cumulative at %q", line)
				}
				bucket = v
			}
			if strings.HasPrefix(line, family+"_count{") && v != bucket {
				t.Errorf("%q: _count differs from the +Inf bucket %v", line, bucket)
			}
		default:
			t.Fatalf("line %q is not a sample of %s", line, family)
		}
	}
	if next != len(families) {
		t.Errorf("%d families served, want %d", next, len(families))
	}
}

// Histogram buckets are upper bounds (le): an observation on a bound lands in it.
func TestHistogramBuckets(t *testing.T) {
	c := newCounters()
	for _, d := range []time.Duration{3 * time.Millisecond, 5 * time.Millisecond, 7 * time.Millisecond, 2 * time.Second, 20 * time.Second} {
		c.duration.observe(d)
	}
	var b strings.Builder
	(&sampleWriter{b: &b, name: "h", labels: `cache="c"`}).histogram(&c.duration)
	want := `h_bucket{cache="c",le="0.005"} 2
h_bucket{cache="c",le="0.01"} 3
h_bucket{cache="c",le="0.025"} 3
h_bucket{cache="c",le="0.05"} 3
h_bucket{cache="c",le="0.1"} 3
h_bucket{cache="c",le="0.25"} 3
h_bucket{cache="c",le="0.5"} 3
h_bucket{cache="c",le="1"} 3
h_bucket{cache="c",le="2.5"} 4
h_bucket{cache="c",le="5"} 4
h_bucket{cache="c",le="10"} 4
h_bucket{cache="c",le="+Inf"} 5
h_sum{cache="c"} 22.015
h_count{cache="c"} 5
`
	if b.String() != want {
		t.Errorf("histogram:\n%s\nwant:\n%s", b.String(), want)
	}
}

// Label values are escaped as the text format requires: backslash, double quote, newline.
func TestMetricsLabelsEscaped(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	b := &backend{}
	c := meteredConfig(ts.url(), "escaped")
	name := "we\"ird\\name\nnext@file"
	h, err := New(context.Background(), b, c, name)
	if err != nil {
		t.Fatal(err)
	}
	x := h.(*Middleware).x
	text := scrapeText(t)
	want := `oboexchange_cache_entries{middleware="we\"ird\\name\nnext@file",flow="rfc8693",host="` + x.host + `",cache="` + x.id + `"} 0`
	if !strings.Contains(text, want+"\n") {
		t.Errorf("no line %q in:\n%s", want, text)
	}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if !strings.HasPrefix(line, "# ") && !strings.HasPrefix(line, "oboexchange_") {
			t.Errorf("line %q: a label value broke the line", line)
		}
	}
}

// Neither a token nor a secret reaches the metrics, whatever the configuration and the traffic:
// only names, the flow, the token endpoint's host and a random id are labels.
func TestMetricsHoldNoSecret(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	c := meteredConfig(ts.url()+"?key="+remember("endpoint-query-secret-0123456789"), "no-secret")
	h, _ := newTestMiddleware(t, c)
	call(h, "Bearer "+userToken)
	call(h, "Bearer "+opaqueToken(7))
	text := scrapeText(t)
	secretsMu.Lock()
	defer secretsMu.Unlock()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the metrics hold %q", s)
		}
	}
	if fp := h.(*Middleware).x.fingerprint; strings.Contains(text, fp[:12]) {
		t.Error("the metrics hold the fingerprint, a hash of the secret")
	}
}

// The counters live in the exchanger: a reload keeps them, with the same labels; a dropped
// exchanger's series go with it.
func TestMetricsSurviveReloadAndGoWithTheCache(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := meteredConfig(ts.url(), "reload")
	ctx, cancel := context.WithCancel(context.Background())
	old, err := New(ctx, &backend{}, c, "reload-obo@file")
	if err != nil {
		t.Fatal(err)
	}
	call(old, "Bearer "+userToken)
	call(old, "Bearer "+userToken)
	x := old.(*Middleware).x
	labels := `middleware="reload-obo@file",flow="rfc8693",host="` + x.host + `",cache="` + x.id + `"`
	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })
	if !strings.Contains(scrapeText(t), "oboexchange_cache_entries{"+labels+"} 1\n") {
		t.Error("between the release and the new instance, the series changed")
	}

	ctx, cancel = context.WithCancel(context.Background())
	reloaded, err := New(ctx, &backend{}, c, "reload-obo@file")
	if err != nil {
		t.Fatal(err)
	}
	call(reloaded, "Bearer "+userToken)
	want := `oboexchange_requests_total{` + labels + `,result="hit"} 2` + "\n"
	if text := scrapeText(t); !strings.Contains(text, want) {
		t.Errorf("after the reload, no %q", want)
	}

	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })
	registryMu.Lock()
	x.idleSince = time.Now().Add(-idleGrace - time.Second)
	registryMu.Unlock()
	other := meteredConfig(ts.url(), "reload-other")
	newTestMiddleware(t, other) // any New sweeps
	if text := scrapeText(t); strings.Contains(text, x.id) {
		t.Error("a dropped exchanger's series are still served")
	}
}

// The middleware label names the instances using an exchanger. Middlewares with identical
// settings share one, and both names show; a name leaves reloadGrace after its last instance, and
// an exchanger no instance uses keeps the names it had.
func TestMiddlewareLabel(t *testing.T) {
	c := newCounters()
	now := time.Now()
	c.join("b@file")
	c.join("a@file")
	c.join("a@file") // the same middleware on a second router
	tests := []struct {
		name   string
		change func()
		want   string
	}{
		{"shared by two middlewares", func() {}, "a@file,b@file"},
		{"one of two routers of a@file gone", func() { c.leave("a@file", now) }, "a@file,b@file"},
		{"b@file gone within reloadGrace (a reload)", func() { c.leave("b@file", now) }, "a@file,b@file"},
		{"b@file gone for longer", func() { now = now.Add(reloadGrace) }, "a@file"},
		{"every instance gone: the last names stay", func() { c.leave("a@file", now) }, "a@file"},
		{"long idle: still the last names", func() { now = now.Add(time.Hour) }, "a@file"},
		{"taken up again", func() { c.join("a@file") }, "a@file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.change()
			if got := c.middlewareLabel(now); got != tc.want {
				t.Errorf("middleware label = %q, want %q", got, tc.want)
			}
		})
	}
	if _, kept := c.names["b@file"]; kept {
		t.Error("a name gone for longer than reloadGrace is still kept")
	}
}

// metrics: true needs no token endpoint and creates no exchanger; any other option set next to it
// is an error that names it.
func TestMetricsConfig(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		err    string // empty: accepted
	}{
		{"alone", func(c *Config) {}, ""},
		{"defaults written out", func(c *Config) { c.Timeout = "10s"; c.Flow = "rfc8693"; c.TokenSources = []string{} }, ""},
		{"with a token endpoint", func(c *Config) { c.TokenEndpoint = "https://idp.example.com/token" }, "tokenEndpoint is set too"},
		{"with two options", func(c *Config) { c.ClientID = "x"; c.Audience = []string{"a"} }, "clientId, audience is set too"},
		{"with another timeout", func(c *Config) { c.Timeout = "5s" }, "timeout is set too"},
		{"with extraParams", func(c *Config) { c.ExtraParams = map[string]string{"a": "b"} }, "extraParams is set too"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			registryMu.Lock()
			before := len(registry)
			registryMu.Unlock()
			c := CreateConfig()
			c.Metrics = true
			tc.modify(c)
			h, err := New(context.Background(), nil, c, "metrics@file")
			registryMu.Lock()
			after := len(registry)
			registryMu.Unlock()
			if after != before {
				t.Errorf("New with metrics: true changed the registry from %d to %d exchangers", before, after)
			}
			if tc.err == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if _, ok := h.(*metricsHandler); !ok {
					t.Fatalf("New returned %T, want the metrics handler", h)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}

// The README's series table lists exactly what is served, in the same order.
func TestREADMEListsTheSeries(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `oboexchange_"); ok {
			name, _, _ := strings.Cut(rest, "`")
			listed = append(listed, name)
		}
	}
	var served []string
	for _, f := range families {
		served = append(served, f.name)
	}
	if strings.Join(listed, " ") != strings.Join(served, " ") {
		t.Errorf("README lists %v, the plugin serves %v", listed, served)
	}
}
