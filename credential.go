package oboexchange

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
)

// Where a subject token can be read from: tokenSources entries are "header:<Name>",
// "query:<name>" or "cookie:<name>".
const (
	sourceHeader = "header"
	sourceQuery  = "query"
	sourceCookie = "cookie"
)

// source is one place a subject token may come from.
type source struct {
	kind string // sourceHeader, sourceQuery or sourceCookie
	name string // canonical header name, query parameter or cookie name
	// scheme is true when the header value must be "Bearer <token>" (the Authorization header);
	// other headers carry the token itself, optionally behind "Bearer ".
	scheme bool
}

// credential is a subject token and the source it came from, so that it can be removed there.
type credential struct {
	token string
	src   *source
}

func parseSource(s string) (source, error) {
	kind, name, ok := strings.Cut(strings.TrimSpace(s), ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return source{}, fmt.Errorf("tokenSources: %q is not of the form header:<Name>, query:<name> or cookie:<name>", s)
	}
	switch strings.ToLower(kind) {
	case sourceHeader:
		if !isToken(name) {
			return source{}, fmt.Errorf("tokenSources: %q is not a valid header name", name)
		}
		canonical := http.CanonicalHeaderKey(name)
		return source{kind: sourceHeader, name: canonical, scheme: canonical == "Authorization"}, nil
	case sourceQuery:
		if strings.ContainsAny(name, "&;=#?% \t") {
			return source{}, fmt.Errorf("tokenSources: %q is not a usable query parameter name", name)
		}
		return source{kind: sourceQuery, name: name}, nil
	case sourceCookie:
		if !isToken(name) {
			return source{}, fmt.Errorf("tokenSources: %q is not a valid cookie name", name)
		}
		return source{kind: sourceCookie, name: name}, nil
	}
	return source{}, fmt.Errorf("tokenSources: unknown source kind %q in %q; use header, query or cookie", kind, s)
}

// extractCredential finds the one credential of the request. RFC 6750 section 2 forbids sending a
// token by more than one method, so two sources carrying a value is a malformed request, as is a
// repeated header or parameter: which of them would be the user's? An Authorization header with
// another scheme (Basic, Negotiate) holds no Bearer credential: that source is empty.
func extractCredential(req *http.Request, sources []source) (credential, *failure) {
	if len(sources) == 1 && sources[0].kind == sourceHeader {
		// The common case, kept short: one header.
		values := req.Header[sources[0].name]
		if len(values) == 0 {
			return credential{}, failMissingToken
		}
		return headerCredential(values, &sources[0])
	}
	var found credential
	for i := range sources {
		src := &sources[i]
		values := src.values(req)
		if len(values) == 0 {
			continue
		}
		c, f := headerCredential(values, src)
		if f == failMissingToken {
			continue
		}
		if found.src != nil {
			return credential{}, failMalformed("credentials in more than one place")
		}
		if f != nil {
			return credential{}, f
		}
		found = c
	}
	if found.src == nil {
		return credential{}, failMissingToken
	}
	return found, nil
}

// headerCredential reads the token out of the values found at one source. It checks only what the
// cache-hit path needs (one value, the scheme, a bounded length); the full token syntax is checked
// by checkSubjectToken before anything is sent to the authorization server, and a token that fails
// it is never cached, so a cache hit implies a well-formed token. An Authorization header without
// the Bearer scheme is failMissingToken (RFC 6750 section 3.1: no Bearer credential at all).
func headerCredential(values []string, src *source) (credential, *failure) {
	if len(values) != 1 {
		return credential{}, failMalformed("several values for " + src.String())
	}
	v := values[0]
	if src.kind == sourceHeader {
		scheme, rest, _ := strings.Cut(v, " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			v = rest
		case src.scheme:
			return credential{}, failMissingToken
		}
	}
	if v == "" {
		return credential{}, failMalformed("empty token in " + src.String())
	}
	if len(v) > maxTokenLength {
		return credential{}, failMalformed("token longer than 16 KiB in " + src.String())
	}
	return credential{token: v, src: src}, nil
}

// values returns every value the request carries at this source.
func (s *source) values(req *http.Request) []string {
	switch s.kind {
	case sourceHeader:
		return req.Header[s.name]
	case sourceQuery:
		return queryValues(req.URL.RawQuery, s.name)
	}
	return cookieValues(req.Header["Cookie"], s.name)
}

func (s *source) String() string {
	return s.kind + ":" + s.name
}

// strip removes the credential from where it was read, so the original token never reaches the
// backend. Other query parameters and cookies are kept byte for byte.
func (c credential) strip(req *http.Request) {
	switch c.src.kind {
	case sourceHeader:
		req.Header.Del(c.src.name)
	case sourceQuery:
		req.URL.RawQuery = withoutQueryParam(req.URL.RawQuery, c.src.name)
		req.RequestURI = req.URL.RequestURI()
	case sourceCookie:
		stripCookie(req, c.src.name)
	}
}

// queryParts splits a raw query at "&" and at ";". Go's url.ParseQuery refuses ";", but Traefik's
// proxy turns it into "&" on the way to the backend, so a token hidden after a ";" must be found
// (and removed) like any other parameter.
func queryParts(rawQuery string) []string {
	return strings.Split(strings.ReplaceAll(rawQuery, ";", "&"), "&")
}

// queryValues returns the values of one parameter in a raw query; a part that does not decode is
// skipped, as url.ParseQuery does.
func queryValues(rawQuery, name string) []string {
	var out []string
	for _, part := range queryParts(rawQuery) {
		k, v, _ := strings.Cut(part, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != name {
			continue
		}
		if value, err := url.QueryUnescape(v); err == nil {
			out = append(out, value)
		}
	}
	return out
}

// withoutQueryParam removes every occurrence of one parameter from a raw query; the other
// parameters are kept as sent, joined by "&".
func withoutQueryParam(rawQuery, name string) string {
	var kept []string
	for _, part := range queryParts(rawQuery) {
		k, _, _ := strings.Cut(part, "=")
		if key, err := url.QueryUnescape(k); err == nil && key == name {
			continue
		}
		kept = append(kept, part)
	}
	return strings.Join(kept, "&")
}

// cookieParts splits Cookie header lines into their "name=value" pairs. Cookies are read here
// rather than with req.Cookies(), which returns nothing past 3,000 cookies (Go 1.24 and later): a
// token cookie must be found by the same parser that removes it.
func cookieParts(lines []string) []string {
	var parts []string
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			if part = strings.TrimSpace(part); part != "" {
				parts = append(parts, part)
			}
		}
	}
	return parts
}

// cookieValues returns the values of one cookie, without the optional double quotes.
func cookieValues(lines []string, name string) []string {
	var out []string
	for _, part := range cookieParts(lines) {
		k, v, _ := strings.Cut(part, "=")
		if strings.TrimSpace(k) != name {
			continue
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out = append(out, v)
	}
	return out
}

// stripCookie removes one cookie from the Cookie headers, keeping the others as sent.
func stripCookie(req *http.Request, name string) {
	var kept []string
	for _, part := range cookieParts(req.Header["Cookie"]) {
		if k, _, _ := strings.Cut(part, "="); strings.TrimSpace(k) != name {
			kept = append(kept, part)
		}
	}
	req.Header.Del("Cookie")
	if len(kept) > 0 {
		req.Header.Set("Cookie", strings.Join(kept, "; "))
	}
}

// checkSubjectToken runs before a token is sent to the authorization server: the token must be an
// RFC 6750 b64token (letters, digits, "-._~+/", then optional "="), and if it is a JWT whose exp
// has passed, the authorization server need not be asked (the answer could only be invalid_grant).
// It returns that exp (zero for a token without one), which caps how long the exchange is cached.
func checkSubjectToken(token string, now time.Time) (time.Time, *failure) {
	if !isB64Token(token) {
		return time.Time{}, failMalformed("the token is not an RFC 6750 b64token")
	}
	exp, ok := jose.Expiry(token)
	if ok && !exp.After(now) {
		return exp, failExpiredToken
	}
	return exp, nil
}
