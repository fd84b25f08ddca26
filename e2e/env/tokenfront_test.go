package env

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The token front authenticates clients by private_key_jwt and tls_client_auth as Okta and
// Keycloak do, then lets the provider exchange the token (checked without Traefik or the plugin).
func TestTokenFront(t *testing.T) {
	f := startFront(t)
	t.Run("private_key_jwt", f.testPrivateKeyJWT)
	t.Run("tls_client_auth", f.testTLSClientAuth)
}

type frontTest struct {
	front       *TokenFront
	pki         *PKI
	idp         *IdP
	key         crypto.Signer // the registered key of the private_key_jwt client
	user        string
	certFile    string // the tls_client_auth client's certificate, and its key
	keyFile     string
	strangerCrt string // a certificate of the PKI with another subject
	strangerKey string
}

var gatewayDN = pkix.Name{CommonName: KeycloakStyleClientID, Organization: []string{"oboexchange e2e"}}

func startFront(t *testing.T) *frontTest {
	t.Helper()
	dir := t.TempDir()
	f := &frontTest{}
	var err error
	if f.idp, err = StartIdP(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.idp.Stop)
	if f.pki, err = NewPKI(dir, "front"); err != nil {
		t.Fatal(err)
	}
	keyFile, public, err := NewKeyFile(dir, "okta", PKCS1)
	if err != nil {
		t.Fatal(err)
	}
	f.key = readAnyKey(t, keyFile)
	if f.certFile, f.keyFile, err = f.pki.ClientCertificate("gateway", gatewayDN, SEC1); err != nil {
		t.Fatal(err)
	}
	if f.strangerCrt, f.strangerKey, err = f.pki.ClientCertificate("stranger", pkix.Name{CommonName: "stranger"}, PKCS8); err != nil {
		t.Fatal(err)
	}
	f.front, err = StartTokenFront(f.idp, f.pki,
		FrontClient{ID: OktaStyleClientID, Method: "private_key_jwt", PublicKey: public, KeyID: "gateway-key"},
		FrontClient{ID: KeycloakStyleClientID, Method: "tls_client_auth", Subject: gatewayDN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.front.Stop)
	if f.user, err = f.idp.Login(f.idp.DemoUser(), UserPassword); err != nil {
		t.Fatal(err)
	}
	return f
}

func readAnyKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key
	}
	if key, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return key
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key.(crypto.Signer)
}

// exchangeForm is an exchange of the user's token for api://orders.
func (f *frontTest) exchangeForm(clientID string) url.Values {
	return url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {f.user},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"audience":           {"api://orders"},
		"client_id":          {clientID},
	}
}

// post sends a form to the front over TLS, trusting its CA, with an optional client certificate.
func (f *frontTest) post(t *testing.T, form url.Values, certFile, keyFile string) (int, map[string]interface{}) {
	t.Helper()
	config := &tls.Config{RootCAs: f.pki.Pool(), MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		config.Certificates = []tls.Certificate{cert}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: config}}
	defer client.CloseIdleConnections()
	resp, err := client.PostForm(f.front.TokenEndpoint, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]interface{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func (f *frontTest) signed(t *testing.T, key crypto.Signer, kid string, claims jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func (f *frontTest) claims(alter func(c *jwt.Claims)) jwt.Claims {
	now := time.Now()
	c := jwt.Claims{
		Issuer: OktaStyleClientID, Subject: OktaStyleClientID, Audience: jwt.Audience{f.front.TokenEndpoint},
		ID: randomString(), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
	if alter != nil {
		alter(&c)
	}
	return c
}

func (f *frontTest) testPrivateKeyJWT(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	replayed := f.signed(t, f.key, "gateway-key", f.claims(nil))
	tests := []struct {
		name      string
		assertion string
		want      string // part of the refusal; empty for success
	}{
		{"valid", replayed, ""},
		{"jti replayed", replayed, "jti was already used"},
		{"another key", f.signed(t, other, "gateway-key", f.claims(nil)), "signature does not verify"},
		{"another kid", f.signed(t, f.key, "old-key", f.claims(nil)), "kid is not the registered key's"},
		{"aud the issuer", f.signed(t, f.key, "gateway-key", f.claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{f.front.URL} })), "invalid audience"},
		{"iss another client", f.signed(t, f.key, "gateway-key", f.claims(func(c *jwt.Claims) { c.Issuer = "other" })), "invalid issuer"},
		{"expired", f.signed(t, f.key, "gateway-key", f.claims(func(c *jwt.Claims) {
			c.Expiry = jwt.NewNumericDate(time.Now().Add(-time.Minute))
		})), "expired"},
		{"no jti", f.signed(t, f.key, "gateway-key", f.claims(func(c *jwt.Claims) { c.ID = "" })), "no jti"},
		{"lives two hours", f.signed(t, f.key, "gateway-key", f.claims(func(c *jwt.Claims) {
			c.Expiry = jwt.NewNumericDate(time.Now().Add(2 * time.Hour))
		})), "longer than one hour"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := f.exchangeForm(OktaStyleClientID)
			form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
			form.Set("client_assertion", tc.assertion)
			before := f.idp.Exchanges()
			status, body := f.post(t, form, "", "")
			if tc.want == "" {
				if status != 200 || body["access_token"] == nil || f.idp.Exchanges() != before+1 {
					t.Fatalf("HTTP %d %v", status, body)
				}
				return
			}
			description, _ := body["error_description"].(string)
			if status != 401 || body["error"] != "invalid_client" || !strings.Contains(description, tc.want) || f.idp.Exchanges() != before {
				t.Errorf("HTTP %d %v, want invalid_client with %q and no exchange", status, body, tc.want)
			}
		})
	}
}

func (f *frontTest) testTLSClientAuth(t *testing.T) {
	tests := []struct {
		name              string
		certFile, keyFile string
		alter             func(url.Values)
		want              string
	}{
		{"registered certificate", f.certFile, f.keyFile, nil, ""},
		{"no certificate", "", "", nil, "no client certificate"},
		{"certificate of another subject", f.strangerCrt, f.strangerKey, nil, "is not the registered"},
		{"a secret as well", f.certFile, f.keyFile, func(v url.Values) { v.Set("client_secret", GatewaySecret) }, "not with a secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := f.exchangeForm(KeycloakStyleClientID)
			if tc.alter != nil {
				tc.alter(form)
			}
			before := f.front.Calls("tls_client_auth")
			status, body := f.post(t, form, tc.certFile, tc.keyFile)
			if tc.want == "" {
				if status != 200 || body["access_token"] == nil || f.front.Calls("tls_client_auth") != before+1 {
					t.Fatalf("HTTP %d %v", status, body)
				}
				return
			}
			description, _ := body["error_description"].(string)
			if status != 401 || !strings.Contains(description, tc.want) {
				t.Errorf("HTTP %d %v, want 401 with %q", status, body, tc.want)
			}
		})
	}
}
