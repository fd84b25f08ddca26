package oboexchange

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/watch"
)

// Client assertions (RFC 7523 section 2.2, OpenID Connect private_key_jwt): signed by the gateway
// with clientKeyFile, or ready-made in clientAssertionFile (a Kubernetes service-account token of
// workload identity federation).

// assertionLifetime is how long a signed client assertion is valid: long enough for the
// exchange and a retry, short enough that a captured one is soon useless.
const assertionLifetime = 5 * time.Minute

// parseKeyFile reads clientKeyFile, set to sign with alg (clientAssertionAlg). Without one, an RSA
// key signs with PS256 for flow entra, which is what Microsoft documents with x5t#S256, and with
// RS256 otherwise; an EC key with ES256 or ES384 by its curve.
func parseKeyFile(alg, flow string) watch.Parse {
	return func(data []byte) (interface{}, error) {
		key, err := jose.ParsePrivateKey(data)
		if err != nil {
			return nil, err
		}
		use := alg
		if use == "" && flow == flowEntra && key.IsRSA() {
			use = jose.PS256
		}
		signing, err := key.WithAlg(use)
		if err != nil {
			return nil, fmt.Errorf("clientAssertionAlg %v, or leave it unset", err)
		}
		return signing, nil
	}
}

// parseAssertionFile reads a ready-made client assertion: a JWT in compact form, as the kubelet
// writes a projected service-account token.
func parseAssertionFile(data []byte) (interface{}, error) {
	assertion := strings.TrimSpace(string(data))
	if assertion == "" {
		return nil, errors.New("the file is empty")
	}
	if !jose.IsCompact(assertion) {
		return nil, errors.New("the file does not hold a JWT (three base64url parts separated by dots)")
	}
	return assertion, nil
}

// assertionIdentity is what names the workload in a ready-made assertion (its iss, sub and aud),
// without the times and id that change each time the file is renewed.
func assertionIdentity(assertion string) string {
	var claims struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
	}
	if !jose.UnverifiedClaims(assertion, &claims) {
		return ""
	}
	return claims.Iss + "\n" + claims.Sub + "\n" + string(claims.Aud)
}

// assertionClaims are the claims of a signed client assertion (RFC 7523 section 3; Entra's
// certificate credentials).
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
// (Okta refuses a jti it has seen), valid from now for assertionLifetime; with a certificate, its
// x5t#S256 names the key (what Entra expects).
func signAssertion(key *jose.PrivateKey, cert *jose.Chain, clientID, audience, keyID string, now time.Time) (string, error) {
	header := jose.Header{Typ: "JWT", Kid: keyID}
	if cert != nil {
		header.X5tS256 = cert.ThumbprintS256
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := assertionClaims{
		Iss: clientID, Sub: clientID, Aud: audience, Jti: hex.EncodeToString(jti),
		Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(assertionLifetime).Unix(),
	}
	assertion, err := jose.Sign(key, header, claims)
	if err != nil {
		return "", fmt.Errorf("signing the client assertion: %v", err)
	}
	return assertion, nil
}
