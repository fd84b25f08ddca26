package oboexchange

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// The two exchange flows.
const (
	flowRFC8693 = "rfc8693"
	flowEntra   = "entra"
)

// Client authentication methods at the token endpoint (RFC 8414 names).
const (
	authBasic = "client_secret_basic"
	authPost  = "client_secret_post"
	authNone  = "none"
)

// RFC 8693 token type identifiers (section 3).
const (
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// reservedParams are the form parameters the plugin writes itself; extraParams cannot set them.
var reservedParams = []string{
	"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
	"requested_token_type", "audience", "resource", "scope", "assertion", "requested_token_use",
	"client_id", "client_secret", "client_assertion", "client_assertion_type",
}

// settings is a validated configuration with its defaults applied.
type settings struct {
	// What shapes the exchange and the cache: instances whose values are all equal share an
	// exchanger (see fingerprint).
	flow               string
	endpoint           *url.URL
	clientID           string
	clientSecret       string
	clientSecretFile   string
	authMethod         string
	audience           []string
	resource           []string
	scopes             []string
	subjectTokenType   string
	requestedTokenType string
	extraParams        map[string]string
	timeout            time.Duration
	maxEntries         int
	margin             time.Duration
	negativeTTL        time.Duration
	maxConcurrent      int

	// What belongs to one middleware instance.
	sources        []source
	upstreamHeader string
	logLevel       int

	// Delegation and discovery (shape the exchange: part of the fingerprint). See actor.go and
	// discovery.go.
	actorKind      string // "" (none), actorFile, actorHeader or actorClientCredentials
	actorPath      string
	actorHeader    string // canonical
	actorTokenType string
	actorScopes    []string
	issuer         string   // as configured; endpoint is nil when set
	issuerURL      *url.URL // issuer, parsed
	allowInsecure  bool     // allowInsecureTokenEndpoint, which also rules the discovered endpoint

	// Secretless client authentication (clientauth.go): the options, the files as New read them,
	// and the hash of their content for the fingerprint.
	clientKeyFile, clientCertFile, clientAssertionFile       string
	clientAssertionAlg, clientKeyID, clientAssertionAudience string
	tokenEndpointCAFile                                      string
	clientAuth                                               *clientAuth
	clientFilesHash                                          string

	// The shared cache (sharedcache.go); part of the fingerprint.
	sharedCache             *url.URL // nil: memory only
	sharedCachePasswordFile string
	sharedCacheTimeout      time.Duration
	sharedCacheCAFile       string
}

// parseConfig checks every option and applies the defaults that depend on others. Each check
// reads its options from the Config and writes them, cleaned, to the settings; the checks run in
// order, so a later one may rely on what an earlier one wrote (the flow, above all). Each error
// names the option and says how to fix it: Traefik logs it and drops the routers that use the
// middleware.
func parseConfig(c *Config) (*settings, error) {
	if c == nil {
		return nil, errors.New("the configuration is empty: set at least tokenEndpoint and clientId")
	}
	s := &settings{}
	checks := []func(*settings, *Config) error{
		parseFlow, parseEndpoint, parseClient, parseTargets, parseExtraParams, parseDurations,
		parseLimits, parseSources, parseLogLevel, parseActor, parseIssuer, parseClientAuth, loadClientAuth,
		parseSharedCache,
	}
	for _, check := range checks {
		if err := check(s, c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func parseFlow(s *settings, c *Config) error {
	s.flow = strings.ToLower(strings.TrimSpace(c.Flow))
	switch s.flow {
	case "":
		s.flow = flowRFC8693
	case flowRFC8693, flowEntra:
	default:
		return fmt.Errorf("flow: unknown value %q; use %q (OAuth 2.0 Token Exchange) or %q (Microsoft Entra ID On-Behalf-Of)", s.flow, flowRFC8693, flowEntra)
	}
	return nil
}

func parseEndpoint(s *settings, c *Config) error {
	raw := strings.TrimSpace(c.TokenEndpoint)
	if raw == "" {
		if strings.TrimSpace(c.Issuer) != "" {
			return nil // found by discovery, see parseIssuer
		}
		return errors.New("tokenEndpoint is required (or issuer, to read it from the server's metadata): set it to the authorization server's token endpoint, for example https://idp.example.com/oauth2/token")
	}
	u, err := serverURL("tokenEndpoint", raw, c.AllowInsecureTokenEndpoint)
	if err != nil {
		return err
	}
	s.endpoint = u
	return nil
}

// serverURL checks a URL the gateway sends tokens or secrets to, or learns where to send them
// from: absolute, https (http only on a loopback host or when allowed), no user information, no
// fragment. option names the URL's origin in the message.
func serverURL(option, raw string, allowInsecure bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%s: %q is not an absolute URL; write it in full, for example https://idp.example.com/oauth2/token", option, raw)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("%s: scheme %q is not supported; use https", option, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: remove the user information from the URL; set clientId and clientSecret (or clientSecretFile) instead", option)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%s: remove the #fragment from the URL", option)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) && !allowInsecure {
		return nil, fmt.Errorf("%s: %s uses http, which would send the client secret and the users' tokens in clear text; use https (http is accepted only on a loopback host, or with allowInsecureTokenEndpoint: true)", option, u.Redacted())
	}
	return u, nil
}

// isLoopback reports whether a host name stays on this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseClient(s *settings, c *Config) error {
	s.clientID = strings.TrimSpace(c.ClientID)
	s.clientSecret = c.ClientSecret
	s.clientSecretFile = strings.TrimSpace(c.ClientSecretFile)
	s.authMethod = strings.ToLower(strings.TrimSpace(c.ClientAuthMethod))
	if s.clientID == "" {
		return errors.New("clientId is required: set it to the gateway's client id at the authorization server")
	}
	if s.clientSecret != "" && s.clientSecretFile != "" {
		return errors.New("clientSecret and clientSecretFile are both set: keep one (clientSecretFile keeps the secret out of Traefik's configuration log)")
	}
	if s.authMethod == "" {
		s.authMethod = authBasic
		if s.flow == flowEntra {
			s.authMethod = authPost
		}
	}
	hasSecret := s.clientSecret != "" || s.clientSecretFile != ""
	switch s.authMethod {
	case authBasic, authPost:
		if !hasSecret {
			return fmt.Errorf("clientSecret or clientSecretFile is required with clientAuthMethod %q (set clientAuthMethod: none for a public client, or private_key_jwt or tls_client_auth to authenticate with a key)", s.authMethod)
		}
	case authNone:
		if hasSecret {
			return errors.New(`clientAuthMethod "none" sends no secret, but a client secret is set: remove it, or use client_secret_basic or client_secret_post`)
		}
	case authPrivateKeyJWT, authTLSClient:
		// checked by parseClientAuth (clientauth.go)
	default:
		return fmt.Errorf("clientAuthMethod: unknown value %q; use %q, %q, %q, %q or %q", s.authMethod, authBasic, authPost, authPrivateKeyJWT, authTLSClient, authNone)
	}
	return nil
}

func parseTargets(s *settings, c *Config) error {
	s.audience = cleanList(c.Audience, false)
	s.resource = cleanList(c.Resource, false)
	s.scopes = cleanList(c.Scopes, true)
	s.subjectTokenType = strings.TrimSpace(c.SubjectTokenType)
	s.requestedTokenType = strings.TrimSpace(c.RequestedTokenType)
	if s.flow == flowEntra {
		if len(s.scopes) == 0 {
			return errors.New(`scopes is required with flow "entra": set the downstream API's scope, for example api://backend-app-id/.default`)
		}
		if len(s.audience) > 0 || len(s.resource) > 0 {
			return errors.New(`audience and resource are RFC 8693 parameters; with flow "entra" name the downstream API in scopes`)
		}
		if s.subjectTokenType != "" || s.requestedTokenType != "" {
			return errors.New(`subjectTokenType and requestedTokenType are RFC 8693 parameters; remove them with flow "entra"`)
		}
		return nil
	}
	for _, r := range s.resource {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			return fmt.Errorf("resource: %q is not an absolute URI without a fragment (RFC 8693 section 2.1); to name a service by a logical name, use audience", r)
		}
	}
	if s.subjectTokenType == "" {
		s.subjectTokenType = tokenTypeAccessToken
	}
	return nil
}

func parseExtraParams(s *settings, c *Config) error {
	s.extraParams = map[string]string{}
	for k, v := range c.ExtraParams {
		name := strings.TrimSpace(k)
		if name == "" {
			return errors.New("extraParams: a parameter has an empty name")
		}
		for _, r := range reservedParams {
			if strings.EqualFold(name, r) {
				return fmt.Errorf("extraParams: %q is set by the plugin itself and cannot be overridden; use the matching option (flow, clientId, audience, resource, scopes, subjectTokenType, requestedTokenType)", name)
			}
		}
		s.extraParams[name] = v
	}
	return nil
}

func parseDurations(s *settings, c *Config) error {
	var err error
	if s.timeout, err = parseDuration("timeout", c.Timeout, "10s"); err != nil {
		return err
	}
	if s.timeout <= 0 {
		return fmt.Errorf("timeout: %q must be above zero, for example 10s", c.Timeout)
	}
	if s.margin, err = parseDuration("expiryMargin", c.ExpiryMargin, "30s"); err != nil {
		return err
	}
	if s.negativeTTL, err = parseDuration("negativeCacheTTL", c.NegativeCacheTTL, "10s"); err != nil {
		return err
	}
	return nil
}

// parseDuration reads a Go duration ("10s", "1m30s"); an empty value takes the default.
func parseDuration(field, value, def string) (time.Duration, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		value = def
	}
	d, err := time.ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration; write it as Go does, for example %s or 1m30s", field, value, def)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: %q is negative", field, value)
	}
	return d, nil
}

func parseLimits(s *settings, c *Config) error {
	s.maxEntries = c.CacheMaxEntries
	s.maxConcurrent = c.MaxConcurrentExchanges
	if s.maxEntries < 0 {
		return fmt.Errorf("cacheMaxEntries: %d is negative; use 0 to disable the cache", s.maxEntries)
	}
	if s.maxConcurrent < 1 {
		return fmt.Errorf("maxConcurrentExchanges: %d must be at least 1", s.maxConcurrent)
	}
	return nil
}

func parseSources(s *settings, c *Config) error {
	list := cleanList(c.TokenSources, false)
	if len(list) == 0 {
		list = []string{"header:Authorization"}
	}
	for _, item := range list {
		src, err := parseSource(item)
		if err != nil {
			return err
		}
		for _, seen := range s.sources {
			if seen == src {
				return fmt.Errorf("tokenSources: %s is listed twice; list each source once", src.String())
			}
		}
		s.sources = append(s.sources, src)
	}
	s.upstreamHeader = strings.TrimSpace(c.UpstreamHeader)
	if s.upstreamHeader == "" {
		s.upstreamHeader = "Authorization"
	}
	if !isToken(s.upstreamHeader) {
		return fmt.Errorf("upstreamHeader: %q is not a valid header name", s.upstreamHeader)
	}
	return nil
}

func parseLogLevel(s *settings, c *Config) error {
	level, ok := logLevels[strings.ToLower(strings.TrimSpace(c.LogLevel))]
	if !ok {
		return fmt.Errorf("logLevel: unknown value %q; use debug, info, warn, error or off", c.LogLevel)
	}
	s.logLevel = level
	return nil
}

// cleanList trims the entries of a list option and drops empty ones. Traefik hands a list over as
// YAML items or as one comma-separated string; with split set, items are also split at spaces, so
// that scopes can be written "openid profile" as well.
func cleanList(in []string, split bool) []string {
	var out []string
	for _, item := range in {
		if split {
			out = append(out, strings.Fields(item)...)
			continue
		}
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// endpointString is the configured token endpoint, or "" when discovery finds it.
func (s *settings) endpointString() string {
	if s.endpoint == nil {
		return ""
	}
	return s.endpoint.String()
}

// serverURL is the token endpoint's URL, or the issuer's when the endpoint is discovered: its scheme
// rules the checks of options that need https.
func (s *settings) serverURL() *url.URL {
	if s.endpoint == nil {
		return s.issuerURL
	}
	return s.endpoint
}

// host is the authorization server's host, for log lines: the token endpoint's, or the issuer's.
func (s *settings) host() string {
	if s.endpoint == nil {
		return s.issuerURL.Host
	}
	return s.endpoint.Host
}
