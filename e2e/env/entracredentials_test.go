package env

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The Entra mock verifies client assertions as Entra does (checked here with assertions signed by
// go-jose, without Traefik or the plugin): a certificate credential by its x5t#S256, aud, iss and
// sub, and times; a federated credential by issuer, subject and audience, against the issuer's
// published keys. Each refusal carries Entra's AADSTS code.
func TestEntraClientAssertions(t *testing.T) {
	c := startEntraCredentials(t)
	t.Run("certificate credential", c.testCertificate)
	t.Run("federated credential", c.testFederated)
	t.Run("request shape", c.testRequestShape)
}

// entraCredentials is what the phases of TestEntraClientAssertions share.
type entraCredentials struct {
	e               *Entra
	issuer          *WorkloadIssuer // trusted by a federated credential
	other           *WorkloadIssuer // trusted by none
	key, otherKey   crypto.Signer   // of the registered certificate, of one that is not
	x5t, otherX5t   string
	alice, endpoint string
}

func startEntraCredentials(t *testing.T) *entraCredentials {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, x5t, err := SelfSigned(dir, "registered", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyFile, otherX5t, err := SelfSigned(dir, "unregistered", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	c := &entraCredentials{x5t: x5t, otherX5t: otherX5t, key: readKey(t, keyFile), otherKey: readKey(t, otherKeyFile)}
	for _, w := range []**WorkloadIssuer{&c.issuer, &c.other} {
		if *w, err = StartWorkloadIssuer(); err != nil {
			t.Fatal(err)
		}
		issuer := *w
		t.Cleanup(issuer.Stop)
	}
	c.e, err = StartEntraWith(entraTestClient, entraTestSecret, EntraCredentials{
		CertificateFile: certFile,
		Federated:       []FederatedCredential{{Issuer: c.issuer.URL, Subject: Subject("traefik", "traefik"), Audiences: []string{AzureTokenExchange}}},
	}, entraTestLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.e.Stop)
	c.alice = entraUserToken(t, c.e, "alice")
	c.endpoint = c.e.TokenEndpoint
	return c
}

func readKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key.(crypto.Signer)
}

// assertion signs claims with key and alg, with the x5t#S256 header when x5t is set.
func assertion(t *testing.T, key crypto.Signer, alg jose.SignatureAlgorithm, x5t string, claims map[string]interface{}) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if x5t != "" {
		opts = opts.WithHeader("x5t#S256", x5t)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// appClaims are the claims of a certificate credential's assertion, as Microsoft documents them.
func (c *entraCredentials) appClaims(alter func(map[string]interface{})) map[string]interface{} {
	now := time.Now()
	claims := map[string]interface{}{
		"iss": entraTestClient, "sub": entraTestClient, "aud": c.endpoint, "jti": randomString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	if alter != nil {
		alter(claims)
	}
	return claims
}

// oboForm is alice's OBO request authenticated by a client assertion.
func (c *entraCredentials) oboForm(clientAssertion string) url.Values {
	return url.Values{
		"grant_type":            {entraJWTBearer},
		"client_id":             {entraTestClient},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {clientAssertion},
		"assertion":             {c.alice},
		"scope":                 {"api://orders/.default"},
		"requested_token_use":   {"on_behalf_of"},
	}
}

func (c *entraCredentials) testCertificate(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-20 * time.Minute)
	tests := []struct {
		name   string
		token  string
		status int
		error  string
		code   int
	}{
		{"PS256, aud the token endpoint", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(nil)), 200, "", 0},
		{"RS256, aud the tenant's issuer", assertion(t, c.key, jose.RS256, c.x5t, c.appClaims(func(m map[string]interface{}) {
			m["aud"] = c.e.Issuer + "/" + entraTenant + "/v2.0"
		})), 200, "", 0},
		{"certificate not registered", assertion(t, c.otherKey, jose.PS256, c.otherX5t, c.appClaims(nil)), 401, "invalid_client", 700027},
		{"registered thumbprint, another key", assertion(t, c.otherKey, jose.PS256, c.x5t, c.appClaims(nil)), 401, "invalid_client", 700027},
		{"no thumbprint", assertion(t, c.key, jose.PS256, "", c.appClaims(nil)), 401, "invalid_client", 700027},
		{"ES256 is not accepted for certificates", assertion(t, ec, jose.ES256, c.x5t, c.appClaims(nil)), 401, "invalid_client", 700027},
		{"aud another endpoint", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(func(m map[string]interface{}) {
			m["aud"] = "https://login.microsoftonline.com/other/oauth2/v2.0/token"
		})), 401, "invalid_client", 700023},
		{"two audiences", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(func(m map[string]interface{}) {
			m["aud"] = []string{c.endpoint, c.e.Issuer}
		})), 401, "invalid_client", 5002741},
		{"iss another app", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(func(m map[string]interface{}) { m["iss"] = "99999999-0000-0000-0000-000000000000" })), 401, "invalid_client", 700021},
		{"expired", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(func(m map[string]interface{}) {
			m["iat"], m["nbf"], m["exp"] = old.Unix(), old.Unix(), old.Add(5*time.Minute).Unix()
		})), 401, "invalid_client", 700024},
		{"not yet valid", assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(func(m map[string]interface{}) {
			m["nbf"] = time.Now().Add(time.Hour).Unix()
			m["exp"] = time.Now().Add(2 * time.Hour).Unix()
		})), 401, "invalid_client", 700024},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := c.e.ClientAuthCalls("certificate")
			a := entraPost(t, c.e, c.oboForm(tc.token), nil)
			if tc.status == 200 {
				if a.status != 200 || a.AccessToken == "" {
					t.Fatalf("answer %+v", a)
				}
			} else {
				expectEntraError(t, a, tc.status, tc.error, tc.code)
			}
			if got := c.e.ClientAuthCalls("certificate") - before; got != 1 {
				t.Errorf("certificate calls = %d, want 1", got)
			}
		})
	}
}

func (c *entraCredentials) testFederated(t *testing.T) {
	token := func(w *WorkloadIssuer, namespace, sa, audience string, issued time.Time) string {
		tok, err := w.Token(namespace, sa, audience, issued, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	good := token(c.issuer, "traefik", "traefik", AzureTokenExchange, now)
	tests := []struct {
		name   string
		token  string
		status int
		code   int
	}{
		{"service-account token of the trusted issuer", good, 200, 0},
		{"issuer not trusted", token(c.other, "traefik", "traefik", AzureTokenExchange, now), 401, 700211},
		{"another service account", token(c.issuer, "default", "default", AzureTokenExchange, now), 401, 700213},
		{"another audience", token(c.issuer, "traefik", "traefik", "https://kubernetes.default.svc", now), 401, 700212},
		{"expired", token(c.issuer, "traefik", "traefik", AzureTokenExchange, now.Add(-2*time.Hour)), 401, 700024},
		{"claims altered after signing", alterPayload(t, good, "exp", now.Add(10*time.Hour).Unix()), 401, 700027},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := c.e.ClientAuthCalls("federated")
			a := entraPost(t, c.e, c.oboForm(tc.token), nil)
			if tc.status == 200 {
				if a.status != 200 || a.AccessToken == "" {
					t.Fatalf("answer %+v", a)
				}
			} else {
				expectEntraError(t, a, tc.status, "invalid_client", tc.code)
			}
			if got := c.e.ClientAuthCalls("federated") - before; got != 1 {
				t.Errorf("federated calls = %d, want 1", got)
			}
		})
	}
}

// alterPayload changes one claim of a signed token, keeping its signature.
func alterPayload(t *testing.T, token, claim string, value interface{}) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]interface{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	claims[claim] = value
	raw, _ = json.Marshal(claims)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
}

func (c *entraCredentials) testRequestShape(t *testing.T) {
	good := assertion(t, c.key, jose.PS256, c.x5t, c.appClaims(nil))
	tests := []struct {
		name   string
		alter  func(url.Values)
		status int
		error  string
		code   int
	}{
		{"no client_assertion_type", func(f url.Values) { f.Del("client_assertion_type") }, 400, "invalid_request", 900144},
		{"another client_assertion_type", func(f url.Values) { f.Set("client_assertion_type", "urn:other") }, 400, "invalid_request", 9002313},
		{"secret and assertion", func(f url.Values) { f.Set("client_secret", entraTestSecret) }, 400, "invalid_request", 9002313},
		{"malformed assertion", func(f url.Values) { f.Set("client_assertion", "not-a-jwt") }, 400, "invalid_request", 50027},
		{"neither secret nor assertion", func(f url.Values) { f.Del("client_assertion") }, 401, "invalid_client", 7000218},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := c.oboForm(good)
			tc.alter(form)
			expectEntraError(t, entraPost(t, c.e, form, nil), tc.status, tc.error, tc.code)
		})
	}
	// The secret still works beside the other credentials.
	form := c.oboForm("")
	form.Del("client_assertion")
	form.Del("client_assertion_type")
	form.Set("client_secret", entraTestSecret)
	before := c.e.ClientAuthCalls("secret")
	if a := entraPost(t, c.e, form, nil); a.status != 200 || c.e.ClientAuthCalls("secret")-before != 1 {
		t.Errorf("secret: %+v", a)
	}
}
