package oboexchange

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantForm compares the whole form the token endpoint received with the expected one.
func wantForm(t *testing.T, got, want url.Values) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("form:\n got %v\nwant %v", got, want)
	}
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

func TestRFC8693Request(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := testConfig(ts.url())
	c.Audience = []string{"backend-a", "backend-b"}
	c.Resource = []string{"https://api.example.com/a", "https://api.example.com/b"}
	c.Scopes = []string{"read", "write"}
	c.RequestedTokenType = "urn:ietf:params:oauth:token-type:jwt"
	c.ExtraParams = map[string]string{"tenant": "blue"}
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)

	got := ts.last(t)
	wantForm(t, got.form, url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":        {userToken},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
		"audience":             {"backend-a", "backend-b"},
		"resource":             {"https://api.example.com/a", "https://api.example.com/b"},
		"scope":                {"read write"},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"tenant":               {"blue"},
	})
	wantHeaders := map[string]string{
		"Authorization": basicAuth(testClientID, testClientSecret),
		"Accept":        "application/json",
		"Content-Type":  "application/x-www-form-urlencoded",
	}
	for k, v := range wantHeaders {
		if got.header.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, got.header.Get(k), v)
		}
	}
}

func TestEntraRequest(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := CreateConfig()
	c.Flow = "entra"
	c.TokenEndpoint = ts.url()
	c.ClientID = "60dea49a-255b-48b5-b0c0-0974ac1c0b53"
	c.ClientSecret = testClientSecret
	c.Scopes = []string{"api://backend/.default"}
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)

	got := ts.last(t)
	wantForm(t, got.form, url.Values{
		"grant_type":          {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":           {userToken},
		"requested_token_use": {"on_behalf_of"},
		"scope":               {"api://backend/.default"},
		"client_id":           {"60dea49a-255b-48b5-b0c0-0974ac1c0b53"},
		"client_secret":       {testClientSecret},
	})
	if a := got.header.Get("Authorization"); a != "" {
		t.Errorf("Authorization = %q, want none with client_secret_post", a)
	}
}

func TestClientAuthMethods(t *testing.T) {
	tests := []struct {
		flow, method string
		wantHeader   string
		wantID       bool
		wantSecret   bool
	}{
		{flow: "rfc8693", method: "", wantHeader: basicAuth(testClientID, testClientSecret)},
		{flow: "rfc8693", method: "client_secret_basic", wantHeader: basicAuth(testClientID, testClientSecret)},
		{flow: "rfc8693", method: "client_secret_post", wantID: true, wantSecret: true},
		{flow: "rfc8693", method: "none", wantID: true},
		{flow: "entra", method: "", wantID: true, wantSecret: true},
		{flow: "entra", method: "client_secret_basic", wantHeader: basicAuth(testClientID, testClientSecret)},
		{flow: "entra", method: "none", wantID: true},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.flow+"/"+tc.method, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, issue(exchangedToken, 3600))
			c := testConfig(ts.url())
			c.Flow = tc.flow
			c.ClientAuthMethod = tc.method
			if tc.flow == "entra" {
				c.Audience = nil
				c.Scopes = []string{"api://backend/.default"}
			}
			if tc.method == "none" {
				c.ClientSecret = ""
			}
			h, _ := newTestMiddleware(t, c)
			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)

			got := ts.last(t)
			if a := got.header.Get("Authorization"); a != tc.wantHeader {
				t.Errorf("Authorization = %q, want %q", a, tc.wantHeader)
			}
			if _, ok := got.form["client_id"]; ok != tc.wantID || (ok && got.form.Get("client_id") != testClientID) {
				t.Errorf("client_id = %q (present %v), want present %v", got.form.Get("client_id"), ok, tc.wantID)
			}
			if _, ok := got.form["client_secret"]; ok != tc.wantSecret || (ok && got.form.Get("client_secret") != testClientSecret) {
				t.Errorf("client_secret present %v, want %v", ok, tc.wantSecret)
			}
		})
	}
}

func TestForwardsExchangedTokenOnly(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	rec := call(h, "Bearer "+userToken)

	wantStatus(t, rec, http.StatusNoContent)
	if got := b.header.Get("Authorization"); got != "Bearer "+exchangedToken {
		t.Errorf("backend Authorization = %q, want the exchanged token", got)
	}
	for k, vs := range b.header {
		for _, v := range vs {
			if strings.Contains(v, userToken) {
				t.Errorf("backend header %s carries the original token", k)
			}
		}
	}
}

func TestTokenTypeBecomesBearer(t *testing.T) {
	for _, tokenType := range []string{`"Bearer"`, `"bearer"`, `"N_A"`, `null`} {
		tokenType := tokenType
		t.Run(tokenType, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				answer(w, 200, `{"access_token":"`+exchangedToken+`","token_type":`+tokenType+`,"expires_in":60}`)
			})
			h, b := newTestMiddleware(t, testConfig(ts.url()))
			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
			if got := b.header.Get("Authorization"); got != "Bearer "+exchangedToken {
				t.Errorf("backend Authorization = %q", got)
			}
		})
	}
}

func TestUpstreamHeader(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := testConfig(ts.url())
	c.UpstreamHeader = "X-Backend-Token"
	h, b := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	if got := b.header.Get("X-Backend-Token"); got != "Bearer "+exchangedToken {
		t.Errorf("X-Backend-Token = %q", got)
	}
	if got := b.header.Get("Authorization"); got != "" {
		t.Errorf("the original Authorization header reached the backend: %q", got)
	}
}

// The response table of the README: what the client gets and whether the backend is called.
func TestResponseTable(t *testing.T) {
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	tests := []struct {
		name          string
		authorization string
		respond       func(w http.ResponseWriter, r *http.Request)
		status        int
		challenge     string
		errorCode     string
	}{
		{name: "exchanged", authorization: "Bearer " + userToken, respond: issue(exchangedToken, 60), status: 204},
		{name: "no token", respond: issue(exchangedToken, 60), status: 401, challenge: "Bearer", errorCode: "unauthorized"},
		{name: "basic scheme", authorization: "Basic dXNlcjpwYXNz", respond: issue(exchangedToken, 60), status: 401, challenge: `Bearer error="invalid_request"`, errorCode: "invalid_request"},
		{name: "empty bearer", authorization: "Bearer ", respond: issue(exchangedToken, 60), status: 401, challenge: `Bearer error="invalid_request"`, errorCode: "invalid_request"},
		{name: "invalid_grant", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 400, `{"error":"invalid_grant","error_description":"Subject token expired SERVER-DETAIL"}`)
		}, status: 401, challenge: `Bearer error="invalid_token"`, errorCode: "invalid_token"},
		{name: "invalid_client", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 401, `{"error":"invalid_client","error_description":"bad secret SERVER-DETAIL"}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "unauthorized_client", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 400, `{"error":"unauthorized_client"}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "invalid_scope", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 400, `{"error":"invalid_scope"}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "invalid_target", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 400, `{"error":"invalid_target"}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "server error", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 500, `oops`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "not json", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, `<html>login</html>`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "no access_token", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, `{"token_type":"Bearer","expires_in":60}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "header injection", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, `{"access_token":"abc\r\nX-Evil: 1","expires_in":60}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "unsupported token_type", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, `{"access_token":"abc","token_type":"DPoP","expires_in":60}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "oversized", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, `{"access_token":"`+strings.Repeat("a", maxResponseBody)+`"}`)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "redirect", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/token", http.StatusTemporaryRedirect)
		}, status: 502, errorCode: "token_exchange_failed"},
		{name: "timeout", authorization: "Bearer " + userToken, respond: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-slow:
			case <-r.Context().Done():
			}
		}, status: 504, errorCode: "token_exchange_timeout"},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, tc.respond)
			c := testConfig(ts.url())
			c.Timeout = "300ms"
			h, b := newTestMiddleware(t, c)

			rec := call(h, tc.authorization)

			wantStatus(t, rec, tc.status)
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			wantBackendCalls := 0
			if tc.status == 204 {
				wantBackendCalls = 1
			}
			if b.count() != wantBackendCalls {
				t.Errorf("backend calls = %d, want %d", b.count(), wantBackendCalls)
			}
			if tc.errorCode == "" {
				return
			}
			checkErrorBody(t, rec, tc.errorCode)
		})
	}
}

// checkErrorBody asserts a short JSON error body with the expected code that holds nothing from
// the request or the authorization server.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder, code string) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body is not JSON: %q", rec.Body.String())
	}
	if body["error"] != code || body["error_description"] == "" || len(body) != 2 {
		t.Errorf("body = %v, want error %q and a description", body, code)
	}
	for _, leak := range []string{userToken, exchangedToken, testClientSecret, "SERVER-DETAIL"} {
		if strings.Contains(rec.Body.String(), leak) {
			t.Errorf("body holds %q", leak)
		}
	}
}

func TestConnectionFailureIs502(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 60))
	endpoint := ts.url()
	ts.srv.Close()
	h, b := newTestMiddleware(t, testConfig(endpoint))

	rec := call(h, "Bearer "+userToken)

	wantStatus(t, rec, http.StatusBadGateway)
	checkErrorBody(t, rec, "token_exchange_failed")
	if b.count() != 0 {
		t.Error("backend called")
	}
}

func TestTimeoutBoundsTheExchange(t *testing.T) {
	captureLogs(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{"access_token":`)) // then hang mid-body
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := testConfig(ts.url())
	c.Timeout = "200ms"
	h, _ := newTestMiddleware(t, c)

	start := time.Now()
	rec := call(h, "Bearer "+userToken)
	elapsed := time.Since(start)

	wantStatus(t, rec, http.StatusGatewayTimeout)
	if elapsed > 5*time.Second {
		t.Errorf("the exchange took %v with a 200ms timeout", elapsed)
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

// The manifest's testData must make New succeed without network, as the Plugin Catalog checks.
func TestManifestTestData(t *testing.T) {
	data, err := os.ReadFile(".traefik.yml")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "\ntestData: ")
	if !ok {
		t.Fatal(".traefik.yml has no one-line testData")
	}
	line, _, _ := strings.Cut(after, "\n")
	c := CreateConfig()
	if err := json.Unmarshal([]byte(line), c); err != nil {
		t.Fatalf("testData is not a JSON-style YAML map: %v", err)
	}
	if _, err := New(context.Background(), http.NotFoundHandler(), c, "catalog"); err != nil {
		t.Fatalf("New on testData: %v", err)
	}
}
