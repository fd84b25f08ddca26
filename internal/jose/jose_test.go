package jose

import (
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// Every key format is read, and each key type gets its default algorithm.
func TestParsePrivateKey(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	p384 := josetest.ECKey(t, elliptic.P384())
	sec1, err := x509.MarshalECPrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := josetest.PEM("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	ca := josetest.NewCA(t, "ca")
	tests := []struct {
		name    string
		pem     []byte
		wantAlg string
		wantRSA bool
	}{
		{"PKCS#8 RSA", josetest.PKCS8(t, rsaKey), RS256, true},
		{"PKCS#1 RSA", josetest.PEM("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), RS256, true},
		{"PKCS#8 EC P-256", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())), ES256, false},
		{"SEC1 EC P-384", josetest.PEM("EC PRIVATE KEY", sec1), ES384, false},
		{"SEC1 after EC PARAMETERS (openssl ecparam -genkey)", append(ecParams, josetest.PEM("EC PRIVATE KEY", sec1)...), ES384, false},
		{"key after its certificate", append(append([]byte{}, ca.PEM...), josetest.PKCS8(t, rsaKey)...), RS256, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePrivateKey(tc.pem)
			if err != nil {
				t.Fatal(err)
			}
			if k.Alg() != tc.wantAlg || k.IsRSA() != tc.wantRSA || len(k.PublicKeyDER()) == 0 || k.Signer() == nil {
				t.Errorf("alg %s rsa %v public %d bytes; want %s rsa %v", k.Alg(), k.IsRSA(), len(k.PublicKeyDER()), tc.wantAlg, tc.wantRSA)
			}
		})
	}
}

// A key the plugin cannot use is refused with what to do about it.
func TestParsePrivateKeyErrors(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := josetest.NewCA(t, "ca")
	legacy := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1, 2, 3}})
	tests := []struct {
		name string
		pem  []byte
		want string
	}{
		{"empty", nil, "no PEM block found"},
		{"not PEM", []byte("secret"), "no PEM block found"},
		{"a certificate", ca.PEM, "no private key found, only CERTIFICATE"},
		{"a public key", josetest.PEM("PUBLIC KEY", josetest.PKIX(t, &rsaKey.PublicKey)), "no private key found, only PUBLIC KEY"},
		{"PKCS#8 encrypted", josetest.PEM("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), "the key is encrypted"},
		{"legacy encrypted PEM", legacy, "the key is encrypted"},
		{"corrupt PKCS#8", josetest.PEM("PRIVATE KEY", []byte{1, 2, 3}), "not a valid PKCS#8 private key"},
		{"corrupt PKCS#1", josetest.PEM("RSA PRIVATE KEY", []byte{1, 2, 3}), "not a valid PKCS#1 RSA private key"},
		{"corrupt SEC1", josetest.PEM("EC PRIVATE KEY", []byte{1, 2, 3}), "not a valid SEC1 EC private key"},
		{"OpenSSH key", josetest.PEM("OPENSSH PRIVATE KEY", []byte{1, 2, 3}), `unsupported PEM block "OPENSSH PRIVATE KEY"`},
		{"RSA 1024", josetest.PKCS8(t, short), "the RSA key has 1024 bits; use 2048 or more"},
		{"EC P-521", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P521())), "the EC key is on curve P-521; use P-256 or P-384"},
		{"Ed25519", josetest.PKCS8(t, edKey), "unsupported key type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePrivateKey(tc.pem)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// WithAlg picks another algorithm only where it fits the key.
func TestWithAlg(t *testing.T) {
	rsaKey, err := ParsePrivateKey(josetest.PKCS8(t, josetest.RSAKey(t, 1)))
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ParsePrivateKey(josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     *PrivateKey
		alg     string
		wantAlg string
		wantErr string
	}{
		{"default", rsaKey, "", RS256, ""},
		{"RSA with PS256", rsaKey, PS256, PS256, ""},
		{"RSA with ES256", rsaKey, ES256, "", "ES256 does not fit an RSA key; use RS256 or PS256"},
		{"EC with its own", p256, ES256, ES256, ""},
		{"EC with RS256", p256, RS256, "", "RS256 does not fit an EC P-256 key; use ES256"},
		{"P-256 with ES384", p256, ES384, "", "ES384 does not fit an EC P-256 key; use ES256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.key.WithAlg(tc.alg)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || k.Alg() != tc.wantAlg {
				t.Errorf("alg %v, %v; want %s", k, err, tc.wantAlg)
			}
		})
	}
	if rsaKey.Alg() != RS256 {
		t.Error("WithAlg changed the key it was called on")
	}
}

// Each algorithm signs a JWS that the public key verifies independently, with the header asked
// for and the key's alg.
func TestSign(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	tests := []struct {
		alg string
		key interface{}
	}{
		{RS256, rsaKey},
		{PS256, rsaKey},
		{ES256, josetest.ECKey(t, elliptic.P256())},
		{ES384, josetest.ECKey(t, elliptic.P384())},
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			k, err := ParsePrivateKey(josetest.PKCS8(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if k, err = k.WithAlg(tc.alg); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for i := 0; i < 3; i++ {
				token, err := Sign(k, Header{Alg: "none", Typ: "JWT", Kid: "key-1"}, map[string]interface{}{"sub": "gateway"})
				if err != nil {
					t.Fatal(err)
				}
				header, claims := josetest.Verify(t, token, josetest.Public(tc.key))
				if len(header) != 3 || header["alg"] != tc.alg || header["typ"] != "JWT" || header["kid"] != "key-1" {
					t.Errorf("header %v", header)
				}
				if len(claims) != 1 || claims["sub"] != "gateway" {
					t.Errorf("claims %v", claims)
				}
				seen[token] = true
			}
			if (tc.alg == ES256 || tc.alg == PS256) && len(seen) != 3 {
				t.Errorf("%s signatures repeat: %d distinct of 3", tc.alg, len(seen))
			}
		})
	}
}

// The thumbprint is the base64url SHA-256 of the leaf's DER, the leaf being the first certificate.
func TestParseChain(t *testing.T) {
	rsaKey := josetest.RSAKey(t, 1)
	ca := josetest.NewCA(t, "chain-ca")
	leaf := ca.Issue(t, &rsaKey.PublicKey, "gateway", false)
	c, err := ParseChain(append(josetest.PEM("CERTIFICATE", leaf), ca.PEM...))
	if err != nil {
		t.Fatal(err)
	}
	if c.ThumbprintS256 != josetest.Thumbprint(leaf) || len(c.DER) != 2 || string(c.PublicKeyDER) != string(josetest.PKIX(t, &rsaKey.PublicKey)) {
		t.Errorf("thumbprint %s (want %s), %d certificates", c.ThumbprintS256, josetest.Thumbprint(leaf), len(c.DER))
	}
	pool, err := ParseCAPool(ca.PEM)
	if err != nil || !pool.Equal(ca.Pool()) {
		t.Errorf("CA pool: %v", err)
	}
}

func TestParseChainErrors(t *testing.T) {
	ca := josetest.NewCA(t, "ca")
	tests := []struct {
		name      string
		data      []byte
		wantChain string
		wantPool  string
	}{
		{"empty", nil, "no PEM certificate found", "no PEM certificate found"},
		{"a key only", josetest.PKCS8(t, josetest.ECKey(t, elliptic.P256())), "no PEM certificate found", "no PEM certificate found"},
		{"corrupt", josetest.PEM("CERTIFICATE", []byte{1, 2, 3}), "the first certificate is not valid", "certificate 1 is not valid"},
		{"corrupt second", append(append([]byte{}, ca.PEM...), josetest.PEM("CERTIFICATE", []byte{1, 2, 3})...), "", "certificate 2 is not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseChain(tc.data)
			if tc.wantChain == "" && err != nil || tc.wantChain != "" && (err == nil || !strings.Contains(err.Error(), tc.wantChain)) {
				t.Errorf("ParseChain: %v, want %q", err, tc.wantChain)
			}
			if _, err := ParseCAPool(tc.data); err == nil || !strings.Contains(err.Error(), tc.wantPool) {
				t.Errorf("ParseCAPool: %v, want %q", err, tc.wantPool)
			}
		})
	}
}

func TestIsCompact(t *testing.T) {
	tests := []struct {
		token string
		want  bool
	}{
		{"eyJh.eyJp.c2ln", true},
		{"eyJh.eyJp.", true},
		{"eyJh.eyJp", false},
		{"eyJh.ey Jp.c2ln", false},
		{"eyJh..c2ln", false},
		{".eyJp.c2ln", false},
		{"eyJh.eyJp.c2ln.x", false},
		{"eyJh.eyJp.c2l=", false},
	}
	for _, tc := range tests {
		if got := IsCompact(tc.token); got != tc.want {
			t.Errorf("IsCompact(%q) = %v, want %v", tc.token, got, tc.want)
		}
	}
}

func TestExpiry(t *testing.T) {
	tests := []struct {
		name  string
		token string
		exp   int64 // 0: none
	}{
		{"exp", josetest.UnsignedJWT(map[string]interface{}{"exp": 1900000000}), 1900000000},
		{"fractional exp", josetest.UnsignedJWT(map[string]interface{}{"exp": 1900000000.7}), 1900000000},
		{"no exp", josetest.UnsignedJWT(map[string]interface{}{"sub": "u"}), 0},
		{"exp as string", josetest.UnsignedJWT(map[string]interface{}{"exp": "1900000000"}), 0},
		{"negative exp", josetest.UnsignedJWT(map[string]interface{}{"exp": -5}), 0},
		{"exp past year 9999", josetest.UnsignedJWT(map[string]interface{}{"exp": 1e20}), 0},
		{"opaque", "opaque-token", 0},
		{"two parts", "a.b", 0},
		{"four parts", "a.b.c.d", 0},
		{"payload not base64", "a.!!!.c", 0},
		{"payload not json", "a." + "bm90IGpzb24" + ".c", 0},
		{"handmade payload", "a.eyJleHAiOjE5MDAwMDAwMDB9.c", 1900000000},
		{"padded payload", "a.eyJleHAiOjE5MDAwMDAwMDB9==.c", 1900000000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp, ok := Expiry(tc.token)
			if tc.exp == 0 {
				if ok {
					t.Errorf("exp %v, want none", exp)
				}
				return
			}
			if !ok || exp.Unix() != tc.exp {
				t.Errorf("exp %v ok %v, want %d", exp.Unix(), ok, tc.exp)
			}
		})
	}
}

// UnverifiedClaims decodes what the payload holds into the caller's type.
func TestUnverifiedClaims(t *testing.T) {
	var c struct {
		Iss string   `json:"iss"`
		Aud []string `json:"aud"`
	}
	token := josetest.UnsignedJWT(map[string]interface{}{"iss": "https://idp", "aud": []string{"a", "b"}})
	if !UnverifiedClaims(token, &c) || c.Iss != "https://idp" || len(c.Aud) != 2 {
		t.Errorf("claims %+v", c)
	}
	if UnverifiedClaims("opaque", &c) || UnverifiedClaims("a.bm90IGpzb24.c", &c) {
		t.Error("claims read from a token that has none")
	}
}
