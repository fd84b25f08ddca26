package oboexchange

import (
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// grantClientCredentials is also the "flow" of a client-credentials answer: a plain OAuth
	// access token (see checkTokenType).
	grantClientCredentials = "client_credentials"

	// maxResponseBody bounds what is read from the token endpoint, and from the issuer's metadata.
	maxResponseBody = 1 << 20
	// maxResponseHeaders bounds the headers of those answers: Go's default of 10 MiB would let
	// each of maxConcurrentExchanges answers hold that much. 64 KiB is ample for any real server.
	maxResponseHeaders = 64 << 10

	// maxExpiresIn caps a lifetime the server states (one year), far from time.Duration overflow.
	maxExpiresIn = 365 * 24 * 3600
)

// tokenResult is a successful answer of the token endpoint.
type tokenResult struct {
	header    string        // "Bearer <access_token>"
	expiresIn time.Duration // zero when the server gave none
	exp       time.Time     // the new token's own exp claim, when it is a JWT
}

// endpointClient sends requests to one token endpoint.
type endpointClient struct {
	url  string // empty when discovery finds it
	flow string
	// requestedTokenType is what the answer must carry (empty: an access token), see checkTokenType.
	requestedTokenType string
	auth               *clientAuth // client authentication, see clientauth.go
	form               string      // every parameter but the subject token and the client authentication, encoded
	timeout            time.Duration
	discovery          *discovery // nil when tokenEndpoint is configured

	// http is built for the TLS material it was given (the tls_client_auth certificate, the CAs of
	// tokenEndpointCAFile) and replaced when that changes; read it with client.
	httpMu  sync.Mutex
	http    *http.Client
	httpTLS tlsMaterial
}

func newEndpointClient(s *settings) *endpointClient {
	auth := s.clientAuth
	if auth == nil { // settings not made by parseConfig (tests): the files are read on first use
		auth = newClientAuth(s)
	}
	cred, _ := auth.current(time.Now())
	return &endpointClient{
		url:                s.endpointString(),
		flow:               s.flow,
		requestedTokenType: s.requestedTokenType,
		auth:               auth,
		form:               staticForm(s),
		timeout:            s.timeout,
		discovery:          newDiscovery(s),
		http:               newHTTPClient(cred.tls()),
		httpTLS:            cred.tls(),
	}
}

// client returns the HTTP client for this TLS material, building a new one (and closing the idle
// connections of the old) when a rotated certificate or CA bundle changed it, so that the next
// connection uses the new one.
func (c *endpointClient) client(m tlsMaterial) *http.Client {
	c.httpMu.Lock()
	defer c.httpMu.Unlock()
	if c.http != nil && (m.cert != c.httpTLS.cert || m.roots != c.httpTLS.roots) {
		old := c.http
		c.http = newHTTPClient(m)
		c.httpTLS = m
		old.CloseIdleConnections()
	}
	return c.http
}

// tokenURL is the token endpoint of the next request: the configured one, or the one discovery
// reads from the issuer's metadata, with the client these credentials' TLS material needs (the
// CAs of tokenEndpointCAFile verify the issuer too).
func (c *endpointClient) tokenURL(cred credentials, log *logger) (string, *failure) {
	if c.discovery == nil {
		return c.url, nil
	}
	return c.discovery.tokenEndpoint(c.client(cred.tls()), log)
}

// closeIdle closes the idle connections, when the exchanger is dropped.
func (c *endpointClient) closeIdle() {
	c.httpMu.Lock()
	defer c.httpMu.Unlock()
	if c.http != nil {
		c.http.CloseIdleConnections()
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
	return v.Encode()
}

// exchange trades the subject token for a new token at the endpoint; actorParams are the encoded
// actor_token and actor_token_type of a delegation, or "" (see actorSource.param).
func (c *endpointClient) exchange(endpoint, subjectToken, actorParams string, cred credentials) (tokenResult, *failure) {
	param := "&subject_token="
	if c.flow == flowEntra {
		param = "&assertion="
	}
	return c.post(endpoint, c.form+param+url.QueryEscape(subjectToken)+actorParams, cred, c.flow)
}

// post sends one grant's form with the client authentication and reads the answer; flow says which
// token the answer must hold (see checkTokenType). The timeout bounds the whole of it, retry
// included, and does not depend on the client's request: other requests may be waiting for this
// same answer. A server error or a broken connection is retried once after a short jittered
// pause when the budget allows; nothing else is (a throttling answer least of all, see throttle.go).
func (c *endpointClient) post(endpoint, form string, cred credentials, flow string) (tokenResult, *failure) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	res, f, retry := c.attempt(ctx, endpoint, form, cred, flow)
	if !retry {
		return res, f
	}
	pause := 50*time.Millisecond + time.Duration(rand.Int63n(int64(100*time.Millisecond)))
	if deadline, _ := ctx.Deadline(); time.Until(deadline) < 2*pause {
		return res, f
	}
	time.Sleep(pause)
	first := f
	res, f, _ = c.attempt(ctx, endpoint, form, cred, flow)
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
func (c *endpointClient) attempt(ctx context.Context, endpoint, form string, cred credentials, flow string) (tokenResult, *failure, bool) {
	req, err := c.newRequest(ctx, endpoint, form, cred)
	if err != nil {
		return tokenResult{}, failExchange(outcomeClientError, err.Error()), false
	}
	resp, err := c.client(cred.tls()).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return tokenResult{}, failTimeout("no answer within the timeout"), false
		}
		if isHeaderOverflow(err) {
			return tokenResult{}, failExchange(outcomeMalformedAnswer, "the answer's headers are larger than 64 KiB"), false
		}
		return tokenResult{}, failExchange(outcomeServerError, "request failed: "+err.Error()), true
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	_ = resp.Body.Close()
	if err != nil {
		if ctx.Err() != nil {
			return tokenResult{}, failTimeout("the answer did not arrive within the timeout"), false
		}
		return tokenResult{}, failExchange(outcomeServerError, "reading the answer failed: "+err.Error()), true
	}
	if len(body) > maxResponseBody {
		return tokenResult{}, failExchange(outcomeMalformedAnswer, "the answer is larger than 1 MiB"), false
	}
	if d, ok := throttleAnswer(resp.StatusCode, resp.Header.Get("Retry-After"), time.Now()); ok {
		return tokenResult{}, failThrottledAnswer(resp.StatusCode, d, body), false
	}
	res, f := parseTokenResponse(resp.StatusCode, body, flow, c.requestedTokenType)
	return res, f, f != nil && resp.StatusCode >= 500
}

// isHeaderOverflow reports whether the server's answer had more headers than maxResponseHeaders.
// net/http says so only in the error's text.
func isHeaderOverflow(err error) bool {
	return strings.Contains(err.Error(), "server response headers exceeded")
}

// newRequest builds the POST of a grant's form (the exchange's, or that of another grant) to the
// endpoint, with the client authentication of the configured method (clientauth.go), the same for
// every grant the gateway sends. Send it with c.client(cred.tls()), which presents the
// tls_client_auth certificate.
func (c *endpointClient) newRequest(ctx context.Context, endpoint, form string, cred credentials) (*http.Request, error) {
	body, authorization, err := c.auth.authenticate(form, endpoint, cred, time.Now())
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
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
		return tokenResult{}, failExchange(outcomeMalformedAnswer, "the answer is not JSON")
	}
	if r.AccessToken == "" {
		return tokenResult{}, failExchangeOAuth(outcomeMalformedAnswer, "the answer has no access_token", r.Error, r.ErrorDescription)
	}
	if !isVisibleASCII(r.AccessToken) {
		return tokenResult{}, failExchange(outcomeMalformedAnswer, "the access_token holds characters that cannot go into a header")
	}
	if len(r.AccessToken) > maxTokenLength {
		return tokenResult{}, failExchange(outcomeMalformedAnswer, "the access_token is longer than 16 KiB")
	}
	if f := checkTokenType(r, flow, requested); f != nil {
		return tokenResult{}, f
	}
	expiresIn, ok := parseExpiresIn(r.ExpiresIn)
	if !ok {
		return tokenResult{}, failExchange(outcomeMalformedAnswer, "expires_in is not a number of seconds")
	}
	res := tokenResult{header: "Bearer " + r.AccessToken, expiresIn: expiresIn}
	if exp, ok := jose.Expiry(r.AccessToken); ok {
		res.exp = exp
	}
	return res, nil
}

// checkTokenType makes sure the token is one the backend may get as a bearer token. Entra answers
// with token_type Bearer, as does a client-credentials grant (flow grantClientCredentials). RFC 8693 servers must say what they issued (issued_token_type, section
// 2.2.1): it must be the type requested, or a JWT for an access-token request when the server
// also says token_type Bearer; token_type N_A (not an access token) passes only when another type
// was requested explicitly. A refresh token or an id_token is never forwarded by mistake.
func checkTokenType(r tokenResponse, flow, requested string) *failure {
	tokenType := strings.ToLower(r.TokenType)
	if tokenType != "" && tokenType != "bearer" && tokenType != "n_a" {
		return failExchange(outcomeMalformedAnswer, "unsupported token_type "+strconv.Quote(r.TokenType)+"; only Bearer tokens can be forwarded")
	}
	if flow != flowRFC8693 {
		if tokenType == "n_a" {
			return failExchange(outcomeMalformedAnswer, "token_type N_A: the answer does not hold an access token")
		}
		return nil
	}
	if r.IssuedTokenType == "" {
		return failExchange(outcomeMalformedAnswer, "the answer has no issued_token_type (RFC 8693 section 2.2.1)")
	}
	explicit := requested != ""
	if !explicit {
		requested = tokenTypeAccessToken
	}
	jwtForAccess := requested == tokenTypeAccessToken && r.IssuedTokenType == tokenTypeJWT && tokenType == "bearer"
	if r.IssuedTokenType != requested && !jwtForAccess {
		return failExchange(outcomeMalformedAnswer, "issued_token_type "+strconv.Quote(r.IssuedTokenType)+" is not the requested "+requested)
	}
	if tokenType == "n_a" && (!explicit || requested == tokenTypeAccessToken) {
		return failExchange(outcomeMalformedAnswer, "token_type N_A: the server says it did not issue an access token")
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
			return failExchange(outcomeClientError, "the token endpoint answered with redirect "+strconv.Itoa(status)+", which is not followed")
		}
		return failExchange(statusOutcome(status), "the token endpoint answered HTTP "+strconv.Itoa(status)+" without an OAuth error")
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
	return failExchangeOAuth(statusOutcome(status), "the authorization server refused the exchange (HTTP "+strconv.Itoa(status)+")", r.Error, r.ErrorDescription)
}

// statusOutcome is the metrics outcome of an error answer that is neither a rejection of the
// user's token nor a claims challenge: a 429 is throttling, a 5xx the server's fault, anything
// else the server refusing what the gateway sent (its configuration).
func statusOutcome(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return outcomeThrottled
	case status >= 500:
		return outcomeServerError
	}
	return outcomeClientError
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
