package oboexchange

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

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
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) { answer(w, tc.status, tc.body) })
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

// Entra ID's Conditional Access and consent answers, in Entra's own shape, become the claims
// challenge Microsoft documents for a middle tier.
func TestEntraClaimsChallenge(t *testing.T) {
	claims := `{"access_token":{"capolids":{"essential":true,"values":["c1a2b3c4-0000-4000-8000-000000000001"]}}}`
	tests := []struct {
		name, body string
		wantClaims bool
	}{
		{"AADSTS50076 multi-factor authentication", `{"error":"invalid_grant","error_description":"AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'api://reports'.\r\nTrace ID: 0d3ab2c1\r\nCorrelation ID: 5e1f\r\nTimestamp: 2026-11-23 10:00:00Z","error_codes":[50076],"timestamp":"2026-11-23 10:00:00Z","trace_id":"0d3ab2c1","correlation_id":"5e1f","error_uri":"https://login.microsoftonline.com/error?code=50076","suberror":"basic_action","claims":"` + strings.ReplaceAll(claims, `"`, `\"`) + `"}`, true},
		{"AADSTS50079 interaction_required", `{"error":"interaction_required","error_description":"AADSTS50079: Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multifactor authentication.","error_codes":[50079],"claims":"` + strings.ReplaceAll(claims, `"`, `\"`) + `"}`, true},
		{"AADSTS65001 consent", `{"error":"invalid_grant","error_description":"AADSTS65001: The user or administrator has not consented to use the application with ID '11111111-2222-3333-4444-555555555555'. Send an interactive authorization request for this user and resource.","error_codes":[65001],"suberror":"consent_required"}`, false},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) { answer(w, 400, tc.body) })
			c := testConfig(ts.url())
			c.Flow = "entra"
			c.Audience = nil
			c.Scopes = []string{"api://reports/.default"}
			h, b := newTestMiddleware(t, c)

			rec := call(h, "Bearer "+userToken)

			wantStatus(t, rec, 401)
			want := `Bearer error="insufficient_claims"`
			if tc.wantClaims {
				want += `, claims="` + base64.StdEncoding.EncodeToString([]byte(claims)) + `"`
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != want {
				t.Errorf("WWW-Authenticate =\n %q\nwant\n %q", got, want)
			}
			checkErrorBody(t, rec, "insufficient_claims")
			if strings.Contains(rec.Body.String(), "AADSTS") || b.count() != 0 {
				t.Errorf("the server's description reached the client, or the backend was called")
			}
		})
	}
}

// Hostile credentials get a defined answer and are never sent to the authorization server.
func TestHostileCredentials(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, b := newTestMiddleware(t, testConfig(ts.url()))
	tests := []struct {
		name   string
		header []string
		status int
	}{
		{"two Authorization headers", []string{"Bearer a", "Bearer b"}, 401},
		{"space inside the token", []string{"Bearer abc def"}, 401},
		{"two spaces after the scheme", []string{"Bearer  abc"}, 401},
		{"tab", []string{"Bearer abc\tdef"}, 401},
		{"control character", []string{"Bearer abc\x01def"}, 401},
		{"NUL", []string{"Bearer abc\x00"}, 401},
		{"non-UTF-8 bytes", []string{"Bearer \xff\xfe\xfd"}, 401},
		{"UTF-8 letters", []string{"Bearer café"}, 401},
		{"quote", []string{`Bearer abc"def`}, 401},
		{"64 KiB token", []string{"Bearer " + strings.Repeat("A", 64*1024)}, 401},
		{"scheme without token", []string{"Bearer"}, 401},
		{"Basic", []string{"Basic YTpi"}, 401},
		{"Negotiate", []string{"Negotiate abc"}, 401},
		{"empty header", []string{""}, 401},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(http.MethodGet, "http://gateway.test/", nil)
		req.Header["Authorization"] = tc.header
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Code, tc.status)
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_request"` {
			t.Errorf("%s: WWW-Authenticate = %q", tc.name, got)
		}
	}
	if ts.count() != 0 || b.count() != 0 {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want none", ts.count(), b.count())
	}
	wantStatus(t, call(h, "bEaReR "+userToken), 204)
}

// A server error or a broken connection is retried once within the timeout, then answered 502.
func TestRetry(t *testing.T) {
	tests := []struct {
		name      string
		failures  int32 // how many first requests fail
		reset     bool  // fail by closing the connection instead of a 500
		status    int
		wantCalls int
	}{
		{"one 500 then success", 1, false, 204, 2},
		{"two 500s", 2, false, 502, 2},
		{"one reset then success", 1, true, 204, 2},
		{"two resets", 2, true, 502, 2},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			var n atomic.Int32
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) > tc.failures {
					issue(exchangedToken, 3600)(w, r)
					return
				}
				if tc.reset {
					conn, _, _ := w.(http.Hijacker).Hijack()
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
					return
				}
				answer(w, 500, `{"error":"server_error"}`)
			})
			h, _ := newTestMiddleware(t, testConfig(ts.url()))
			wantStatus(t, call(h, "Bearer "+userToken), tc.status)
			if ts.count() != tc.wantCalls {
				t.Errorf("calls = %d, want %d", ts.count(), tc.wantCalls)
			}
		})
	}
}

// A 4xx answer is not retried.
func TestNoRetryOnClientError(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) { answer(w, 400, `{"error":"invalid_scope"}`) })
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), 502)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1", ts.count())
	}
}

// An endless answer is cut at 1 MiB.
func TestEndlessBody(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"`))
		chunk := []byte(strings.Repeat("a", 64*1024))
		for i := 0; i < 1000; i++ { // 64 MiB unless the client stops reading
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), 502)
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

// Failed exchanges are logged once, with what an operator needs and no secret; cache hits are not
// logged at the default level.
func TestLogLines(t *testing.T) {
	logs := captureLogs(t)
	var n atomic.Int32
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			answer(w, 401, `{"error":"invalid_client","error_description":"Client authentication failed"}`)
			return
		}
		issue(exchangedToken, 3600)(w, r)
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))

	wantStatus(t, call(h, "Bearer "+userToken), 502)
	line := logs.String()
	for _, want := range []string{
		"level=error", "middleware=test-obo", `msg="token exchange failed"`, "flow=rfc8693",
		"host=" + strings.TrimPrefix(ts.srv.URL, "http://"), "status=502", "error=invalid_client",
		`error_description="Client authentication failed"`, "latency=", "subject=" + tokenHash(userToken),
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s:\n%s", want, line)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("want one line, got:\n%s", line)
	}

	wantStatus(t, call(h, "Bearer "+userToken), 204)
	before := logs.String()
	wantStatus(t, call(h, "Bearer "+userToken), 204)
	if logs.String() != before {
		t.Errorf("a cache hit was logged: %s", strings.TrimPrefix(logs.String(), before))
	}
}

func TestLogLevels(t *testing.T) {
	tests := []struct {
		level string
		want  int // lines for one refused request, one successful exchange and one failed exchange
	}{
		{"debug", 4}, // + "configured" at New
		{"info", 1},
		{"warn", 1},
		{"error", 1},
		{"off", 0},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.level, func(t *testing.T) {
			logs := captureLogs(t)
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.PostForm.Get("subject_token") == "bad" {
					answer(w, 500, `{}`)
					return
				}
				issue(exchangedToken, 3600)(w, r)
			})
			c := testConfig(ts.url())
			c.LogLevel = tc.level
			h, _ := newTestMiddleware(t, c)
			call(h, "")
			call(h, "Bearer "+userToken)
			call(h, "Bearer bad")
			if got := strings.Count(logs.String(), "\n"); got != tc.want {
				t.Errorf("%d lines, want %d:\n%s", got, tc.want, logs.String())
			}
		})
	}
}
