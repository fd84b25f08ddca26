package oboexchange

import "strings"

// The syntax of what the plugin reads from a request and writes into one. Every check runs native
// string functions: a byte loop would run interpreted under Yaegi, at about half a microsecond per
// byte of a token that is often 1 to 2 KiB long.

// maxTokenLength bounds the subject token. Real access tokens stay well under it (a large Entra
// token with many group claims is about 8 KiB); anything longer is refused before it is hashed
// or sent anywhere.
const maxTokenLength = 16 * 1024

// b64tokenChars are the characters of an RFC 6750 b64token before its trailing "=".
const b64tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"

// isB64Token reports whether s is an RFC 6750 b64token: what a bearer token must be.
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	return body != "" && strings.Trim(body, b64tokenChars) == ""
}

// visibleASCII holds the characters 0x21 to 0x7e.
const visibleASCII = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"

// isVisibleASCII reports whether s holds only characters 0x21 to 0x7e, so it can be written into
// a header without splitting it.
func isVisibleASCII(s string) bool {
	return strings.Trim(s, visibleASCII) == ""
}

// isToken reports whether s is an RFC 9110 token: what a header name, and a cookie name
// (RFC 6265), must be. It checks configuration only (New), so it may loop.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
