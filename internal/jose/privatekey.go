package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PrivateKey is a key the plugin signs with (a private_key_jwt client assertion) or presents in a
// TLS handshake, and the algorithm it signs with.
type PrivateKey struct {
	rsa    *rsa.PrivateKey   // set for an RSA key
	ec     *ecdsa.PrivateKey // set for an EC key
	alg    string
	public []byte // the public key, PKIX DER
}

// ParsePrivateKey reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), the first such block
// of the data (openssl ecparam writes EC PARAMETERS before the key; some bundles put the
// certificate first). RSA keys need 2048 bits or more, EC keys the curve P-256 or P-384. The key
// signs with RS256 (RSA), ES256 (P-256) or ES384 (P-384) until WithAlg says otherwise.
func ParsePrivateKey(data []byte) (*PrivateKey, error) {
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
		return newPrivateKey(key)
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid PKCS#1 RSA private key: %v", err)
		}
		return newPrivateKey(key)
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid SEC1 EC private key: %v", err)
		}
		return newPrivateKey(key)
	}
	return nil, fmt.Errorf("unsupported PEM block %q; use PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY", block.Type)
}

// findPEM returns the first PEM block whose type ends with suffix, and the types of the blocks
// it skipped.
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

// newPrivateKey checks the key type and its size or curve, and gives it its default algorithm.
func newPrivateKey(key interface{}) (*PrivateKey, error) {
	k := &PrivateKey{}
	var public interface{}
	switch typed := key.(type) {
	case *rsa.PrivateKey:
		if typed.N.BitLen() < 2048 {
			return nil, fmt.Errorf("the RSA key has %d bits; use 2048 or more", typed.N.BitLen())
		}
		k.rsa, k.alg = typed, RS256
		public = &typed.PublicKey
	case *ecdsa.PrivateKey:
		switch typed.Curve.Params().Name {
		case "P-256":
			k.alg = ES256
		case "P-384":
			k.alg = ES384
		default:
			return nil, fmt.Errorf("the EC key is on curve %s; use P-256 or P-384", typed.Curve.Params().Name)
		}
		k.ec = typed
		public = &typed.PublicKey
	default:
		return nil, fmt.Errorf("unsupported key type %T; use an RSA key (2048 bits or more) or an EC P-256 or P-384 key", key)
	}
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		return nil, err
	}
	k.public = der
	return k, nil
}

// WithAlg returns the key set to sign with alg; "" keeps its default. An RSA key signs with RS256
// or PS256, an EC key with the algorithm of its curve.
func (k *PrivateKey) WithAlg(alg string) (*PrivateKey, error) {
	if alg == "" || alg == k.alg {
		return k, nil
	}
	if k.rsa != nil && alg != RS256 && alg != PS256 {
		return nil, fmt.Errorf("%s does not fit an RSA key; use RS256 or PS256", alg)
	}
	if k.ec != nil {
		return nil, fmt.Errorf("%s does not fit an EC %s key; use %s", alg, k.ec.Curve.Params().Name, k.alg)
	}
	c := *k
	c.alg = alg
	return &c, nil
}

// IsRSA reports whether this is an RSA key.
func (k *PrivateKey) IsRSA() bool {
	return k.rsa != nil
}

// Alg is the algorithm the key signs with.
func (k *PrivateKey) Alg() string {
	return k.alg
}

// PublicKeyDER is the public key in PKIX DER, to match a certificate against.
func (k *PrivateKey) PublicKeyDER() []byte {
	return k.public
}

// Signer returns the key as crypto/tls wants it.
func (k *PrivateKey) Signer() crypto.PrivateKey {
	if k.rsa != nil {
		return k.rsa
	}
	return k.ec
}

// sign signs a JWS signing input with the key's algorithm. RSA-PSS uses a salt as long as the
// hash (RFC 7518 section 3.5); ECDSA signatures are r and s as fixed-size big-endian integers
// (RFC 7518 section 3.4), not ASN.1.
func (k *PrivateKey) sign(input string) ([]byte, error) {
	switch k.alg {
	case RS256:
		digest := sha256.Sum256([]byte(input))
		return rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, digest[:])
	case PS256:
		digest := sha256.Sum256([]byte(input))
		return rsa.SignPSS(rand.Reader, k.rsa, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case ES256:
		digest := sha256.Sum256([]byte(input))
		return signECDSA(k.ec, digest[:], 32)
	case ES384:
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
