package oboexchange

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// metadataServer serves an issuer's metadata documents: docs maps a path to the document, where
// ISSUER stands for the server's URL. Other paths get 404. It counts the requests by path.
type metadataServer struct {
	srv   *httptest.Server
	url   string
	mu    sync.Mutex
	docs  map[string]string
	hits  map[string]int
	total atomic.Int32
	delay time.Duration
}

func newMetadataServer(t *testing.T, docs map[string]string) *metadataServer {
	t.Helper()
	ms := &metadataServer{docs: docs, hits: map[string]int{}}
	ms.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms.total.Add(1)
		ms.mu.Lock()
		ms.hits[r.URL.Path]++
		doc, ok := ms.docs[r.URL.Path]
		delay := ms.delay
		ms.mu.Unlock()
		time.Sleep(delay)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if doc == "500" {
			answer(w, 500, `{"error":"server_error"}`)
			return
		}
		answer(w, 200, strings.ReplaceAll(doc, "ISSUER", ms.url))
	}))
	ms.url = ms.srv.URL
	t.Cleanup(func() { ms.srv.Close() })
	return ms
}

// set replaces the document at a path.
func (ms *metadataServer) set(path, doc string) {
	ms.mu.Lock()
	ms.docs[path] = doc
	ms.mu.Unlock()
}

func (ms *metadataServer) hitsAt(path string) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.hits[path]
}

// metadataDoc is a metadata document naming an issuer and a token endpoint.
func metadataDoc(issuer, tokenEndpoint, grants string) string {
	doc := `{"issuer":"` + issuer + `","token_endpoint":"` + tokenEndpoint + `","jwks_uri":"` + issuer + `/keys"`
	if grants != "" {
		doc += `,"grant_types_supported":[` + grants + `]`
	}
	return doc + "}"
}

const (
	oidcPath    = "/.well-known/openid-configuration"
	rfc8414Path = "/.well-known/oauth-authorization-server"
)

// issuerConfig is an RFC 8693 configuration that names the issuer instead of the token endpoint.
func issuerConfig(issuer string) *Config {
	c := testConfig("")
	c.Issuer = issuer
	return c
}

// discoveryOf returns the discovery of a middleware.
func discoveryOf(h http.Handler) *discovery {
	return h.(*Middleware).x.endpoint.discovery
}

// The token endpoint comes from the OpenID Connect document, read on the first exchange (not in
// New), once for many exchanges.
func TestDiscoveryOpenIDConfiguration(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	ms := newMetadataServer(t, map[string]string{
		oidcPath: metadataDoc("ISSUER", ts.url(), `"authorization_code","`+grantTokenExchange+`"`),
	})
	h, b := newTestMiddleware(t, issuerConfig(ms.url))
	if ms.total.Load() != 0 {
		t.Fatalf("New read the metadata (%d requests); it must do no network I/O", ms.total.Load())
	}

	var token string
	for i := 0; i < 3; i++ {
		token = opaqueToken(200 + i)
		wantStatus(t, call(h, "Bearer "+token), http.StatusNoContent)
		if got := b.header.Get("Authorization"); got != "Bearer x-"+token {
			t.Errorf("backend Authorization = %q", got)
		}
	}
	if ts.count() != 3 || ms.hitsAt(oidcPath) != 1 || ms.total.Load() != 1 {
		t.Errorf("exchanges = %d, metadata requests = %d (%v); want 3 and 1", ts.count(), ms.total.Load(), ms.hits)
	}
	wantForm(t, ts.last(t).form, url.Values{
		"grant_type":         {grantTokenExchange},
		"subject_token":      {token},
		"subject_token_type": {tokenTypeAccessToken},
		"audience":           {"backend"},
	})
}

// Without an OpenID Connect document, RFC 8414's location is tried: the well-known part goes
// between the host and the issuer's path.
func TestDiscoveryRFC8414(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ms := newMetadataServer(t, map[string]string{
		rfc8414Path + "/tenant/a": metadataDoc("ISSUER/tenant/a", ts.url(), ""),
	})
	h, _ := newTestMiddleware(t, issuerConfig(ms.url+"/tenant/a"))

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	if ms.hitsAt("/tenant/a"+oidcPath) != 1 || ms.hitsAt(rfc8414Path+"/tenant/a") != 1 || ts.count() != 1 {
		t.Errorf("metadata requests %v, exchanges %d; want one at each location and one exchange", ms.hits, ts.count())
	}
}

func TestMetadataURLs(t *testing.T) {
	tests := []struct {
		issuer string
		want   []string
	}{
		{"https://idp.example.com", []string{"https://idp.example.com/.well-known/openid-configuration", "https://idp.example.com/.well-known/oauth-authorization-server"}},
		{"https://idp.example.com/", []string{"https://idp.example.com/.well-known/openid-configuration", "https://idp.example.com/.well-known/oauth-authorization-server"}},
		{"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", []string{
			"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0/.well-known/openid-configuration",
			"https://login.microsoftonline.com/.well-known/oauth-authorization-server/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
		}},
		{"https://keycloak.example.com/realms/demo", []string{
			"https://keycloak.example.com/realms/demo/.well-known/openid-configuration",
			"https://keycloak.example.com/.well-known/oauth-authorization-server/realms/demo",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.issuer, func(t *testing.T) {
			u, err := url.Parse(tc.issuer)
			if err != nil {
				t.Fatal(err)
			}
			got := metadataURLs(tc.issuer, u)
			if len(got) != 2 || got[0] != tc.want[0] || got[1] != tc.want[1] {
				t.Errorf("metadataURLs = %q, want %q", got, tc.want)
			}
		})
	}
}

// Entra ID's v2.0 issuer, https://login.microsoftonline.com/{tenant}/v2.0, with the On-Behalf-Of
// flow: its metadata is at {issuer}/.well-known/openid-configuration and lists no
// grant_types_supported (so nothing is warned about).
func TestDiscoveryEntraV2Issuer(t *testing.T) {
	logs := captureLogs(t)
	const tenant = "/72f988bf-86f1-41af-91ab-2d7cd011db47"
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ms := newMetadataServer(t, map[string]string{
		tenant + "/v2.0" + oidcPath: `{"token_endpoint":"` + ts.url() + `","issuer":"ISSUER` + tenant + `/v2.0",` +
			`"authorization_endpoint":"ISSUER` + tenant + `/oauth2/v2.0/authorize","jwks_uri":"ISSUER` + tenant + `/discovery/v2.0/keys",` +
			`"response_modes_supported":["query","fragment","form_post"],"tenant_region_scope":"EU"}`,
	})
	c := issuerConfig(ms.url + tenant + "/v2.0")
	c.Flow = "entra"
	c.Audience = nil
	c.Scopes = []string{"api://backend/.default"}
	c.LogLevel = "debug"
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	wantForm(t, ts.last(t).form, url.Values{
		"grant_type":          {grantJWTBearer},
		"assertion":           {userToken},
		"requested_token_use": {"on_behalf_of"},
		"scope":               {"api://backend/.default"},
		"client_id":           {testClientID},
		"client_secret":       {testClientSecret},
	})
	if strings.Contains(logs.String(), "level=warn") {
		t.Errorf("unexpected warning: %s", logs.String())
	}
	if !strings.Contains(logs.String(), `msg="token endpoint discovered"`) {
		t.Errorf("no debug line for the discovery: %s", logs.String())
	}
}

// A document that cannot be used answers 502, and nothing is sent to any token endpoint.
func TestDiscoveryFailures(t *testing.T) {
	tests := []struct {
		name string
		docs map[string]string // ENDPOINT stands for the token server's URL
		want string            // in the log line
	}{
		{"no document", map[string]string{}, "no metadata for issuer"},
		{"server error", map[string]string{oidcPath: "500", rfc8414Path: "500"}, "answered HTTP 500"},
		{"not JSON", map[string]string{oidcPath: "<html>", rfc8414Path: "<html>"}, "is not a metadata document"},
		{"issuer with a trailing slash", map[string]string{oidcPath: metadataDoc("ISSUER/", "ENDPOINT", "")}, "must be equal character for character"},
		{"another issuer", map[string]string{oidcPath: metadataDoc("https://evil.example.com", "ENDPOINT", "")}, "must be equal character for character"},
		{"issuer mismatch is not retried elsewhere", map[string]string{
			oidcPath:    metadataDoc("https://evil.example.com", "ENDPOINT", ""),
			rfc8414Path: metadataDoc("ISSUER", "ENDPOINT", ""),
		}, "must be equal character for character"},
		{"no token endpoint", map[string]string{oidcPath: `{"issuer":"ISSUER"}`}, "the metadata has no token_endpoint"},
		{"token endpoint in clear text", map[string]string{oidcPath: metadataDoc("ISSUER", "http://idp.example.com/token", "")}, "uses http, which would send"},
		{"relative token endpoint", map[string]string{oidcPath: metadataDoc("ISSUER", "/token", "")}, "is not an absolute URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			ts := newTokenServer(t, issue(exchangedToken, 3600))
			docs := map[string]string{}
			for path, doc := range tc.docs {
				docs[path] = strings.ReplaceAll(doc, "ENDPOINT", ts.url())
			}
			ms := newMetadataServer(t, docs)
			h, b := newTestMiddleware(t, issuerConfig(ms.url))

			rec := call(h, "Bearer "+userToken)

			wantStatus(t, rec, http.StatusBadGateway)
			checkErrorBody(t, rec, "token_exchange_failed")
			if ts.count() != 0 || b.count() != 0 {
				t.Errorf("exchanges = %d, backend calls = %d; want none", ts.count(), b.count())
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log does not say %q: %s", tc.want, logs.String())
			}
		})
	}
}

// The discovered token endpoint follows the rule of tokenEndpoint: https, or http on a loopback
// host, or any http with allowInsecureTokenEndpoint.
func TestDiscoveryHTTPRule(t *testing.T) {
	tests := []struct {
		endpoint      string
		allowInsecure bool
		ok            bool
	}{
		{"https://idp.example.com/token", false, true},
		{"http://127.0.0.1:8080/token", false, true},
		{"http://localhost/token", false, true},
		{"http://[::1]/token", false, true},
		{"http://idp.example.com/token", false, false},
		{"http://idp.example.com/token", true, true},
		{"ftp://idp.example.com/token", true, false},
		{"https://user:pw@idp.example.com/token", false, false},
		{"https://idp.example.com/token#x", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.endpoint+" allowInsecure="+strconv.FormatBool(tc.allowInsecure), func(t *testing.T) {
			d := &discovery{issuer: "https://idp.example.com", allowInsecure: tc.allowInsecure}
			err := d.check(metadata{Issuer: "https://idp.example.com", TokenEndpoint: tc.endpoint})
			if (err == nil) != tc.ok {
				t.Errorf("check = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// The metadata is kept for 24 hours, then read again.
func TestDiscoveryCachedForADay(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	ms := newMetadataServer(t, map[string]string{oidcPath: metadataDoc("ISSUER", ts.url(), "")})
	h, _ := newTestMiddleware(t, issuerConfig(ms.url))
	d := discoveryOf(h)

	wantStatus(t, call(h, "Bearer "+opaqueToken(300)), http.StatusNoContent)
	d.mu.Lock()
	left := d.expires - time.Since(epoch)
	d.mu.Unlock()
	if left > 24*time.Hour || left < 24*time.Hour-time.Minute {
		t.Errorf("metadata kept for %v, want 24h", left)
	}

	d.mu.Lock()
	d.expires = time.Since(epoch) - 1
	d.mu.Unlock()
	wantStatus(t, call(h, "Bearer "+opaqueToken(301)), http.StatusNoContent)
	if ms.hitsAt(oidcPath) != 2 {
		t.Errorf("metadata requests = %d, want 2 after the day is over", ms.hitsAt(oidcPath))
	}
}

// After a failed read, the metadata is read again at most every 30 seconds; meanwhile requests
// get the failure at once, or the last good endpoint when there is one.
func TestDiscoveryRetrySpacing(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	ms := newMetadataServer(t, map[string]string{oidcPath: "500", rfc8414Path: "500"})
	h, _ := newTestMiddleware(t, issuerConfig(ms.url))
	d := discoveryOf(h)
	pass := func() {
		d.mu.Lock()
		if left := d.retryAt - time.Since(epoch); left > 30*time.Second || left < 29*time.Second {
			t.Errorf("next read in %v, want 30s", left)
		}
		d.retryAt = time.Since(epoch) - 1
		d.mu.Unlock()
	}

	wantStatus(t, call(h, "Bearer "+opaqueToken(400)), http.StatusBadGateway)
	wantStatus(t, call(h, "Bearer "+opaqueToken(401)), http.StatusBadGateway)
	if n := ms.total.Load(); n != 2 {
		t.Errorf("metadata requests = %d, want 2 (one per location) within 30s of the failure", n)
	}
	pass()
	wantStatus(t, call(h, "Bearer "+opaqueToken(402)), http.StatusBadGateway)
	if n := ms.total.Load(); n != 4 {
		t.Errorf("metadata requests = %d, want 4 once 30s have passed", n)
	}

	ms.set(oidcPath, metadataDoc("ISSUER", ts.url(), ""))
	pass()
	wantStatus(t, call(h, "Bearer "+opaqueToken(403)), http.StatusNoContent)

	// Expired and unreadable: the last good endpoint stays in use, with a warning, and the next
	// read waits 30s.
	ms.set(oidcPath, "500")
	d.mu.Lock()
	d.expires = time.Since(epoch) - 1
	d.mu.Unlock()
	before := ms.total.Load()
	wantStatus(t, call(h, "Bearer "+opaqueToken(404)), http.StatusNoContent)
	wantStatus(t, call(h, "Bearer "+opaqueToken(405)), http.StatusNoContent)
	if n := ms.total.Load() - before; n != 2 {
		t.Errorf("metadata requests = %d, want 2 (one failed read at both locations)", n)
	}
	if !strings.Contains(logs.String(), "the last good token endpoint is used") {
		t.Errorf("no warning: %s", logs.String())
	}
	pass()
	if ts.count() != 3 {
		t.Errorf("exchanges = %d, want 3", ts.count())
	}
}

// Concurrent first exchanges share one read of the metadata.
func TestDiscoverySingleFlight(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	ms := newMetadataServer(t, map[string]string{oidcPath: metadataDoc("ISSUER", ts.url(), "")})
	ms.delay = 200 * time.Millisecond
	h, _ := newTestMiddleware(t, issuerConfig(ms.url))

	const n = 20
	var tokens []string
	for i := 0; i < n; i++ {
		tokens = append(tokens, opaqueToken(500+i))
	}
	callTogether(t, h, tokens, http.StatusNoContent)
	if ms.total.Load() != 1 || ts.count() != n {
		t.Errorf("metadata requests = %d, exchanges = %d; want 1 and %d", ms.total.Load(), ts.count(), n)
	}
}

// A grant the gateway sends that grant_types_supported does not list is warned about once.
func TestDiscoveryGrantWarning(t *testing.T) {
	tests := []struct {
		name       string
		grants     string
		actorToken string
		wantGrant  string // "" when no warning is expected
	}{
		{"token exchange listed", `"` + grantTokenExchange + `"`, "", ""},
		{"no grant_types_supported", "", "", ""},
		{"token exchange missing", `"authorization_code","refresh_token"`, "", grantTokenExchange},
		{"client credentials missing", `"` + grantTokenExchange + `"`, "client_credentials", grantClientCredentials},
		{"client credentials listed", `"` + grantTokenExchange + `","client_credentials"`, "client_credentials", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			cc := reply(200, `{"access_token":"`+ccToken+`","token_type":"Bearer","expires_in":3600}`)
			ts := newTokenServer(t, byGrant(cc, issuePerSubject(3600)))
			ms := newMetadataServer(t, map[string]string{oidcPath: metadataDoc("ISSUER", ts.url(), tc.grants)})
			c := issuerConfig(ms.url)
			c.ActorToken = tc.actorToken
			h, _ := newTestMiddleware(t, c)
			d := discoveryOf(h)

			for i := 0; i < 2; i++ { // two reads of the metadata
				wantStatus(t, call(h, "Bearer "+opaqueToken(600+i)), http.StatusNoContent)
				d.mu.Lock()
				d.expires = time.Since(epoch) - 1
				d.mu.Unlock()
			}
			if ms.total.Load() != 2 {
				t.Fatalf("metadata requests = %d, want 2", ms.total.Load())
			}
			warnings := strings.Count(logs.String(), "does not list a grant")
			want := 0
			if tc.wantGrant != "" {
				want = 1
			}
			if warnings != want || (want == 1 && !strings.Contains(logs.String(), "grant="+tc.wantGrant)) {
				t.Errorf("%d warnings, want %d naming %q: %s", warnings, want, tc.wantGrant, logs.String())
			}
		})
	}
}

// The actor's client-credentials request goes to the discovered token endpoint too.
func TestDiscoveryWithClientCredentialsActor(t *testing.T) {
	captureLogs(t)
	cc := reply(200, `{"access_token":"`+ccToken+`","token_type":"Bearer","expires_in":3600}`)
	ts := newTokenServer(t, byGrant(cc, issuePerActor))
	ms := newMetadataServer(t, map[string]string{oidcPath: metadataDoc("ISSUER", ts.url(), "")})
	c := issuerConfig(ms.url)
	c.ActorToken = "client_credentials"
	h, b := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	if grantCalls(ts, grantClientCredentials) != 1 || grantCalls(ts, grantTokenExchange) != 1 {
		t.Errorf("requests at the discovered endpoint: %d client credentials, %d exchanges; want 1 and 1",
			grantCalls(ts, grantClientCredentials), grantCalls(ts, grantTokenExchange))
	}
	if got := b.header.Get("Authorization"); got != "Bearer x-"+userToken+"-"+ccToken {
		t.Errorf("backend Authorization = %q", got)
	}
}

func TestIssuerConfig(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // "" when the configuration is accepted
	}{
		{"https issuer", func(c *Config) {}, ""},
		{"entra v2.0 issuer", func(c *Config) {
			c.Issuer = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
		}, ""},
		{"http on loopback", func(c *Config) { c.Issuer = "http://127.0.0.1:9000" }, ""},
		{"http allowed explicitly", func(c *Config) { c.Issuer = "http://idp.internal"; c.AllowInsecureTokenEndpoint = true }, ""},
		{"both", func(c *Config) { c.TokenEndpoint = "https://idp.example.com/token" }, "issuer and tokenEndpoint are both set"},
		{"neither", func(c *Config) { c.Issuer = " " }, "tokenEndpoint is required (or issuer"},
		{"http issuer", func(c *Config) { c.Issuer = "http://idp.example.com" }, "issuer: http://idp.example.com uses http"},
		{"relative issuer", func(c *Config) { c.Issuer = "idp.example.com" }, `issuer: "idp.example.com" is not an absolute URL`},
		{"issuer with a query", func(c *Config) { c.Issuer = "https://idp.example.com?tenant=a" }, "issuer: remove the ?query"},
		{"issuer with a fragment", func(c *Config) { c.Issuer = "https://idp.example.com#a" }, "issuer: remove the #fragment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := issuerConfig("https://idp.example.com")
			tc.modify(c)
			_, err := New(context.Background(), http.NotFoundHandler(), c, "test")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
