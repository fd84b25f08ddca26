package oboexchange

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExtractCredential(t *testing.T) {
	tests := []struct {
		name    string
		sources []string
		setup   func(r *http.Request)
		token   string // wanted token; empty when a failure is wanted
		status  int
		reason  string
	}{
		{name: "bearer", setup: auth("Bearer abc"), token: "abc"},
		{name: "lowercase scheme", setup: auth("bearer abc"), token: "abc"},
		{name: "uppercase scheme", setup: auth("BEARER abc"), token: "abc"},
		{name: "none", setup: func(r *http.Request) {}, status: 401, reason: errMissingToken.reason},
		{name: "basic", setup: auth("Basic abc"), status: 401, reason: "does not hold a Bearer credential"},
		{name: "scheme only", setup: auth("Bearer"), status: 401, reason: "does not hold a Bearer credential"},
		{name: "empty token", setup: auth("Bearer "), status: 401, reason: "does not hold a Bearer credential"},
		{name: "two headers", setup: func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer a")
			r.Header.Add("Authorization", "Bearer b")
		}, status: 401, reason: "several values"},
		{name: "too long", setup: auth("Bearer " + strings.Repeat("a", maxTokenLength+1)), status: 401, reason: "longer than 16 KiB"},
		{name: "custom header raw", sources: []string{"header:x-access-token"}, setup: func(r *http.Request) {
			r.Header.Set("X-Access-Token", "abc")
		}, token: "abc"},
		{name: "custom header bearer", sources: []string{"header:X-Access-Token"}, setup: func(r *http.Request) {
			r.Header.Set("X-Access-Token", "Bearer abc")
		}, token: "abc"},
		{name: "query", sources: []string{"query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "a=1&access_token=abc%2Bd&b=2"
		}, token: "abc+d"},
		{name: "query twice", sources: []string{"query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "access_token=a&access_token=b"
		}, status: 401, reason: "several values"},
		{name: "cookie", sources: []string{"cookie:session"}, setup: func(r *http.Request) {
			r.Header.Set("Cookie", "theme=dark; session=abc; lang=en")
		}, token: "abc"},
		{name: "fallback to second source", sources: []string{"header:Authorization", "query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "access_token=abc"
		}, token: "abc"},
		{name: "two sources at once", sources: []string{"header:Authorization", "query:access_token"}, setup: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer abc")
			r.URL.RawQuery = "access_token=abc"
		}, status: 401, reason: "more than one place"},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			sources := testSources(t, tc.sources)
			req := httptest.NewRequest(http.MethodGet, "http://gateway.test/api", nil)
			tc.setup(req)

			c, f := extractCredential(req, sources)

			if tc.token != "" {
				if f != nil {
					t.Fatalf("failure %q, want token %q", f.reason, tc.token)
				}
				if c.token != tc.token {
					t.Errorf("token = %q, want %q", c.token, tc.token)
				}
				return
			}
			if f == nil {
				t.Fatalf("token %q accepted, want a %d", c.token, tc.status)
			}
			if f.status != tc.status || !strings.Contains(f.reason, tc.reason) {
				t.Errorf("failure = %d %q, want %d %q", f.status, f.reason, tc.status, tc.reason)
			}
		})
	}
}

func auth(v string) func(r *http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", v) }
}

func testSources(t *testing.T, list []string) []source {
	t.Helper()
	if len(list) == 0 {
		list = []string{"header:Authorization"}
	}
	var out []source
	for _, s := range list {
		src, err := parseSource(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, src)
	}
	return out
}

// The original token is removed from where it was read; everything else is kept as sent.
func TestStripCredential(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	tests := []struct {
		name       string
		source     string
		setup      func(r *http.Request)
		wantURL    string
		wantCookie string
	}{
		{name: "query", source: "query:access_token", setup: func(r *http.Request) {
			r.URL.RawQuery = "b=2&access_token=" + userToken + "&a=x%20y"
		}, wantURL: "http://gateway.test/api?b=2&a=x%20y"},
		{name: "query only", source: "query:access_token", setup: func(r *http.Request) {
			r.URL.RawQuery = "access_token=" + userToken
		}, wantURL: "http://gateway.test/api"},
		{name: "cookie", source: "cookie:session", setup: func(r *http.Request) {
			r.Header.Set("Cookie", "theme=dark; session="+userToken+"; lang=en")
		}, wantURL: "http://gateway.test/api", wantCookie: "theme=dark; lang=en"},
		{name: "cookie only", source: "cookie:session", setup: func(r *http.Request) {
			r.Header.Set("Cookie", "session="+userToken)
		}, wantURL: "http://gateway.test/api"},
		{name: "custom header", source: "header:X-Forwarded-Access-Token", setup: func(r *http.Request) {
			r.Header.Set("X-Forwarded-Access-Token", userToken)
		}, wantURL: "http://gateway.test/api"},
	}
	for _, tc := range tests {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(ts.url())
			c.TokenSources = []string{tc.source}
			h, b := newTestMiddleware(t, c)
			req := httptest.NewRequest(http.MethodGet, "http://gateway.test/api", nil)
			tc.setup(req)
			rec := httptest.NewRecorder()

			h.ServeHTTP(rec, req)

			wantStatus(t, rec, http.StatusNoContent)
			if b.url != tc.wantURL {
				t.Errorf("backend URL = %q, want %q", b.url, tc.wantURL)
			}
			if got := b.header.Get("Cookie"); got != tc.wantCookie {
				t.Errorf("backend Cookie = %q, want %q", got, tc.wantCookie)
			}
			if got := b.header.Get("Authorization"); got != "Bearer "+exchangedToken {
				t.Errorf("backend Authorization = %q", got)
			}
			for k, vs := range b.header {
				if strings.Contains(strings.Join(vs, ","), userToken) {
					t.Errorf("header %s still carries the original token", k)
				}
			}
			if req.RequestURI != "" && strings.Contains(req.RequestURI, userToken) {
				t.Errorf("RequestURI still carries the original token: %q", req.RequestURI)
			}
		})
	}
}

func TestCheckSubjectToken(t *testing.T) {
	tests := []struct {
		token string
		ok    bool
	}{
		{"abc", true},
		{"a-b.c_d~e+f/g==", true},
		{testJWT(map[string]interface{}{"sub": "u", "exp": 4102444800}), true},
		{"=", false},
		{"a=b", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00b", false},
		{"caf\xc3\xa9", false},
		{"\xff\xfe", false},
		{`a"b`, false},
	}
	for _, tc := range tests {
		_, f := checkSubjectToken(tc.token, testNow)
		if (f == nil) != tc.ok {
			t.Errorf("checkSubjectToken(%q) = %v, want ok %v", tc.token, f, tc.ok)
		}
	}
	expired := testJWT(map[string]interface{}{"sub": "u", "exp": testNow.Unix() - 1})
	if _, f := checkSubjectToken(expired, testNow); f != errExpiredToken {
		t.Errorf("expired JWT: %v, want errExpiredToken", f)
	}
}
