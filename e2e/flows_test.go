package e2e

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// RFC 8693 through Traefik with the Okta-style example: the backend receives a token the
// authorization server signed, for the configured audience, naming the same user.
func TestRFC8693OktaExample(t *testing.T) {
	user := login(t)
	r := send(t, "api.example.com", "/orders/42", "Bearer "+user)

	forwarded := forwardedToken(t, r, user)
	checkExchanged(t, user, forwarded, idp.Issuer, "api://orders")
}

// The Keycloak-style example (client_secret_post, other audience) through Traefik.
func TestRFC8693KeycloakExample(t *testing.T) {
	user := login(t)
	r := send(t, "api.example.com", "/inventory", "Bearer "+user)

	forwarded := forwardedToken(t, r, user)
	checkExchanged(t, user, forwarded, idp.Issuer, "inventory")
}

// Entra ID On-Behalf-Of through Traefik with the Entra example.
func TestEntraExample(t *testing.T) {
	user := entraUser(t, "alice")
	before := entra.Calls("urn:ietf:params:oauth:grant-type:jwt-bearer")
	r := send(t, "api.example.com", "/reports/q3", "Bearer "+user)

	forwarded := forwardedToken(t, r, user)
	checkExchanged(t, user, forwarded, entra.Issuer, "api://reports")
	if got := entra.Calls("urn:ietf:params:oauth:grant-type:jwt-bearer") - before; got != 1 {
		t.Errorf("OBO calls = %d, want 1", got)
	}
}

// checkExchanged verifies the forwarded token: signed by the issuer, for the audience, with the
// user's subject, and not the user's token.
func checkExchanged(t *testing.T, user, forwarded, issuer, audience string) {
	t.Helper()
	remember(forwarded)
	if forwarded == user {
		t.Fatal("the backend received the original token")
	}
	claims, err := env.VerifiedClaims(forwarded, issuer)
	if err != nil {
		t.Fatalf("forwarded token: %v", err)
	}
	userClaims, err := env.Claims(user)
	if err != nil {
		t.Fatal(err)
	}
	if claims["sub"] == nil || claims["sub"] != userClaims["sub"] {
		t.Errorf("forwarded sub = %v, want the user's %v", claims["sub"], userClaims["sub"])
	}
	if !contains(env.Audiences(claims), audience) {
		t.Errorf("forwarded aud = %v, want %s", claims["aud"], audience)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The response table of the README, through Traefik.
func TestResponseStatuses(t *testing.T) {
	hang, err := net.Listen("tcp", "127.0.0.1:0") // accepts connections, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	writeDynamic(t, "unreachable.yml", route("unreachable", "unreachable.test", map[string]string{
		"tokenEndpoint": "http://" + closedAddr + "/token", "clientId": "gateway", "clientSecret": "x", "audience": "a",
	}), "unreachable", "enabled")
	writeDynamic(t, "hanging.yml", route("hanging", "hanging.test", map[string]string{
		"tokenEndpoint": "http://" + hang.Addr().String() + "/token", "clientId": "gateway", "clientSecret": "x",
		"audience": "a", "timeout": "500ms",
	}), "hanging", "enabled")

	tests := []struct {
		name, host, path, authorization string
		status                          int
		challenge                       string
	}{
		{"no token", "api.example.com", "/orders", "", 401, "Bearer"},
		{"other scheme: no Bearer credential", "api.example.com", "/orders", "Basic dXNlcjpwYXNz", 401, "Bearer"},
		{"malformed Bearer credential", "api.example.com", "/orders", "Bearer a,b", 400, `Bearer error="invalid_request"`},
		{"token rejected by the server (invalid_grant)", "api.example.com", "/reports", "Bearer " + entraUser(t, "revoked-user"), 401, `Bearer error="invalid_token"`},
		{"server unreachable", "unreachable.test", "/", "Bearer " + login(t), 502, ""},
		{"server does not answer in time", "hanging.test", "/", "Bearer " + login(t), 504, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := echo.Calls()
			start := time.Now()
			r := send(t, tc.host, tc.path, tc.authorization)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if got := r.header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if !strings.HasPrefix(r.body, `{"error":"`) {
				t.Errorf("body = %q, want a JSON error", r.body)
			}
			if echo.Calls() != calls {
				t.Error("the backend was called")
			}
			if tc.status == 504 && time.Since(start) > 3*time.Second {
				t.Errorf("504 after %v with a 500ms timeout", time.Since(start))
			}
		})
	}
}

// Entra's Conditional Access and consent answers become a claims challenge for the client.
func TestEntraClaimsChallenge(t *testing.T) {
	for _, sub := range []string{"mfa-user", "consent-user"} {
		t.Run(sub, func(t *testing.T) {
			r := send(t, "api.example.com", "/reports", "Bearer "+entraUser(t, sub))
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.status, r.body)
			}
			challenge := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, `Bearer error="insufficient_claims"`) {
				t.Errorf("WWW-Authenticate = %q", challenge)
			}
			if sub == "mfa-user" && !strings.Contains(challenge, `claims="`) {
				t.Errorf("no claims challenge in %q", challenge)
			}
		})
	}
}

// route is a dynamic configuration with one router, its oboexchange middleware and the echo
// backend. Values are written as strings, the way labels and the file provider hand them over.
// gatewayOptions are the options of a middleware exchanging at the suite's RFC 8693 provider as
// the Keycloak-style gateway client, for one audience, with more options as key, value pairs.
func gatewayOptions(audience string, more ...string) map[string]string {
	options := map[string]string{
		"tokenEndpoint": idp.TokenEndpoint, "clientId": env.KeycloakStyleClientID, "clientSecret": env.GatewaySecret,
		"audience": audience,
	}
	for i := 0; i+1 < len(more); i += 2 {
		options[more[i]] = more[i+1]
	}
	return options
}

func route(name, host string, options map[string]string) string {
	var b strings.Builder
	b.WriteString("http:\n  routers:\n    " + name + ":\n      rule: Host(`" + host + "`)\n")
	b.WriteString("      entryPoints: [web]\n      middlewares: [" + name + "-obo]\n      service: " + name + "\n")
	b.WriteString("  middlewares:\n    " + name + "-obo:\n      plugin:\n        oboexchange:\n")
	for k, v := range options {
		b.WriteString("          " + k + ": \"" + v + "\"\n")
	}
	b.WriteString("  services:\n    " + name + ":\n      loadBalancer:\n        servers:\n          - url: " + echo.URL + "\n")
	return b.String()
}
