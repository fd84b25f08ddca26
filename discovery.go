package oboexchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// How long the token endpoint read from the issuer's metadata is used before the metadata is read
// again, and how long after a failed read no new one is tried (requests in between get the last
// good endpoint, or the failure).
const (
	discoveryTTL   = 24 * time.Hour
	discoveryRetry = 30 * time.Second
)

// parseIssuer reads issuer, the alternative to tokenEndpoint: the authorization server's issuer
// identifier, whose metadata names the token endpoint. It runs after parseEndpoint.
func parseIssuer(s *settings, c *Config) error {
	raw := strings.TrimSpace(c.Issuer)
	if raw == "" {
		return nil
	}
	if strings.TrimSpace(c.TokenEndpoint) != "" {
		return errors.New("issuer and tokenEndpoint are both set: keep one (with issuer, the token endpoint is read from the server's metadata)")
	}
	u, err := serverURL("issuer", raw, c.AllowInsecureTokenEndpoint)
	if err != nil {
		return err
	}
	if u.RawQuery != "" || u.ForceQuery {
		return errors.New("issuer: remove the ?query from the URL; an issuer identifier has none (RFC 8414 section 2)")
	}
	s.issuer, s.issuerURL, s.allowInsecure = raw, u, c.AllowInsecureTokenEndpoint
	return nil
}

// discovery finds the token endpoint in the issuer's metadata: OpenID Connect Discovery's
// {issuer}/.well-known/openid-configuration (where Entra ID, Okta, Keycloak, Auth0 and ZITADEL
// publish it), then RFC 8414's /.well-known/oauth-authorization-server{path}. The metadata is read
// on the first exchange, never in New (which must do no network I/O), by one request at a time,
// and kept for discoveryTTL. It belongs to the exchanger, so it survives reloads.
type discovery struct {
	issuer        string   // as configured: the document's issuer must equal it exactly
	urls          []string // where the metadata is looked for, in order
	allowInsecure bool     // allowInsecureTokenEndpoint, for the discovered token endpoint
	grants        []string // the grants the gateway sends, for the warning
	timeout       time.Duration

	mu       sync.Mutex
	endpoint string        // the last good token endpoint
	expires  time.Duration // on the cache clock: read the metadata again from then on
	retryAt  time.Duration // after a failed read: no new read before then
	failure  *failure      // the last failed read's, answered until retryAt
	flight   chan struct{} // closed when the read in progress ends
	warned   bool          // the grant warning was logged
}

// metadata is what the plugin reads of an authorization server's metadata document.
type metadata struct {
	Issuer              string   `json:"issuer"`
	TokenEndpoint       string   `json:"token_endpoint"`
	GrantTypesSupported []string `json:"grant_types_supported"`
}

// newDiscovery returns nil when the token endpoint is configured.
func newDiscovery(s *settings) *discovery {
	if s.issuer == "" {
		return nil
	}
	grants := []string{grantTokenExchange}
	if s.flow == flowEntra {
		grants = []string{grantJWTBearer}
	}
	if s.actorKind == actorClientCredentials {
		grants = append(grants, grantClientCredentials)
	}
	return &discovery{
		issuer:        s.issuer,
		urls:          metadataURLs(s.issuer, s.issuerURL),
		allowInsecure: s.allowInsecure,
		grants:        grants,
		timeout:       s.timeout,
	}
}

// metadataURLs are the two well-known locations of an issuer's metadata. OpenID Connect appends
// its suffix to the issuer (Entra's https://login.microsoftonline.com/{tenant}/v2.0 has its
// metadata at .../v2.0/.well-known/openid-configuration); RFC 8414 section 3.1 inserts its own
// between the host and the issuer's path.
func metadataURLs(issuer string, u *url.URL) []string {
	return []string{
		strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration",
		u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + strings.TrimSuffix(u.EscapedPath(), "/"),
	}
}

// tokenEndpoint returns the discovered token endpoint, reading the metadata when it has none or
// when its copy is older than discoveryTTL. Concurrent callers wait for the read in progress
// rather than start their own. After a failed read, no new one is tried for discoveryRetry:
// callers get the last good endpoint meanwhile, or, when there is none, the failure (502).
func (d *discovery) tokenEndpoint(client *http.Client, log *logger) (string, *failure) {
	d.mu.Lock()
	for d.flight != nil {
		fl := d.flight
		d.mu.Unlock()
		<-fl
		d.mu.Lock()
	}
	now := time.Since(epoch)
	if (d.endpoint != "" && now < d.expires) || now < d.retryAt {
		endpoint, f := d.endpoint, d.failure
		d.mu.Unlock()
		if endpoint != "" {
			return endpoint, nil
		}
		return "", f
	}
	fl := make(chan struct{})
	d.flight = fl
	d.mu.Unlock()
	defer d.land(fl)
	return d.refresh(client, log)
}

// land ends a read of the metadata.
func (d *discovery) land(fl chan struct{}) {
	d.mu.Lock()
	d.flight = nil
	d.mu.Unlock()
	close(fl)
}

// refresh reads the metadata and records the outcome.
func (d *discovery) refresh(client *http.Client, log *logger) (string, *failure) {
	m, f := d.fetch(client)
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Since(epoch)
	if f != nil {
		d.retryAt = now + discoveryRetry
		d.failure = f
		if d.endpoint == "" {
			return "", f
		}
		log.log(levelWarn, "the issuer's metadata could not be read again; the last good token endpoint is used",
			"issuer", d.issuer, "reason", f.reason)
		return d.endpoint, nil
	}
	d.endpoint = m.TokenEndpoint
	d.expires = now + discoveryTTL
	d.retryAt = 0
	d.failure = nil
	log.log(levelDebug, "token endpoint discovered", "issuer", d.issuer, "token_endpoint", d.endpoint)
	d.warnGrants(m.GrantTypesSupported, log)
	return d.endpoint, nil
}

// fetch reads the first metadata document found, within the timeout, and checks it. A document
// that is found but wrong (another issuer, a token endpoint in clear text) is a failure: the other
// location is tried only when the first holds no document.
func (d *discovery) fetch(client *http.Client) (metadata, *failure) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	var missing []string
	for _, u := range d.urls {
		m, err := getMetadata(ctx, client, u)
		if err != nil {
			missing = append(missing, err.Error())
			continue
		}
		if err := d.check(m); err != nil {
			return metadata{}, failExchange(outcomeMalformedAnswer, "discovery: "+err.Error())
		}
		return m, nil
	}
	return metadata{}, failExchange(outcomeServerError, "discovery: no metadata for issuer "+d.issuer+": "+strings.Join(missing, "; "))
}

// getMetadata reads one metadata document: a 200 answer of at most 1 MiB holding a JSON object.
func getMetadata(ctx context.Context, client *http.Client, u string) (metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return metadata{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return metadata{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return metadata{}, fmt.Errorf("%s answered HTTP %s", u, strconv.Itoa(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return metadata{}, fmt.Errorf("reading %s failed: %w", u, err)
	}
	if len(body) > maxResponseBody {
		return metadata{}, fmt.Errorf("%s is larger than 1 MiB", u)
	}
	var m metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return metadata{}, fmt.Errorf("%s is not a metadata document (JSON)", u)
	}
	return m, nil
}

// check applies the rules of OpenID Connect Discovery section 4.3 and RFC 8414 section 3.3 (the
// issuer in the document is exactly the one configured, so a document served for another issuer
// cannot redirect the users' tokens), then the rule of tokenEndpoint to its token_endpoint.
func (d *discovery) check(m metadata) error {
	if m.Issuer != d.issuer {
		return fmt.Errorf("the metadata names issuer %q, not the configured %q; they must be equal character for character", m.Issuer, d.issuer)
	}
	if m.TokenEndpoint == "" {
		return errors.New("the metadata has no token_endpoint")
	}
	_, err := serverURL("token_endpoint of the issuer's metadata", m.TokenEndpoint, d.allowInsecure)
	return err
}

// warnGrants logs, once in the life of the discovery, a grant the gateway sends that the metadata
// does not list. Metadata without grant_types_supported (Entra ID's, for one) is not warned about:
// many servers leave it out whatever they support.
func (d *discovery) warnGrants(supported []string, log *logger) {
	if d.warned || len(supported) == 0 {
		return
	}
	for _, grant := range d.grants {
		listed := false
		for _, s := range supported {
			listed = listed || s == grant
		}
		if !listed {
			d.warned = true
			log.log(levelWarn, "the issuer's metadata does not list a grant the gateway sends in grant_types_supported; the server may refuse it",
				"issuer", d.issuer, "grant", grant)
		}
	}
}
