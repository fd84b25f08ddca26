package oboexchange

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"strings"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// parseKey runs the parser of clientKeyFile.
func parseKey(t *testing.T, data []byte, alg, flow string) (*jose.PrivateKey, error) {
	t.Helper()
	v, err := parseKeyFile(alg, flow)(data)
	if err != nil {
		return nil, err
	}
	return v.(*jose.PrivateKey), nil
}

// Each key type gets its default algorithm, and an RSA key defaults to PS256 for flow entra.
func TestKeyFileAlgorithm(t *testing.T) {
	rsaKey := josetest.PKCS8(t, josetest.RSAKey(t, 1))
	tests := []struct {
		name    string
		pem     []byte
		alg     string // clientAssertionAlg
		flow    string
		wantAlg string
		wantErr string
	}{
		{"RSA", rsaKey, "", flowRFC8693, "RS256", ""},
		{"RSA with flow entra", rsaKey, "", flowEntra, "PS256", ""},
		{"RSA with PS256 chosen", rsaKey, "PS256", flowRFC8693, "PS256", ""},
		{"RSA with RS256 chosen for entra", rsaKey, "RS256", flowEntra, "RS256", ""},
		{"EC P-256", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())), "", flowEntra, "ES256", ""},
		{"EC P-384", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P384())), "", flowRFC8693, "ES384", ""},
		{"ES256 with an RSA key", rsaKey, "ES256", flowRFC8693, "", "clientAssertionAlg ES256 does not fit an RSA key; use RS256 or PS256, or leave it unset"},
		{"RS256 with an EC key", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())), "RS256", flowRFC8693, "", "clientAssertionAlg RS256 does not fit an EC P-256 key; use ES256, or leave it unset"},
		{"not a key", []byte("secret"), "", flowRFC8693, "", "no PEM block found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parseKey(t, tc.pem, tc.alg, tc.flow)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || k.Alg() != tc.wantAlg {
				t.Errorf("alg %v, %v; want %s", k, err, tc.wantAlg)
			}
		})
	}
}

// Each algorithm signs an assertion that the public key verifies, with every header and claim of
// RFC 7523 and nothing else.
func TestSignAssertion(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	tests := []struct {
		name string
		key  interface{}
		alg  string
	}{
		{"RS256", rsaKey, "RS256"},
		{"PS256", rsaKey, "PS256"},
		{"ES256", josetest.ECKey(t, elliptic.P256()), "ES256"},
		{"ES384", josetest.ECKey(t, elliptic.P384()), "ES384"},
	}
	now := time.Unix(1900000000, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parseKey(t, josetest.PKCS8(t, tc.key), tc.alg, flowRFC8693)
			if err != nil {
				t.Fatal(err)
			}
			assertion, err := signAssertion(k, nil, "gateway", "https://idp.example.com/token", "key-1", now)
			if err != nil {
				t.Fatal(err)
			}
			header, claims := josetest.Verify(t, assertion, josetest.Public(tc.key))
			wantMap(t, "header", header, map[string]interface{}{"alg": tc.alg, "typ": "JWT", "kid": "key-1"})
			jti, _ := claims["jti"].(string)
			if len(jti) != 32 || strings.Trim(jti, "0123456789abcdef") != "" {
				t.Errorf("jti = %q, want 32 hex digits", jti)
			}
			delete(claims, "jti")
			wantMap(t, "claims", claims, map[string]interface{}{
				"iss": "gateway", "sub": "gateway", "aud": "https://idp.example.com/token",
				"iat": float64(1900000000), "nbf": float64(1900000000), "exp": float64(1900000300),
			})
		})
	}
}

func wantMap(t *testing.T, what string, got, want map[string]interface{}) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s %s = %v, want %v", what, k, got[k], v)
		}
	}
}

// Two assertions never share a jti.
func TestSignAssertionFreshJTI(t *testing.T) {
	key := josetest.ECKey(t, elliptic.P256())
	k, err := parseKey(t, josetest.PKCS8(t, key), "", flowRFC8693)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		a, err := signAssertion(k, nil, "gateway", "aud", "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, claims := josetest.Verify(t, a, &key.PublicKey)
		jti := claims["jti"].(string)
		if seen[jti] {
			t.Fatalf("jti %s repeated", jti)
		}
		seen[jti] = true
	}
}

// With a certificate, the header names it by x5t#S256 (the leaf being the first of the file), and
// kid is absent unless set.
func TestAssertionCertificateThumbprint(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	ca := josetest.NewCA(t, "chain-ca")
	leaf := ca.Issue(t, &rsaKey.PublicKey, "gateway", false)
	v, err := parseCertFile(append(josetest.PEM("CERTIFICATE", leaf), ca.PEM...))
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseKey(t, josetest.PKCS8(t, rsaKey), "", flowEntra)
	if err != nil {
		t.Fatal(err)
	}
	a, err := signAssertion(k, v.(*jose.Chain), "app", "aud", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	header, _ := josetest.Verify(t, a, &rsaKey.PublicKey)
	wantMap(t, "header", header, map[string]interface{}{"alg": "PS256", "typ": "JWT", "x5t#S256": josetest.Thumbprint(leaf)})
}

func TestParseAssertionFile(t *testing.T) {
	tests := []struct {
		name, data, want, err string
	}{
		{name: "projected token with a newline", data: "eyJh.eyJp.c2ln\n", want: "eyJh.eyJp.c2ln"},
		{name: "empty", data: " \n", err: "the file is empty"},
		{name: "two parts", data: "eyJh.eyJp", err: "does not hold a JWT"},
		{name: "not base64url", data: "eyJh.ey Jp.c2ln", err: "does not hold a JWT"},
		{name: "empty payload", data: "eyJh..c2ln", err: "does not hold a JWT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseAssertionFile([]byte(tc.data))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || v.(string) != tc.want {
				t.Errorf("got %v, %v", v, err)
			}
		})
	}
}

// The identity of a ready-made assertion is its iss, sub and aud: a renewed token (new exp, iat,
// jti) has the same one.
func TestAssertionIdentity(t *testing.T) {
	first := testJWT(map[string]interface{}{"iss": "https://oidc.aks", "sub": "system:serviceaccount:traefik:traefik", "aud": []string{"api://AzureADTokenExchange"}, "exp": 1, "jti": "a"})
	renewed := testJWT(map[string]interface{}{"iss": "https://oidc.aks", "sub": "system:serviceaccount:traefik:traefik", "aud": []string{"api://AzureADTokenExchange"}, "exp": 2, "jti": "b"})
	other := testJWT(map[string]interface{}{"iss": "https://oidc.aks", "sub": "system:serviceaccount:other:other", "aud": []string{"api://AzureADTokenExchange"}, "exp": 1})
	if assertionIdentity(first) != assertionIdentity(renewed) || assertionIdentity(first) == assertionIdentity(other) || assertionIdentity(first) == "" {
		t.Errorf("identities: %q %q %q", assertionIdentity(first), assertionIdentity(renewed), assertionIdentity(other))
	}
}

// A key and a certificate match when their public keys are the same.
func TestKeyCertificateMatch(t *testing.T) {
	a := &clientAuth{method: authTLSClient}
	ca := josetest.NewCA(t, "ca")
	key := josetest.ECKey(t, elliptic.P256())
	k, err := parseKey(t, josetest.PKCS8(t, key), "", flowRFC8693)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := parseCertFile(josetest.PEM("CERTIFICATE", ca.Issue(t, &key.PublicKey, "gateway", false)))
	other, _ := parseCertFile(josetest.PEM("CERTIFICATE", ca.Issue(t, &josetest.ECKey(t, elliptic.P256()).PublicKey, "gateway", false)))
	p, err := a.match(k, mine.(*jose.Chain))
	if err != nil || p.tls == nil || !p.tls.PrivateKey.(*ecdsa.PrivateKey).Equal(key) || len(p.tls.Certificate) != 1 {
		t.Errorf("matching pair: %v, tls %v", err, p.tls)
	}
	if _, err := a.match(k, other.(*jose.Chain)); err == nil || !strings.Contains(err.Error(), "does not match the key") {
		t.Errorf("mismatch: %v", err)
	}
}
