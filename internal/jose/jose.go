// Package jose is the plugin's JSON Object Signing and Encryption: reading PEM private keys,
// certificate chains and CA bundles, signing compact JWS (RFC 7515) with the algorithms of RFC
// 7518, and reading the claims of a JWT (RFC 7519) without verifying it. It imports the standard
// library only: Traefik interprets the plugin with Yaegi, which loads no third-party module.
package jose

import (
	"encoding/base64"
	"strings"
)

// The algorithms of RFC 7518 section 3.1 (and RFC 8037 for EdDSA) the package knows.
const (
	RS256 = "RS256"
	RS384 = "RS384"
	RS512 = "RS512"
	PS256 = "PS256"
	PS384 = "PS384"
	PS512 = "PS512"
	ES256 = "ES256"
	ES384 = "ES384"
	ES512 = "ES512"
	EdDSA = "EdDSA"
)

// b64urlChars are the characters of unpadded base64url.
const b64urlChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// encode is unpadded base64url, as JWS writes every part.
func encode(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// decode reads a part of a compact JWS. Padding is not part of the format, but some issuers write
// it; it is tolerated when reading claims unverified.
func decode(part string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
}
