package oboexchange

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// Every key format the issue lists is read, and each key type gets its default algorithm.
func TestParsePrivateKey(t *testing.T) {
	rsaKey := testRSAKey(t, 1)
	p256 := testECKey(t, elliptic.P256())
	p384 := testECKey(t, elliptic.P384())
	sec1, err := x509.MarshalECPrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := pemEncode("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	tests := []struct {
		name    string
		pem     []byte
		alg     string // clientAssertionAlg
		flow    string
		wantAlg string
	}{
		{"PKCS#8 RSA", pkcs8PEM(t, rsaKey), "", flowRFC8693, "RS256"},
		{"PKCS#8 RSA with flow entra", pkcs8PEM(t, rsaKey), "", flowEntra, "PS256"},
		{"PKCS#1 RSA", pemEncode("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), "", flowRFC8693, "RS256"},
		{"RSA with PS256 chosen", pkcs8PEM(t, rsaKey), "PS256", flowRFC8693, "PS256"},
		{"RSA with RS256 chosen for entra", pkcs8PEM(t, rsaKey), "RS256", flowEntra, "RS256"},
		{"PKCS#8 EC P-256", pkcs8PEM(t, p256), "", flowRFC8693, "ES256"},
		{"SEC1 EC P-384", pemEncode("EC PRIVATE KEY", sec1), "", flowRFC8693, "ES384"},
		{"SEC1 after EC PARAMETERS (openssl ecparam -genkey)", append(ecParams, pemEncode("EC PRIVATE KEY", sec1)...), "ES384", flowEntra, "ES384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parsePrivateKey(tc.pem, tc.alg, tc.flow)
			if err != nil {
				t.Fatal(err)
			}
			if k.alg != tc.wantAlg {
				t.Errorf("alg = %s, want %s", k.alg, tc.wantAlg)
			}
			if (k.rsa != nil) == (k.ec != nil) || len(k.public) == 0 {
				t.Errorf("key not set as one type: rsa %v ec %v", k.rsa != nil, k.ec != nil)
			}
		})
	}
}

// A key the plugin cannot use is refused with what to do about it.
func TestParsePrivateKeyErrors(t *testing.T) {
	rsaKey := testRSAKey(t, 1)
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p521 := testECKey(t, elliptic.P521())
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "ca")
	legacy := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1, 2, 3}})
	tests := []struct {
		name string
		pem  []byte
		alg  string
		want string
	}{
		{"empty", nil, "", "no PEM block found"},
		{"not PEM", []byte("secret"), "", "no PEM block found"},
		{"a certificate", ca.pem, "", "no private key found, only CERTIFICATE"},
		{"a public key", pemEncode("PUBLIC KEY", mustPKIX(t, &rsaKey.PublicKey)), "", "no private key found, only PUBLIC KEY"},
		{"PKCS#8 encrypted", pemEncode("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), "", "the key is encrypted"},
		{"legacy encrypted PEM", legacy, "", "the key is encrypted"},
		{"corrupt PKCS#8", pemEncode("PRIVATE KEY", []byte{1, 2, 3}), "", "not a valid PKCS#8 private key"},
		{"corrupt PKCS#1", pemEncode("RSA PRIVATE KEY", []byte{1, 2, 3}), "", "not a valid PKCS#1 RSA private key"},
		{"corrupt SEC1", pemEncode("EC PRIVATE KEY", []byte{1, 2, 3}), "", "not a valid SEC1 EC private key"},
		{"OpenSSH key", pemEncode("OPENSSH PRIVATE KEY", []byte{1, 2, 3}), "", `unsupported PEM block "OPENSSH PRIVATE KEY"`},
		{"RSA 1024", pkcs8PEM(t, short), "", "the RSA key has 1024 bits; use 2048 or more"},
		{"EC P-521", pkcs8PEM(t, p521), "", "the EC key is on curve P-521; use P-256 or P-384"},
		{"Ed25519", pkcs8PEM(t, edKey), "", "unsupported key type"},
		{"ES256 with an RSA key", pkcs8PEM(t, rsaKey), "ES256", "clientAssertionAlg ES256 does not fit an RSA key; use RS256 or PS256"},
		{"RS256 with an EC key", pkcs8PEM(t, testECKey(t, elliptic.P256())), "RS256", "clientAssertionAlg RS256 does not fit an EC P-256 key; use ES256"},
		{"ES384 with a P-256 key", pkcs8PEM(t, testECKey(t, elliptic.P256())), "ES384", "clientAssertionAlg ES384 does not fit an EC P-256 key; use ES256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePrivateKey(tc.pem, tc.alg, flowRFC8693)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func mustPKIX(t *testing.T, public interface{}) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Each algorithm signs an assertion that the public key verifies, with every header and claim of
// the issue and nothing else.
func TestSignAssertion(t *testing.T) {
	rsaKey := testRSAKey(t, 1)
	tests := []struct {
		name string
		key  interface{}
		alg  string
	}{
		{"RS256", rsaKey, "RS256"},
		{"PS256", rsaKey, "PS256"},
		{"ES256", testECKey(t, elliptic.P256()), "ES256"},
		{"ES384", testECKey(t, elliptic.P384()), "ES384"},
	}
	now := time.Unix(1900000000, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parsePrivateKey(pkcs8PEM(t, tc.key), tc.alg, flowRFC8693)
			if err != nil {
				t.Fatal(err)
			}
			assertion, err := signAssertion(k, nil, "gateway", "https://idp.example.com/token", "key-1", now)
			if err != nil {
				t.Fatal(err)
			}
			header, claims := verifyAssertion(t, assertion, publicOf(tc.key))
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

// Two assertions never share a jti, and an ECDSA signature differs each time (random nonce).
func TestSignAssertionFreshJTI(t *testing.T) {
	k, err := parsePrivateKey(pkcs8PEM(t, testECKey(t, elliptic.P256())), "", flowRFC8693)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		a, err := signAssertion(k, nil, "gateway", "aud", "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, claims := verifyAssertion(t, a, &k.ec.PublicKey)
		jti := claims["jti"].(string)
		if seen[jti] {
			t.Fatalf("jti %s repeated", jti)
		}
		seen[jti] = true
	}
}

// x5t#S256 is the base64url SHA-256 of the leaf certificate's DER, the leaf being the first of
// the file; kid is absent unless set.
func TestCertificateThumbprint(t *testing.T) {
	rsaKey := testRSAKey(t, 1)
	ca := newTestCA(t, "chain-ca")
	leaf := ca.issue(t, &rsaKey.PublicKey, "gateway", false)
	file := append(pemEncode("CERTIFICATE", leaf), ca.pem...)
	c, err := parseCertificates(file)
	if err != nil {
		t.Fatal(err)
	}
	if c.x5t != x5tS256(leaf) || len(c.der) != 2 {
		t.Errorf("x5t %s (want %s), %d certificates", c.x5t, x5tS256(leaf), len(c.der))
	}
	k, err := parsePrivateKey(pkcs8PEM(t, rsaKey), "", flowEntra)
	if err != nil {
		t.Fatal(err)
	}
	a, err := signAssertion(k, c, "app", "aud", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	header, _ := verifyAssertion(t, a, &rsaKey.PublicKey)
	wantMap(t, "header", header, map[string]interface{}{"alg": "PS256", "typ": "JWT", "x5t#S256": x5tS256(leaf)})
}

func TestParseCertificatesErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM certificate found"},
		{"a key only", pkcs8PEM(t, testECKey(t, elliptic.P256())), "no PEM certificate found"},
		{"corrupt", pemEncode("CERTIFICATE", []byte{1, 2, 3}), "the first certificate is not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseCertificates(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want %q", err, tc.want)
			}
			if _, err := parseCAPool(tc.data); err == nil {
				t.Error("parseCAPool accepted it")
			}
		})
	}
}

func TestParseAssertion(t *testing.T) {
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
			got, err := parseAssertion([]byte(tc.data))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v", got, err)
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
	ca := newTestCA(t, "ca")
	key := testECKey(t, elliptic.P256())
	k, err := parsePrivateKey(pkcs8PEM(t, key), "", flowRFC8693)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := parseCertificates(pemEncode("CERTIFICATE", ca.issue(t, &key.PublicKey, "gateway", false)))
	other, _ := parseCertificates(pemEncode("CERTIFICATE", ca.issue(t, &testECKey(t, elliptic.P256()).PublicKey, "gateway", false)))
	p, err := a.match(k, mine)
	if err != nil || p.tls == nil || !p.tls.PrivateKey.(*ecdsa.PrivateKey).Equal(key) || len(p.tls.Certificate) != 1 {
		t.Errorf("matching pair: %v, tls %v", err, p.tls)
	}
	if _, err := a.match(k, other); err == nil || !strings.Contains(err.Error(), "does not match the key") {
		t.Errorf("mismatch: %v", err)
	}
}
