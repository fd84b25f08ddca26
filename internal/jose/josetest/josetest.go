// Package josetest makes keys, certificates and tokens for tests, and checks signatures
// independently of package jose: what the plugin signs is verified here with the standard
// library's primitives directly. Keys are generated in the tests, never committed. It imports the
// standard library only, so that the tests using it run under Yaegi too.
package josetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// RSA keys are slow to make, so each is made once per test binary.
var (
	rsaMu   sync.Mutex
	rsaKeys = map[int]*rsa.PrivateKey{}
)

// RSAKey returns the n-th 2048-bit RSA test key.
func RSAKey(t testing.TB, n int) *rsa.PrivateKey {
	t.Helper()
	rsaMu.Lock()
	defer rsaMu.Unlock()
	if k := rsaKeys[n]; k != nil {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys[n] = k
	return k
}

// ECKey returns a new EC key on curve.
func ECKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Public returns the public half of a test key.
func Public(key interface{}) interface{} {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	}
	return nil
}

// PEM encodes one block.
func PEM(blockType string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
}

// PKCS8 is a test key as a PKCS#8 PEM file.
func PKCS8(t testing.TB, key interface{}) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return PEM("PRIVATE KEY", der)
}

// PKIX is a public key in PKIX DER.
func PKIX(t testing.TB, public interface{}) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// CA is a private certificate authority of the tests.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// NewCA makes a CA named name, valid for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := ECKey(t, elliptic.P256())
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, PEM: PEM("CERTIFICATE", der), key: key}
}

// Issue signs a certificate (DER) for public: a server certificate for 127.0.0.1 and localhost,
// or a client certificate named cn.
func (ca *CA) Issue(t testing.TB, public interface{}, cn string, server bool) []byte {
	t.Helper()
	template := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		template.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		template.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.Cert, public, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ServerCertificate is a server certificate of this CA for 127.0.0.1 and localhost, with its key.
func (ca *CA) ServerCertificate(t testing.TB) tls.Certificate {
	t.Helper()
	key := ECKey(t, elliptic.P256())
	return tls.Certificate{Certificate: [][]byte{ca.Issue(t, &key.PublicKey, "127.0.0.1", true)}, PrivateKey: key}
}

// Pool is a pool holding this CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Thumbprint computes the x5t#S256 of a certificate.
func Thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// UnsignedJWT is a token of three parts whose payload holds claims and whose signature is not one:
// for what reads claims without verifying them.
func UnsignedJWT(claims map[string]interface{}) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2lnbmF0dXJl"
}

// Verify checks a compact JWS's signature with the public key, for its alg, and returns its header
// and claims; it fails the test otherwise (see Check).
func Verify(t testing.TB, token string, public interface{}) (map[string]interface{}, map[string]interface{}) {
	t.Helper()
	header, claims, err := Check(token, public)
	if err != nil {
		t.Fatal(err)
	}
	return header, claims
}

// Check verifies a compact JWS's signature with the public key, for its alg (RS256, PS256, ES256
// or ES384), and returns its header and claims. RSA-PSS is verified with a salt of exactly the
// hash's length; ECDSA signatures must be r and s of the curve's size. It does not fail the test,
// so a fake server's handler can call it.
func Check(token string, public interface{}) (map[string]interface{}, map[string]interface{}, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("token has %d parts", len(parts))
	}
	header, err := decodePart(parts[0])
	if err != nil {
		return nil, nil, err
	}
	claims, err := decodePart(parts[1])
	if err != nil {
		return nil, nil, err
	}
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, nil, fmt.Errorf("signature: %v", err)
	}
	input := []byte(parts[0] + "." + parts[1])
	sum256 := sha256.Sum256(input)
	sum384 := sha512.Sum384(input)
	rsaKey, _ := public.(*rsa.PublicKey)
	ecKey, _ := public.(*ecdsa.PublicKey)
	alg, _ := header["alg"].(string) // a string: Yaegi cannot switch on an interface{} against string cases
	switch {
	case alg == "RS256" && rsaKey != nil:
		err = rsa.VerifyPKCS1v15(rsaKey, crypto.SHA256, sum256[:], signature)
	case alg == "PS256" && rsaKey != nil:
		err = rsa.VerifyPSS(rsaKey, crypto.SHA256, sum256[:], signature, &rsa.PSSOptions{SaltLength: 32})
	case alg == "ES256" && ecKey != nil:
		err = verifyECDSA(ecKey, sum256[:], signature, 32)
	case alg == "ES384" && ecKey != nil:
		err = verifyECDSA(ecKey, sum384[:], signature, 48)
	default:
		return nil, nil, fmt.Errorf("alg %q with a %T key", alg, public)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s signature does not verify: %v", alg, err)
	}
	return header, claims, nil
}

func verifyECDSA(public *ecdsa.PublicKey, digest, signature []byte, size int) error {
	if len(signature) != 2*size {
		return fmt.Errorf("signature is %d bytes, want %d (r and s of %d bytes)", len(signature), 2*size, size)
	}
	r := new(big.Int).SetBytes(signature[:size])
	s := new(big.Int).SetBytes(signature[size:])
	if !ecdsa.Verify(public, digest, r, s) {
		return errors.New("ecdsa.Verify failed")
	}
	return nil
}

// Part decodes one base64url JSON part of a token.
func Part(t testing.TB, part string) map[string]interface{} {
	t.Helper()
	m, err := decodePart(part)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func decodePart(part string) (map[string]interface{}, error) {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return nil, fmt.Errorf("part %q: %v", part, err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("part %q: %v", raw, err)
	}
	return m, nil
}
