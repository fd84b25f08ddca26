package oboexchange

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// keyFiles writes a key (PKCS#8) and, when withCert, a certificate for it signed by a test CA.
func keyFiles(t *testing.T, dir string, key interface{}, withCert bool) (keyPath, certPath, leafDER string) {
	t.Helper()
	keyPath = writeFile(t, dir, "client.key", josetest.PKCS8(t, key))
	if !withCert {
		return keyPath, "", ""
	}
	der := josetest.NewCA(t, "issuer").Issue(t, josetest.Public(key), "gateway", false)
	return keyPath, writeFile(t, dir, "client.crt", josetest.PEM("CERTIFICATE", der)), string(der)
}

// privateKeyJWTConfig is the RFC 8693 test configuration with private_key_jwt and no secret.
func privateKeyJWTConfig(endpoint string) *Config {
	c := testConfig(endpoint)
	c.ClientSecret = ""
	c.ClientAuthMethod = "private_key_jwt"
	return c
}

func entraConfig(c *Config) {
	c.Flow = "entra"
	c.Audience = nil
	c.Scopes = []string{"api://backend/.default"}
}

// private_key_jwt: the token endpoint gets client_id, client_assertion_type and a client_assertion
// that verifies with the public key, with every header and claim, and a new jti each exchange.
func TestPrivateKeyJWTExchange(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	tests := []struct {
		name     string
		entra    bool
		key      interface{}
		alg      string // clientAssertionAlg
		wantAlg  string
		withCert bool
		kid      string
		audience string // clientAssertionAudience
	}{
		{name: "RS256 by default for RSA", key: rsaKey, wantAlg: "RS256"},
		{name: "PS256 chosen, with kid", key: rsaKey, alg: "ps256", wantAlg: "PS256", kid: "key-2025-01"},
		{name: "ES256 by curve", key: josetest.ECKey(t, elliptic.P256()), wantAlg: "ES256", kid: "ec-1"},
		{name: "ES384 by curve, audience set", key: josetest.ECKey(t, elliptic.P384()), wantAlg: "ES384", audience: "https://idp.example.com/oauth2/default"},
		{name: "RS256 with a certificate", key: rsaKey, wantAlg: "RS256", withCert: true},
		{name: "entra certificate: PS256 by default", entra: true, key: rsaKey, wantAlg: "PS256", withCert: true},
		{name: "entra certificate, RS256 chosen", entra: true, key: rsaKey, alg: "RS256", wantAlg: "RS256", withCert: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, issuePerSubject(3600))
			keyPath, certPath, leaf := keyFiles(t, t.TempDir(), tc.key, tc.withCert)
			c := privateKeyJWTConfig(ts.url())
			if tc.entra {
				entraConfig(c)
			}
			c.ClientKeyFile, c.ClientCertFile = keyPath, certPath
			c.ClientAssertionAlg, c.ClientKeyID, c.ClientAssertionAudience = tc.alg, tc.kid, tc.audience
			h, _ := newTestMiddleware(t, c)

			var jtis []string
			for i := 0; i < 2; i++ {
				before := time.Now().Unix()
				wantStatus(t, call(h, "Bearer "+opaqueToken(100+i)), http.StatusNoContent)
				got := ts.last(t)
				if a := got.header.Get("Authorization"); a != "" {
					t.Errorf("Authorization = %q, want none", a)
				}
				checkAssertionForm(t, got.form, tc.entra)
				header, claims := josetest.Verify(t, got.form.Get("client_assertion"), josetest.Public(tc.key))
				wantHeader := map[string]interface{}{"alg": tc.wantAlg, "typ": "JWT"}
				if tc.kid != "" {
					wantHeader["kid"] = tc.kid
				}
				if tc.withCert {
					wantHeader["x5t#S256"] = josetest.Thumbprint([]byte(leaf))
				}
				wantMap(t, "header", header, wantHeader)
				audience := tc.audience
				if audience == "" {
					audience = ts.url()
				}
				iat, _ := claims["iat"].(float64)
				if int64(iat) < before || int64(iat) > time.Now().Unix() {
					t.Errorf("iat %v is not now", iat)
				}
				jti, _ := claims["jti"].(string)
				jtis = append(jtis, jti)
				delete(claims, "jti")
				wantMap(t, "claims", claims, map[string]interface{}{
					"iss": testClientID, "sub": testClientID, "aud": audience, "iat": iat, "nbf": iat, "exp": iat + 300,
				})
			}
			if len(jtis[0]) != 32 || jtis[0] == jtis[1] {
				t.Errorf("jti %q then %q: want a new random one each exchange", jtis[0], jtis[1])
			}
		})
	}
}

// checkAssertionForm checks the whole form of an exchange with a client assertion: the flow's
// parameters, client_id, the assertion type and an assertion, nothing else.
func checkAssertionForm(t *testing.T, form url.Values, entra bool) {
	t.Helper()
	want := url.Values{
		"client_id":             {testClientID},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      form["client_assertion"],
	}
	if entra {
		want["grant_type"] = []string{"urn:ietf:params:oauth:grant-type:jwt-bearer"}
		want["requested_token_use"] = []string{"on_behalf_of"}
		want["scope"] = []string{"api://backend/.default"}
		want["assertion"] = form["assertion"]
	} else {
		want["grant_type"] = []string{"urn:ietf:params:oauth:grant-type:token-exchange"}
		want["subject_token_type"] = []string{"urn:ietf:params:oauth:token-type:access_token"}
		want["audience"] = []string{"backend"}
		want["subject_token"] = form["subject_token"]
	}
	if len(form["client_assertion"]) != 1 || form.Get("client_assertion") == "" {
		t.Errorf("client_assertion = %q", form["client_assertion"])
	}
	wantForm(t, form, want)
}

// countLines counts the log lines holding s.
func countLines(logs, s string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// clientAssertionFile: the file's JWT is sent as it is, read again on every exchange; a file that
// goes away or goes bad keeps the last good assertion with one warning per exchange, and an
// expired one is logged as such.
func TestClientAssertionFile(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	path := filepath.Join(t.TempDir(), "azure-identity-token")
	assertion := func(sub string, exp time.Time) string {
		return testJWT(map[string]interface{}{"iss": "https://oidc.example", "sub": sub, "aud": []string{"api://AzureADTokenExchange"}, "exp": exp.Unix()})
	}
	first := assertion("system:serviceaccount:traefik:traefik", time.Now().Add(time.Hour))
	writeFile(t, filepath.Dir(path), filepath.Base(path), []byte(first+"\n"))
	c := privateKeyJWTConfig(ts.url())
	entraConfig(c)
	c.ClientAssertionFile = path
	h, _ := newTestMiddleware(t, c)

	renewed := assertion("system:serviceaccount:traefik:traefik", time.Now().Add(2*time.Hour))
	expired := assertion("system:serviceaccount:traefik:traefik", time.Now().Add(-time.Minute))
	steps := []struct {
		name     string
		change   func()
		want     string // the client_assertion sent
		warnings int    // exchanges so far that logged "could not be read again"
		expired  int    // exchanges so far that logged an expired assertion
	}{
		{"as read by New", func() {}, first, 0, 0},
		{"renewed by the kubelet", func() { writeFile(t, filepath.Dir(path), filepath.Base(path), []byte(renewed)) }, renewed, 0, 0},
		{"file removed", func() { _ = os.Remove(path) }, renewed, 1, 0},
		{"still removed", func() {}, renewed, 2, 0},
		{"expired assertion", func() { writeFile(t, filepath.Dir(path), filepath.Base(path), []byte(expired)) }, expired, 2, 1},
		{"not a JWT", func() { writeFile(t, filepath.Dir(path), filepath.Base(path), []byte("garbage")) }, expired, 3, 2},
	}
	for i, step := range steps {
		step.change()
		wantStatus(t, call(h, "Bearer "+opaqueToken(200+i)), http.StatusNoContent)
		got := ts.last(t)
		checkAssertionForm(t, got.form, true)
		if got.form.Get("client_assertion") != step.want {
			t.Errorf("%s: a different client_assertion was sent", step.name)
		}
		out := logs.String()
		if n := countLines(out, "clientAssertionFile could not be read again; the last good assertion is used"); n != step.warnings {
			t.Errorf("%s: %d read warnings, want %d:\n%s", step.name, n, step.warnings, out)
		}
		if n := countLines(out, "clientAssertionFile holds an expired assertion"); n != step.expired {
			t.Errorf("%s: %d expiry warnings, want %d", step.name, n, step.expired)
		}
	}
}

// flowRequests sends requests with new tokens from four goroutines until stop is closed; the
// result counts the answers that were not 204.
type flowResult struct {
	wg     sync.WaitGroup
	sent   atomic.Int64
	failed atomic.Int64
}

func flowRequests(h http.Handler, stop chan struct{}) *flowResult {
	r := &flowResult{}
	for g := 0; g < 4; g++ {
		r.wg.Add(1)
		base := g * 100000
		go func() {
			defer r.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if call(h, "Bearer "+opaqueToken(base+i)).Code != http.StatusNoContent {
					r.failed.Add(1)
				}
				r.sent.Add(1)
			}
		}()
	}
	return r
}

// waitSent waits until n more requests of the flow were answered.
func (r *flowResult) waitSent(t *testing.T, n int64) {
	t.Helper()
	target := r.sent.Load() + n
	deadline := time.Now().Add(10 * time.Second)
	for r.sent.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("requests stopped flowing (%d sent)", r.sent.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A key and certificate rotated while requests flow: no request fails, every assertion is signed
// by the key its x5t#S256 names (a new key is never sent with the old certificate's thumbprint),
// and the new pair is used once both files are in place.
func TestKeyRotationWhileRequestsFlow(t *testing.T) {
	logs := captureLogs(t)
	dir := t.TempDir()
	ca := josetest.NewCA(t, "issuer")
	keys := []*ecdsa.PrivateKey{josetest.ECKey(t, elliptic.P256()), josetest.ECKey(t, elliptic.P256()), josetest.ECKey(t, elliptic.P256())}
	thumbprints := map[string]*ecdsa.PrivateKey{}
	certs := make([][]byte, len(keys))
	for i, k := range keys {
		der := ca.Issue(t, &k.PublicKey, "gateway", false)
		certs[i] = josetest.PEM("CERTIFICATE", der)
		thumbprints[josetest.Thumbprint(der)] = k
	}
	var mismatches atomic.Int64
	var lastX5t atomic.Value
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		header, ok := decodeHeader(r.PostForm.Get("client_assertion"))
		key := thumbprints[header]
		if !ok || key == nil || !assertionVerifies(r.PostForm.Get("client_assertion"), &key.PublicKey) {
			mismatches.Add(1)
			answer(w, 401, `{"error":"invalid_client"}`)
			return
		}
		lastX5t.Store(header)
		issuePerSubject(3600)(w, r)
	})
	keyPath := writeFile(t, dir, "tls.key", josetest.PKCS8(t, keys[0]))
	certPath := writeFile(t, dir, "tls.crt", certs[0])
	c := privateKeyJWTConfig(ts.url())
	c.ClientKeyFile, c.ClientCertFile = keyPath, certPath
	h, _ := newTestMiddleware(t, c)

	stop := make(chan struct{})
	flow := flowRequests(h, stop)
	flow.waitSent(t, 20)
	// A rotation in two writes, as a careless script would do it: key first, then certificate.
	writeFile(t, dir, "tls.key", josetest.PKCS8(t, keys[1]))
	flow.waitSent(t, 20)
	writeFile(t, dir, "tls.crt", certs[1])
	flow.waitSent(t, 20)
	close(stop)
	flow.wg.Wait()

	if flow.failed.Load() != 0 || mismatches.Load() != 0 {
		t.Errorf("%d of %d requests failed, %d assertions did not match their x5t#S256:\n%s", flow.failed.Load(), flow.sent.Load(), mismatches.Load(), logs.String())
	}
	if got := lastX5t.Load(); got != josetest.Thumbprint(pemDER(t, certs[1])) {
		t.Errorf("after rotation the assertions name %v, want the new certificate", got)
	}
	if !strings.Contains(logs.String(), "clientCertFile does not match clientKeyFile; the last matching pair is used") {
		t.Error("no warning while the key and the certificate did not match")
	}

	// A key file that goes bad keeps the last good key, with a warning.
	const warning = "clientKeyFile could not be read again; the last good key is used"
	before := countLines(logs.String(), warning) // a reader may have caught a file half written above
	writeFile(t, dir, "tls.key", []byte("-----BEGIN PRIVATE KEY-----\ntruncated"))
	wantStatus(t, call(h, "Bearer "+opaqueToken(300)), http.StatusNoContent)
	if countLines(logs.String(), warning) != before+1 {
		t.Errorf("want one warning for the bad key file:\n%s", logs.String())
	}
	if lastX5t.Load() != josetest.Thumbprint(pemDER(t, certs[1])) || mismatches.Load() != 0 {
		t.Error("the last good pair was not used")
	}
}

// decodeHeader returns the x5t#S256 of an assertion's header.
func decodeHeader(assertion string) (string, bool) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "", false
	}
	var h struct {
		X5t string `json:"x5t#S256"`
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &h) != nil {
		return "", false
	}
	return h.X5t, true
}

// assertionVerifies checks an assertion without failing the test (it runs in a handler).
func assertionVerifies(assertion string, public *ecdsa.PublicKey) bool {
	_, _, err := josetest.Check(assertion, public)
	return err == nil
}

// pemDER returns the DER of the first PEM block.
func pemDER(t *testing.T, data []byte) []byte {
	t.Helper()
	c, err := jose.ParseChain(data)
	if err != nil {
		t.Fatal(err)
	}
	return c.DER[0]
}

// The configuration errors of the issue, each naming the option and the fix.
func TestClientAuthConfigErrors(t *testing.T) {
	dir := t.TempDir()
	rsaKey := josetest.RSAKey(t, 1)
	ecKey := josetest.ECKey(t, elliptic.P256())
	keyPath, certPath, _ := keyFiles(t, dir, ecKey, true)
	otherCert := writeFile(t, dir, "other.crt", josetest.PEM("CERTIFICATE", josetest.NewCA(t, "x").Issue(t, &josetest.ECKey(t, elliptic.P256()).PublicKey, "other", false)))
	rsaPath := writeFile(t, dir, "rsa.key", josetest.PKCS8(t, rsaKey))
	encrypted := writeFile(t, dir, "encrypted.key", josetest.PEM("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}))
	assertionPath := writeFile(t, dir, "token", []byte(testJWT(map[string]interface{}{"sub": "x"})))
	notJWT := writeFile(t, dir, "not-jwt", []byte("hello"))
	caPath := writeFile(t, dir, "ca.pem", josetest.NewCA(t, "ca").PEM)
	garbage := writeFile(t, dir, "garbage.pem", []byte("not a certificate"))
	missing := filepath.Join(dir, "missing.pem")
	const https = "https://idp.example.com/oauth2/token"

	tests := []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"private_key_jwt with neither file", func(c *Config) {}, `clientAuthMethod "private_key_jwt" needs clientKeyFile`},
		{"private_key_jwt with both files", func(c *Config) { c.ClientKeyFile, c.ClientAssertionFile = keyPath, assertionPath }, "clientKeyFile and clientAssertionFile are both set"},
		{"private_key_jwt with a secret", func(c *Config) { c.ClientKeyFile, c.ClientSecret = keyPath, "s" }, `clientAuthMethod "private_key_jwt" authenticates without a secret, but clientSecret or clientSecretFile is set`},
		{"tls_client_auth with a secret file", func(c *Config) {
			c.ClientAuthMethod, c.ClientKeyFile, c.ClientCertFile, c.ClientSecretFile = "tls_client_auth", keyPath, certPath, "/run/secret"
		}, `clientAuthMethod "tls_client_auth" authenticates without a secret`},
		{"tls_client_auth without certificate", func(c *Config) { c.ClientAuthMethod, c.ClientKeyFile = "tls_client_auth", keyPath }, `clientAuthMethod "tls_client_auth" needs clientCertFile and clientKeyFile`},
		{"tls_client_auth without key", func(c *Config) { c.ClientAuthMethod, c.ClientCertFile = "tls_client_auth", certPath }, `clientAuthMethod "tls_client_auth" needs clientCertFile and clientKeyFile`},
		{"tls_client_auth over http", func(c *Config) {
			c.TokenEndpoint, c.ClientAuthMethod, c.ClientKeyFile, c.ClientCertFile = "http://127.0.0.1:8080/token", "tls_client_auth", keyPath, certPath
		}, "tokenEndpoint must use https"},
		{"tls_client_auth with an assertion file", func(c *Config) {
			c.ClientAuthMethod, c.ClientKeyFile, c.ClientCertFile, c.ClientAssertionFile = "tls_client_auth", keyPath, certPath, assertionPath
		}, "clientAssertionFile is used with clientAuthMethod \"private_key_jwt\""},
		{"tls_client_auth with a key id", func(c *Config) {
			c.ClientAuthMethod, c.ClientKeyFile, c.ClientCertFile, c.ClientKeyID = "tls_client_auth", keyPath, certPath, "k"
		}, "clientKeyId: shape a private_key_jwt assertion; remove them with tls_client_auth"},
		{"missing key file", func(c *Config) { c.ClientKeyFile = missing }, "clientKeyFile: open " + missing},
		{"missing key file: the fix", func(c *Config) { c.ClientKeyFile = missing }, "; mount the file there (read-only, in Traefik's pod) or correct the path"},
		{"unreadable key file", func(c *Config) { c.ClientKeyFile = dir }, "clientKeyFile:"},
		{"encrypted key", func(c *Config) { c.ClientKeyFile = encrypted }, "clientKeyFile: " + encrypted + ": the key is encrypted"},
		{"not a private key", func(c *Config) { c.ClientKeyFile = certPath }, "clientKeyFile: " + certPath + ": no private key found, only CERTIFICATE"},
		{"certificate of another key", func(c *Config) { c.ClientKeyFile, c.ClientCertFile = keyPath, otherCert }, "clientCertFile: " + otherCert + ": the certificate does not match the key"},
		{"missing certificate file", func(c *Config) { c.ClientKeyFile, c.ClientCertFile = keyPath, missing }, "clientCertFile: open " + missing},
		{"algorithm that does not fit the key", func(c *Config) { c.ClientKeyFile, c.ClientAssertionAlg = rsaPath, "ES256" }, "clientAssertionAlg ES256 does not fit an RSA key"},
		{"unknown algorithm", func(c *Config) { c.ClientKeyFile, c.ClientAssertionAlg = rsaPath, "HS256" }, `clientAssertionAlg: unknown value "HS256"`},
		{"missing assertion file", func(c *Config) { c.ClientAssertionFile = missing }, "clientAssertionFile: open " + missing},
		{"assertion file without a JWT", func(c *Config) { c.ClientAssertionFile = notJWT }, "clientAssertionFile: " + notJWT + ": the file does not hold a JWT"},
		{"assertion file with a certificate", func(c *Config) { c.ClientAssertionFile, c.ClientCertFile = assertionPath, certPath }, "clientCertFile is set with clientAssertionFile"},
		{"assertion file with an algorithm", func(c *Config) { c.ClientAssertionFile, c.ClientAssertionAlg = assertionPath, "RS256" }, "clientAssertionAlg: shape the assertion the gateway signs with clientKeyFile"},
		{"key file with a secret method", func(c *Config) {
			c.ClientAuthMethod, c.ClientSecret, c.ClientKeyFile = "client_secret_basic", "s", keyPath
		}, `clientKeyFile: used only with clientAuthMethod private_key_jwt or tls_client_auth, but clientAuthMethod is "client_secret_basic"`},
		{"assertion options with none", func(c *Config) { c.ClientAuthMethod, c.ClientAssertionAudience = "none", "x" }, `clientAssertionAudience: used only with clientAuthMethod private_key_jwt or tls_client_auth`},
		{"CA file with an http endpoint", func(c *Config) {
			c.TokenEndpoint, c.ClientKeyFile, c.TokenEndpointCAFile = "http://127.0.0.1/token", keyPath, caPath
		}, "tokenEndpointCAFile is set but tokenEndpoint uses http"},
		{"missing CA file", func(c *Config) { c.ClientKeyFile, c.TokenEndpointCAFile = keyPath, missing }, "tokenEndpointCAFile: open " + missing},
		{"CA file without certificates", func(c *Config) { c.ClientKeyFile, c.TokenEndpointCAFile = keyPath, garbage }, "tokenEndpointCAFile: " + garbage + ": no PEM certificate found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := privateKeyJWTConfig(https)
			tc.modify(c)
			_, err := New(context.Background(), http.NotFoundHandler(), c, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// The fingerprint takes the files by path and content: another key makes another cache; a
// renewed assertion (same iss, sub and aud) keeps the cache.
func TestClientAuthFingerprint(t *testing.T) {
	dir := t.TempDir()
	keyPath, _, _ := keyFiles(t, dir, josetest.ECKey(t, elliptic.P256()), false)
	tokenPath := writeFile(t, dir, "token", []byte(testJWT(map[string]interface{}{"iss": "i", "sub": "s", "aud": "a", "exp": 1})))
	print := func(modify func(c *Config)) string {
		c := privateKeyJWTConfig("https://idp.example.com/token")
		modify(c)
		s, err := parseConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		return fingerprint(s)
	}
	withKey := func(c *Config) { c.ClientKeyFile = keyPath }
	withToken := func(c *Config) { c.ClientAssertionFile = tokenPath }
	first, firstToken := print(withKey), print(withToken)
	if first != print(withKey) || first == firstToken {
		t.Error("the same files must give the same fingerprint, other files another")
	}
	if print(func(c *Config) { withKey(c); c.ClientKeyID = "k" }) == first {
		t.Error("clientKeyId is not in the fingerprint")
	}
	writeFile(t, dir, "client.key", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())))
	if print(withKey) == first {
		t.Error("a new key at the same path kept the fingerprint")
	}
	writeFile(t, dir, "token", []byte(testJWT(map[string]interface{}{"iss": "i", "sub": "s", "aud": "a", "exp": 2})))
	if print(withToken) != firstToken {
		t.Error("a renewed assertion changed the fingerprint")
	}
	writeFile(t, dir, "token", []byte(testJWT(map[string]interface{}{"iss": "i", "sub": "other", "aud": "a", "exp": 2})))
	if print(withToken) == firstToken {
		t.Error("an assertion for another subject kept the fingerprint")
	}
}

// mtlsSetup is a token endpoint behind a private CA that requires a client certificate of
// another private CA, and the files of a gateway that can reach it.
type mtlsSetup struct {
	ts                 *tokenServer
	serverCA, clientCA *josetest.CA
	dir                string
	caPath             string // tokenEndpointCAFile
	keyPath, certPath  string
}

func newMTLSSetup(t *testing.T) *mtlsSetup {
	t.Helper()
	m := &mtlsSetup{serverCA: josetest.NewCA(t, "private server CA"), clientCA: josetest.NewCA(t, "private client CA"), dir: t.TempDir()}
	m.ts = newTLSTokenServer(t, m.serverCA, m.clientCA, issuePerSubject(3600))
	m.caPath = writeFile(t, m.dir, "ca.pem", m.serverCA.PEM)
	m.writeClient(t, "gateway")
	return m
}

// writeClient writes a new key and a certificate of the client CA named cn.
func (m *mtlsSetup) writeClient(t *testing.T, cn string) {
	t.Helper()
	key := josetest.ECKey(t, elliptic.P256())
	m.keyPath = writeFile(t, m.dir, "tls.key", josetest.PKCS8(t, key))
	m.certPath = writeFile(t, m.dir, "tls.crt", josetest.PEM("CERTIFICATE", m.clientCA.Issue(t, &key.PublicKey, cn, false)))
}

func (m *mtlsSetup) config() *Config {
	c := testConfig(m.ts.url())
	c.ClientSecret = ""
	c.ClientAuthMethod = "tls_client_auth"
	c.ClientCertFile, c.ClientKeyFile, c.TokenEndpointCAFile = m.certPath, m.keyPath, m.caPath
	return c
}

// tls_client_auth (RFC 8705): the certificate goes in the TLS handshake, the body carries
// client_id and no secret; the endpoint's certificate is checked against tokenEndpointCAFile. The
// same endpoint refuses a gateway without tokenEndpointCAFile, without a client certificate, or
// with a certificate of another CA.
func TestTLSClientAuth(t *testing.T) {
	m := newMTLSSetup(t)
	otherCA := josetest.NewCA(t, "other CA")
	otherKey := josetest.ECKey(t, elliptic.P256())
	otherKeyPath := writeFile(t, m.dir, "other.key", josetest.PKCS8(t, otherKey))
	otherCertPath := writeFile(t, m.dir, "other.crt", josetest.PEM("CERTIFICATE", otherCA.Issue(t, &otherKey.PublicKey, "gateway", false)))
	tests := []struct {
		name   string
		modify func(c *Config)
		status int
	}{
		{"certificate and private CA", func(c *Config) {}, http.StatusNoContent},
		{"without tokenEndpointCAFile (system roots)", func(c *Config) { c.TokenEndpointCAFile = "" }, http.StatusBadGateway},
		{"without a client certificate (private_key_jwt)", func(c *Config) {
			c.ClientAuthMethod, c.ClientCertFile = "private_key_jwt", ""
		}, http.StatusBadGateway},
		{"certificate of another CA", func(c *Config) { c.ClientKeyFile, c.ClientCertFile = otherKeyPath, otherCertPath }, http.StatusBadGateway},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			c := m.config()
			c.Audience = []string{"backend-" + strconv.Itoa(i)} // a cache of its own
			tc.modify(c)
			h, _ := newTestMiddleware(t, c)
			before := m.ts.count()
			wantStatus(t, call(h, "Bearer "+opaqueToken(400+i)), tc.status)
			if tc.status != http.StatusNoContent {
				if m.ts.count() != before || !strings.Contains(logs.String(), "request failed") {
					t.Errorf("want the TLS handshake refused: %d requests reached the server; log:\n%s", m.ts.count()-before, logs.String())
				}
				return
			}
			got := m.ts.last(t)
			wantForm(t, got.form, url.Values{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      got.form["subject_token"],
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":           c.Audience,
				"client_id":          {testClientID},
			})
			if a := got.header.Get("Authorization"); a != "" || got.peer == nil || got.peer.Subject.CommonName != "gateway" {
				t.Errorf("Authorization %q, client certificate %v", a, got.peer)
			}
		})
	}
}

// The client certificate and the CA bundle rotate while requests flow: no request fails, and the
// next connection presents the new certificate and trusts the new CA.
func TestTLSFilesRotationWhileRequestsFlow(t *testing.T) {
	logs := captureLogs(t)
	m := newMTLSSetup(t)
	// The server's certificate can be switched to one of a new CA.
	newServerCA := josetest.NewCA(t, "new private server CA")
	var serverCert atomic.Value
	serverCert.Store(m.serverCA.ServerCertificate(t))
	m.ts.srv.TLS.Certificates = nil
	m.ts.srv.TLS.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c := serverCert.Load().(tls.Certificate)
		return &c, nil
	}
	h, _ := newTestMiddleware(t, m.config())
	stop := make(chan struct{})
	flow := flowRequests(h, stop)
	flow.waitSent(t, 20)

	// cert-manager renews the client certificate (one write of both files, as a Secret volume's
	// atomic switch does; see TestKeyRotationWhileRequestsFlow for two separate writes).
	m.writeClient(t, "gateway-renewed")
	flow.waitSent(t, 20)
	if peer := m.ts.last(t).peer; peer == nil || peer.Subject.CommonName != "gateway-renewed" {
		t.Errorf("after rotation the server saw %v, want the renewed certificate", peer)
	}

	// The CA bundle gets the new CA next to the old, then the server switches to a certificate
	// of the new CA and drops its connections.
	writeFile(t, m.dir, "ca.pem", append(append([]byte{}, m.serverCA.PEM...), newServerCA.PEM...))
	flow.waitSent(t, 20)
	serverCert.Store(newServerCA.ServerCertificate(t))
	m.ts.srv.CloseClientConnections()
	flow.waitSent(t, 20)
	close(stop)
	flow.wg.Wait()
	if flow.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed:\n%s", flow.failed.Load(), flow.sent.Load(), logs.String())
	}

	// A bundle without the server's CA is used at once: the next exchange is refused.
	writeFile(t, m.dir, "ca.pem", m.serverCA.PEM)
	wantStatus(t, call(h, "Bearer "+opaqueToken(500)), http.StatusBadGateway)
	// A bundle that goes bad keeps the last good one, with a warning.
	writeFile(t, m.dir, "ca.pem", newServerCA.PEM)
	wantStatus(t, call(h, "Bearer "+opaqueToken(501)), http.StatusNoContent)
	const warning = "tokenEndpointCAFile could not be read again; the last good CA bundle is used"
	before := countLines(logs.String(), warning) // a reader may have caught a file half written above
	writeFile(t, m.dir, "ca.pem", []byte("truncated"))
	wantStatus(t, call(h, "Bearer "+opaqueToken(502)), http.StatusNoContent)
	if countLines(logs.String(), warning) != before+1 {
		t.Errorf("want one warning for the bad CA bundle:\n%s", logs.String())
	}
}

// The assertion file renewed while requests flow, atomically as the kubelet writes it: no
// request fails, each sends one of the assertions written, and the last one once it is in place.
func TestAssertionRotationWhileRequestsFlow(t *testing.T) {
	logs := captureLogs(t)
	dir := t.TempDir()
	written := map[string]bool{}
	var writtenMu sync.Mutex
	write := func(i int) string {
		a := testJWT(map[string]interface{}{"iss": "https://oidc.example", "sub": "system:serviceaccount:traefik:traefik", "exp": time.Now().Add(time.Hour).Unix(), "n": i})
		writtenMu.Lock()
		written[a] = true
		writtenMu.Unlock()
		writeFile(t, dir, "token.tmp", []byte(a))
		if err := os.Rename(filepath.Join(dir, "token.tmp"), filepath.Join(dir, "token")); err != nil {
			t.Fatal(err)
		}
		return a
	}
	write(0)
	var unknown atomic.Int64
	var last atomic.Value
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		a := r.PostForm.Get("client_assertion")
		writtenMu.Lock()
		ok := written[a]
		writtenMu.Unlock()
		if !ok {
			unknown.Add(1)
		}
		last.Store(a)
		issuePerSubject(3600)(w, r)
	})
	c := privateKeyJWTConfig(ts.url())
	c.ClientAssertionFile = filepath.Join(dir, "token")
	h, _ := newTestMiddleware(t, c)
	stop := make(chan struct{})
	flow := flowRequests(h, stop)
	var final string
	for i := 1; i <= 5; i++ {
		flow.waitSent(t, 10)
		final = write(i)
	}
	flow.waitSent(t, 10)
	close(stop)
	flow.wg.Wait()
	if flow.failed.Load() != 0 || unknown.Load() != 0 || last.Load() != final {
		t.Errorf("%d of %d requests failed, %d sent an assertion never written, last sent is the final one: %v\n%s",
			flow.failed.Load(), flow.sent.Load(), unknown.Load(), last.Load() == final, logs.String())
	}
	if strings.Contains(logs.String(), "level=warn") {
		t.Errorf("an atomic renewal logged a warning:\n%s", logs.String())
	}
}

// The secretless methods work with the other features that send requests: with issuer, the
// assertion's default audience is the discovered token endpoint; the client-credentials request
// of an actorToken: client_credentials is authenticated like the exchange.
func TestPrivateKeyJWTWithDiscoveryAndActor(t *testing.T) {
	captureLogs(t)
	key := josetest.ECKey(t, elliptic.P256())
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.PostForm.Get("grant_type") == grantClientCredentials {
			answer(w, 200, `{"access_token":"gateway-actor-token","token_type":"Bearer","expires_in":3600}`)
			return
		}
		issuePerSubject(3600)(w, r)
	})
	ms := newMetadataServer(t, map[string]string{oidcPath: metadataDoc("ISSUER", ts.url(), "")})
	keyPath, _, _ := keyFiles(t, t.TempDir(), key, false)
	c := privateKeyJWTConfig("")
	c.Issuer = ms.url
	c.ClientKeyFile = keyPath
	c.ActorToken = "client_credentials"
	h, _ := newTestMiddleware(t, c)

	wantStatus(t, call(h, "Bearer "+opaqueToken(500)), http.StatusNoContent)
	ts.mu.Lock()
	reqs := append([]recorded(nil), ts.reqs...)
	ts.mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("token endpoint requests = %d, want the client-credentials request and the exchange", len(reqs))
	}
	for i, grant := range []string{grantClientCredentials, grantTokenExchange} {
		form := reqs[i].form
		if form.Get("grant_type") != grant || form.Get("client_assertion_type") != clientAssertionType {
			t.Errorf("request %d: grant %q, client_assertion_type %q", i, form.Get("grant_type"), form.Get("client_assertion_type"))
		}
		_, claims := josetest.Verify(t, form.Get("client_assertion"), josetest.Public(key))
		if claims["aud"] != ts.url() {
			t.Errorf("request %d: assertion aud = %v, want the discovered token endpoint %s", i, claims["aud"], ts.url())
		}
	}
	if got := reqs[1].form.Get("actor_token"); got != "gateway-actor-token" {
		t.Errorf("actor_token = %q", got)
	}
}
