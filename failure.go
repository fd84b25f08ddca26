package oboexchange

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"time"
)

// failure is why a request is not forwarded: what the client is told (a status, a challenge and
// a short fixed JSON body that never holds a token, a secret or the server's own words) and what
// the operator's log line says. It is a plain struct rather than an error type, because Yaegi
// mishandles errors.As on types defined by an interpreted package.
type failure struct {
	status     int
	challenge  string // WWW-Authenticate value, for a 401
	retryAfter string // Retry-After value, for a 503
	body       []byte

	// cacheable marks a rejection of the subject token itself (invalid_grant), which the negative
	// cache remembers.
	cacheable bool

	// coolDown is set when the token endpoint throttled this exchange (429, or 503 with
	// Retry-After): how long no exchange may be sent (see throttle.go).
	coolDown time.Duration

	// For the log line only.
	reason           string // what happened, in the plugin's words
	oauthError       string // the authorization server's error code
	oauthDescription string // the authorization server's error_description

	// outcome is the exchanges_total label of a failed exchange (metrics.go); empty for a request
	// refused before any exchange.
	outcome string
}

// The outcomes of an exchange, the outcome label of exchanges_total (metrics.go): ok, or why it
// failed. Every failure of an exchange carries one (failure.outcome), set where it is created.
const (
	outcomeOK              = "ok"
	outcomeInvalidGrant    = "invalid_grant"    // the server refused the user's token
	outcomeAccessDenied    = "access_denied"    // the same, as Dex says it
	outcomeClaimsChallenge = "claims_challenge" // the user must step up or consent
	outcomeClientError     = "client_error"     // the gateway's side: configuration refused, redirect, plugin bug
	outcomeServerError     = "server_error"     // a 5xx or a connection that failed
	outcomeTimeout         = "timeout"          // no answer within timeout
	outcomeThrottled       = "throttled"        // HTTP 429 or 503 with Retry-After, and the refusals of its cool-down
	outcomeBusy            = "busy"             // maxConcurrentExchanges reached; never sent
	outcomeMalformedAnswer = "malformed_answer" // a 2xx answer without a usable token
)

var exchangeOutcomes = []string{
	outcomeOK, outcomeInvalidGrant, outcomeAccessDenied, outcomeClaimsChallenge, outcomeClientError,
	outcomeServerError, outcomeTimeout, outcomeThrottled, outcomeBusy, outcomeMalformedAnswer,
}

// The client-facing answers. Each body is fixed text, so nothing from the request or the
// authorization server can reach it.
var (
	failMissingToken = &failure{
		status:    http.StatusUnauthorized,
		challenge: "Bearer",
		body:      jsonError("unauthorized", "A bearer token is required."),
		reason:    "no credential in the request",
	}
	failExpiredToken = &failure{
		status:    http.StatusUnauthorized,
		challenge: `Bearer error="invalid_token"`,
		body:      jsonError("invalid_token", "The token has expired."),
		reason:    "the subject token's exp has passed; not exchanged",
	}
	failInternal = failExchange(outcomeClientError, "internal error in the exchange")
	failBusy     = &failure{
		status:     http.StatusServiceUnavailable,
		retryAfter: "1",
		body:       jsonError("token_exchange_busy", "Too many token exchanges are in progress; retry shortly."),
		reason:     "maxConcurrentExchanges reached",
		outcome:    outcomeBusy,
	}
)

// failMalformed is the answer to a Bearer credential that is present but unusable: RFC 6750
// section 3.1 makes that invalid_request, 400.
func failMalformed(reason string) *failure {
	return &failure{
		status:    http.StatusBadRequest,
		challenge: `Bearer error="invalid_request"`,
		body:      jsonError("invalid_request", "The bearer credential is malformed."),
		reason:    reason,
	}
}

// failRejected is the answer when the authorization server refused the subject token itself
// (invalid_grant, or access_denied as Dex says it): for the client, its token is no longer good.
func failRejected(oauthError, description string) *failure {
	outcome := outcomeInvalidGrant
	if oauthError == "access_denied" {
		outcome = outcomeAccessDenied
	}
	return &failure{
		status:           http.StatusUnauthorized,
		challenge:        `Bearer error="invalid_token"`,
		body:             jsonError("invalid_token", "The token was rejected by the authorization server."),
		reason:           "subject token rejected",
		oauthError:       oauthError,
		oauthDescription: description,
		outcome:          outcome,
	}
}

// failClaimsChallenge is the answer when Entra ID needs the user to step up (multi-factor
// authentication, a Conditional Access policy) or to consent. As Microsoft documents for a middle
// tier, the client gets a 401 with error="insufficient_claims" and the claims challenge
// base64-encoded, so that it can obtain a new token that satisfies it and retry.
func failClaimsChallenge(oauthError, description, claims string) *failure {
	challenge := `Bearer error="insufficient_claims"`
	if claims != "" {
		challenge += `, claims="` + base64.StdEncoding.EncodeToString([]byte(claims)) + `"`
	}
	return &failure{
		status:           http.StatusUnauthorized,
		challenge:        challenge,
		body:             jsonError("insufficient_claims", "The user must satisfy further conditions (multi-factor authentication or consent) for this API."),
		reason:           "the authorization server requires user interaction",
		oauthError:       oauthError,
		oauthDescription: description,
		outcome:          outcomeClaimsChallenge,
	}
}

// failExchange is the answer to everything that is the gateway's or the authorization server's
// fault: a server error, an unusable answer, a connection that failed. outcome says which, for
// the metrics.
func failExchange(outcome, reason string) *failure {
	return &failure{
		status:  http.StatusBadGateway,
		body:    jsonError("token_exchange_failed", "The token exchange failed."),
		reason:  reason,
		outcome: outcome,
	}
}

// failExchangeOAuth is failExchange for an OAuth error answer, whose code and description the
// operator's log line shows (a configuration the server refuses: invalid_client, invalid_scope).
func failExchangeOAuth(outcome, reason, oauthError, description string) *failure {
	f := failExchange(outcome, reason)
	f.oauthError = oauthError
	f.oauthDescription = description
	return f
}

// failTimeout is the answer when the exchange did not finish within the configured timeout.
func failTimeout(reason string) *failure {
	return &failure{
		status:  http.StatusGatewayTimeout,
		body:    jsonError("token_exchange_timeout", "The authorization server did not answer in time."),
		reason:  reason,
		outcome: outcomeTimeout,
	}
}

// The answers about the caller's actor token (actorToken: header:<Name>). The actor header is a
// credential the caller must send, like the bearer token: a request without it lacks
// authentication information, which RFC 6750 section 3.1 answers with a bare challenge, no error
// code. A malformed actor header is failMalformed (400), as for the subject token.
var (
	failMissingActor = &failure{
		status:    http.StatusUnauthorized,
		challenge: "Bearer",
		body:      jsonError("unauthorized", "An actor token is required."),
		reason:    "no actor token in the request",
	}
	failExpiredActor = &failure{
		status:    http.StatusUnauthorized,
		challenge: `Bearer error="invalid_token"`,
		body:      jsonError("invalid_token", "The actor token has expired."),
		reason:    "the actor token's exp has passed; not exchanged",
	}
)

// failActorRejected is the answer when the authorization server refused the actor token the
// caller sent: for the caller, that credential is not good. It is remembered like a rejected
// subject token (the cache key covers both).
func failActorRejected(outcome, reason, oauthError, description string) *failure {
	return &failure{
		outcome:          outcome,
		status:           http.StatusUnauthorized,
		challenge:        `Bearer error="invalid_token"`,
		body:             jsonError("invalid_token", "The actor token was rejected by the authorization server."),
		cacheable:        true,
		reason:           reason,
		oauthError:       oauthError,
		oauthDescription: description,
	}
}

// failThrottled is the answer while the token endpoint cools down after a throttling answer: 503
// with Retry-After set to the seconds left, at least 1.
func failThrottled(left time.Duration) *failure {
	seconds := int((left + time.Second - 1) / time.Second)
	if seconds < 1 {
		seconds = 1
	}
	return &failure{
		outcome:    outcomeThrottled,
		status:     http.StatusServiceUnavailable,
		retryAfter: strconv.Itoa(seconds),
		body:       jsonError("token_exchange_throttled", "The authorization server asked for fewer token exchanges; retry after the time in Retry-After."),
		reason:     "the token endpoint is cooling down after a throttling answer",
	}
}

// jsonError renders an OAuth-style error body. The arguments are constants of this package, so
// no escaping is needed.
func jsonError(code, description string) []byte {
	return []byte(`{"error":"` + code + `","error_description":"` + description + `"}`)
}

// reject writes the failure's answer to the client.
func (m *Middleware) reject(rw http.ResponseWriter, f *failure) {
	h := rw.Header()
	if f.challenge != "" {
		h.Set("WWW-Authenticate", f.challenge)
	}
	if f.retryAfter != "" {
		h.Set("Retry-After", f.retryAfter)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	rw.WriteHeader(f.status)
	_, _ = rw.Write(f.body)
}
