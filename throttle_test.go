package oboexchange

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"2", 2 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"99999999999999999999999", maxCoolDown, true},
		{"Tue, 24 Nov 2026 10:00:30 GMT", 30 * time.Second, true}, // IMF-fixdate
		{"Tuesday, 24-Nov-26 10:01:00 GMT", time.Minute, true},    // RFC 850
		{"Tue Nov 24 10:00:10 2026", 10 * time.Second, true},      // asctime
		{"Tue, 24 Nov 2026 09:59:00 GMT", -time.Minute, true},     // in the past
		{"", 0, false},
		{"soon", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"2026-11-24T10:00:30Z", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			got, ok := parseRetryAfter(tc.value, now)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.value, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestThrottleAnswer(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       time.Duration // 0: not a throttle
	}{
		{"429 with seconds", 429, "2", 2 * time.Second},
		{"429 without Retry-After", 429, "", defaultCoolDown},
		{"429 with garbage", 429, "later", defaultCoolDown},
		{"429 asking for 0", 429, "0", time.Second},
		{"429 asking for an hour", 429, "3600", maxCoolDown},
		{"429 with a date", 429, "Tue, 24 Nov 2026 10:00:20 GMT", 20 * time.Second},
		{"429 with a past date", 429, "Tue, 24 Nov 2026 09:00:00 GMT", time.Second},
		{"503 with seconds", 503, "10", 10 * time.Second},
		{"503 with a date", 503, "Tue, 24 Nov 2026 10:01:00 GMT", time.Minute},
		{"503 without Retry-After", 503, "", 0},
		{"500 with Retry-After", 500, "5", 0},
		{"400", 400, "5", 0},
		{"200", 200, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := throttleAnswer(tc.status, tc.retryAfter, now)
			if got != tc.want || ok != (tc.want > 0) {
				t.Errorf("throttleAnswer = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

// The cool-down's arithmetic, step by step on a clock of its own.
func TestCoolDownSteps(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	throttled := func(d time.Duration) *failure { return &failure{coolDown: d} }
	other := failExchange(outcomeServerError, "server error")
	type step struct {
		at         time.Duration // since t0
		enter      bool          // an exchange asks to go (else: one comes back)
		probe      bool          // enter: want it to be the probe; leave: it was
		retryAfter string        // enter: the 503's Retry-After, empty when admitted
		outcome    *failure      // leave: nil for a success
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"no cool-down", []step{
			{at: 0, enter: true},
			{at: 0, outcome: nil},
			{at: 0, enter: true},
		}},
		{"throttled, then the seconds left rounded up", []step{
			{at: 0, enter: true},
			{at: 0, outcome: throttled(2 * time.Second)},
			{at: 0, enter: true, retryAfter: "2"},
			{at: 1100 * time.Millisecond, enter: true, retryAfter: "1"},
			{at: 1999 * time.Millisecond, enter: true, retryAfter: "1"},
		}},
		{"one probe, the others wait, its success ends the cool-down", []step{
			{at: 0, enter: true},
			{at: 0, outcome: throttled(2 * time.Second)},
			{at: 2 * time.Second, enter: true, probe: true},
			{at: 2 * time.Second, enter: true, retryAfter: "1"},
			{at: 2500 * time.Millisecond, enter: true, retryAfter: "1"},
			{at: 2600 * time.Millisecond, probe: true, outcome: nil},
			{at: 2600 * time.Millisecond, enter: true},
			{at: 2600 * time.Millisecond, enter: true},
		}},
		{"a throttled probe starts another cool-down", []step{
			{at: 0, enter: true},
			{at: 0, outcome: throttled(time.Second)},
			{at: time.Second, enter: true, probe: true},
			{at: time.Second, probe: true, outcome: throttled(3 * time.Second)},
			{at: 2 * time.Second, enter: true, retryAfter: "2"},
			{at: 4 * time.Second, enter: true, probe: true},
		}},
		{"a probe answered with another error ends it too", []step{
			{at: 0, enter: true},
			{at: 0, outcome: throttled(time.Second)},
			{at: time.Second, enter: true, probe: true},
			{at: time.Second, probe: true, outcome: other},
			{at: time.Second, enter: true},
		}},
		{"an exchange sent before the cool-down extends it, never shortens it", []step{
			{at: 0, enter: true},
			{at: 0, enter: true},
			{at: 0, outcome: throttled(5 * time.Second)},
			{at: time.Second, outcome: throttled(time.Second)},
			{at: 3 * time.Second, enter: true, retryAfter: "2"},
			{at: 3 * time.Second, outcome: nil},
			{at: 3 * time.Second, enter: true, retryAfter: "2"},
		}},
		{"a lost probe is replaced after its limit", []step{
			{at: 0, enter: true},
			{at: 0, outcome: throttled(time.Second)},
			{at: time.Second, enter: true, probe: true},
			{at: 5 * time.Second, enter: true, retryAfter: "1"},
			{at: 12 * time.Second, enter: true, probe: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c coolDown
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				if !s.enter {
					c.leave(s.probe, s.outcome, now)
					continue
				}
				probe, f := c.enter(now, 10*time.Second)
				got := ""
				if f != nil {
					got = f.retryAfter
					if f.status != http.StatusServiceUnavailable {
						t.Errorf("step %d: status %d", i, f.status)
					}
				}
				if probe != s.probe || got != s.retryAfter {
					t.Errorf("step %d at %v: probe %v, Retry-After %q; want %v, %q", i, s.at, probe, got, s.probe, s.retryAfter)
				}
			}
		})
	}
}

// A 429 opens a cool-down: the throttled request and every new user until it passes get 503 with
// Retry-After and the throttling body, without a call; cached users go on; the 429 is not retried.
func TestThrottledTokenEndpoint(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		wantAfter  string // Retry-After of the 503 answers
	}{
		{"429 with seconds", 429, "7", "7"},
		{"429 without Retry-After", 429, "", "5"},
		{"503 with a date", 503, time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat), "30"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			var throttle atomic.Bool
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				if throttle.Load() {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					answer(w, tc.status, `{"error":"temporarily_unavailable","error_description":"slow down SERVER-DETAIL"}`)
					return
				}
				issuePerSubject(3600)(w, r)
			})
			h, b := newTestMiddleware(t, testConfig(ts.url()))
			cached := opaqueToken(1)
			wantStatus(t, call(h, "Bearer "+cached), http.StatusNoContent)
			throttle.Store(true)

			for i := 0; i < 3; i++ {
				rec := call(h, "Bearer "+opaqueToken(10+i))
				wantStatus(t, rec, http.StatusServiceUnavailable)
				checkErrorBody(t, rec, "token_exchange_throttled")
				if got := rec.Header().Get("Retry-After"); got != tc.wantAfter && !(tc.wantAfter == "30" && got == "29") {
					t.Errorf("request %d: Retry-After %q, want %q", i, got, tc.wantAfter)
				}
			}
			if ts.count() != 2 {
				t.Errorf("token endpoint calls = %d, want 2 (one before the throttling, one throttled, no retry)", ts.count())
			}
			wantStatus(t, call(h, "Bearer "+cached), http.StatusNoContent)
			if b.count() != 2 {
				t.Errorf("backend calls = %d, want 2", b.count())
			}
			if !strings.Contains(logs.String(), "level=warn") || !strings.Contains(logs.String(), "the token endpoint throttles (HTTP "+strconv.Itoa(tc.status)+")") {
				t.Errorf("no warning for the throttling answer:\n%s", logs.String())
			}
		})
	}
}

// When the cool-down ends, one exchange goes first; the requests arriving meanwhile get 503 too,
// and the others follow once it succeeded.
func TestSingleProbeAfterCoolDown(t *testing.T) {
	captureLogs(t)
	var throttle atomic.Bool
	throttle.Store(true)
	probeStarted := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if throttle.Load() {
			w.Header().Set("Retry-After", "1")
			answer(w, 429, `{"error":"too_many_requests"}`)
			return
		}
		select {
		case probeStarted <- struct{}{}:
		default:
		}
		<-release
		issuePerSubject(3600)(w, r)
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+opaqueToken(1)), http.StatusServiceUnavailable)
	throttle.Store(false)
	time.Sleep(1100 * time.Millisecond)

	probe := make(chan int)
	go func() { probe <- call(h, "Bearer "+opaqueToken(2)).Code }()
	<-probeStarted
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		token := opaqueToken(100 + i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := call(h, "Bearer "+token)
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
				t.Errorf("during the probe: status %d, Retry-After %q; want 503 and 1", rec.Code, rec.Header().Get("Retry-After"))
			}
		}()
	}
	wg.Wait()
	close(release)
	if code := <-probe; code != http.StatusNoContent {
		t.Errorf("the probe got %d", code)
	}
	if ts.count() != 2 {
		t.Errorf("token endpoint calls = %d, want 2: the throttled one and the probe", ts.count())
	}
	for i := 0; i < 3; i++ {
		wantStatus(t, call(h, "Bearer "+opaqueToken(200+i)), http.StatusNoContent)
	}
}

// Entra's answer to a loop of identical requests is named in the log line.
func TestEntraLoopLogged(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, reply(400, `{"error":"invalid_grant","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop. Trace ID: 1","error_codes":[50196]}`))
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), http.StatusUnauthorized)
	if !strings.Contains(logs.String(), "Entra detected a loop of identical requests (AADSTS50196)") {
		t.Errorf("the loop is not named:\n%s", logs.String())
	}
}
