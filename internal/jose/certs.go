package jose

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Chain is a PEM certificate chain: the leaf first, then the chain as given.
type Chain struct {
	DER          [][]byte
	PublicKeyDER []byte // the leaf's public key, PKIX DER
	// ThumbprintS256 is the x5t#S256 header of a JWS signed with the leaf's key: the base64url
	// SHA-256 of the leaf's DER (RFC 7515 section 4.1.8).
	ThumbprintS256 string
}

// ParseChain reads a PEM certificate chain, leaf first; blocks other than certificates are
// skipped.
func ParseChain(data []byte) (*Chain, error) {
	c := &Chain{}
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			c.DER = append(c.DER, block.Bytes)
		}
		data = rest
	}
	if len(c.DER) == 0 {
		return nil, errors.New("no PEM certificate found (-----BEGIN CERTIFICATE-----)")
	}
	leaf, err := x509.ParseCertificate(c.DER[0])
	if err != nil {
		return nil, fmt.Errorf("the first certificate is not valid: %v", err)
	}
	if c.PublicKeyDER, err = x509.MarshalPKIXPublicKey(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("the certificate's public key: %v", err)
	}
	sum := sha256.Sum256(c.DER[0])
	c.ThumbprintS256 = encode(sum[:])
	return c, nil
}

// ParseCAPool reads a PEM bundle of CA certificates into a pool: the roots a server is verified
// against instead of the system's. Every certificate must parse, and there must be one.
func ParseCAPool(data []byte) (*x509.CertPool, error) {
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
