package oboexchange

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The fuzz targets check the parts that read hostile input: they must never panic, and what they
// accept must be safe to use. Their seed corpora are in testdata/fuzz/; `make fuzz` runs each for
// a fixed number of inputs.

func FuzzExtractCredential(f *testing.F) {
	f.Add("Bearer abc", "a=1&access_token=x", "session=y; other=z")
	f.Add("bearer  two  spaces", "access_token=%zz", "session=\"quoted\"")
	f.Add("Bearer \x00\xff", "access_token=a&access_token=b", "session=")
	sources := []source{
		{kind: sourceHeader, name: "Authorization", scheme: true},
		{kind: sourceQuery, name: "access_token"},
		{kind: sourceCookie, name: "session"},
	}
	f.Fuzz(func(t *testing.T, authorization, query, cookie string) {
		req := httptest.NewRequest(http.MethodGet, "http://gateway.test/", nil)
		req.Header["Authorization"] = []string{authorization}
		req.URL.RawQuery = query
		req.Header["Cookie"] = []string{cookie}
		c, fail := extractCredential(req, sources)
		if fail != nil {
			if fail.status != http.StatusUnauthorized && fail.status != http.StatusBadRequest {
				t.Fatalf("status %d", fail.status)
			}
			return
		}
		if c.token == "" || len(c.token) > maxTokenLength {
			t.Fatalf("accepted token of length %d", len(c.token))
		}
		c.strip(req)
		if _, fail := extractCredential(req, sources); fail != failMissingToken {
			t.Fatalf("the credential is still in the request after strip")
		}
		if _, f := checkSubjectToken(c.token, time.Now()); f == nil && strings.ContainsAny(c.token, " \t\r\n\x00\"") {
			t.Fatalf("a token with separators or controls passed the syntax check: %q", c.token)
		}
	})
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"at","token_type":"Bearer","expires_in":60}`))
	f.Add(400, []byte(`{"error":"invalid_grant","claims":"{\"access_token\":{}}"}`))
	f.Add(200, []byte(`{"access_token":"a\r\nb","expires_in":"1e400"}`))
	f.Add(503, []byte(`<html>`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res, fail := parseTokenResponse(status, body, flowRFC8693, "")
		if fail != nil {
			if fail.status != 401 && fail.status != 502 {
				t.Fatalf("status %d", fail.status)
			}
			if strings.ContainsAny(fail.challenge, "\r\n") {
				t.Fatalf("challenge with a line break: %q", fail.challenge)
			}
			return
		}
		if !strings.HasPrefix(res.header, "Bearer ") || !isVisibleASCII(strings.TrimPrefix(res.header, "Bearer ")) {
			t.Fatalf("unsafe header value %q", res.header)
		}
		if res.expiresIn < 0 {
			t.Fatalf("negative lifetime %v", res.expiresIn)
		}
	})
}
