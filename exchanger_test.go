package oboexchange

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrent first requests for one user cause exactly one call to the token endpoint.
func TestSingleFlight(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		issue(exchangedToken, 3600)(w, r)
	})
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	const n = 50
	codes := make(chan int, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes <- call(h, "Bearer "+userToken).Code
		}()
	}
	close(start)
	wg.Wait()
	close(codes)

	for code := range codes {
		if code != http.StatusNoContent {
			t.Errorf("status %d, want 204", code)
		}
	}
	if ts.count() != 1 || b.count() != n {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want 1 and %d", ts.count(), b.count(), n)
	}
}

// A client that goes away does not cancel the exchange other requests are waiting for.
func TestClientDisconnectDoesNotCancelSharedExchange(t *testing.T) {
	captureLogs(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		issue(exchangedToken, 60)(w, r)
	})
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	ctx, cancel := context.WithCancel(context.Background())
	first := httptest.NewRequest(http.MethodGet, "http://gateway.test/", nil).WithContext(ctx)
	first.Header.Set("Authorization", "Bearer "+userToken)
	firstDone := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, first)
		firstDone <- rec.Code
	}()
	<-started
	cancel()
	secondDone := make(chan int)
	go func() { secondDone <- call(h, "Bearer "+userToken).Code }()
	time.Sleep(50 * time.Millisecond)
	close(release)

	if code := <-secondDone; code != http.StatusNoContent {
		t.Errorf("second request = %d, want 204", code)
	}
	<-firstDone
	if ts.count() != 1 {
		t.Errorf("token endpoint calls = %d, want 1", ts.count())
	}
	if b.count() < 1 {
		t.Error("backend not called")
	}
}

// Past maxConcurrentExchanges, a new exchange is refused at once with 503 and Retry-After, so a
// hung authorization server cannot pile up goroutines and memory; the exchanges in flight and the
// requests waiting on them are not affected.
func TestConcurrentExchangeBound(t *testing.T) {
	captureLogs(t)
	release := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(2)
	var n atomic.Int32
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			arrived.Done()
			<-release
		}
		issuePerSubject(3600)(w, r)
	})
	c := testConfig(ts.url())
	c.MaxConcurrentExchanges = 2
	h, _ := newTestMiddleware(t, c)

	results := make(chan int, 3)
	for i := 0; i < 2; i++ {
		token := opaqueToken(100 + i)
		go func() { results <- call(h, "Bearer "+token).Code }()
	}
	arrived.Wait()
	// A third user is refused while two exchanges hang; a second request of the first user joins
	// the exchange in flight.
	rec := call(h, "Bearer "+opaqueToken(200))
	wantStatus(t, rec, http.StatusServiceUnavailable)
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", rec.Header().Get("Retry-After"))
	}
	checkErrorBody(t, rec, "token_exchange_busy")
	close(release)
	for i := 0; i < 2; i++ {
		if code := <-results; code != 204 {
			t.Errorf("exchange in flight ended with %d", code)
		}
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(300)), 204)
}

// An invalid_grant answer is remembered for negativeCacheTTL: a client retrying a dead token does
// not reach the authorization server again. Other errors are not remembered.
func TestNegativeCache(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		status    int
		ttl       string
		wantCalls int // for three requests
	}{
		{"invalid_grant is remembered", `{"error":"invalid_grant"}`, 400, "10s", 1},
		{"disabled", `{"error":"invalid_grant"}`, 400, "0s", 3},
		{"invalid_client is not", `{"error":"invalid_client"}`, 401, "10s", 3},
		{"interaction_required is not", `{"error":"interaction_required","claims":"{}"}`, 400, "10s", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, reply(tc.status, tc.body))
			c := testConfig(ts.url())
			c.NegativeCacheTTL = tc.ttl
			h, _ := newTestMiddleware(t, c)
			var codes []int
			for i := 0; i < 3; i++ {
				codes = append(codes, call(h, "Bearer "+userToken).Code)
			}
			if ts.count() != tc.wantCalls {
				t.Errorf("token endpoint calls = %d, want %d", ts.count(), tc.wantCalls)
			}
			if codes[0] != codes[1] || codes[1] != codes[2] {
				t.Errorf("answers differ between the first and the remembered ones: %v", codes)
			}
		})
	}
}

func TestNegativeCacheExpires(t *testing.T) {
	captureLogs(t)
	var calls atomic.Int32
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			answer(w, 400, `{"error":"invalid_grant"}`)
			return
		}
		issue(exchangedToken, 3600)(w, r)
	})
	c := testConfig(ts.url())
	c.NegativeCacheTTL = "300ms"
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), 401)
	wantStatus(t, call(h, "Bearer "+userToken), 401)
	time.Sleep(400 * time.Millisecond)
	wantStatus(t, call(h, "Bearer "+userToken), 204)
	if ts.count() != 2 {
		t.Errorf("calls = %d, want 2", ts.count())
	}
}

// A server that quotes the refused token in its description does not get it into the log (the
// check is captureLogs's).
func TestQuotedTokenIsRedacted(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		answer(w, 400, `{"error":"invalid_grant","error_description":"token `+userToken+` is revoked"}`)
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), 401)
	if !strings.Contains(logs.String(), `error_description="token [subject token] is revoked"`) {
		t.Errorf("log line: %s", logs.String())
	}
}

// Traefik calls New per router and on every reload: identical configurations share one cache,
// different ones never do.
func TestCacheSharedAcrossNew(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	first, _ := newTestMiddleware(t, testConfig(ts.url()))
	second, b := newTestMiddleware(t, testConfig(ts.url()))

	call(first, "Bearer "+userToken)
	call(second, "Bearer "+userToken)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1: identical configurations share the cache", ts.count())
	}
	if b.header.Get("Authorization") != "Bearer x-"+userToken {
		t.Errorf("second instance forwarded %q", b.header.Get("Authorization"))
	}

	variants := []func(c *Config){
		func(c *Config) { c.Audience = []string{"other"} },
		func(c *Config) { c.Scopes = []string{"admin"} },
		func(c *Config) { c.ClientID = "other-client" },
		func(c *Config) { c.ClientSecret = "other-secret" },
		func(c *Config) { c.RequestedTokenType = "urn:ietf:params:oauth:token-type:jwt" },
		func(c *Config) { c.ExtraParams = map[string]string{"tenant": "x"} },
	}
	for i, modify := range variants {
		c := testConfig(ts.url())
		modify(c)
		h, _ := newTestMiddleware(t, c)
		call(h, "Bearer "+userToken)
		if ts.count() != 2+i {
			t.Errorf("variant %d: calls = %d, want %d: a different configuration must not share entries", i, ts.count(), 2+i)
		}
	}
}

// A reload cancels the old context before the new middlewares are created: the exchanger (and
// its cache) must survive that gap, and an exchanger no one takes up again is dropped later.
func TestExchangerSurvivesReload(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ctx, cancel := context.WithCancel(context.Background())
	old, err := New(ctx, &backend{}, testConfig(ts.url()), "r1")
	if err != nil {
		t.Fatal(err)
	}
	call(old, "Bearer "+userToken)
	x := old.(*Middleware).x

	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })
	reloaded, _ := newTestMiddleware(t, testConfig(ts.url()))
	call(reloaded, "Bearer "+userToken)

	if reloaded.(*Middleware).x != x || ts.count() != 1 {
		t.Errorf("after reload: same exchanger %v, calls %d; want true and 1", reloaded.(*Middleware).x == x, ts.count())
	}
}

func TestIdleExchangersAreDropped(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, &backend{}, testConfig(ts.url()), "r1")
	if err != nil {
		t.Fatal(err)
	}
	x := h.(*Middleware).x
	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })

	registryMu.Lock()
	x.idleSince = time.Now().Add(-idleGrace - time.Second)
	registryMu.Unlock()
	c := testConfig(ts.url())
	c.Audience = []string{"unrelated"}
	newTestMiddleware(t, c) // any New sweeps

	registryMu.Lock()
	_, kept := registry[x.fingerprint]
	registryMu.Unlock()
	if kept {
		t.Error("an exchanger idle for longer than idleGrace is still registered")
	}
}

func TestIdleExchangersBounded(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	var released []*exchanger
	for i := 0; i < maxIdle+5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		c := testConfig(ts.url())
		c.Audience = []string{"reload-" + itoa(i)}
		h, err := New(ctx, &backend{}, c, "r")
		if err != nil {
			t.Fatal(err)
		}
		released = append(released, h.(*Middleware).x)
		cancel()
	}
	// Every release must have happened before the sweep: AfterFunc runs each in a goroutine.
	for _, x := range released {
		waitFor(t, func() bool { return refs(x) == 0 })
	}
	newTestMiddleware(t, testConfig(ts.url()))
	if n := idleCount(); n > maxIdle {
		t.Errorf("idle exchangers = %d, want at most %d", n, maxIdle)
	}
}
