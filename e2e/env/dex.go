package env

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/dexidp/dex/server"
	"github.com/dexidp/dex/server/signer"
	"github.com/dexidp/dex/storage"
	"github.com/dexidp/dex/storage/memory"
)

// Dex's clients and connector. The ids are those of examples/rfc8693/dex.yml, so the example runs
// unchanged but for its URLs and secret file.
const (
	// DexClientID is the gateway, a confidential static client of Dex.
	DexClientID = "gateway"
	DexSecret   = "dex-gateway-secret:with%odd+chars"
	// DexPeer is the backend's client: it lists the gateway among its trusted peers, which is what
	// lets the gateway ask for tokens with the scope audience:server:client_id:ledger.
	DexPeer = "ledger"
	// DexConnectorID is the OIDC connector to the upstream provider; Dex's token exchange needs it
	// as connector_id (the plugin sends it through extraParams).
	DexConnectorID = "upstream"
)

// Dex is Dex (github.com/dexidp/dex) run in process with in-memory storage: a third RFC 8693
// server, independent of zitadel/oidc and of the Entra server. It federates: its OIDC connector
// checks each subject token against an upstream provider (the suite's IdP) by calling that
// provider's userinfo endpoint with it, so a user of one provider obtains a token of another.
type Dex struct {
	Issuer        string // http://127.0.0.1:<port>/dex, Dex's usual path
	TokenEndpoint string

	srv       *http.Server
	cancel    context.CancelFunc // stops Dex's key rotation and garbage collection
	exchanges atomic.Int64
}

// StartDex starts Dex with the upstream provider's issuer; the provider must be running (Dex
// reads its discovery document when the connector opens). Dex's log goes to logTo (nil discards it).
func StartDex(upstreamIssuer string, logTo io.Writer) (*Dex, error) {
	if logTo == nil {
		logTo = io.Discard
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &Dex{Issuer: "http://" + ln.Addr().String() + "/dex"}
	d.TokenEndpoint = d.Issuer + "/token"
	logger := slog.New(slog.NewTextHandler(logTo, nil))

	ctx, cancel := context.WithCancel(context.Background())
	handler, err := d.newServer(ctx, upstreamIssuer, logger)
	if err != nil {
		cancel()
		ln.Close()
		return nil, err
	}
	d.cancel = cancel
	d.srv = &http.Server{Handler: d.countExchanges(handler), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// newServer builds Dex's server as its `dex serve` command does, from a memory storage holding
// the two clients and the connector.
func (d *Dex) newServer(ctx context.Context, upstreamIssuer string, logger *slog.Logger) (http.Handler, error) {
	store, err := dexStorage(ctx, d.Issuer, upstreamIssuer, logger)
	if err != nil {
		return nil, err
	}
	keys := signer.LocalConfig{KeysRotationPeriod: "6h"}
	sign, err := keys.Open(ctx, store, 24*time.Hour, time.Now, logger)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(ctx, server.Config{
		Issuer:            d.Issuer,
		Storage:           store,
		Signer:            sign,
		Logger:            logger,
		AllowedGrantTypes: []string{"urn:ietf:params:oauth:grant-type:token-exchange"},
		IDTokensValidFor:  5 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("dex: %w", err)
	}
	return srv, nil
}

// dexStorage is Dex's memory storage with the gateway, its peer and the OIDC connector.
func dexStorage(ctx context.Context, issuer, upstreamIssuer string, logger *slog.Logger) (storage.Storage, error) {
	store := memory.New(logger)
	clients := []storage.Client{
		{ID: DexClientID, Secret: DexSecret, Name: "Traefik gateway"},
		{ID: DexPeer, Secret: randomString(), Name: "Ledger API", TrustedPeers: []string{DexClientID}},
	}
	for _, c := range clients {
		if err := store.CreateClient(ctx, c); err != nil {
			return nil, err
		}
	}
	// getUserInfo is what lets Dex accept an access token as subject token: it verifies it by
	// calling the upstream's userinfo endpoint. The connector's client is used only by browser
	// logins through Dex, which the suite does not make. Scopes without "email": the user's token
	// carries "openid profile", so the upstream's userinfo has a name but no email.
	config, err := json.Marshal(map[string]interface{}{
		"issuer":       upstreamIssuer,
		"clientID":     "dex",
		"clientSecret": randomString(),
		"redirectURI":  issuer + "/callback",
		"getUserInfo":  true,
		"scopes":       []string{"profile"},
	})
	if err != nil {
		return nil, err
	}
	conn := storage.Connector{ID: DexConnectorID, Type: "oidc", Name: "Upstream OpenID Provider", Config: config}
	if err := store.CreateConnector(ctx, conn); err != nil {
		return nil, err
	}
	return store, nil
}

// Exchanges counts the token-exchange requests Dex received.
func (d *Dex) Exchanges() int { return int(d.exchanges.Load()) }

// Stop closes Dex and ends its background work.
func (d *Dex) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.srv.Shutdown(ctx)
	d.cancel()
}

// countExchanges counts token-exchange requests before Dex handles them.
func (d *Dex) countExchanges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/dex/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if form, _ := url.ParseQuery(string(body)); form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange" {
				d.exchanges.Add(1)
			}
		}
		next.ServeHTTP(w, r)
	})
}
