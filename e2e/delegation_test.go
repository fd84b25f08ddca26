package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// Delegation (RFC 8693 actor tokens) through Traefik against zitadel/oidc, which verifies the
// actor token itself and names the actor in the act claim of the token it issues.

// delegationRoute is a route exchanging at the provider for api://orders as the Keycloak-style
// gateway client, with the given actor options.
func delegationRoute(t *testing.T, name string, actor map[string]string) string {
	t.Helper()
	options := map[string]string{
		"tokenEndpoint":    idp.TokenEndpoint,
		"clientId":         env.KeycloakStyleClientID,
		"clientSecretFile": secretFile("gateway-secret", env.GatewaySecret),
		"audience":         "api://orders",
	}
	for k, v := range actor {
		options[k] = v
	}
	host := name + ".test"
	writeDynamic(t, name+".yml", route(name, host, options), name, "enabled")
	return host
}

// clientToken returns a client's own access token, obtained with client credentials.
func clientToken(t *testing.T, clientID, secret string) string {
	t.Helper()
	token, err := idp.ClientToken(clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	return remember(token)
}

// checkActor verifies the forwarded token as checkExchanged does, and that its act claim names the
// actor.
func checkActor(t *testing.T, user, forwarded, actor string) {
	t.Helper()
	checkExchanged(t, user, forwarded, idp.Issuer, "api://orders")
	claims, err := env.Claims(forwarded)
	if err != nil {
		t.Fatal(err)
	}
	act, _ := claims["act"].(map[string]interface{})
	if act["sub"] != actor {
		t.Errorf("forwarded act = %v, want sub %s", claims["act"], actor)
	}
}

// actorToken: file: the gateway's own token (a projected service-account token in production) is
// read from a file and sent as the actor; a forged one in the file is refused by the provider: 502.
func TestDelegationActorFile(t *testing.T) {
	path := filepath.Join(work, "gateway-actor-token")
	if err := os.WriteFile(path, []byte(clientToken(t, env.KeycloakStyleClientID, env.GatewaySecret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host := delegationRoute(t, "delegation-file", map[string]string{"actorToken": "file:" + path})

	user := login(t)
	r := send(t, host, "/", "Bearer "+user)
	checkActor(t, user, forwardedToken(t, r, user), env.KeycloakStyleClientID)

	forged := remember(env.ForgeSignature(clientToken(t, env.KeycloakStyleClientID, env.GatewaySecret)))
	if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	exchanges, calls := idp.Exchanges(), echo.Calls()
	r = send(t, host, "/", "Bearer "+login(t))
	if r.status != http.StatusBadGateway {
		t.Fatalf("forged actor token in the file: status %d, want 502: %s", r.status, r.body)
	}
	if idp.Exchanges() != exchanges+1 || echo.Calls() != calls {
		t.Errorf("exchanges %d, backend calls %d; want the provider to have refused one exchange and the backend none",
			idp.Exchanges()-exchanges, echo.Calls()-calls)
	}
}

// actorToken: header: agents send their own token beside the user's. Each agent gets a token naming
// it; two agents acting for one user never share a cache entry; the agent's header does not reach
// the backend; a missing agent token is 401, a forged one is refused by the provider: 401.
func TestDelegationActorHeader(t *testing.T) {
	host := delegationRoute(t, "delegation-header", map[string]string{"actorToken": "header:X-Agent-Token"})
	user := login(t)
	agentA := clientToken(t, env.AgentA, env.AgentSecret)
	agentB := clientToken(t, env.AgentB, env.AgentSecret)
	forwarded := map[string]string{}

	steps := []struct {
		name, agentToken, agent string
		newExchange             bool
	}{
		{"agent A", agentA, env.AgentA, true},
		{"agent B for the same user", agentB, env.AgentB, true},
		{"agent A again: cached", agentA, env.AgentA, false},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			exchanges := idp.Exchanges()
			r := sendHeaders(t, host, "/", map[string]string{"Authorization": "Bearer " + user, "X-Agent-Token": step.agentToken})
			token := forwardedToken(t, r, user)
			checkActor(t, user, token, step.agent)
			if _, ok := r.received.Header["X-Agent-Token"]; ok {
				t.Error("the agent's token reached the backend")
			}
			if got := idp.Exchanges() - exchanges; got != map[bool]int{true: 1, false: 0}[step.newExchange] {
				t.Errorf("exchanges = %d, want new exchange %v", got, step.newExchange)
			}
			if previous, seen := forwarded[step.agent]; seen && previous != token {
				t.Error("the cached token for this user and agent was not reused")
			}
			forwarded[step.agent] = token
		})
	}
	if forwarded[env.AgentA] == forwarded[env.AgentB] {
		t.Error("two agents acting for one user got the same token")
	}

	refusals := []struct {
		name, agentToken string
		challenge        string
		serverAsked      bool
	}{
		{"no agent token", "", "Bearer", false},
		{"forged agent token", remember(env.ForgeSignature(agentA)), `Bearer error="invalid_token"`, true},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			exchanges, calls := idp.Exchanges(), echo.Calls()
			headers := map[string]string{"Authorization": "Bearer " + user}
			if tc.agentToken != "" {
				headers["X-Agent-Token"] = tc.agentToken
			}
			r := sendHeaders(t, host, "/", headers)
			if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != tc.challenge {
				t.Fatalf("status %d, WWW-Authenticate %q; want 401 and %q: %s", r.status, r.header.Get("WWW-Authenticate"), tc.challenge, r.body)
			}
			if asked := idp.Exchanges() != exchanges; asked != tc.serverAsked || echo.Calls() != calls {
				t.Errorf("provider asked %v (want %v), backend calls %d (want 0)", asked, tc.serverAsked, echo.Calls()-calls)
			}
		})
	}
}

// actorToken: client_credentials: the gateway obtains its own token at the same endpoint, once for
// many users, and is named as the actor.
func TestDelegationActorClientCredentials(t *testing.T) {
	host := delegationRoute(t, "delegation-cc", map[string]string{"actorToken": "client_credentials", "actorScopes": "openid"})
	before := idp.ClientCredentialsCalls()
	for i := 0; i < 2; i++ {
		user := login(t)
		r := send(t, host, "/", "Bearer "+user)
		checkActor(t, user, forwardedToken(t, r, user), env.KeycloakStyleClientID)
	}
	if got := idp.ClientCredentialsCalls() - before; got != 1 {
		t.Errorf("client-credentials requests = %d, want 1 for two users", got)
	}
}
