package oboexchange

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"

	// maxResponseBody bounds what is read from the token endpoint.
	maxResponseBody = 1 << 20

	// maxExpiresIn caps a lifetime the server states (one year), far from time.Duration overflow.
	maxExpiresIn = 365 * 24 * 3600
)

// tokenResult is a successful answer of the token endpoint.
type tokenResult struct {
	header    string        // "Bearer <access_token>"
	expiresIn time.Duration // zero when the server gave none
	exp       time.Time     // the new token's own exp claim, when it is a JWT
}

// endpointClient sends exchange requests to one token endpoint.
type endpointClient struct {
	url        string
	flow       string
	clientID   string
	authMethod string
	// requestedTokenType is what the answer must carry (empty: an access token), see checkTokenType.
	requestedTokenType string
	secret             *secretSource
	form               string // every parameter but the subject token and the client secret, encoded
	timeout            time.Duration
	http               *http.Client
}

func newEndpointClient(s *settings) *endpointClient {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 32
	return &endpointClient{
		url:                s.endpoint.String(),
		flow:               s.flow,
		clientID:           s.clientID,
		authMethod:         s.authMethod,
		requestedTokenType: s.requestedTokenType,
		secret:             newSecretSource(s.clientSecret, s.clientSecretFile),
		form:               staticForm(s),
		timeout:            s.timeout,
		http:               &http.Client{Transport: transport, CheckRedirect: noRedirect},
	}
}

// noRedirect makes the client return a redirect as it is: a token endpoint that redirects is
// misconfigured, and following it would carry the user's token to another place. It is a named
// function because Yaegi cannot hand a func literal with unnamed parameters to net/http.
func noRedirect(req *http.Request, via []*http.Request) error {
	return http.ErrUseLastResponse
}

// staticForm encodes the parameters that are the same for every exchange.
func staticForm(s *settings) string {
	v := url.Values{}
	for k, val := range s.extraParams {
		v.Set(k, val)
	}
	if s.flow == flowEntra {
		v.Set("grant_type", grantJWTBearer)
		v.Set("requested_token_use", "on_behalf_of")
	} else {
		v.Set("grant_type", grantTokenExchange)
		v.Set("subject_token_type", s.subjectTokenType)
		if len(s.audience) > 0 {
			v["audience"] = s.audience
		}
		if len(s.resource) > 0 {
			v["resource"] = s.resource
		}
		if s.requestedTokenType != "" {
			v.Set("requested_token_type", s.requestedTokenType)
		}
	}
	if len(s.scopes) > 0 {
		v.Set("scope", strings.Join(s.scopes, " "))
	}
	if s.authMethod != authBasic {
		v.Set("client_id", s.clientID)
	}
	return v.Encode()
}

// exchange trades the subject token for a new one. The timeout bounds the whole of it, retry
// included, and does not depend on the client's request: other requests may be waiting for this
// same exchange. A server error or a broken connection is retried once after a short jittered
// pause when the budget allows; nothing else is (a throttling answer least of all, see throttle.go).
func (c *endpointClient) exchange(subjectToken, secret string) (tokenResult, *failure) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	res, f, retry := c.attempt(ctx, subjectToken, secret)
	if !retry {
		return res, f
	}
	pause := 50*time.Millisecond + time.Duration(rand.Int63n(int64(100*time.Millisecond)))
	if deadline, _ := ctx.Deadline(); time.Until(deadline) < 2*pause {
		return res, f
	}
	time.Sleep(pause)
	first := f
	res, f, _ = c.attempt(ctx, subjectToken, secret)
	return res, retried(f, first)
}

// retried adds the first attempt's failure to the second's, so that the log line tells both (a 5xx
// and then a timeout, say) rather than the last alone.
func retried(second, first *failure) *failure {
	if second == nil {
		return nil
	}
	f := *second
	f.reason = second.reason + "; the first attempt failed too: " + first.reason
	if f.oauthError == "" {
		f.oauthError, f.oauthDescription = first.oauthError, first.oauthDescription
	}
	return &f
}

// attempt sends one request; retry says whether another one may succeed.
func (c *endpointClient) attempt(ctx context.Context, subjectToken, secret string) (tokenResult, *failure, bool) {
	req, err := c.newRequest(ctx, subjectToken, secret)
	if err != nil {
		return tokenResult{}, failExchange(err.Error()), false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return tokenResult{}, failTimeout("no answer within the timeout"), false
		}
		return tokenResult{}, failExchange("request failed: " + err.Error()), true
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	_ = resp.Body.Close()
	if err != nil {
		if ctx.Err() != nil {
			return tokenResult{}, failTimeout("the answer did not arrive within the timeout"), false
		}
		return tokenResult{}, failExchange("reading the answer failed: " + err.Error()), true
	}
	if len(body) > maxResponseBody {
		return tokenResult{}, failExchange("the answer is larger than 1 MiB"), false
	}
	if d, ok := throttleAnswer(resp.StatusCode, resp.Header.Get("Retry-After"), time.Now()); ok {
		return tokenResult{}, failThrottledAnswer(resp.StatusCode, d, body), false
	}
	res, f := parseTokenResponse(resp.StatusCode, body, c.flow, c.requestedTokenType)
	return res, f, f != nil && resp.StatusCode >= 500
}

// newRequest builds the POST with the client authentication of the configured method. With
// client_secret_basic, id and secret are form-urlencoded before base64 (RFC 6749 section 2.3.1),
// so secrets holding ":", "%" or "+" survive.
func (c *endpointClient) newRequest(ctx context.Context, subjectToken, secret string) (*http.Request, error) {
	param := "subject_token="
	if c.flow == flowEntra {
		param = "assertion="
	}
	body := c.form + "&" + param + url.QueryEscape(subjectToken)
	if c.authMethod == authPost {
		body += "&client_secret=" + url.QueryEscape(secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.authMethod == authBasic {
		pair := url.QueryEscape(c.clientID) + ":" + url.QueryEscape(secret)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(pair)))
	}
	return req, nil
}

// tokenResponse is the JSON of a token endpoint answer, success (RFC 6749 section 5.1, RFC 8693
// section 2.2.1) or error (RFC 6749 section 5.2), with Entra's claims challenge and suberror
// (Entra answers a missing consent, AADSTS65001, with invalid_grant and suberror consent_required).
type tokenResponse struct {
	AccessToken      string      `json:"access_token"`
	TokenType        string      `json:"token_type"`
	IssuedTokenType  string      `json:"issued_token_type"`
	ExpiresIn        json.Number `json:"expires_in"` // a number, or a numeric string as some servers send
	Error            string      `json:"error"`
	ErrorDescription string      `json:"error_description"`
	Claims           string      `json:"claims"`
	Suberror         string      `json:"suberror"`
}

// parseTokenResponse turns an answer into a result or into the failure the client will see. flow
// and requested (requestedTokenType, empty for the default) say which token the answer may carry.
func parseTokenResponse(status int, body []byte, flow, requested string) (tokenResult, *failure) {
	var r tokenResponse
	jsonErr := json.Unmarshal(body, &r)
	if status < 200 || status > 299 {
		return tokenResult{}, oauthFailure(status, r, jsonErr == nil)
	}
	if jsonErr != nil {
		return tokenResult{}, failExchange("the answer is not JSON")
	}
	if r.AccessToken == "" {
		return tokenResult{}, failExchangeOAuth("the answer has no access_token", r.Error, r.ErrorDescription)
	}
	if !isVisibleASCII(r.AccessToken) {
		return tokenResult{}, failExchange("the access_token holds characters that cannot go into a header")
	}
	if len(r.AccessToken) > maxTokenLength {
		return tokenResult{}, failExchange("the access_token is longer than 16 KiB")
	}
	if f := checkTokenType(r, flow, requested); f != nil {
		return tokenResult{}, f
	}
	expiresIn, ok := parseExpiresIn(r.ExpiresIn)
	if !ok {
		return tokenResult{}, failExchange("expires_in is not a number of seconds")
	}
	res := tokenResult{header: "Bearer " + r.AccessToken, expiresIn: expiresIn}
	if exp, ok := jwtExpiry(r.AccessToken); ok {
		res.exp = exp
	}
	return res, nil
}

// checkTokenType makes sure the token is one the backend may get as a bearer token. Entra answers
// with token_type Bearer. RFC 8693 servers must say what they issued (issued_token_type, section
// 2.2.1): it must be the type requested, or a JWT for an access-token request when the server
// also says token_type Bearer; token_type N_A (not an access token) passes only when another type
// was requested explicitly. A refresh token or an id_token is never forwarded by mistake.
func checkTokenType(r tokenResponse, flow, requested string) *failure {
	tokenType := strings.ToLower(r.TokenType)
	if tokenType != "" && tokenType != "bearer" && tokenType != "n_a" {
		return failExchange("unsupported token_type " + strconv.Quote(r.TokenType) + "; only Bearer tokens can be forwarded")
	}
	if flow == flowEntra {
		if tokenType == "n_a" {
			return failExchange("token_type N_A: the answer does not hold an access token")
		}
		return nil
	}
	if r.IssuedTokenType == "" {
		return failExchange("the answer has no issued_token_type (RFC 8693 section 2.2.1)")
	}
	explicit := requested != ""
	if !explicit {
		requested = tokenTypeAccessToken
	}
	jwtForAccess := requested == tokenTypeAccessToken && r.IssuedTokenType == tokenTypeJWT && tokenType == "bearer"
	if r.IssuedTokenType != requested && !jwtForAccess {
		return failExchange("issued_token_type " + strconv.Quote(r.IssuedTokenType) + " is not the requested " + requested)
	}
	if tokenType == "n_a" && (!explicit || requested == tokenTypeAccessToken) {
		return failExchange("token_type N_A: the server says it did not issue an access token")
	}
	return nil
}

// oauthFailure maps an error answer: invalid_grant (or access_denied) means the user's token is not
// good (401);
// a claims challenge or a consent request (interaction_required, consent_required, or Entra's
// invalid_grant with claims or with suberror consent_required) goes back to the client so it can
// step up (401);
// anything else is the gateway's configuration or the server's fault (502).
func oauthFailure(status int, r tokenResponse, isJSON bool) *failure {
	switch {
	case !isJSON || r.Error == "":
		if status >= 300 && status < 400 {
			return failExchange("the token endpoint answered with redirect " + strconv.Itoa(status) + ", which is not followed")
		}
		return failExchange("the token endpoint answered HTTP " + strconv.Itoa(status) + " without an OAuth error")
	case r.Error == "invalid_grant" && (r.Claims != "" || r.Suberror == "consent_required"):
		f := failClaimsChallenge(r.Error, r.ErrorDescription, r.Claims)
		f.cacheable = true
		return f
	case r.Error == "invalid_grant" || r.Error == "access_denied":
		// Dex answers access_denied to a subject token it cannot verify.
		f := failRejected(r.Error, r.ErrorDescription)
		f.cacheable = true
		return f
	case r.Error == "interaction_required" || r.Error == "consent_required":
		return failClaimsChallenge(r.Error, r.ErrorDescription, r.Claims)
	}
	return failExchangeOAuth("the authorization server refused the exchange (HTTP "+strconv.Itoa(status)+")", r.Error, r.ErrorDescription)
}

// parseExpiresIn turns expires_in into a lifetime; empty means the server gave none.
func parseExpiresIn(n json.Number) (time.Duration, bool) {
	if n == "" {
		return 0, true
	}
	seconds, err := n.Float64()
	if err != nil {
		return 0, false
	}
	if !(seconds > 0) {
		return 0, true // zero or negative: no lifetime given, so not cached on this basis
	}
	if seconds > maxExpiresIn {
		seconds = maxExpiresIn
	}
	return time.Duration(seconds * float64(time.Second)), true
}

// visibleASCII holds the characters 0x21 to 0x7e.
const visibleASCII = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"

// isVisibleASCII reports whether s holds only characters 0x21 to 0x7e, so it can be written into
// a header without splitting it. strings.Trim runs native (see isB64Token).
func isVisibleASCII(s string) bool {
	return strings.Trim(s, visibleASCII) == ""
}
