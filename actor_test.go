package oboexchange

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Actor tokens of the tests; captureLogs fails a test that logs one.
var (
	agentA       = remember("agent-a-identity-token-0123456789")
	agentB       = remember("agent-b-identity-token-9876543210")
	gatewayActor = remember("gateway-service-account-token-abcdef")
	ccToken      = remember("gateway-client-credentials-token-abcdef")
)

// actorConfig is an RFC 8693 configuration with an actor token source.
func actorConfig(endpoint, actorToken string) *Config {
	c := testConfig(endpoint)
	c.ActorToken = actorToken
	return c
}

// writeActorFile writes an actor token file and returns its path.
func writeActorFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "actor-token")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issuePerActor answers an exchange with a token naming its subject and actor, so tests can tell
// the exchanges apart.
func issuePerActor(w http.ResponseWriter, r *http.Request) {
	issue("x-"+r.PostForm.Get("subject_token")+"-"+r.PostForm.Get("actor_token"), 3600)(w, r)
}

// byGrant answers client-credentials requests with cc and token exchanges with exchange.
func byGrant(cc, exchange func(w http.ResponseWriter, r *http.Request)) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PostForm.Get("grant_type") == grantClientCredentials {
			cc(w, r)
			return
		}
		exchange(w, r)
	}
}

// grantCalls counts the requests of one grant type the token server received.
func grantCalls(ts *tokenServer, grant string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, r := range ts.reqs {
		if r.form.Get("grant_type") == grant {
			n++
		}
	}
	return n
}

func TestActorConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"entra", func(c *Config) {
			c.Flow = "entra"
			c.Audience = nil
			c.Scopes = []string{"api://x/.default"}
			c.ActorToken = "client_credentials"
		}, `actorToken: flow "entra" (On-Behalf-Of) has no actor token`},
		{"unknown source", func(c *Config) { c.ActorToken = "env:TOKEN" }, `actorToken: "env:TOKEN" is not file:<path>, header:<Name> or client_credentials`},
		{"bare word", func(c *Config) { c.ActorToken = "gateway" }, `actorToken: "gateway" is not file:<path>`},
		{"file without path", func(c *Config) { c.ActorToken = "file: " }, "actorToken: file: needs a path"},
		{"bad header name", func(c *Config) { c.ActorToken = "header:X Agent" }, `actorToken: "X Agent" is not a valid header name`},
		{"empty header name", func(c *Config) { c.ActorToken = "header:" }, `actorToken: "" is not a valid header name`},
		{"header of the user's token", func(c *Config) { c.ActorToken = "header:authorization" }, "actorToken: header Authorization is also in tokenSources"},
		{"client_credentials with a value", func(c *Config) { c.ActorToken = "client_credentials:x" }, "client_credentials takes no value"},
		{"client_credentials of a public client", func(c *Config) {
			c.ActorToken = "client_credentials"
			c.ClientSecret = ""
			c.ClientAuthMethod = "none"
		}, "client_credentials needs a confidential client"},
		{"scopes without actor", func(c *Config) { c.ActorScopes = []string{"agent"} }, "actorTokenType and actorScopes describe an actor token"},
		{"type without actor", func(c *Config) { c.ActorTokenType = tokenTypeJWT }, "actorTokenType and actorScopes describe an actor token"},
		{"scopes with a header actor", func(c *Config) {
			c.ActorToken = "header:X-Agent-Token"
			c.ActorScopes = []string{"agent"}
		}, "actorScopes: these are the scopes of the client-credentials request"},
		{"missing actor file", func(c *Config) { c.ActorToken = "file:/nonexistent/actor" }, "actorToken: open /nonexistent/actor"},
		{"empty actor file", func(c *Config) { c.ActorToken = "file:" + writeActorFile(t, " \n") }, "the file is empty"},
		{"actor file without a token", func(c *Config) { c.ActorToken = "file:" + writeActorFile(t, "two tokens") }, "the file does not hold one token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantConfigError(t, tc.modify, tc.want) })
	}
}

// The actor token type defaults by source, an explicit one is kept, and the fast path is off only
// for a header: actor.
func TestActorDefaults(t *testing.T) {
	path := writeActorFile(t, gatewayActor)
	tests := []struct {
		name, actorToken, actorTokenType string
		wantKind, wantType               string
		wantFast                         bool
	}{
		{"none", "", "", "", "", true},
		{"file", "file:" + path, "", actorFile, tokenTypeJWT, true},
		{"header", "header:x-agent-token", "", actorHeader, tokenTypeJWT, false},
		{"client_credentials", "Client_Credentials", "", actorClientCredentials, tokenTypeAccessToken, true},
		{"explicit type", "header:X-Agent-Token", "urn:ietf:params:oauth:token-type:id_token", actorHeader, "urn:ietf:params:oauth:token-type:id_token", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := actorConfig("https://idp.example.com/oauth2/token", tc.actorToken)
			c.ActorTokenType = tc.actorTokenType
			s, err := parseConfig(c)
			if err != nil {
				t.Fatal(err)
			}
			if s.actorKind != tc.wantKind || s.actorTokenType != tc.wantType {
				t.Errorf("kind %q type %q, want %q %q", s.actorKind, s.actorTokenType, tc.wantKind, tc.wantType)
			}
			h, _ := newTestMiddleware(t, c)
			if fast := h.(*Middleware).fastHeader != ""; fast != tc.wantFast {
				t.Errorf("fast path %v, want %v", fast, tc.wantFast)
			}
		})
	}
}

// file: sends the file's token as actor_token, with the default type, and reads the file again
// when it changes; a file that disappears keeps the last good token in use.
func TestActorFile(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, issuePerActor)
	path := writeActorFile(t, gatewayActor+"\n")
	h, b := newTestMiddleware(t, actorConfig(ts.url(), "file:"+path))

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	wantForm(t, ts.last(t).form, url.Values{
		"grant_type":         {grantTokenExchange},
		"subject_token":      {userToken},
		"subject_token_type": {tokenTypeAccessToken},
		"actor_token":        {gatewayActor},
		"actor_token_type":   {tokenTypeJWT},
		"audience":           {"backend"},
	})
	if got := b.header.Get("Authorization"); got != "Bearer x-"+userToken+"-"+gatewayActor {
		t.Errorf("backend Authorization = %q", got)
	}

	rotated := remember("gateway-service-account-token-rotated")
	if err := os.WriteFile(path, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(1)), http.StatusNoContent)
	if got := ts.last(t).form.Get("actor_token"); got != rotated {
		t.Errorf("after rotation actor_token = %q", got)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(2)), http.StatusNoContent)
	if got := ts.last(t).form.Get("actor_token"); got != rotated {
		t.Errorf("after removal actor_token = %q, want the last good one", got)
	}
	if !strings.Contains(logs.String(), "actor token file could not be read again") {
		t.Errorf("no warning in the log: %s", logs.String())
	}
	if ts.count() != 3 {
		t.Errorf("token endpoint calls = %d, want 3", ts.count())
	}
}

// An expired JWT in the actor file is not sent: 502 at once.
func TestActorFileExpired(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerActor)
	expired := testJWT(map[string]interface{}{"sub": "gateway", "exp": time.Now().Add(-time.Minute).Unix()})
	h, _ := newTestMiddleware(t, actorConfig(ts.url(), "file:"+writeActorFile(t, expired)))

	rec := call(h, "Bearer "+userToken)

	wantStatus(t, rec, http.StatusBadGateway)
	checkErrorBody(t, rec, "token_exchange_failed")
	if ts.count() != 0 {
		t.Errorf("token endpoint calls = %d, want 0", ts.count())
	}
}

// header: sends the caller's token as actor_token, removes the header before forwarding (on a
// cache hit too), and keys the cache by user and actor together.
func TestActorHeader(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerActor)
	h, b := newTestMiddleware(t, actorConfig(ts.url(), "header:X-Agent-Token"))
	user2 := opaqueToken(3)

	steps := []struct {
		name, user, agentHeader, agent string
		wantCalls                      int
	}{
		{"agent A for the user", userToken, agentA, agentA, 1},
		{"agent B for the same user", userToken, "Bearer " + agentB, agentB, 2},
		{"agent A again: cached", userToken, agentA, agentA, 2},
		{"agent B again: cached", userToken, agentB, agentB, 2},
		{"agent A for another user", user2, agentA, agentA, 3},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			rec := callWith(h, "Authorization", "Bearer "+step.user, "X-Agent-Token", step.agentHeader)
			wantStatus(t, rec, http.StatusNoContent)
			if got := b.header.Get("Authorization"); got != "Bearer x-"+step.user+"-"+step.agent {
				t.Errorf("backend Authorization = %q, want the token issued for this user and agent", got)
			}
			if v, ok := b.header["X-Agent-Token"]; ok {
				t.Errorf("the actor header reached the backend: %q", v)
			}
			if ts.count() != step.wantCalls {
				t.Errorf("token endpoint calls = %d, want %d", ts.count(), step.wantCalls)
			}
		})
	}
	wantForm(t, ts.last(t).form, url.Values{
		"grant_type":         {grantTokenExchange},
		"subject_token":      {user2},
		"subject_token_type": {tokenTypeAccessToken},
		"actor_token":        {agentA},
		"actor_token_type":   {tokenTypeJWT},
		"audience":           {"backend"},
	})
}

// What a caller gets for a missing, malformed or expired actor token: nothing is sent to the
// authorization server, nothing reaches the backend.
func TestActorHeaderRefused(t *testing.T) {
	expired := testJWT(map[string]interface{}{"sub": "agent", "exp": time.Now().Add(-time.Minute).Unix()})
	tests := []struct {
		name      string
		headers   []string
		status    int
		challenge string
		errorCode string
	}{
		{"missing", nil, 401, "Bearer", "unauthorized"},
		{"twice", []string{"X-Agent-Token", agentA, "X-Agent-Token", agentB}, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"empty", []string{"X-Agent-Token", "Bearer "}, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"not a b64token", []string{"X-Agent-Token", "a,b"}, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"too long", []string{"X-Agent-Token", strings.Repeat("a", maxTokenLength+1)}, 400, `Bearer error="invalid_request"`, "invalid_request"},
		{"expired JWT", []string{"X-Agent-Token", expired}, 401, `Bearer error="invalid_token"`, "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, issuePerActor)
			h, b := newTestMiddleware(t, actorConfig(ts.url(), "header:X-Agent-Token"))

			rec := callWith(h, append([]string{"Authorization", "Bearer " + userToken}, tc.headers...)...)

			wantStatus(t, rec, tc.status)
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			checkErrorBody(t, rec, tc.errorCode)
			if ts.count() != 0 || b.count() != 0 {
				t.Errorf("token endpoint calls = %d, backend calls = %d; want none", ts.count(), b.count())
			}
		})
	}
}

// client_credentials: the gateway's own token, obtained at the same endpoint with the configured
// client authentication and actorScopes, is sent as actor_token and reused until it expires less
// the margin.
func TestActorClientCredentials(t *testing.T) {
	tests := []struct {
		name, method string
		wantForm     url.Values
		wantHeader   string
	}{
		{"client_secret_basic", "", url.Values{
			"grant_type": {grantClientCredentials}, "scope": {"agent.act profile"},
		}, basicAuth(testClientID, testClientSecret)},
		{"client_secret_post", "client_secret_post", url.Values{
			"grant_type": {grantClientCredentials}, "scope": {"agent.act profile"},
			"client_id": {testClientID}, "client_secret": {testClientSecret},
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, byGrant(reply(200, `{"access_token":"`+ccToken+`","token_type":"Bearer","expires_in":4}`), issuePerActor))
			c := actorConfig(ts.url(), "client_credentials")
			c.ClientAuthMethod = tc.method
			c.ActorScopes = []string{"agent.act", "profile"}
			c.ExpiryMargin = "1s"
			h, b := newTestMiddleware(t, c)

			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
			ts.mu.Lock()
			first := ts.reqs[0]
			ts.mu.Unlock()
			wantForm(t, first.form, tc.wantForm)
			if got := first.header.Get("Authorization"); got != tc.wantHeader {
				t.Errorf("client-credentials Authorization = %q, want %q", got, tc.wantHeader)
			}
			exchange := ts.last(t)
			if exchange.form.Get("actor_token") != ccToken || exchange.form.Get("actor_token_type") != tokenTypeAccessToken {
				t.Errorf("exchange actor_token %q type %q", exchange.form.Get("actor_token"), exchange.form.Get("actor_token_type"))
			}
			if got := b.header.Get("Authorization"); got != "Bearer x-"+userToken+"-"+ccToken {
				t.Errorf("backend Authorization = %q", got)
			}

			// Cached for expires_in less the margin: 3 s.
			a := h.(*Middleware).x.actor
			a.mu.Lock()
			left := a.expires - time.Since(epoch)
			a.mu.Unlock()
			if left <= 2*time.Second || left > 3*time.Second {
				t.Errorf("client-credentials token cached for %v, want about 3s", left)
			}
			wantStatus(t, call(h, "Bearer "+opaqueToken(4)), http.StatusNoContent)
			if n := grantCalls(ts, grantClientCredentials); n != 1 {
				t.Errorf("client-credentials requests = %d, want 1 while the token lives", n)
			}

			// Once it expires, the next exchange obtains a new one.
			a.mu.Lock()
			a.expires = time.Since(epoch) - 1
			a.mu.Unlock()
			wantStatus(t, call(h, "Bearer "+opaqueToken(5)), http.StatusNoContent)
			if n := grantCalls(ts, grantClientCredentials); n != 2 {
				t.Errorf("client-credentials requests = %d, want 2 after expiry", n)
			}
		})
	}
}

// Concurrent exchanges of different users that need the gateway's token share one
// client-credentials request.
func TestActorClientCredentialsSingleFlight(t *testing.T) {
	captureLogs(t)
	slowCC := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		answer(w, 200, `{"access_token":"`+ccToken+`","token_type":"Bearer","expires_in":3600}`)
	}
	ts := newTokenServer(t, byGrant(slowCC, issuePerActor))
	h, _ := newTestMiddleware(t, actorConfig(ts.url(), "client_credentials"))

	const n = 20
	var tokens []string
	for i := 0; i < n; i++ {
		tokens = append(tokens, opaqueToken(100+i))
	}
	callTogether(t, h, tokens, http.StatusNoContent)
	if cc, x := grantCalls(ts, grantClientCredentials), grantCalls(ts, grantTokenExchange); cc != 1 || x != n {
		t.Errorf("client-credentials requests = %d, exchanges = %d; want 1 and %d", cc, x, n)
	}
}

// A client-credentials request that fails is the gateway's fault: 502 whatever the server said,
// no exchange, nothing remembered against the user.
func TestActorClientCredentialsFailure(t *testing.T) {
	tests := []struct {
		name    string
		respond func(w http.ResponseWriter, r *http.Request)
	}{
		{"invalid_client", reply(401, `{"error":"invalid_client","error_description":"SERVER-DETAIL"}`)},
		{"invalid_grant", reply(400, `{"error":"invalid_grant"}`)},
		{"unauthorized_client", reply(400, `{"error":"unauthorized_client"}`)},
		{"server error", reply(500, `oops`)},
		{"N_A token type", reply(200, `{"access_token":"abc","token_type":"N_A","expires_in":60}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, byGrant(tc.respond, issuePerActor))
			h, b := newTestMiddleware(t, actorConfig(ts.url(), "client_credentials"))

			for i := 0; i < 2; i++ {
				rec := call(h, "Bearer "+userToken)
				wantStatus(t, rec, http.StatusBadGateway)
				checkErrorBody(t, rec, "token_exchange_failed")
			}
			if x := grantCalls(ts, grantTokenExchange); x != 0 || b.count() != 0 {
				t.Errorf("exchanges = %d, backend calls = %d; want none", x, b.count())
			}
			if cc := grantCalls(ts, grantClientCredentials); cc < 2 {
				t.Errorf("client-credentials requests = %d; the second request must try again", cc)
			}
		})
	}
}

// What the client gets when the server refuses an exchange that carried an actor token: a refusal
// that names the actor token is 401 when the caller sent it and 502 when it is the gateway's;
// other refusals keep their usual answer. The actor token never reaches the log, even quoted.
func TestActorRejection(t *testing.T) {
	actorInvalid := `{"error":"invalid_request","error_description":"actor_token is invalid: ACTOR"}`
	actorExpired := `{"error":"invalid_grant","error_description":"the actor token has expired"}`
	actorDenied := `{"error":"access_denied","error_description":"cannot verify actor_token ACTOR"}`
	subjectBad := `{"error":"invalid_grant","error_description":"subject token expired"}`
	typeUnsupported := `{"error":"invalid_request","error_description":"actor_token_type is not supported"}`
	noDelegation := `{"error":"invalid_request","error_description":"actor_token is not supported"}`
	tests := []struct {
		name, actorToken, body string
		status                 int
		errorCode              string
		remembered             bool // a second identical request does not reach the server
	}{
		{"header, invalid actor", "header", actorInvalid, 401, "invalid_token", true},
		{"header, expired actor", "header", actorExpired, 401, "invalid_token", true},
		{"header, denied actor", "header", actorDenied, 401, "invalid_token", true},
		{"header, bad subject", "header", subjectBad, 401, "invalid_token", true},
		{"header, unsupported type", "header", typeUnsupported, 502, "token_exchange_failed", false},
		{"header, no delegation", "header", noDelegation, 502, "token_exchange_failed", false},
		{"file, invalid actor", "file", actorInvalid, 502, "token_exchange_failed", false},
		{"file, expired actor", "file", actorExpired, 502, "token_exchange_failed", false},
		{"file, denied actor", "file", actorDenied, 502, "token_exchange_failed", false},
		{"file, bad subject", "file", subjectBad, 401, "invalid_token", true},
		{"client_credentials, expired actor", "client_credentials", actorExpired, 502, "token_exchange_failed", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			exchange := func(w http.ResponseWriter, r *http.Request) {
				answer(w, 400, strings.ReplaceAll(tc.body, "ACTOR", r.PostForm.Get("actor_token")))
			}
			ts := newTokenServer(t, byGrant(reply(200, `{"access_token":"`+ccToken+`","token_type":"Bearer","expires_in":3600}`), exchange))
			source := map[string]string{
				"header":             "header:X-Agent-Token",
				"file":               "file:" + writeActorFile(t, gatewayActor),
				"client_credentials": "client_credentials",
			}[tc.actorToken]
			h, b := newTestMiddleware(t, actorConfig(ts.url(), source))

			for i := 0; i < 2; i++ {
				rec := callWith(h, "Authorization", "Bearer "+userToken, "X-Agent-Token", agentA)
				wantStatus(t, rec, tc.status)
				checkErrorBody(t, rec, tc.errorCode)
			}
			wantCalls := 2
			if tc.remembered {
				wantCalls = 1
			}
			if x := grantCalls(ts, grantTokenExchange); x != wantCalls || b.count() != 0 {
				t.Errorf("exchanges = %d, backend calls = %d; want %d and none", x, b.count(), wantCalls)
			}
			if tc.actorToken == "client_credentials" && grantCalls(ts, grantClientCredentials) != 2 {
				t.Errorf("client-credentials requests = %d, want 2: a refused token is not used again", grantCalls(ts, grantClientCredentials))
			}
		})
	}
}

func TestActorRefused(t *testing.T) {
	tests := []struct {
		oauthError, description string
		want                    bool
	}{
		{"invalid_request", "actor_token is invalid", true},
		{"invalid_grant", "Actor token expired", true},
		{"access_denied", "failed to verify the ACTOR_TOKEN signature", true},
		{"invalid_request", "subject_token is invalid", false},
		{"invalid_grant", "", false},
		{"invalid_request", "actor_token_type is not supported", false},
		{"invalid_request", "actor_token_type missing", false},
		{"invalid_request", "parameter actor_token not supported", false},
		{"invalid_client", "actor token of an unknown client", false},
		{"invalid_scope", "actor_token lacks a scope", false},
	}
	for _, tc := range tests {
		t.Run(tc.oauthError+" "+tc.description, func(t *testing.T) {
			f := failExchangeOAuth(outcomeClientError, "refused", tc.oauthError, tc.description)
			if got := actorRefused(f); got != tc.want {
				t.Errorf("actorRefused = %v, want %v", got, tc.want)
			}
		})
	}
}

// The caller's actor token caps the cache lifetime like the subject token's exp does.
func TestCheckActorToken(t *testing.T) {
	soon, later := testNow.Add(time.Minute), testNow.Add(time.Hour)
	tests := []struct {
		name       string
		actor      string
		subjectExp time.Time
		wantExp    time.Time
		wantStatus int
	}{
		{"opaque actor, no subject exp", "opaque-actor", time.Time{}, time.Time{}, 0},
		{"opaque actor keeps the subject's exp", "opaque-actor", later, later, 0},
		{"actor expiring first", testJWT(map[string]interface{}{"exp": soon.Unix()}), later, soon, 0},
		{"subject expiring first", testJWT(map[string]interface{}{"exp": later.Unix()}), soon, soon, 0},
		{"actor exp alone", testJWT(map[string]interface{}{"exp": soon.Unix()}), time.Time{}, soon, 0},
		{"expired actor", testJWT(map[string]interface{}{"exp": testNow.Add(-time.Second).Unix()}), later, later, 401},
		{"not a b64token", "a b", later, later, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp, f := checkActorToken(tc.actor, tc.subjectExp, testNow)
			status := 0
			if f != nil {
				status = f.status
			}
			if status != tc.wantStatus || !exp.Equal(tc.wantExp) {
				t.Errorf("exp %v status %d, want %v %d", exp, status, tc.wantExp, tc.wantStatus)
			}
		})
	}
}

// The actor settings and the issuer are part of the fingerprint: configurations that differ in
// them never share an exchanger, its cache or its client-credentials token.
func TestActorAndIssuerFingerprint(t *testing.T) {
	pathA, pathB := writeActorFile(t, gatewayActor), writeActorFile(t, gatewayActor)
	base := func() *Config { return actorConfig("https://idp.example.com/oauth2/token", "client_credentials") }
	variants := map[string]func(c *Config){
		"no actor":         func(c *Config) { c.ActorToken = "" },
		"file A":           func(c *Config) { c.ActorToken = "file:" + pathA },
		"file B":           func(c *Config) { c.ActorToken = "file:" + pathB },
		"header":           func(c *Config) { c.ActorToken = "header:X-Agent-Token" },
		"other header":     func(c *Config) { c.ActorToken = "header:X-Other-Agent" },
		"actor scopes":     func(c *Config) { c.ActorScopes = []string{"agent"} },
		"actor token type": func(c *Config) { c.ActorTokenType = tokenTypeJWT },
		"issuer":           func(c *Config) { c.TokenEndpoint = ""; c.Issuer = "https://idp.example.com" },
		"insecure issuer": func(c *Config) {
			c.TokenEndpoint = ""
			c.Issuer = "https://idp.example.com"
			c.AllowInsecureTokenEndpoint = true
		},
	}
	seen := map[string]string{}
	for name, modify := range variants {
		c := base()
		modify(c)
		s, err := parseConfig(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fp := fingerprint(s)
		if other, dup := seen[fp]; dup {
			t.Errorf("%s and %s have the same fingerprint", name, other)
		}
		seen[fp] = name
	}
	s1, _ := parseConfig(base())
	s2, _ := parseConfig(base())
	if fingerprint(s1) != fingerprint(s2) {
		t.Error("equal configurations have different fingerprints")
	}
}

// A cache hit with a header: actor token, which takes the general path (both tokens hashed
// together) rather than the fast path; compare with BenchmarkServeHTTPCacheHit.
func BenchmarkServeHTTPCacheHitActorHeader(b *testing.B) {
	ts := newTokenServerB(b)
	c := actorConfig(ts.URL+"/token", "header:X-Agent-Token")
	c.LogLevel = "off"
	h, err := New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), c, "bench")
	if err != nil {
		b.Fatal(err)
	}
	user := []string{"Bearer user-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl"}
	agent := []string{"agent-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header["Authorization"] = user
		req.Header["X-Agent-Token"] = agent
		h.ServeHTTP(w, req)
	}
	if w.Code != http.StatusOK {
		b.Fatalf("status %d", w.Code)
	}
}

// newTokenServerB is an instant RFC 8693 token endpoint for benchmarks.
func newTokenServerB(b *testing.B) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		answer(w, 200, bearerAccessToken+`"access_token":"x-`+r.PostForm.Get("subject_token")+`","expires_in":3600}`)
	}))
	b.Cleanup(func() { ts.Close() })
	return ts
}
