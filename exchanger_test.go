package oboexchange

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	var tokens []string
	for i := 0; i < n; i++ {
		tokens = append(tokens, userToken)
	}
	callTogether(t, h, tokens, http.StatusNoContent)
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
	ts := newTokenServer(t, firstThen(reply(400, `{"error":"invalid_grant"}`), issue(exchangedToken, 3600)))
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

// A server that quotes the refused token, whole, cut short or in part, in its description or its
// error code does not get any 16-character run of it into the log (captureLogs checks the whole
// token).
func TestQuotedTokenIsRedacted(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"whole", `{"error":"invalid_grant","error_description":"token ` + userToken + ` is revoked"}`,
			`error_description="token [subject token] is revoked"`},
		{"cut short", `{"error":"invalid_grant","error_description":"token ` + userToken[:20] + `... is revoked"}`,
			`error_description="token [subject token]... is revoked"`},
		{"middle part", `{"error":"invalid_grant","error_description":"bad token ` + userToken[5:25] + `"}`,
			`error_description="bad token [subject token]"`},
		{"in the error field", `{"error":"` + userToken[2:] + `"}`, `error="[subject token]"`},
		{"a short piece stays", `{"error":"invalid_grant","error_description":"token ` + userToken[:10] + `"}`,
			`error_description="token ` + userToken[:10] + `"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			ts := newTokenServer(t, reply(400, tc.body))
			h, _ := newTestMiddleware(t, testConfig(ts.url()))
			call(h, "Bearer "+userToken)
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log line lacks %s:\n%s", tc.want, logs.String())
			}
			for i := 0; i+redactedRun <= len(userToken); i++ {
				if strings.Contains(logs.String(), userToken[i:i+redactedRun]) {
					t.Fatalf("a %d-character run of the token reached the log:\n%s", redactedRun, logs.String())
				}
			}
		})
	}
}

// Rejections have a bound of their own: a flood of refused tokens does not evict live users.
func TestRejectionFloodKeepsLiveUsers(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.PostForm.Get("subject_token"), "junk-") {
			answer(w, 400, `{"error":"invalid_grant"}`)
			return
		}
		issuePerSubject(3600)(w, r)
	})
	c := testConfig(ts.url())
	c.CacheMaxEntries = 100
	h, _ := newTestMiddleware(t, c)
	var users []string
	for i := 0; i < 50; i++ {
		users = append(users, opaqueToken(1000+i))
		wantStatus(t, call(h, "Bearer "+users[i]), http.StatusNoContent)
	}
	for i := 0; i < 400; i++ {
		wantStatus(t, call(h, "Bearer junk-"+strconv.Itoa(i)), http.StatusUnauthorized)
	}
	before := ts.count()
	for _, u := range users {
		wantStatus(t, call(h, "Bearer "+u), http.StatusNoContent)
	}
	if again := ts.count() - before; again != 0 {
		t.Errorf("%d of 50 live users were exchanged again after 400 rejected tokens", again)
	}
}

// A panic inside an exchange (a bug) answers 502 and releases the flight and the admission slot:
// the same token gets an answer again, not a request that hangs.
func TestPanicInExchange(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := testConfig(ts.url())
	c.Audience = []string{"panics"}
	c.MaxConcurrentExchanges = 1
	h, b := newTestMiddleware(t, c)
	x := h.(*Middleware).x
	x.endpoint.http = nil // every exchange now panics

	for i := 0; i < 2; i++ {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- call(h, "Bearer "+userToken) }()
		select {
		case rec := <-done:
			wantStatus(t, rec, http.StatusBadGateway)
			checkErrorBody(t, rec, "token_exchange_failed")
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d hangs after a panic", i+1)
		}
	}
	if x.active.Load() != 0 || b.count() != 0 {
		t.Errorf("exchanges still admitted = %d, backend calls = %d; want 0 and 0", x.active.Load(), b.count())
	}
	if !strings.Contains(logs.String(), `reason="internal error"`) {
		t.Errorf("no log line for the panic:\n%s", logs.String())
	}
}
