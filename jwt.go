package oboexchange

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// maxUnixTime is the last second of year 9999: a later exp is not a usable time, and converting it
// could overflow.
const maxUnixTime = 253402300799

// jwtExpiry returns the exp claim of a token that has the shape of a JWS compact serialization
// (three base64url parts). The signature is not checked and need not be: the expiry only ever
// shortens how long an answer is cached or saves a call the authorization server would refuse;
// it never lets a token through.
func jwtExpiry(token string) (time.Time, bool) {
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return time.Time{}, false
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 || strings.IndexByte(rest[second+1:], '.') >= 0 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rest[:second], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	exp := *claims.Exp
	if math.IsNaN(exp) || exp < 0 || exp > maxUnixTime {
		return time.Time{}, false
	}
	return time.Unix(int64(exp), 0), true
}
