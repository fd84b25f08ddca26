package env

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TokenFront is the token endpoint of an authorization server behind a private CA that
// authenticates its clients without secrets, as Okta does with private_key_jwt and Keycloak with
// its X.509 client authenticator (tls_client_auth, RFC 8705).
//
// zitadel/oidc's token exchange authenticates clients by secret only. So the front does the
// client authentication itself, then hands the exchange to the provider as that client
// (client_secret_basic with the client's secret there): the front decides who the client is,
// the provider does the exchange. It serves TLS with a server certificate of the PKI and asks
// for a client certificate of the same PKI (optional at the TLS level, required for a
// tls_client_auth client). Client assertions are verified with go-jose (signature with the
// registered key, iss = sub = client_id, aud = this token endpoint, exp, nbf, a jti never seen
// before, at most one hour of lifetime), not with code of the plugin.
type TokenFront struct {
	URL           string // https://127.0.0.1:<port>
	TokenEndpoint string

	idp     *IdP
	srv     *http.Server
	clients map[string]FrontClient
	client  *http.Client

	mu       sync.Mutex
	jtis     map[string]bool
	calls    map[string]int // authenticated calls by method
	refusals []string       // why the front refused, in order
}

// FrontClient is a client registered at the front.
type FrontClient struct {
	ID     string
	Method string // "private_key_jwt" or "tls_client_auth"

	// private_key_jwt: the registered public key and its key id (Okta's client JWKS).
	PublicKey crypto.PublicKey
	KeyID     string

	// tls_client_auth: the subject the certificate must have (Keycloak's "Subject DN").
	Subject pkix.Name
}

// StartTokenFront serves the front on 127.0.0.1 in front of the provider.
func StartTokenFront(idp *IdP, pki *PKI, clients ...FrontClient) (*TokenFront, error) {
	cert, err := pki.ServerCertificate()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &TokenFront{
		URL: "https://" + ln.Addr().String(), idp: idp, clients: map[string]FrontClient{},
		client: &http.Client{Timeout: 10 * time.Second}, jtis: map[string]bool{}, calls: map[string]int{},
	}
	f.TokenEndpoint = f.URL + "/oauth/token"
	for _, c := range clients {
		f.clients[c.ID] = c
	}
	f.srv = &http.Server{
		Handler:           http.HandlerFunc(f.serve),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pki.Pool(),
		},
		ErrorLog: discardLog(),
	}
	go func() { _ = f.srv.ServeTLS(ln, "", "") }()
	return f, nil
}

// Calls returns how many requests the front authenticated with a method.
func (f *TokenFront) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// Refusals returns why the front refused client authentication, in order.
func (f *TokenFront) Refusals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.refusals...)
}

// Stop closes the front.
func (f *TokenFront) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.srv.Shutdown(ctx)
	f.client.CloseIdleConnections()
}

func (f *TokenFront) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/oauth/token" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		f.refuse(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	form := r.PostForm
	client, ok := f.clients[form.Get("client_id")]
	if !ok || len(form["client_id"]) != 1 {
		f.refuse(w, http.StatusUnauthorized, "invalid_client", "unknown client_id")
		return
	}
	if form.Get("client_secret") != "" || r.Header.Get("Authorization") != "" {
		f.refuse(w, http.StatusUnauthorized, "invalid_client", "the client authenticates with "+client.Method+", not with a secret")
		return
	}
	var reason string
	if client.Method == "private_key_jwt" {
		reason = f.checkAssertion(client, form)
	} else {
		reason = f.checkCertificate(client, r.TLS)
	}
	if reason != "" {
		f.refuse(w, http.StatusUnauthorized, "invalid_client", reason)
		return
	}
	f.mu.Lock()
	f.calls[client.Method]++
	f.mu.Unlock()
	f.forward(w, client.ID, form)
}

// checkAssertion verifies a private_key_jwt client assertion (RFC 7523 section 3, OpenID
// Connect Core section 9).
func (f *TokenFront) checkAssertion(client FrontClient, form url.Values) string {
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return "client_assertion_type is not jwt-bearer"
	}
	token, err := jwt.ParseSigned(form.Get("client_assertion"),
		[]jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384})
	if err != nil {
		return "client_assertion is not a signed JWT: " + err.Error()
	}
	if client.KeyID != "" && (len(token.Headers) != 1 || token.Headers[0].KeyID != client.KeyID) {
		return "the assertion's kid is not the registered key's"
	}
	var claims jwt.Claims
	if err := token.Claims(client.PublicKey, &claims); err != nil {
		return "the assertion's signature does not verify with the registered key: " + err.Error()
	}
	err = claims.ValidateWithLeeway(jwt.Expected{
		Issuer: client.ID, Subject: client.ID, AnyAudience: jwt.Audience{f.TokenEndpoint}, Time: time.Now(),
	}, 30*time.Second)
	if err != nil {
		return "assertion claims: " + err.Error()
	}
	switch {
	case claims.Expiry == nil:
		return "the assertion has no exp"
	case claims.IssuedAt != nil && claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > time.Hour:
		return "the assertion lives longer than one hour"
	case claims.ID == "":
		return "the assertion has no jti"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jtis[claims.ID] {
		return "the assertion's jti was already used"
	}
	f.jtis[claims.ID] = true
	return ""
}

// checkCertificate checks the verified client certificate of the handshake (RFC 8705 section
// 2.1.1: the subject DN registered for the client).
func (f *TokenFront) checkCertificate(client FrontClient, state *tls.ConnectionState) string {
	if state == nil || len(state.VerifiedChains) == 0 {
		return "no client certificate of the trusted CA in the TLS handshake"
	}
	if got := state.VerifiedChains[0][0].Subject.String(); got != client.Subject.String() {
		return fmt.Sprintf("the certificate's subject %q is not the registered %q", got, client.Subject.String())
	}
	return ""
}

// forward sends the exchange to the provider as the authenticated client.
func (f *TokenFront) forward(w http.ResponseWriter, clientID string, form url.Values) {
	out := url.Values{}
	for k, v := range form {
		if k != "client_id" && k != "client_assertion" && k != "client_assertion_type" {
			out[k] = v
		}
	}
	req, err := http.NewRequest(http.MethodPost, f.idp.TokenEndpoint, strings.NewReader(out.Encode()))
	if err != nil {
		f.refuse(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(GatewaySecret))
	resp, err := f.client.Do(req)
	if err != nil {
		f.refuse(w, http.StatusBadGateway, "server_error", err.Error())
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (f *TokenFront) refuse(w http.ResponseWriter, status int, code, description string) {
	f.mu.Lock()
	f.refusals = append(f.refusals, description)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// discardLog silences the server's log of refused TLS handshakes, which the tests provoke.
func discardLog() *log.Logger {
	return log.New(io.Discard, "", 0)
}
