package oboexchange

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/watch"
)

// Client authentication without a shared secret: a signed or ready-made JWT (RFC 7523 section
// 2.2, OpenID Connect private_key_jwt), or the certificate of the TLS handshake (RFC 8705
// section 2.1).
const (
	authPrivateKeyJWT   = "private_key_jwt"
	authTLSClient       = "tls_client_auth"
	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// parseClientAuth checks the options of the asymmetric methods against clientAuthMethod, which
// parseClient has read. Each option that would be ignored is refused: a configuration that
// looks secretless but is not would be worse than an error.
func parseClientAuth(s *settings, c *Config) error {
	s.clientKeyFile = strings.TrimSpace(c.ClientKeyFile)
	s.clientCertFile = strings.TrimSpace(c.ClientCertFile)
	s.clientAssertionFile = strings.TrimSpace(c.ClientAssertionFile)
	s.clientAssertionAlg = strings.ToUpper(strings.TrimSpace(c.ClientAssertionAlg))
	s.clientKeyID = strings.TrimSpace(c.ClientKeyID)
	s.clientAssertionAudience = strings.TrimSpace(c.ClientAssertionAudience)
	s.tokenEndpointCAFile = strings.TrimSpace(c.TokenEndpointCAFile)
	if s.tokenEndpointCAFile != "" && s.serverURL().Scheme != "https" {
		return errors.New("tokenEndpointCAFile is set but tokenEndpoint uses http: the CAs verify an https endpoint; use https or remove tokenEndpointCAFile")
	}
	switch s.clientAssertionAlg {
	case "", jose.RS256, jose.PS256, jose.ES256, jose.ES384:
	default:
		return fmt.Errorf("clientAssertionAlg: unknown value %q; use RS256, PS256, ES256 or ES384 (or leave it unset to follow the key)", c.ClientAssertionAlg)
	}
	switch s.authMethod {
	case authPrivateKeyJWT:
		return checkPrivateKeyJWT(s)
	case authTLSClient:
		return checkTLSClientAuth(s)
	}
	if set := setOptions(s, true); set != "" {
		return fmt.Errorf("%s: used only with clientAuthMethod private_key_jwt or tls_client_auth, but clientAuthMethod is %q; set clientAuthMethod, or remove them", set, s.authMethod)
	}
	return nil
}

// setOptions names the asymmetric options that are set; withFiles includes the key and
// certificate files and the assertion file.
func setOptions(s *settings, withFiles bool) string {
	var names []string
	add := func(name, value string) {
		if value != "" {
			names = append(names, name)
		}
	}
	if withFiles {
		add("clientKeyFile", s.clientKeyFile)
		add("clientCertFile", s.clientCertFile)
		add("clientAssertionFile", s.clientAssertionFile)
	}
	add("clientAssertionAlg", s.clientAssertionAlg)
	add("clientKeyId", s.clientKeyID)
	add("clientAssertionAudience", s.clientAssertionAudience)
	return strings.Join(names, ", ")
}

func checkNoSecret(s *settings) error {
	if s.clientSecret != "" || s.clientSecretFile != "" {
		return fmt.Errorf("clientAuthMethod %q authenticates without a secret, but clientSecret or clientSecretFile is set: remove it", s.authMethod)
	}
	return nil
}

func checkPrivateKeyJWT(s *settings) error {
	if err := checkNoSecret(s); err != nil {
		return err
	}
	switch {
	case s.clientKeyFile == "" && s.clientAssertionFile == "":
		return errors.New(`clientAuthMethod "private_key_jwt" needs clientKeyFile (the gateway signs its own assertion) or clientAssertionFile (a ready-made assertion, such as the Kubernetes service-account token of workload identity federation)`)
	case s.clientKeyFile != "" && s.clientAssertionFile != "":
		return errors.New("clientKeyFile and clientAssertionFile are both set: keep clientKeyFile to sign assertions, or clientAssertionFile to send a ready-made one")
	case s.clientAssertionFile != "" && s.clientCertFile != "":
		return errors.New("clientCertFile is set with clientAssertionFile: the certificate's x5t#S256 goes into an assertion the gateway signs with clientKeyFile; remove clientCertFile")
	}
	if s.clientAssertionFile != "" {
		if set := setOptions(s, false); set != "" {
			return fmt.Errorf("%s: shape the assertion the gateway signs with clientKeyFile; the assertion of clientAssertionFile is ready-made: remove them", set)
		}
	}
	return nil
}

func checkTLSClientAuth(s *settings) error {
	if err := checkNoSecret(s); err != nil {
		return err
	}
	if s.clientCertFile == "" || s.clientKeyFile == "" {
		return errors.New(`clientAuthMethod "tls_client_auth" needs clientCertFile and clientKeyFile: the certificate the gateway presents in the TLS handshake, and its key`)
	}
	if s.clientAssertionFile != "" {
		return errors.New(`clientAssertionFile is used with clientAuthMethod "private_key_jwt"; remove it with tls_client_auth`)
	}
	if set := setOptions(s, false); set != "" {
		return fmt.Errorf("%s: shape a private_key_jwt assertion; remove them with tls_client_auth", set)
	}
	if s.serverURL().Scheme != "https" {
		return errors.New(`clientAuthMethod "tls_client_auth" presents the certificate in the TLS handshake: tokenEndpoint must use https`)
	}
	return nil
}

// loadClientAuth reads every file of the client authentication (local files only), so that New
// refuses one that cannot work, and records their content hash for the fingerprint.
func loadClientAuth(s *settings, c *Config) error {
	a := newClientAuth(s)
	if err := a.load(); err != nil {
		return err
	}
	s.clientAuth = a
	s.clientFilesHash = a.contentHash()
	return nil
}

// clientAuth authenticates the gateway at the token endpoint with the configured method. The
// files it reads are watched: each exchange reads them again (see watchedFile), so a rotated
// key, certificate, assertion or CA bundle is used without a reload.
type clientAuth struct {
	method   string
	clientID string
	audience string // of signed assertions
	keyID    string

	secret    *secretSource
	key       *watch.File // *jose.PrivateKey; nil when not configured, as are the three below
	cert      *watch.File // *jose.Chain
	assertion *watch.File // string
	ca        *watch.File // *x509.CertPool

	mu   sync.Mutex
	pair keyPair // the last key and certificate found to match
}

// keyPair is a private key with the certificate that matches it.
type keyPair struct {
	key  *jose.PrivateKey
	cert *jose.Chain      // nil without clientCertFile
	tls  *tls.Certificate // tls_client_auth only
}

func newClientAuth(s *settings) *clientAuth {
	a := &clientAuth{
		method:   s.authMethod,
		clientID: s.clientID,
		audience: s.clientAssertionAudience,
		keyID:    s.clientKeyID,
		secret:   newSecretSource(s.clientSecret, s.clientSecretFile),
	}
	if s.clientKeyFile != "" {
		a.key = watch.New("clientKeyFile", s.clientKeyFile, parseKeyFile(s.clientAssertionAlg, s.flow))
	}
	if s.clientCertFile != "" {
		a.cert = watch.New("clientCertFile", s.clientCertFile, parseCertFile)
	}
	if s.clientAssertionFile != "" {
		a.assertion = watch.New("clientAssertionFile", s.clientAssertionFile, parseAssertionFile)
	}
	if s.tokenEndpointCAFile != "" {
		a.ca = watch.New("tokenEndpointCAFile", s.tokenEndpointCAFile, parseCAFile)
	}
	return a
}

// The parse functions of the watched files: their values are read back with type assertions.

func parseCertFile(data []byte) (interface{}, error) {
	c, err := jose.ParseChain(data)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func parseCAFile(data []byte) (interface{}, error) {
	pool, err := jose.ParseCAPool(data)
	if err != nil {
		return nil, err
	}
	return pool, nil
}

// load reads every configured file, for New: a file that cannot be used, or a certificate that
// does not match the key, is a configuration error.
func (a *clientAuth) load() error {
	if err := a.secret.load(); err != nil {
		return err
	}
	for _, f := range []*watch.File{a.key, a.cert, a.assertion, a.ca} {
		if f == nil {
			continue
		}
		if err := f.Load(); err != nil {
			return withFix(err)
		}
	}
	if a.key == nil {
		return nil
	}
	key, cert := a.files()
	pair, err := a.match(key, cert)
	if err != nil {
		return fmt.Errorf("clientCertFile: %s: %v; give the certificate issued for the key of clientKeyFile", a.cert.Path(), err)
	}
	a.pair = pair
	return nil
}

// withFix adds what to do to a file that cannot be read (a parse error already says it).
func withFix(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%v; mount the file there (read-only, in Traefik's pod) or correct the path", err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%v; let the user Traefik runs as read the file", err)
	}
	return err
}

// files returns the current key and certificate (the last good ones if a file went bad).
func (a *clientAuth) files() (*jose.PrivateKey, *jose.Chain) {
	v, _ := a.key.Get()
	key, _ := v.(*jose.PrivateKey)
	var cert *jose.Chain
	if a.cert != nil {
		v, _ = a.cert.Get()
		cert, _ = v.(*jose.Chain)
	}
	return key, cert
}

// match pairs a key with its certificate, and builds the TLS certificate of tls_client_auth.
func (a *clientAuth) match(key *jose.PrivateKey, cert *jose.Chain) (keyPair, error) {
	p := keyPair{key: key, cert: cert}
	if cert == nil {
		return p, nil
	}
	if !bytes.Equal(key.PublicKeyDER(), cert.PublicKeyDER) {
		return p, errors.New("the certificate does not match the key (their public keys differ)")
	}
	if a.method == authTLSClient {
		p.tls = &tls.Certificate{Certificate: cert.DER, PrivateKey: key.Signer()}
	}
	return p, nil
}

// contentHash is what the fingerprint takes of the files: their content, so that a gateway
// whose credentials changed does not share the cache of the old ones. Of a ready-made assertion
// only the identity counts (iss, sub, aud): the kubelet rewrites the token every hour with new
// times, and a reload after that must not throw the cache away.
func (a *clientAuth) contentHash() string {
	h := sha256.New()
	for _, f := range []*watch.File{a.key, a.cert, a.ca} {
		if f != nil {
			sum := f.Hash()
			h.Write(sum[:])
		}
	}
	if a.assertion != nil {
		v, _ := a.assertion.Get()
		assertion, _ := v.(string)
		h.Write([]byte(assertionIdentity(assertion)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// secretSource is the client secret: given inline, or a watched clientSecretFile.
type secretSource struct {
	inline string
	file   *watch.File // nil for an inline secret
}

func newSecretSource(inline, path string) *secretSource {
	if path == "" {
		return &secretSource{inline: inline}
	}
	return &secretSource{file: watch.New("clientSecretFile", path, watch.Secret)}
}

// load reads the secret file, for New.
func (s *secretSource) load() error {
	if s.file == nil {
		return nil
	}
	return s.file.Load()
}

// get returns the current secret; on a file error, the last good one and the error.
func (s *secretSource) get() (string, error) {
	if s.file == nil {
		return s.inline, nil
	}
	v, err := s.file.Get()
	secret, _ := v.(string)
	return secret, err
}

// credentials is what one exchange authenticates with, read from the files once so that its
// attempts agree.
type credentials struct {
	secret    string
	pair      keyPair
	assertion string         // clientAssertionFile
	roots     *x509.CertPool // tokenEndpointCAFile; nil for the system roots
}

// tlsMaterial is what the token endpoint's TLS client is built from.
type tlsMaterial struct {
	cert  *tls.Certificate // tls_client_auth; nil otherwise
	roots *x509.CertPool
}

func (c credentials) tls() tlsMaterial {
	return tlsMaterial{cert: c.pair.tls, roots: c.roots}
}

// authWarning is a file that could not be used again (the last good content is used instead),
// or an expired assertion: logged at warn on each exchange, so that it is seen before the
// authorization server starts refusing.
type authWarning struct {
	msg    string
	detail string
}

// current reads the files the method needs, for one exchange.
func (a *clientAuth) current(now time.Time) (credentials, []authWarning) {
	var cred credentials
	var warnings []authWarning
	secret, err := a.secret.get()
	cred.secret = secret
	if err != nil {
		warnings = append(warnings, authWarning{"client secret file could not be read again; the last good secret is used", err.Error()})
	}
	if a.key != nil {
		pair, w := a.currentPair()
		cred.pair = pair
		warnings = append(warnings, w...)
	}
	if a.assertion != nil {
		v, err := a.assertion.Get()
		assertion, _ := v.(string)
		cred.assertion = assertion
		if err != nil {
			warnings = append(warnings, authWarning{"clientAssertionFile could not be read again; the last good assertion is used", err.Error()})
		}
		if exp, ok := jose.Expiry(cred.assertion); ok && !now.Before(exp) {
			warnings = append(warnings, authWarning{"clientAssertionFile holds an expired assertion; the token endpoint will refuse it until the file is renewed",
				"exp " + exp.UTC().Format(time.RFC3339)})
		}
	}
	if a.ca != nil {
		v, err := a.ca.Get()
		roots, _ := v.(*x509.CertPool)
		cred.roots = roots
		if err != nil {
			warnings = append(warnings, authWarning{"tokenEndpointCAFile could not be read again; the last good CA bundle is used", err.Error()})
		}
	}
	return cred, warnings
}

// currentPair returns the key and certificate to use. While a rotation is half done (a new key
// with the old certificate), the last matching pair is kept.
func (a *clientAuth) currentPair() (keyPair, []authWarning) {
	var warnings []authWarning
	v, err := a.key.Get()
	if err != nil {
		warnings = append(warnings, authWarning{"clientKeyFile could not be read again; the last good key is used", err.Error()})
	}
	key, _ := v.(*jose.PrivateKey)
	var cert *jose.Chain
	if a.cert != nil {
		v, err = a.cert.Get()
		if err != nil {
			warnings = append(warnings, authWarning{"clientCertFile could not be read again; the last good certificate is used", err.Error()})
		}
		cert, _ = v.(*jose.Chain)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if key == a.pair.key && cert == a.pair.cert {
		return a.pair, warnings
	}
	pair, err := a.match(key, cert)
	if err != nil {
		// Appended first: Yaegi mishandles "return x, append(...)" here.
		warnings = append(warnings, authWarning{"clientCertFile does not match clientKeyFile; the last matching pair is used", err.Error()})
		return a.pair, warnings
	}
	a.pair = pair
	return pair, warnings
}

// authenticate adds the client authentication of the configured method to a token-endpoint
// request: form is the encoded form of any grant (the exchange, or a client-credentials
// request), without client authentication. It returns the body to send and the Authorization
// header value (empty for none). A private_key_jwt assertion is signed on each call, with a new
// jti. With client_secret_basic, id and secret are form-urlencoded before base64 (RFC 6749
// section 2.3.1), so secrets holding ":", "%" or "+" survive.
//
// The assertion's audience is clientAssertionAudience, or else the token endpoint the request goes
// to (what Okta and Entra expect, RFC 7523 section 3), discovered when issuer is set.
func (a *clientAuth) authenticate(form, endpoint string, cred credentials, now time.Time) (string, string, error) {
	audience := a.audience
	if audience == "" {
		audience = endpoint
	}
	id := "client_id=" + url.QueryEscape(a.clientID)
	switch a.method {
	case authBasic:
		pair := url.QueryEscape(a.clientID) + ":" + url.QueryEscape(cred.secret)
		return form, "Basic " + base64.StdEncoding.EncodeToString([]byte(pair)), nil
	case authPost:
		return joinForm(form, id+"&client_secret="+url.QueryEscape(cred.secret)), "", nil
	case authPrivateKeyJWT:
		assertion := cred.assertion
		if cred.pair.key != nil {
			signed, err := signAssertion(cred.pair.key, cred.pair.cert, a.clientID, audience, a.keyID, now)
			if err != nil {
				return "", "", err
			}
			assertion = signed
		}
		return joinForm(form, id+"&client_assertion_type="+url.QueryEscape(clientAssertionType)+
			"&client_assertion="+url.QueryEscape(assertion)), "", nil
	}
	// none, and tls_client_auth, whose certificate goes in the TLS handshake.
	return joinForm(form, id), "", nil
}

func joinForm(form, more string) string {
	if form == "" {
		return more
	}
	return form + "&" + more
}

// newHTTPClient builds the client of the token endpoint for this TLS material. The client's
// certificate is handed over by GetClientCertificate rather than Certificates, so that it is sent
// whatever CA names the server lists (the server decides). A func literal with named parameters:
// Yaegi cannot hand one with unnamed parameters to crypto/tls.
func newHTTPClient(m tlsMaterial) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 32
	transport.MaxResponseHeaderBytes = maxResponseHeaders
	if m.cert != nil || m.roots != nil {
		config := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.roots}
		if m.cert != nil {
			cert := m.cert
			config.GetClientCertificate = func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return cert, nil
			}
		}
		transport.TLSClientConfig = config
	}
	return &http.Client{Transport: transport, CheckRedirect: noRedirect}
}
