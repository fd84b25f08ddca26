package oboexchange

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/watch"
)

// Where the actor token of RFC 8693 delegation comes from (actorToken). The actor is the party
// acting for the user: the gateway itself (file:, client_credentials) or a trusted caller, such as
// an AI agent, that sends its own identity token along with the user's (header:). The issued token
// then names both: the user in sub, the actor in act.
const (
	actorFile              = "file"
	actorHeader            = "header"
	actorClientCredentials = "client_credentials"
)

// parseActor reads actorToken, actorTokenType and actorScopes. It runs after parseFlow,
// parseClient and parseSources, whose results it checks against.
func parseActor(s *settings, c *Config) error {
	raw := strings.TrimSpace(c.ActorToken)
	s.actorTokenType = strings.TrimSpace(c.ActorTokenType)
	s.actorScopes = cleanList(c.ActorScopes, true)
	if raw == "" {
		if s.actorTokenType != "" || len(s.actorScopes) > 0 {
			return errors.New("actorTokenType and actorScopes describe an actor token: set actorToken too, or remove them")
		}
		return nil
	}
	if s.flow != flowRFC8693 {
		return errors.New(`actorToken: flow "entra" (On-Behalf-Of) has no actor token; actor tokens are part of RFC 8693 (flow: rfc8693)`)
	}
	if err := parseActorSource(s, raw); err != nil {
		return err
	}
	if len(s.actorScopes) > 0 && s.actorKind != actorClientCredentials {
		return errors.New("actorScopes: these are the scopes of the client-credentials request; they apply only with actorToken: client_credentials")
	}
	if s.actorTokenType == "" {
		s.actorTokenType = tokenTypeJWT
		if s.actorKind == actorClientCredentials {
			s.actorTokenType = tokenTypeAccessToken
		}
	}
	return nil
}

// parseActorSource reads the value of actorToken: file:<path>, header:<Name> or client_credentials.
func parseActorSource(s *settings, raw string) error {
	kind, value, hasValue := strings.Cut(raw, ":")
	value = strings.TrimSpace(value)
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case actorFile:
		if value == "" {
			return errors.New("actorToken: file: needs a path, for example file:/var/run/secrets/tokens/gateway")
		}
		s.actorKind, s.actorPath = actorFile, value
		return nil
	case actorHeader:
		return parseActorHeader(s, value)
	case actorClientCredentials:
		if hasValue {
			return fmt.Errorf("actorToken: %q: client_credentials takes no value (set its scopes in actorScopes)", raw)
		}
		if s.authMethod == authNone {
			return errors.New(`actorToken: client_credentials needs a confidential client (RFC 6749 section 4.4), but clientAuthMethod is "none"`)
		}
		s.actorKind = actorClientCredentials
		return nil
	}
	return fmt.Errorf("actorToken: %q is not file:<path>, header:<Name> or client_credentials", raw)
}

// parseActorHeader checks the header of a header: actor token. It must not be one the user's token
// is read from: each credential needs its own place.
func parseActorHeader(s *settings, name string) error {
	if !isToken(name) {
		return fmt.Errorf("actorToken: %q is not a valid header name", name)
	}
	canonical := http.CanonicalHeaderKey(name)
	for _, src := range s.sources {
		if src.kind == sourceHeader && src.name == canonical {
			return fmt.Errorf("actorToken: header %s is also in tokenSources; the actor token needs a header of its own", canonical)
		}
	}
	s.actorKind, s.actorHeader = actorHeader, canonical
	return nil
}

// actorSource supplies the actor token of each exchange. It is shared, like the exchanger that
// holds it: for client_credentials, the gateway's own access token is cached here until it expires
// less expiryMargin, and concurrent exchanges that need a new one share one request.
type actorSource struct {
	kind      string
	tokenType string      // actorTokenType
	file      *watch.File // actorFile
	ccForm    string      // actorClientCredentials: the grant's form, without client authentication
	margin    time.Duration

	mu      sync.Mutex
	cached  string        // the client-credentials access token
	expires time.Duration // on the cache clock
	flight  *actorFlight  // the client-credentials request in progress
}

// actorFlight is one client-credentials request in progress; exchanges that need its token wait.
type actorFlight struct {
	done    chan struct{}
	token   string
	failure *failure
}

// newActorSource returns nil when no actorToken is configured.
func newActorSource(s *settings) *actorSource {
	if s.actorKind == "" {
		return nil
	}
	a := &actorSource{kind: s.actorKind, tokenType: s.actorTokenType, margin: s.margin}
	switch s.actorKind {
	case actorFile:
		a.file = watch.New("actorToken", s.actorPath, parseActorFile)
	case actorClientCredentials:
		v := url.Values{"grant_type": {grantClientCredentials}}
		if len(s.actorScopes) > 0 {
			v.Set("scope", strings.Join(s.actorScopes, " "))
		}
		a.ccForm = v.Encode()
	}
	return a
}

// parseActorFile reads an actor token file (a projected service-account token, say): one token,
// surrounding white space removed.
func parseActorFile(data []byte) (interface{}, error) {
	token := strings.TrimSpace(string(data))
	switch {
	case token == "":
		return nil, errors.New("the file is empty")
	case len(token) > maxTokenLength:
		return nil, errors.New("the token in the file is longer than 16 KiB")
	case !isB64Token(token):
		return nil, errors.New("the file does not hold one token (an RFC 6750 b64token, such as a JWT)")
	}
	return token, nil
}

// load reads the actor token file, for New: a file that cannot be used is a configuration error.
func (a *actorSource) load() error {
	if a == nil || a.file == nil {
		return nil
	}
	return a.file.Load()
}

// token returns the actor token for one exchange: the caller's (header:), the file's, or the
// gateway's client-credentials token, obtained at endpoint with the configured client
// authentication. Without actorToken it is "".
func (a *actorSource) token(c *endpointClient, endpoint string, cred credentials, caller string, log *logger) (string, *failure) {
	if a == nil {
		return "", nil
	}
	switch a.kind {
	case actorHeader:
		return caller, nil
	case actorFile:
		return a.fromFile(log)
	}
	return a.clientCredentials(c, endpoint, cred)
}

// param is the form parameters that carry an actor token in the exchange (RFC 8693 section 2.1),
// encoded; "" without one.
func (a *actorSource) param(token string) string {
	if token == "" {
		return ""
	}
	return "&actor_token=" + url.QueryEscape(token) + "&actor_token_type=" + url.QueryEscape(a.tokenType)
}

// fromFile reads the actor token file again (it is re-read when it changes; on an error, the last
// good token stays in use). An expired JWT is not sent: the server could only refuse it.
func (a *actorSource) fromFile(log *logger) (string, *failure) {
	v, err := a.file.Get()
	if err != nil {
		log.log(levelWarn, "actor token file could not be read again; the last good token is used", "error", err.Error())
	}
	token, _ := v.(string)
	if exp, ok := jose.Expiry(token); ok && !exp.After(time.Now()) {
		return "", failExchange(outcomeClientError, "the actor token in "+a.file.Path()+" has expired; it was not renewed")
	}
	return token, nil
}

// clientCredentials returns the gateway's own access token: cached, or obtained by one request
// that concurrent exchanges share (single flight). A flight starts as an internal failure, so that
// a panic in the request cannot hand its waiters an empty token.
func (a *actorSource) clientCredentials(c *endpointClient, endpoint string, cred credentials) (string, *failure) {
	a.mu.Lock()
	if a.cached != "" && a.expires > time.Since(epoch) {
		token := a.cached
		a.mu.Unlock()
		return token, nil
	}
	if fl := a.flight; fl != nil {
		a.mu.Unlock()
		<-fl.done
		return fl.token, fl.failure
	}
	fl := &actorFlight{done: make(chan struct{}), failure: failInternal}
	a.flight = fl
	a.mu.Unlock()
	defer a.land(fl)
	fl.token, fl.failure = a.fetch(c, endpoint, cred)
	return fl.token, fl.failure
}

// land ends a client-credentials flight.
func (a *actorSource) land(fl *actorFlight) {
	a.mu.Lock()
	a.flight = nil
	a.mu.Unlock()
	close(fl.done)
}

// fetch sends the client-credentials request and caches its token by the lifetime rule of the
// exchanged tokens (expires_in or exp, less the margin). A refusal is the gateway's fault.
func (a *actorSource) fetch(c *endpointClient, endpoint string, cred credentials) (string, *failure) {
	now := time.Now()
	res, f := c.post(endpoint, a.ccForm, cred, grantClientCredentials)
	if f != nil {
		return "", gatewayActorFailure("the client-credentials request for the actor token failed: ", f)
	}
	token := strings.TrimPrefix(res.header, "Bearer ")
	if ttl, ok := lifetime(now, res.expiresIn, res.exp, time.Time{}, a.margin); ok {
		a.mu.Lock()
		a.cached = token
		a.expires = time.Since(epoch) + ttl
		a.mu.Unlock()
	}
	return token, nil
}

// forget drops a cached client-credentials token the server refused, so the next exchange
// obtains a new one.
func (a *actorSource) forget(token string) {
	a.mu.Lock()
	if a.cached == token {
		a.cached = ""
	}
	a.mu.Unlock()
}

// gatewayActorFailure makes a failure about the gateway's own actor token a 502 (a timeout stays
// a 504): it is never the user's fault, so it is never remembered against the user's token.
func gatewayActorFailure(prefix string, f *failure) *failure {
	if f.status == http.StatusGatewayTimeout {
		g := *f
		g.reason = prefix + f.reason
		return &g
	}
	return failExchangeOAuth(f.outcome, prefix+f.reason, f.oauthError, f.oauthDescription)
}

// judge turns a failed exchange that carried an actor token into the client's answer. When the
// server's error is about the actor token (see actorRefused), the caller's own actor token is a
// 401 for the caller; the gateway's (file:, client_credentials) is the gateway's fault, a 502.
// Any other failure stays what it was. The actor token is removed from whatever the server said.
func (a *actorSource) judge(f *failure, actor string) *failure {
	description := redactActor(f.oauthDescription, actor)
	if !actorRefused(f) {
		g := *f
		g.reason = redactActor(f.reason, actor)
		g.oauthError = redactActor(f.oauthError, actor)
		g.oauthDescription = description
		return &g
	}
	if a.kind == actorHeader {
		return failActorRejected(f.outcome, "the caller's actor token was rejected (actor "+tokenHash(actor)+")", f.oauthError, description)
	}
	if a.kind == actorClientCredentials {
		a.forget(actor)
	}
	return failExchangeOAuth(outcomeClientError, "the authorization server refused the gateway's actor token (actorToken "+a.kind+")", f.oauthError, description)
}

// actorRefused reports whether the server refused the exchange because of the actor token. RFC 8693
// section 2.2.2 gives a bad subject token and a bad actor token the same error code (invalid_request;
// servers also answer invalid_grant or access_denied), so only the description can tell: it must
// name the actor token ("actor_token" or "actor token", not "actor_token_type") and not call it
// unsupported (a server without delegation is a configuration problem).
func actorRefused(f *failure) bool {
	switch f.oauthError {
	case "invalid_grant", "access_denied", "invalid_request":
	default:
		return false
	}
	d := strings.ReplaceAll(strings.ToLower(f.oauthDescription), "actor_token_type", "")
	if strings.Contains(d, "support") {
		return false
	}
	return strings.Contains(d, "actor_token") || strings.Contains(d, "actor token")
}

// actorFromRequest reads the caller's actor token from its header: one value, the token itself or
// behind "Bearer ", at most 16 KiB. Its syntax and exp are checked by checkActorToken before an
// exchange, as the subject token's are.
func actorFromRequest(req *http.Request, header string) (string, *failure) {
	values := req.Header[header]
	if len(values) == 0 {
		return "", failMissingActor
	}
	c, f := headerCredential(values, &source{kind: sourceHeader, name: header})
	if f != nil {
		return "", f
	}
	return c.token, nil
}

// checkActorToken runs before the caller's actor token is sent: an RFC 6750 b64token, and, for a
// JWT, an exp still ahead. It returns the earlier of the two tokens' exps (zero when neither has
// one), which caps the cache lifetime: an entry is never served after either token expired.
func checkActorToken(actor string, subjectExp, now time.Time) (time.Time, *failure) {
	if !isB64Token(actor) {
		return subjectExp, failMalformed("the actor token is not an RFC 6750 b64token")
	}
	exp, ok := jose.Expiry(actor)
	if !ok {
		return subjectExp, nil
	}
	if !exp.After(now) {
		return subjectExp, failExpiredActor
	}
	if subjectExp.IsZero() || exp.Before(subjectExp) {
		return exp, nil
	}
	return subjectExp, nil
}
