package jose

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxUnixTime is the last second of year 9999: a later time is not usable, and converting it could
// overflow.
const maxUnixTime = 253402300799

// Header is the JOSE header of a JWS the plugin signs.
type Header struct {
	Alg     string `json:"alg"`
	Typ     string `json:"typ,omitempty"`
	Kid     string `json:"kid,omitempty"`
	X5tS256 string `json:"x5t#S256,omitempty"`
}

// Sign makes a compact JWS of claims (any value encoding/json takes) signed with key; the header's
// alg is the key's.
func Sign(key *PrivateKey, header Header, claims interface{}) (string, error) {
	header.Alg = key.alg
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := encode(h) + "." + encode(c)
	signature, err := key.sign(input)
	if err != nil {
		return "", fmt.Errorf("signing with %s: %v", key.alg, err)
	}
	return input + "." + encode(signature), nil
}

// IsCompact reports whether token has the shape of a compact JWS: three non-empty parts of
// base64url, the signature possibly empty only for an unsecured JWT.
func IsCompact(token string) bool {
	parts := strings.Split(token, ".")
	return len(parts) == 3 && parts[0] != "" && parts[1] != "" && strings.Trim(token, b64urlChars+".") == ""
}

// UnverifiedClaims decodes the payload of a token that has the shape of a compact JWS into v,
// without checking its signature. It serves what only shortens a cache lifetime or saves a call
// the authorization server would refuse, never what lets a token through.
func UnverifiedClaims(token string, v interface{}) bool {
	payload, ok := payloadPart(token)
	if !ok {
		return false
	}
	raw, err := decode(payload)
	if err != nil {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// payloadPart is the middle of three dot-separated parts, found with native calls (under Yaegi, a
// Split of a long token costs more).
func payloadPart(token string) (string, bool) {
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return "", false
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 || strings.IndexByte(rest[second+1:], '.') >= 0 {
		return "", false
	}
	return rest[:second], true
}

// Expiry returns the exp claim of a token that has the shape of a compact JWS, unverified (see
// UnverifiedClaims). A token without a usable exp (none, not a number, negative, past year 9999)
// has none.
func Expiry(token string) (time.Time, bool) {
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if !UnverifiedClaims(token, &claims) || claims.Exp == nil {
		return time.Time{}, false
	}
	exp := *claims.Exp
	if math.IsNaN(exp) || exp < 0 || exp > maxUnixTime {
		return time.Time{}, false
	}
	return time.Unix(int64(exp), 0), true
}
