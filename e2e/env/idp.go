// Package env starts the real components the end-to-end suite, the demo and the benchmark run
// against: Traefik with the plugin in local mode, two RFC 8693 authorization servers (zitadel/oidc's
// OpenID Provider, and Dex federating with it), an Entra ID On-Behalf-Of server (oauth2-mock-server
// under Node) and an echo backend. Everything listens on 127.0.0.1 and stops with Stop. The
// stand-ins that only the benchmark and the soak test use (load generator, instant token server)
// are in internal/load, so that what this package starts is always the real thing.
package env

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The clients the provider knows. The gateway clients carry the ids of the examples in
// examples/rfc8693, so the examples run unchanged but for their URLs.
const (
	OktaStyleClientID     = "0oa-gateway-client-id"
	KeycloakStyleClientID = "gateway"
	GatewaySecret         = "gateway-secret:with%odd+chars"
	webClientID           = "web-app"
	webClientSecret       = "web-app-secret"
	webRedirect           = "http://127.0.0.1/callback"

	// The agents: clients that obtain their own access tokens (client credentials) and act for a
	// user through the gateway, sending those tokens as actor tokens.
	AgentA      = "agent-a"
	AgentB      = "agent-b"
	AgentSecret = "agent-secret"

	// UserPassword is the password of the provider's users; DemoUser is an administrator, whom
	// zitadel's example storage lets exchange tokens without an actor token.
	UserPassword = "verysecure"
)

// IdP is zitadel/oidc's example OpenID Provider (its op package implements RFC 8693), serving on
// 127.0.0.1 with access tokens issued as signed JWTs.
type IdP struct {
	Issuer        string
	TokenEndpoint string

	srv               *http.Server
	exchanges         atomic.Int64
	clientCredentials atomic.Int64
	delay             atomic.Int64 // added before each token-exchange answer, in nanoseconds
}

var registerOnce sync.Once

// StartIdP starts the provider; its log goes to logTo (nil discards it).
func StartIdP(logTo io.Writer) (*IdP, error) {
	if logTo == nil {
		logTo = io.Discard
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &IdP{Issuer: "http://" + ln.Addr().String()}
	p.TokenEndpoint = p.Issuer + "/oauth/token"

	registerOnce.Do(func() {
		storage.RegisterClients(
			storage.WebClient(OktaStyleClientID, GatewaySecret),
			storage.WebClient(KeycloakStyleClientID, GatewaySecret),
			storage.WebClient(webClientID, webClientSecret, webRedirect),
			storage.WebClient(AgentA, AgentSecret),
			storage.WebClient(AgentB, AgentSecret),
		)
	})
	store := jwtStorage{Storage: storage.NewStorage(storage.NewUserStore(p.Issuer)), issuer: p.Issuer}
	logger := slog.New(slog.NewTextHandler(logTo, nil))
	router := exampleop.SetupServer(p.Issuer, store, logger, false, op.WithAllowInsecure())

	p.srv = &http.Server{Handler: p.countExchanges(router), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// DemoUser is the user name of the administrator of the provider.
func (p *IdP) DemoUser() string {
	u, _ := url.Parse(p.Issuer)
	return "test-user@" + u.Hostname()
}

// Exchanges counts the token-exchange requests the provider received.
func (p *IdP) Exchanges() int { return int(p.exchanges.Load()) }

// ClientCredentialsCalls counts the client-credentials requests the provider received.
func (p *IdP) ClientCredentialsCalls() int { return int(p.clientCredentials.Load()) }

// SetDelay makes every token-exchange answer wait d, to model a slower provider.
func (p *IdP) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Stop closes the provider.
func (p *IdP) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// countExchanges counts (and optionally delays) token-exchange requests before the provider
// handles them.
func (p *IdP) countExchanges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/oauth/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			if form.Get("grant_type") == "client_credentials" {
				p.clientCredentials.Add(1)
			}
			if form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange" {
				p.exchanges.Add(1)
				if d := time.Duration(p.delay.Load()); d > 0 {
					time.Sleep(d)
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Login signs a user in with the authorization code flow and PKCE, as a web front end would, and
// returns the user's access token (a JWT whose audience is the front end).
func (p *IdP) Login(username, password string) (string, error) {
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	verifier := randomString()
	challenge := sha256.Sum256([]byte(verifier))
	authorize := p.Issuer + "/auth?" + url.Values{
		"client_id":             {webClientID},
		"redirect_uri":          {webRedirect},
		"response_type":         {"code"},
		"scope":                 {"openid profile"},
		"state":                 {"demo"},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(challenge[:])},
		"code_challenge_method": {"S256"},
	}.Encode()
	loginPage, err := redirectTarget(client.Get(authorize))
	if err != nil {
		return "", fmt.Errorf("authorize: %w", err)
	}
	authRequestID := loginPage.Query().Get("authRequestID")
	callback, err := redirectTarget(client.PostForm(p.Issuer+"/login/username", url.Values{
		"id": {authRequestID}, "username": {username}, "password": {password},
	}))
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	back, err := redirectTarget(client.Get(p.Issuer + callback.RequestURI()))
	if err != nil {
		return "", fmt.Errorf("callback: %w", err)
	}
	code := back.Query().Get("code")
	if code == "" {
		return "", fmt.Errorf("no code in %s", back.Redacted())
	}
	req, _ := http.NewRequest(http.MethodPost, p.TokenEndpoint, strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}, "code_verifier": {verifier},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(webClientID, webClientSecret)
	return accessToken(client, req, "token")
}

// accessToken sends a token request and returns the access token of its answer; what names the
// request in the error.
func accessToken(client *http.Client, req *http.Request, what string) (string, error) {
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("%s: HTTP %d %s %v", what, resp.StatusCode, tok.Error, err)
	}
	return tok.AccessToken, nil
}

// ClientToken returns an access token (a signed JWT whose sub is the client id) that a client of
// the provider obtains for itself with the client-credentials grant.
func (p *IdP) ClientToken(clientID, secret string) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, p.TokenEndpoint, strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "scope": {"openid"},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	return accessToken(&http.Client{Timeout: 10 * time.Second}, req, "client credentials")
}

// redirectTarget returns where a 302 points to.
func redirectTarget(resp *http.Response, err error) (*url.URL, error) {
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("HTTP %d, want a redirect: %s", resp.StatusCode, body)
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, errors.New("redirect without Location")
	}
	return loc, nil
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwtStorage is zitadel's example storage with every client issuing JWT access tokens, so the
// demo can show the claims of the tokens on both sides of the gateway, and with delegation
// completed: the example storage leaves the act claim of an exchange with an actor token commented
// out (getTokenExchangeClaims), verifies no JWT actor token, and grants client credentials only to
// its own service user.
type jwtStorage struct {
	*storage.Storage
	issuer string
}

func (s jwtStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, clientID)
	if err != nil {
		return nil, err
	}
	return jwtClient{c}, nil
}

// ValidateTokenExchangeRequest makes an access token the default requested_token_type, as ZITADEL
// itself does. The example storage defaults to a refresh token and says so in issued_token_type;
// the plugin rightly refuses to forward what a server calls a refresh token.
func (s jwtStorage) ValidateTokenExchangeRequest(ctx context.Context, request op.TokenExchangeRequest) error {
	if request.GetRequestedTokenType() == "" {
		request.SetRequestedTokenType(oidc.AccessTokenType)
	}
	return s.Storage.ValidateTokenExchangeRequest(ctx, request)
}

// GetPrivateClaimsFromTokenExchangeRequest adds the delegation claim of RFC 8693 section 4.1: the
// issued token names the user in sub and the party acting for them in act.
func (s jwtStorage) GetPrivateClaimsFromTokenExchangeRequest(ctx context.Context, request op.TokenExchangeRequest) (map[string]any, error) {
	claims, err := s.Storage.GetPrivateClaimsFromTokenExchangeRequest(ctx, request)
	if err != nil {
		return nil, err
	}
	if actor := request.GetExchangeActor(); actor != "" {
		if claims == nil {
			claims = map[string]any{}
		}
		claims["act"] = map[string]any{"sub": actor}
	}
	return claims, nil
}

// VerifyExchangeActorToken accepts, as an actor token of type jwt, an access token this provider
// signed (a Kubernetes service-account token plays that part in production): signature, issuer
// and expiry are checked by op's access-token verifier. op calls it for token types it does not
// verify itself.
func (s jwtStorage) VerifyExchangeActorToken(ctx context.Context, token string, tokenType oidc.TokenType) (string, string, map[string]any, error) {
	if tokenType != oidc.JWTTokenType {
		return "", "", nil, fmt.Errorf("actor token type %s is not verified here", tokenType)
	}
	verifier := op.NewAccessTokenVerifier(s.issuer, &op.OpenIDKeySet{Storage: s.Storage})
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, verifier)
	if err != nil {
		return "", "", nil, err
	}
	return token, claims.Subject, claims.Claims, nil
}

// VerifyExchangeSubjectToken accepts no subject token beyond those op verifies itself.
func (s jwtStorage) VerifyExchangeSubjectToken(ctx context.Context, token string, tokenType oidc.TokenType) (string, string, map[string]any, error) {
	return "", "", nil, errors.New("subject token not verified")
}

// ClientCredentials lets the provider's web clients (the gateways, the agents) obtain tokens for
// themselves, authenticated by their secret; the example's service user keeps working.
func (s jwtStorage) ClientCredentials(ctx context.Context, clientID, clientSecret string) (op.Client, error) {
	if err := s.Storage.AuthorizeClientIDSecret(ctx, clientID, clientSecret); err != nil {
		return s.Storage.ClientCredentials(ctx, clientID, clientSecret)
	}
	return s.GetClientByClientID(ctx, clientID)
}

// ClientCredentialsTokenRequest issues a web client's own token with the client as subject.
func (s jwtStorage) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	if _, err := s.Storage.GetClientByClientID(ctx, clientID); err != nil {
		return s.Storage.ClientCredentialsTokenRequest(ctx, clientID, scopes)
	}
	return &oidc.JWTTokenRequest{Subject: clientID, Audience: []string{clientID}, Scopes: scopes}, nil
}

type jwtClient struct {
	op.Client
}

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

// GrantTypes adds client credentials to what a web client may use.
func (c jwtClient) GrantTypes() []oidc.GrantType {
	return append(append([]oidc.GrantType{}, c.Client.GrantTypes()...), oidc.GrantTypeClientCredentials)
}
