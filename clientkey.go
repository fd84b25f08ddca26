package oboexchange

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The signing algorithms of a private_key_jwt client assertion (RFC 7518 section 3.1).
const (
	algRS256 = "RS256"
	algPS256 = "PS256"
	algES256 = "ES256"
	algES384 = "ES384"
)

// assertionLifetime is how long a signed client assertion is valid: long enough for the
// exchange and a retry, short enough that a captured one is soon useless.
const assertionLifetime = 5 * time.Minute

// privateKey is the parsed clientKeyFile: the key, and the algorithm it signs assertions with.
type privateKey struct {
	rsa    *rsa.PrivateKey   // set for an RSA key
	ec     *ecdsa.PrivateKey // set for an EC key
	alg    string            // clientAssertionAlg, or the default for the key type
	public []byte            // the public key, PKIX DER, to match a certificate against
}

// certChain is the parsed clientCertFile: the leaf first, then the chain as given.
type certChain struct {
	der    [][]byte
	public []byte // the leaf's public key, PKIX DER
	x5t    string // the x5t#S256 header: base64url of the SHA-256 of the leaf's DER (RFC 7515 4.1.8)
}

// parsePrivateKey reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). alg is
// clientAssertionAlg ("" for the default: PS256 for an RSA key with flow entra, which is what
// Microsoft documents with x5t#S256, RS256 for other RSA keys, ES256 or ES384 by curve).
func parsePrivateKey(data []byte, alg, flow string) (*privateKey, error) {
	block, types := findPEM(data, "PRIVATE KEY")
	if block == nil {
		if len(types) == 0 {
			return nil, errors.New("no PEM block found; give the private key in PEM (-----BEGIN PRIVATE KEY-----)")
		}
		return nil, fmt.Errorf("no private key found, only %s; give the private key in PEM (PKCS#8, PKCS#1 or SEC1)", strings.Join(types, ", "))
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, errors.New("the key is encrypted and the plugin cannot ask for a passphrase; store it unencrypted (openssl pkey -in key.pem -out plain.pem) in a file only Traefik can read")
	}
	switch block.Type {
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid PKCS#8 private key: %v", err)
		}
		return newPrivateKey(key, alg, flow)
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid PKCS#1 RSA private key: %v", err)
		}
		return newPrivateKey(key, alg, flow)
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid SEC1 EC private key: %v", err)
		}
		return newPrivateKey(key, alg, flow)
	}
	return nil, fmt.Errorf("unsupported PEM block %q; use PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY", block.Type)
}

// findPEM returns the first PEM block whose type ends with suffix, and the types of the blocks
// it skipped (openssl ecparam writes EC PARAMETERS before the key; some bundles put the
// certificate first).
func findPEM(data []byte, suffix string) (*pem.Block, []string) {
	var types []string
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, types
		}
		if strings.HasSuffix(block.Type, suffix) {
			return block, types
		}
		types = append(types, block.Type)
		data = rest
	}
}

// newPrivateKey checks the key type, its size or curve, and that alg fits it.
func newPrivateKey(key interface{}, alg, flow string) (*privateKey, error) {
	k := &privateKey{}
	var public interface{}
	switch typed := key.(type) {
	case *rsa.PrivateKey:
		if typed.N.BitLen() < 2048 {
			return nil, fmt.Errorf("the RSA key has %d bits; use 2048 or more", typed.N.BitLen())
		}
		k.rsa = typed
		public = &typed.PublicKey
		k.alg = algRS256
		if flow == flowEntra {
			k.alg = algPS256
		}
		if alg != "" && alg != algRS256 && alg != algPS256 {
			return nil, fmt.Errorf("clientAssertionAlg %s does not fit an RSA key; use RS256 or PS256, or leave it unset", alg)
		}
	case *ecdsa.PrivateKey:
		curve := typed.Curve.Params().Name
		switch curve {
		case "P-256":
			k.alg = algES256
		case "P-384":
			k.alg = algES384
		default:
			return nil, fmt.Errorf("the EC key is on curve %s; use P-256 or P-384", curve)
		}
		if alg != "" && alg != k.alg {
			return nil, fmt.Errorf("clientAssertionAlg %s does not fit an EC %s key; use %s, or leave it unset", alg, curve, k.alg)
		}
		k.ec = typed
		public = &typed.PublicKey
	default:
		return nil, fmt.Errorf("unsupported key type %T; use an RSA key (2048 bits or more) or an EC P-256 or P-384 key", key)
	}
	if alg != "" {
		k.alg = alg
	}
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		return nil, err
	}
	k.public = der
	return k, nil
}

// signer returns the key as crypto/tls wants it.
func (k *privateKey) signer() crypto.PrivateKey {
	if k.rsa != nil {
		return k.rsa
	}
	return k.ec
}

// sign signs a JWS signing input with the key's algorithm. RSA-PSS uses a salt as long as the
// hash (RFC 7518 section 3.5); ECDSA signatures are r and s as fixed-size big-endian integers
// (RFC 7518 section 3.4), not ASN.1.
func (k *privateKey) sign(input string) ([]byte, error) {
	switch k.alg {
	case algRS256:
		digest := sha256.Sum256([]byte(input))
		return rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, digest[:])
	case algPS256:
		digest := sha256.Sum256([]byte(input))
		return rsa.SignPSS(rand.Reader, k.rsa, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case algES256:
		digest := sha256.Sum256([]byte(input))
		return signECDSA(k.ec, digest[:], 32)
	case algES384:
		digest := sha512.Sum384([]byte(input))
		return signECDSA(k.ec, digest[:], 48)
	}
	return nil, fmt.Errorf("unsupported algorithm %q", k.alg)
}

func signECDSA(key *ecdsa.PrivateKey, digest []byte, size int) ([]byte, error) {
	r, s, err := ecdsa.Sign(rand.Reader, key, digest)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

// parseCertificates reads a PEM certificate chain, leaf first.
func parseCertificates(data []byte) (*certChain, error) {
	c := &certChain{}
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			c.der = append(c.der, block.Bytes)
		}
		data = rest
	}
	if len(c.der) == 0 {
		return nil, errors.New("no PEM certificate found (-----BEGIN CERTIFICATE-----)")
	}
	leaf, err := x509.ParseCertificate(c.der[0])
	if err != nil {
		return nil, fmt.Errorf("the first certificate is not valid: %v", err)
	}
	if c.public, err = x509.MarshalPKIXPublicKey(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("the certificate's public key: %v", err)
	}
	sum := sha256.Sum256(c.der[0])
	c.x5t = base64.RawURLEncoding.EncodeToString(sum[:])
	return c, nil
}

// parseCAPool reads a PEM bundle of CA certificates into a pool: the roots trusted for the token
// endpoint instead of the system's.
func parseCAPool(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		data = rest
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d is not valid: %v", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate found (-----BEGIN CERTIFICATE-----)")
	}
	return pool, nil
}

// parseAssertion reads a ready-made client assertion: a JWT in compact form, as the kubelet
// writes a projected service-account token.
func parseAssertion(data []byte) (string, error) {
	assertion := strings.TrimSpace(string(data))
	if assertion == "" {
		return "", errors.New("the file is empty")
	}
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || strings.Trim(assertion, b64urlChars+".") != "" {
		return "", errors.New("the file does not hold a JWT (three base64url parts separated by dots)")
	}
	return assertion, nil
}

// b64urlChars are the characters of unpadded base64url.
const b64urlChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// assertionIdentity is what names the workload in a ready-made assertion (its iss, sub and aud),
// without the times and id that change each time the file is renewed.
func assertionIdentity(assertion string) string {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Iss + "\n" + claims.Sub + "\n" + string(claims.Aud)
}

// assertionHeader and assertionClaims are the JOSE header and the claims of a signed client
// assertion (RFC 7523 section 3; Entra's certificate credentials).
type assertionHeader struct {
	Alg     string `json:"alg"`
	Typ     string `json:"typ"`
	Kid     string `json:"kid,omitempty"`
	X5tS256 string `json:"x5t#S256,omitempty"`
}

type assertionClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Jti string `json:"jti"`
	Iat int64  `json:"iat"`
	Nbf int64  `json:"nbf"`
	Exp int64  `json:"exp"`
}

// signAssertion makes a client assertion: iss and sub are the client id, a fresh random jti
// (Okta refuses a jti it has seen), valid from now for assertionLifetime.
func signAssertion(key *privateKey, cert *certChain, clientID, audience, keyID string, now time.Time) (string, error) {
	header := assertionHeader{Alg: key.alg, Typ: "JWT", Kid: keyID}
	if cert != nil {
		header.X5tS256 = cert.x5t
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := assertionClaims{
		Iss: clientID, Sub: clientID, Aud: audience, Jti: hex.EncodeToString(jti),
		Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(assertionLifetime).Unix(),
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	signature, err := key.sign(input)
	if err != nil {
		return "", fmt.Errorf("signing the client assertion: %v", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(signature), nil
}
