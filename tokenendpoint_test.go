package oboexchange

import (
	"strings"
	"testing"
	"time"
)

func TestParseTokenResponse(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		header    string
		expiresIn time.Duration
		fail      int // expected failure status; 0 for success
		cacheable bool
		oauthErr  string
	}{
		{name: "rfc8693", status: 200, body: `{"access_token":"at","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60}`, header: "Bearer at", expiresIn: time.Minute},
		{name: "entra", status: 200, body: `{"token_type":"Bearer","scope":"https://graph.microsoft.com/user.read","expires_in":3269,"ext_expires_in":0,"access_token":"eyJ0","refresh_token":"OAQ"}`, header: "Bearer eyJ0", expiresIn: 3269 * time.Second},
		{name: "expires_in as string", status: 200, body: `{"access_token":"at","expires_in":"3599"}`, header: "Bearer at", expiresIn: 3599 * time.Second},
		{name: "fractional expires_in", status: 200, body: `{"access_token":"at","expires_in":1.5}`, header: "Bearer at", expiresIn: 1500 * time.Millisecond},
		{name: "zero expires_in", status: 200, body: `{"access_token":"at","expires_in":0}`, header: "Bearer at"},
		{name: "huge expires_in capped", status: 200, body: `{"access_token":"at","expires_in":1e300}`, header: "Bearer at", expiresIn: maxExpiresIn * time.Second},
		{name: "created 201", status: 201, body: `{"access_token":"at"}`, header: "Bearer at"},
		{name: "expires_in not a number", status: 200, body: `{"access_token":"at","expires_in":"soon"}`, fail: 502},
		{name: "expires_in object", status: 200, body: `{"access_token":"at","expires_in":{}}`, fail: 502},
		{name: "empty access_token", status: 200, body: `{"access_token":""}`, fail: 502},
		{name: "access_token not a string", status: 200, body: `{"access_token":12}`, fail: 502},
		{name: "space in access_token", status: 200, body: `{"access_token":"a b"}`, fail: 502},
		{name: "non-ascii access_token", status: 200, body: `{"access_token":"caf\u00e9"}`, fail: 502},
		{name: "truncated", status: 200, body: `{"access_token":"a`, fail: 502},
		{name: "empty body", status: 200, body: ``, fail: 502},
		{name: "invalid_grant", status: 400, body: `{"error":"invalid_grant","error_description":"expired"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "invalid_grant with claims", status: 400, body: `{"error":"invalid_grant","claims":"{}"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "entra consent (AADSTS65001)", status: 400, body: `{"error":"invalid_grant","error_description":"AADSTS65001: consent","error_codes":[65001],"suberror":"consent_required"}`, fail: 401, cacheable: true, oauthErr: "invalid_grant"},
		{name: "interaction_required", status: 400, body: `{"error":"interaction_required","claims":"{}"}`, fail: 401, oauthErr: "interaction_required"},
		{name: "consent_required", status: 400, body: `{"error":"consent_required"}`, fail: 401, oauthErr: "consent_required"},
		{name: "invalid_request", status: 400, body: `{"error":"invalid_request"}`, fail: 502, oauthErr: "invalid_request"},
		{name: "temporarily_unavailable", status: 503, body: `{"error":"temporarily_unavailable"}`, fail: 502, oauthErr: "temporarily_unavailable"},
		{name: "html error page", status: 502, body: `<html>bad gateway</html>`, fail: 502},
		{name: "error in a 200", status: 200, body: `{"error":"invalid_grant"}`, fail: 502, oauthErr: "invalid_grant"},
	}
	for _, tc := range tests {
		res, f := parseTokenResponse(tc.status, []byte(tc.body), testNow)
		if tc.fail == 0 {
			if f != nil {
				t.Errorf("%s: failure %q, want success", tc.name, f.reason)
				continue
			}
			if res.header != tc.header || res.expiresIn != tc.expiresIn {
				t.Errorf("%s: header %q expiresIn %v, want %q %v", tc.name, res.header, res.expiresIn, tc.header, tc.expiresIn)
			}
			continue
		}
		if f == nil {
			t.Errorf("%s: success, want a %d", tc.name, tc.fail)
			continue
		}
		if f.status != tc.fail || f.cacheable != tc.cacheable || f.oauthError != tc.oauthErr {
			t.Errorf("%s: failure %d cacheable %v error %q, want %d %v %q", tc.name, f.status, f.cacheable, f.oauthError, tc.fail, tc.cacheable, tc.oauthErr)
		}
	}
}

func TestJWTExpiry(t *testing.T) {
	tests := []struct {
		name  string
		token string
		exp   int64 // 0: none
	}{
		{"exp", testJWT(map[string]interface{}{"exp": 1900000000}), 1900000000},
		{"fractional exp", testJWT(map[string]interface{}{"exp": 1900000000.7}), 1900000000},
		{"no exp", testJWT(map[string]interface{}{"sub": "u"}), 0},
		{"exp as string", testJWT(map[string]interface{}{"exp": "1900000000"}), 0},
		{"negative exp", testJWT(map[string]interface{}{"exp": -5}), 0},
		{"exp past year 9999", testJWT(map[string]interface{}{"exp": 1e20}), 0},
		{"opaque", "opaque-token", 0},
		{"two parts", "a.b", 0},
		{"four parts", "a.b.c.d", 0},
		{"payload not base64", "a.!!!.c", 0},
		{"payload not json", "a." + "bm90IGpzb24" + ".c", 0},
		{"handmade payload", "a.eyJleHAiOjE5MDAwMDAwMDB9.c", 1900000000},
	}
	for _, tc := range tests {
		exp, ok := jwtExpiry(tc.token)
		if tc.exp == 0 {
			if ok {
				t.Errorf("%s: exp %v, want none", tc.name, exp)
			}
			continue
		}
		if !ok || exp.Unix() != tc.exp {
			t.Errorf("%s: exp %v ok %v, want %d", tc.name, exp.Unix(), ok, tc.exp)
		}
	}
}

func TestLogValueQuoting(t *testing.T) {
	tests := map[string]string{
		"plain":                            "plain",
		"":                                 `""`,
		"two words":                        `"two words"`,
		"line\nbreak":                      `"line\nbreak"`,
		`a"b`:                              `"a\"b"`,
		"k=v":                              `"k=v"`,
		strings.Repeat("x", maxLogValue+5): strings.Repeat("x", maxLogValue) + "...",
	}
	for in, want := range tests {
		if got := logValue(in); got != want {
			t.Errorf("logValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVisibleASCII(t *testing.T) {
	if len(visibleASCII) != 0x7e-0x21+1 {
		t.Fatalf("visibleASCII has %d characters", len(visibleASCII))
	}
	for c := 0; c < 256; c++ {
		want := c >= 0x21 && c <= 0x7e
		if got := isVisibleASCII("a" + string([]byte{byte(c)}) + "b"); got != want {
			t.Errorf("byte %#x: %v, want %v", c, got, want)
		}
	}
	if isVisibleASCII("") != true {
		t.Error("empty string")
	}
}
