package oboexchange

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
)

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
	hang := hanging(t)
	// A redirect is not followed: the server it points at must receive nothing.
	elsewhere := newTokenServer(t, issue(exchangedToken, 60))
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.url(), http.StatusTemporaryRedirect)
	}
	throttled := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		answer(w, http.StatusTooManyRequests, `{"error":"too_many_requests","error_description":"SERVER-DETAIL"}`)
	}
	ok := issue(exchangedToken, 60)
	bearer := "Bearer " + userToken
	tests := []struct {
		name          string
		authorization string
		respond       func(w http.ResponseWriter, r *http.Request)
		status        int
		challenge     string
		errorCode     string
	}{
		{"exchanged", bearer, ok, 204, "", ""},
		{"no token", "", ok, 401, "Bearer", "unauthorized"},
		{"basic scheme", "Basic dXNlcjpwYXNz", ok, 401, "Bearer", "unauthorized"},
		{"empty bearer", "Bearer ", ok, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"not a b64token", "Bearer a,b", ok, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"invalid_grant", bearer, reply(400, `{"error":"invalid_grant","error_description":"Subject token expired SERVER-DETAIL"}`), 401, `Bearer error="invalid_token"`, "invalid_token"},
		{"access_denied", bearer, reply(401, `{"error":"access_denied","error_description":"failed to verify SERVER-DETAIL"}`), 401, `Bearer error="invalid_token"`, "invalid_token"},
		{"refresh token issued", bearer, reply(200, `{"access_token":"rt","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token","token_type":"N_A"}`), 502, "", "token_exchange_failed"},
		{"no issued_token_type", bearer, reply(200, `{"access_token":"at","token_type":"Bearer","expires_in":60}`), 502, "", "token_exchange_failed"},
		{"invalid_client", bearer, reply(401, `{"error":"invalid_client","error_description":"bad secret SERVER-DETAIL"}`), 502, "", "token_exchange_failed"},
		{"unauthorized_client", bearer, reply(400, `{"error":"unauthorized_client"}`), 502, "", "token_exchange_failed"},
		{"invalid_scope", bearer, reply(400, `{"error":"invalid_scope"}`), 502, "", "token_exchange_failed"},
		{"invalid_target", bearer, reply(400, `{"error":"invalid_target"}`), 502, "", "token_exchange_failed"},
		{"server error", bearer, reply(500, `oops`), 502, "", "token_exchange_failed"},
		{"not json", bearer, reply(200, `<html>login</html>`), 502, "", "token_exchange_failed"},
		{"no access_token", bearer, reply(200, `{"token_type":"Bearer","expires_in":60}`), 502, "", "token_exchange_failed"},
		{"header injection", bearer, reply(200, bearerAccessToken+`"access_token":"abc\r\nX-Evil: 1","expires_in":60}`), 502, "", "token_exchange_failed"},
		{"unsupported token_type", bearer, reply(200, `{"access_token":"abc","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"DPoP","expires_in":60}`), 502, "", "token_exchange_failed"},
		{"oversized", bearer, reply(200, bearerAccessToken+`"access_token":"`+strings.Repeat("a", maxResponseBody)+`"}`), 502, "", "token_exchange_failed"},
		{"redirect", bearer, redirect, 502, "", "token_exchange_failed"},
		{"timeout", bearer, hang, 504, "", "token_exchange_timeout"},
		{"throttled", bearer, throttled, 503, "", "token_exchange_throttled"},
	}
	for _, tc := range tests {
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
			if tc.status == 503 && rec.Header().Get("Retry-After") != "7" {
				t.Errorf("Retry-After = %q, want the server's 7", rec.Header().Get("Retry-After"))
			}
		})
	}
	if elsewhere.count() != 0 {
		t.Errorf("the redirect was followed: its target received %d requests", elsewhere.count())
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
