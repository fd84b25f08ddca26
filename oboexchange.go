// Package oboexchange is a Traefik middleware plugin that swaps the bearer token of a request for
// one issued for the backend, by OAuth 2.0 Token Exchange (RFC 8693) or by Microsoft Entra ID
// On-Behalf-Of, caches the new token until shortly before it expires, and forwards the request.
//
// Traefik interprets this package with Yaegi: it uses the standard library only, and avoids the
// constructs Yaegi v0.16.1 mishandles (generics, min/max, errors.As on package types).
package oboexchange

import (
	"context"
	"crypto/sha256"
	"net/http"
	"time"
)

// Config is the plugin configuration. Traefik fills it from the dynamic configuration with
// mapstructure, matching keys to field names case-insensitively (clientId fills ClientID); the
// json tags only document the names. Durations are strings because mapstructure cannot decode
// "30s" into a time.Duration.
type Config struct {
	Flow                       string            `json:"flow,omitempty"`
	TokenEndpoint              string            `json:"tokenEndpoint,omitempty"`
	ClientID                   string            `json:"clientId,omitempty"`
	ClientSecret               string            `json:"clientSecret,omitempty"`
	ClientSecretFile           string            `json:"clientSecretFile,omitempty"`
	ClientAuthMethod           string            `json:"clientAuthMethod,omitempty"`
	Audience                   []string          `json:"audience,omitempty"`
	Resource                   []string          `json:"resource,omitempty"`
	Scopes                     []string          `json:"scopes,omitempty"`
	SubjectTokenType           string            `json:"subjectTokenType,omitempty"`
	RequestedTokenType         string            `json:"requestedTokenType,omitempty"`
	ExtraParams                map[string]string `json:"extraParams,omitempty"`
	Timeout                    string            `json:"timeout,omitempty"`
	TokenSources               []string          `json:"tokenSources,omitempty"`
	UpstreamHeader             string            `json:"upstreamHeader,omitempty"`
	CacheMaxEntries            int               `json:"cacheMaxEntries,omitempty"`
	ExpiryMargin               string            `json:"expiryMargin,omitempty"`
	NegativeCacheTTL           string            `json:"negativeCacheTTL,omitempty"`
	MaxConcurrentExchanges     int               `json:"maxConcurrentExchanges,omitempty"`
	AllowInsecureTokenEndpoint bool              `json:"allowInsecureTokenEndpoint,omitempty"`
	LogLevel                   string            `json:"logLevel,omitempty"`

	// Delegation (RFC 8693 actor tokens, actor.go) and discovery of the token endpoint (discovery.go).
	ActorToken     string   `json:"actorToken,omitempty"`
	ActorTokenType string   `json:"actorTokenType,omitempty"`
	ActorScopes    []string `json:"actorScopes,omitempty"`
	Issuer         string   `json:"issuer,omitempty"`

	// Metrics makes the instance serve the plugin's Prometheus metrics instead (metrics.go).
	Metrics bool `json:"metrics,omitempty"`

	// Secretless client authentication: private_key_jwt, tls_client_auth, private CAs (clientauth.go).
	ClientKeyFile           string `json:"clientKeyFile,omitempty"`
	ClientCertFile          string `json:"clientCertFile,omitempty"`
	ClientAssertionFile     string `json:"clientAssertionFile,omitempty"`
	ClientAssertionAlg      string `json:"clientAssertionAlg,omitempty"`
	ClientKeyID             string `json:"clientKeyId,omitempty"`
	ClientAssertionAudience string `json:"clientAssertionAudience,omitempty"`
	TokenEndpointCAFile     string `json:"tokenEndpointCAFile,omitempty"`

	// Several replicas: the shared cache on Redis or Valkey (sharedcache.go).
	SharedCache             string `json:"sharedCache,omitempty"`
	SharedCachePasswordFile string `json:"sharedCachePasswordFile,omitempty"`
	SharedCacheTimeout      string `json:"sharedCacheTimeout,omitempty"`
	SharedCacheCAFile       string `json:"sharedCacheCAFile,omitempty"`
}

// CreateConfig returns the defaults that need no setting. Defaults that depend on the flow
// (clientAuthMethod, subjectTokenType) and list defaults (tokenSources) are applied by New:
// mapstructure merges a configured list into a default one element by element.
func CreateConfig() *Config {
	return &Config{
		Flow:                   flowRFC8693,
		Timeout:                "10s",
		UpstreamHeader:         "Authorization",
		CacheMaxEntries:        10000,
		ExpiryMargin:           "30s",
		NegativeCacheTTL:       "10s",
		MaxConcurrentExchanges: 128,
		LogLevel:               "info",
	}
}

// Middleware is one instance of the plugin, created by New for one router. Everything that
// survives a configuration reload (the cache, the connection pool) lives in the shared exchanger.
type Middleware struct {
	next           http.Handler
	sources        []source
	upstreamHeader string // canonical form
	log            *logger
	x              *exchanger
	cache          *cache // x.cache, one indirection less on the fast path

	// fastHeader is the header of the cache-hit fast path: set when the token is read from a
	// header and the new token written back to that same header (the default, Authorization).
	fastHeader string

	// actorHeader is the header of a header: actor token (canonical), "" otherwise. Its token is
	// part of the cache key, so such configurations have no fast path.
	actorHeader string
}

// New validates the configuration and returns the middleware. It does no network I/O: Traefik's
// Plugin Catalog calls it offline, and the authorization server may sit behind this same Traefik.
// Instances with identical exchange settings share one exchanger (cache, single flight, HTTP
// client), so that Traefik re-creating the middleware on every reload keeps the cache warm.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if config != nil && config.Metrics {
		return newMetricsHandler(config)
	}
	s, err := parseConfig(config)
	if err != nil {
		return nil, err
	}
	x, err := acquireExchanger(s, name)
	if err != nil {
		return nil, err
	}
	// Traefik cancels ctx when the next configuration replaces this one; the exchanger is then
	// released, and dropped later if no new instance takes it up. AfterFunc starts no goroutine
	// until then.
	context.AfterFunc(ctx, func() { releaseExchanger(x, name) })

	m := &Middleware{
		next:           next,
		sources:        s.sources,
		upstreamHeader: http.CanonicalHeaderKey(s.upstreamHeader),
		log:            newLogger(name, s.logLevel),
		x:              x,
		cache:          x.cache,
		actorHeader:    s.actorHeader,
	}
	if len(s.sources) == 1 && s.sources[0].kind == sourceHeader && s.sources[0].name == m.upstreamHeader && m.actorHeader == "" {
		m.fastHeader = m.upstreamHeader
	}
	m.log.log(levelDebug, "configured", "flow", s.flow, "host", s.host(), "cache", x.id)
	return m, nil
}

// ServeHTTP forwards the request with the exchanged token. Under Yaegi every interpreted statement
// and call costs a fraction of a microsecond while the standard library runs native, so the
// common case (one "Bearer" Authorization header whose token is cached) is served by the few
// statements below: a native SHA-256, one read-locked map lookup, one native atomic add (the hit
// counter of the metrics), one header write. Everything else goes through serve.
func (m *Middleware) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if v := req.Header[m.fastHeader]; len(v) == 1 && len(v[0]) > 7 && v[0][:7] == "Bearer " {
		// cache.get, inlined: under Yaegi the call alone costs 2.5 us and 25 allocations.
		key := sha256.Sum256([]byte(v[0][7:]))
		s := m.cache.shards[key[0]&m.cache.mask]
		s.mu.RLock()
		e := s.m[key]
		s.mu.RUnlock()
		if e != nil && e.expires > time.Since(epoch) {
			s.hits.Add(1)
			req.Header[m.fastHeader] = []string{e.header}
			m.next.ServeHTTP(rw, req)
			return
		}
	}
	m.serve(rw, req)
}

// serve handles every request the fast path does not: other sources and schemes, cache misses,
// remembered rejections. Each outcome is counted for the metrics (obtain counts its own).
func (m *Middleware) serve(rw http.ResponseWriter, req *http.Request) {
	c, f := extractCredential(req, m.sources)
	actor := ""
	if f == nil && m.actorHeader != "" {
		actor, f = actorFromRequest(req, m.actorHeader)
	}
	if f != nil {
		m.refuse(rw, f, "")
		return
	}
	ex := newExchange(c.token, actor, m.log)
	if e := m.cache.get(ex.key); e != nil {
		m.x.count(resultHit)
		m.forward(rw, req, c, e)
		return
	}
	if f := m.x.rejected(ex.key); f != nil {
		m.x.count(resultRejectedCached)
		m.reject(rw, f)
		return
	}
	if f := checkTokens(ex, time.Now()); f != nil {
		m.refuse(rw, f, c.token)
		return
	}
	e, f := m.x.obtain(ex)
	if f != nil {
		m.reject(rw, f)
		return
	}
	m.forward(rw, req, c, e)
}

// refuse answers a request refused before any exchange, and says why in a debug line (with the
// subject token's hash once there is one).
func (m *Middleware) refuse(rw http.ResponseWriter, f *failure, subject string) {
	m.x.count(resultRefused)
	if subject == "" {
		m.log.log(levelDebug, "request refused", "reason", f.reason)
	} else {
		m.log.log(levelDebug, "request refused", "reason", f.reason, "subject", tokenHash(subject))
	}
	m.reject(rw, f)
}

// checkTokens runs before the tokens are sent to the authorization server (see checkSubjectToken
// and checkActorToken) and records their earlier exp, which caps the cache lifetime.
func checkTokens(ex *exchange, now time.Time) *failure {
	exp, f := checkSubjectToken(ex.subject, now)
	if f == nil && ex.actor != "" {
		exp, f = checkActorToken(ex.actor, exp, now)
	}
	ex.notAfter = exp
	return f
}

// forward replaces the credential (and the caller's actor token) with the exchanged token and
// calls the next handler.
func (m *Middleware) forward(rw http.ResponseWriter, req *http.Request, c credential, e *entry) {
	c.strip(req)
	if m.actorHeader != "" {
		req.Header.Del(m.actorHeader)
	}
	req.Header.Set(m.upstreamHeader, e.header)
	m.next.ServeHTTP(rw, req)
}
