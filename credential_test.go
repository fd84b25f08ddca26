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
		{name: "none", setup: func(r *http.Request) {}, status: 401, reason: failMissingToken.reason},
		{name: "basic", setup: auth("Basic abc"), status: 401, reason: failMissingToken.reason},
		{name: "scheme only", setup: auth("Bearer"), status: 400, reason: "empty token"},
		{name: "empty token", setup: auth("Bearer "), status: 400, reason: "empty token"},
		{name: "two headers", setup: func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer a")
			r.Header.Add("Authorization", "Bearer b")
		}, status: 400, reason: "several values"},
		{name: "too long", setup: auth("Bearer " + strings.Repeat("a", maxTokenLength+1)), status: 400, reason: "longer than 16 KiB"},
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
		}, status: 400, reason: "several values"},
		{name: "query smuggled after a semicolon", sources: []string{"query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "access_token=a&z=0;access_token=a"
		}, status: 400, reason: "several values"},
		{name: "query after a semicolon", sources: []string{"query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "z=0;access_token=abc"
		}, token: "abc"},
		{name: "cookie", sources: []string{"cookie:session"}, setup: func(r *http.Request) {
			r.Header.Set("Cookie", "theme=dark; session=abc; lang=en")
		}, token: "abc"},
		{name: "quoted cookie", sources: []string{"cookie:session"}, setup: func(r *http.Request) {
			r.Header.Set("Cookie", `session="abc"`)
		}, token: "abc"},
		{name: "cookie behind 3,000 others", sources: []string{"cookie:session"}, setup: func(r *http.Request) {
			r.Header.Set("Cookie", strings.Repeat("c=1; ", 3001)+"session=abc")
		}, token: "abc"},
		{name: "cookie behind 3,000 others and a header", sources: []string{"header:Authorization", "cookie:session"}, setup: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer abc")
			r.Header.Set("Cookie", strings.Repeat("c=1; ", 3001)+"session=abc")
		}, status: 400, reason: "more than one place"},
		{name: "basic header beside a query token", sources: []string{"header:Authorization", "query:access_token"}, setup: func(r *http.Request) {
			r.Header.Set("Authorization", "Basic YTpi")
			r.URL.RawQuery = "access_token=abc"
		}, token: "abc"},
		{name: "fallback to second source", sources: []string{"header:Authorization", "query:access_token"}, setup: func(r *http.Request) {
			r.URL.RawQuery = "access_token=abc"
		}, token: "abc"},
		{name: "two sources at once", sources: []string{"header:Authorization", "query:access_token"}, setup: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer abc")
			r.URL.RawQuery = "access_token=abc"
		}, status: 400, reason: "more than one place"},
	}
	for _, tc := range tests {
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

// Hostile credentials get a defined answer and are never sent to the authorization server.
func TestHostileCredentials(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, b := newTestMiddleware(t, testConfig(ts.url()))
	tests := []struct {
		name      string
		header    []string
		status    int
		challenge string
	}{
		{"two Authorization headers", []string{"Bearer a", "Bearer b"}, 400, `Bearer error="invalid_request"`},
		{"space inside the token", []string{"Bearer abc def"}, 400, `Bearer error="invalid_request"`},
		{"two spaces after the scheme", []string{"Bearer  abc"}, 400, `Bearer error="invalid_request"`},
		{"tab", []string{"Bearer abc\tdef"}, 400, `Bearer error="invalid_request"`},
		{"control character", []string{"Bearer abc\x01def"}, 400, `Bearer error="invalid_request"`},
		{"NUL", []string{"Bearer abc\x00"}, 400, `Bearer error="invalid_request"`},
		{"non-UTF-8 bytes", []string{"Bearer \xff\xfe\xfd"}, 400, `Bearer error="invalid_request"`},
		{"UTF-8 letters", []string{"Bearer café"}, 400, `Bearer error="invalid_request"`},
		{"quote", []string{`Bearer abc"def`}, 400, `Bearer error="invalid_request"`},
		{"64 KiB token", []string{"Bearer " + strings.Repeat("A", 64*1024)}, 400, `Bearer error="invalid_request"`},
		{"scheme without token", []string{"Bearer"}, 400, `Bearer error="invalid_request"`},
		{"Basic", []string{"Basic YTpi"}, 401, "Bearer"},
		{"Negotiate", []string{"Negotiate abc"}, 401, "Bearer"},
		{"empty header", []string{""}, 401, "Bearer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://gateway.test/", nil)
			req.Header["Authorization"] = tc.header
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
		})
	}
	if ts.count() != 0 || b.count() != 0 {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want none", ts.count(), b.count())
	}
	wantStatus(t, call(h, "bEaReR "+userToken), 204)
}

// The original token is removed from where it was read; everything else is kept as sent.
func TestStripCredential(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	tests := []struct {
		name       string
		source     string
		target     string // the request's URL, when it is not plain /api
		setup      func(r *http.Request)
		wantURL    string
		wantCookie string
	}{
		{name: "query", source: "query:access_token", target: "/api?b=2&access_token=" + userToken + "&a=x%20y",
			wantURL: "http://gateway.test/api?b=2&a=x%20y"},
		{name: "query only", source: "query:access_token", target: "/api?access_token=" + userToken,
			wantURL: "http://gateway.test/api"},
		{name: "query after a semicolon", source: "query:access_token", target: "/api?z=0;access_token=" + userToken + ";a=1",
			wantURL: "http://gateway.test/api?z=0&a=1"},
		{name: "cookie behind 3,000 others", source: "cookie:session", setup: func(r *http.Request) {
			r.Header.Set("Cookie", strings.Repeat("c=1; ", 3000)+"session="+userToken)
		}, wantURL: "http://gateway.test/api", wantCookie: strings.TrimSuffix(strings.Repeat("c=1; ", 3000), "; ")},
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
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(ts.url())
			c.TokenSources = []string{tc.source}
			h, b := newTestMiddleware(t, c)
			target := "/api"
			if tc.target != "" {
				target = tc.target
			}
			req := httptest.NewRequest(http.MethodGet, "http://gateway.test"+target, nil)
			if tc.setup != nil {
				tc.setup(req)
			}
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
			if strings.Contains(req.RequestURI, userToken) {
				t.Errorf("RequestURI still carries the original token: %q", req.RequestURI)
			}
		})
	}
}

func TestCheckSubjectToken(t *testing.T) {
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"letters", "abc", true},
		{"every b64token character", "a-b.c_d~e+f/g==", true},
		{"JWT", testJWT(map[string]interface{}{"sub": "u", "exp": 4102444800}), true},
		{"only padding", "=", false},
		{"padding inside", "a=b", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"NUL", "a\x00b", false},
		{"UTF-8 letter", "caf\xc3\xa9", false},
		{"not UTF-8", "\xff\xfe", false},
		{"quote", `a"b`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, f := checkSubjectToken(tc.token, testNow); (f == nil) != tc.ok {
				t.Errorf("checkSubjectToken(%q) = %v, want ok %v", tc.token, f, tc.ok)
			}
		})
	}
	expired := testJWT(map[string]interface{}{"sub": "u", "exp": testNow.Unix() - 1})
	if _, f := checkSubjectToken(expired, testNow); f != failExpiredToken {
		t.Errorf("expired JWT: %v, want failExpiredToken", f)
	}
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
