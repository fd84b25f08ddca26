package oboexchange

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The exact form and headers of one exchange in each flow.
func TestTokenRequest(t *testing.T) {
	const entraClient = "60dea49a-255b-48b5-b0c0-0974ac1c0b53"
	tests := []struct {
		name        string
		configure   func(c *Config)
		wantForm    url.Values
		wantHeaders map[string]string
	}{
		{
			name: "rfc8693",
			configure: func(c *Config) {
				c.Audience = []string{"backend-a", "backend-b"}
				c.Resource = []string{"https://api.example.com/a", "https://api.example.com/b"}
				c.Scopes = []string{"read", "write"}
				c.RequestedTokenType = "urn:ietf:params:oauth:token-type:jwt"
				c.ExtraParams = map[string]string{"tenant": "blue"}
			},
			wantForm: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {userToken},
				"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":             {"backend-a", "backend-b"},
				"resource":             {"https://api.example.com/a", "https://api.example.com/b"},
				"scope":                {"read write"},
				"requested_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
				"tenant":               {"blue"},
			},
			wantHeaders: map[string]string{"Authorization": basicAuth(testClientID, testClientSecret)},
		},
		{
			name: "entra",
			configure: func(c *Config) {
				c.Flow = "entra"
				c.ClientID = entraClient
				c.Audience = nil
				c.Scopes = []string{"api://backend/.default"}
			},
			wantForm: url.Values{
				"grant_type":          {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
				"assertion":           {userToken},
				"requested_token_use": {"on_behalf_of"},
				"scope":               {"api://backend/.default"},
				"client_id":           {entraClient},
				"client_secret":       {testClientSecret},
			},
			wantHeaders: map[string]string{"Authorization": ""}, // client_secret_post
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, issue(exchangedToken, 3600))
			c := testConfig(ts.url())
			tc.configure(c)
			h, _ := newTestMiddleware(t, c)

			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)

			got := ts.last(t)
			wantForm(t, got.form, tc.wantForm)
			tc.wantHeaders["Accept"] = "application/json"
			tc.wantHeaders["Content-Type"] = "application/x-www-form-urlencoded"
			for k, v := range tc.wantHeaders {
				if got.header.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, got.header.Get(k), v)
				}
			}
		})
	}
}

func TestClientAuthMethods(t *testing.T) {
	tests := []struct {
		name         string
		flow, method string
		wantHeader   string
		wantID       bool
		wantSecret   bool
	}{
		{name: "rfc8693 default", flow: "rfc8693", method: "", wantHeader: basicAuth(testClientID, testClientSecret)},
		{name: "rfc8693 basic", flow: "rfc8693", method: "client_secret_basic", wantHeader: basicAuth(testClientID, testClientSecret)},
		{name: "rfc8693 post", flow: "rfc8693", method: "client_secret_post", wantID: true, wantSecret: true},
		{name: "rfc8693 none", flow: "rfc8693", method: "none", wantID: true},
		{name: "entra default", flow: "entra", method: "", wantID: true, wantSecret: true},
		{name: "entra basic", flow: "entra", method: "client_secret_basic", wantHeader: basicAuth(testClientID, testClientSecret)},
		{name: "entra none", flow: "entra", method: "none", wantID: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
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

func TestParseTokenResponse(t *testing.T) {
	tests := []struct {
		name      string
		flow      string // rfc8693 unless set
		status    int
		body      string
		header    string
		expiresIn time.Duration
		fail      int // expected failure status; 0 for success
		cacheable bool
		oauthErr  string
	}{
		{name: "rfc8693", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":60}`, header: "Bearer at", expiresIn: time.Minute},
		{name: "entra", flow: flowEntra, status: 200, body: `{"token_type":"Bearer","scope":"https://graph.microsoft.com/user.read","expires_in":3269,"ext_expires_in":0,"access_token":"eyJ0","refresh_token":"OAQ"}`, header: "Bearer eyJ0", expiresIn: 3269 * time.Second},
		{name: "expires_in as string", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":"3599"}`, header: "Bearer at", expiresIn: 3599 * time.Second},
		{name: "fractional expires_in", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":1.5}`, header: "Bearer at", expiresIn: 1500 * time.Millisecond},
		{name: "zero expires_in", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":0}`, header: "Bearer at"},
		{name: "huge expires_in capped", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":1e300}`, header: "Bearer at", expiresIn: maxExpiresIn * time.Second},
		{name: "created 201", status: 201, body: bearerAccessToken + `"access_token":"at"}`, header: "Bearer at"},
		{name: "expires_in not a number", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":"soon"}`, fail: 502},
		{name: "expires_in object", status: 200, body: bearerAccessToken + `"access_token":"at","expires_in":{}}`, fail: 502},
		{name: "empty access_token", status: 200, body: bearerAccessToken + `"access_token":""}`, fail: 502},
		{name: "access_token not a string", status: 200, body: bearerAccessToken + `"access_token":12}`, fail: 502},
		{name: "space in access_token", status: 200, body: bearerAccessToken + `"access_token":"a b"}`, fail: 502},
		{name: "non-ascii access_token", status: 200, body: bearerAccessToken + `"access_token":"caf\u00e9"}`, fail: 502},
		{name: "access_token over 16 KiB", status: 200, body: bearerAccessToken + `"access_token":"` + strings.Repeat("a", maxTokenLength+1) + `"}`, fail: 502},
		{name: "truncated", status: 200, body: bearerAccessToken + `"access_token":"a`, fail: 502},
		{name: "empty body", status: 200, body: ``, fail: 502},
		{name: "invalid_grant", status: 400, body: `{"error":"invalid_grant","error_description":"expired"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "access_denied (Dex)", status: 401, body: `{"error":"access_denied","error_description":"failed to verify subject token"}`, fail: 401, cacheable: true, oauthErr: "access_denied"},
		{name: "invalid_grant with claims", status: 400, body: `{"error":"invalid_grant","claims":"{}"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "entra consent (AADSTS65001)", status: 400, body: `{"error":"invalid_grant","error_description":"AADSTS65001: consent","error_codes":[65001],"suberror":"consent_required"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "interaction_required", status: 400, body: `{"error":"interaction_required","claims":"{}"}`, fail: 401, oauthErr: "interaction_required"},
		{name: "consent_required", status: 400, body: `{"error":"consent_required"}`, fail: 401, oauthErr: "consent_required"},
		{name: "invalid_request", status: 400, body: `{"error":"invalid_request"}`, fail: 502, oauthErr: "invalid_request"},
		{name: "temporarily_unavailable", status: 503, body: `{"error":"temporarily_unavailable"}`, fail: 502, oauthErr: "temporarily_unavailable"},
		{name: "html error page", status: 502, body: `<html>bad gateway</html>`, fail: 502},
		{name: "error in a 200", status: 200, body: `{"error":"invalid_grant"}`, fail: 502, oauthErr: "invalid_grant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flow := tc.flow
			if flow == "" {
				flow = flowRFC8693
			}
			res, f := parseTokenResponse(tc.status, []byte(tc.body), flow, "")
			if tc.fail == 0 {
				if f != nil {
					t.Fatalf("failure %q, want success", f.reason)
				}
				if res.header != tc.header || res.expiresIn != tc.expiresIn {
					t.Errorf("header %q expiresIn %v, want %q %v", res.header, res.expiresIn, tc.header, tc.expiresIn)
				}
				return
			}
			if f == nil {
				t.Fatalf("success, want a %d", tc.fail)
			}
			if f.status != tc.fail || f.cacheable != tc.cacheable || f.oauthError != tc.oauthErr {
				t.Errorf("failure %d cacheable %v error %q, want %d %v %q", f.status, f.cacheable, f.oauthError, tc.fail, tc.cacheable, tc.oauthErr)
			}
		})
	}
}

// Only a token the backend may take as a bearer token is forwarded: what an RFC 8693 server says
// it issued must be what was asked for (RFC 8693 section 2.2.1).
func TestIssuedTokenType(t *testing.T) {
	const (
		accessToken  = `"urn:ietf:params:oauth:token-type:access_token"`
		jwt          = `"urn:ietf:params:oauth:token-type:jwt"`
		idToken      = `"urn:ietf:params:oauth:token-type:id_token"`
		refreshToken = `"urn:ietf:params:oauth:token-type:refresh_token"`
	)
	tests := []struct {
		name      string
		flow      string
		requested string // requestedTokenType
		issued    string // issued_token_type, JSON; empty: absent
		tokenType string // token_type, JSON
		ok        bool
	}{
		{"access token", flowRFC8693, "", accessToken, `"Bearer"`, true},
		{"lower-case bearer", flowRFC8693, "", accessToken, `"bearer"`, true},
		{"no token_type", flowRFC8693, "", accessToken, `null`, true},
		{"JWT for an access-token request, Bearer", flowRFC8693, "", jwt, `"Bearer"`, true},
		{"JWT for an access-token request, N_A", flowRFC8693, "", jwt, `"N_A"`, false},
		{"access token with N_A", flowRFC8693, "", accessToken, `"N_A"`, false},
		{"refresh token", flowRFC8693, "", refreshToken, `"N_A"`, false},
		{"id_token", flowRFC8693, "", idToken, `"N_A"`, false},
		{"id_token said Bearer", flowRFC8693, "", idToken, `"Bearer"`, false},
		{"no issued_token_type", flowRFC8693, "", "", `"Bearer"`, false},
		{"JWT requested and issued", flowRFC8693, tokenTypeJWT, jwt, `"Bearer"`, true},
		{"JWT requested and issued, N_A", flowRFC8693, tokenTypeJWT, jwt, `"N_A"`, true},
		{"JWT requested, access token issued", flowRFC8693, tokenTypeJWT, accessToken, `"Bearer"`, false},
		{"id_token requested and issued", flowRFC8693, "urn:ietf:params:oauth:token-type:id_token", idToken, `"N_A"`, true},
		{"access token requested explicitly, N_A", flowRFC8693, tokenTypeAccessToken, accessToken, `"N_A"`, false},
		{"DPoP", flowRFC8693, "", accessToken, `"DPoP"`, false},
		{"entra", flowEntra, "", "", `"Bearer"`, true},
		{"entra N_A", flowEntra, "", "", `"N_A"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"access_token":"at","token_type":` + tc.tokenType
			if tc.issued != "" {
				body += `,"issued_token_type":` + tc.issued
			}
			_, f := parseTokenResponse(200, []byte(body+"}"), tc.flow, tc.requested)
			if tc.ok && f != nil {
				t.Errorf("refused: %s", f.reason)
			}
			if !tc.ok && (f == nil || f.status != http.StatusBadGateway) {
				t.Errorf("failure %v, want a 502", f)
			}
		})
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
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, reply(400, tc.body))
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
	ts := newTokenServer(t, reply(400, `{"error":"invalid_scope"}`))
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), 502)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1", ts.count())
	}
}

// An answer with more than 64 KiB of headers is refused as it arrives (Go's default would read 10
// MiB of them): 502, not retried, and the headers of the token endpoint and of the issuer's
// metadata are both bounded.
func TestOversizedHeaders(t *testing.T) {
	logs := captureLogs(t)
	big := func(w http.ResponseWriter) {
		for i := 0; i < 100; i++ {
			w.Header().Add("X-Padding", strings.Repeat("p", 1024))
		}
	}
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		big(w)
		issue(exchangedToken, 3600)(w, r)
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	wantStatus(t, call(h, "Bearer "+userToken), 502)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1 (not retried)", ts.count())
	}
	if !strings.Contains(logs.String(), "headers are larger than 64 KiB") {
		t.Errorf("the log does not say why:\n%s", logs.String())
	}

	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		big(w)
		answer(w, 200, `{"issuer":"http://`+r.Host+`","token_endpoint":"`+ts.url()+`"}`)
	}))
	t.Cleanup(func() { issuer.Close() })
	c := testConfig("")
	c.Issuer = issuer.URL
	c.Audience = []string{"oversized-metadata-headers"}
	h, _ = newTestMiddleware(t, c)
	wantStatus(t, call(h, "Bearer "+userToken), 502)
	if ts.count() != 1 {
		t.Errorf("the discovered endpoint was called: calls = %d", ts.count())
	}
}

// An endless answer is cut at 1 MiB: the client stops reading there, answers 502, and the
// server's writes fail soon after (the socket buffers of both ends hold a few MiB at most).
func TestEndlessBody(t *testing.T) {
	captureLogs(t)
	written := make(chan int, 1)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"`))
		chunk := []byte(strings.Repeat("a", 64*1024))
		n := 0
		for n < 1<<30 { // 1 GiB: endless for the client, bounded for the test
			m, err := w.Write(chunk)
			n += m
			if err != nil {
				break
			}
		}
		written <- n
	})
	c := testConfig(ts.url())
	c.Timeout = "30s"
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), 502)
	n := <-written
	t.Logf("written %d KiB", n>>10)
	if n > 16<<20 {
		t.Errorf("the server could write %d MiB before the client stopped reading, want about 1", n>>20)
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

func TestVisibleASCII(t *testing.T) {
	if len(visibleASCII) != 0x7e-0x21+1 {
		t.Fatalf("visibleASCII has %d characters", len(visibleASCII))
	}
	for c := 0; c < 256; c++ {
		want := c >= 0x21 && c <= 0x7e
		if got := isVisibleASCII("a" + string([]byte{byte(c)}) + "b"); got != want {
			t.Errorf("byte %#x: %v, want %v", c, got, want)
		}
	}
	if isVisibleASCII("") != true {
		t.Error("empty string")
	}
}

// A 5xx whose retry then times out is a 504, and the log line tells both failures.
func TestRetryThenTimeoutLogsBoth(t *testing.T) {
	logs := captureLogs(t)
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	ts := newTokenServer(t, firstThen(reply(503, `{"error":"temporarily_unavailable","error_description":"maintenance"}`), hang))
	c := testConfig(ts.url())
	c.Timeout = "1s"
	h, _ := newTestMiddleware(t, c)
	wantStatus(t, call(h, "Bearer "+userToken), http.StatusGatewayTimeout)
	for _, want := range []string{"status=504", "within the timeout", "the first attempt failed too", "(HTTP 503)", "error=temporarily_unavailable", "error_description=maintenance"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log line lacks %q:\n%s", want, logs.String())
		}
	}
}
