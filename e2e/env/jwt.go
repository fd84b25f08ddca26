package env

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Claims decodes the payload of a JWT without checking its signature (for display).
func Claims(token string) (map[string]interface{}, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var claims map[string]interface{}
	return claims, json.Unmarshal(payload, &claims)
}

// VerifiedClaims checks that issuer signed the token, with the keys its discovery document
// names, and returns the claims.
func VerifiedClaims(token, issuer string) (map[string]interface{}, error) {
	var discovery struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &discovery); err != nil {
		return nil, err
	}
	var keys jose.JSONWebKeySet
	if err := getJSON(discovery.JWKSURI, &keys); err != nil {
		return nil, err
	}
	sig, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.PS256})
	if err != nil {
		return nil, err
	}
	if len(sig.Signatures) != 1 {
		return nil, errors.New("want one signature")
	}
	matching := keys.Key(sig.Signatures[0].Header.KeyID)
	if len(matching) == 0 {
		return nil, fmt.Errorf("no key %q at %s", sig.Signatures[0].Header.KeyID, discovery.JWKSURI)
	}
	payload, err := sig.Verify(matching[0])
	if err != nil {
		return nil, err
	}
	var claims map[string]interface{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, err
	}
	if claims["iss"] != issuer {
		return nil, fmt.Errorf("iss %v, want %s", claims["iss"], issuer)
	}
	return claims, nil
}

// Audiences returns the aud claim as a list (it may be a string or an array).
func Audiences(claims map[string]interface{}) []string {
	switch aud := claims["aud"].(type) {
	case string:
		return []string{aud}
	case []interface{}:
		var out []string
		for _, a := range aud {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func getJSON(url string, v interface{}) error {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ForgeSignature returns the JWT with the same header and claims and a signature that no key
// made: a token the issuer must refuse, whose exp still lets it past the plugin's own check.
func ForgeSignature(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return token
	}
	sig := make([]byte, base64.RawURLEncoding.DecodedLen(len(parts[2])))
	_, _ = rand.Read(sig)
	return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
}
