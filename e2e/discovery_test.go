package e2e

import (
	"net/http"
	"testing"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// Discovery through Traefik: with issuer instead of tokenEndpoint, the plugin reads the token
// endpoint from zitadel/oidc's metadata; an issuer that is not the document's, character for
// character, gets 502 and no exchange.
func TestDiscoveryThroughTraefik(t *testing.T) {
	tests := []struct {
		name, issuer string
		status       int
	}{
		{"issuer of the provider", idp.Issuer, http.StatusOK},
		{"issuer with a trailing slash", idp.Issuer + "/", http.StatusBadGateway},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "discovery" + string(rune('a'+i))
			writeDynamic(t, name+".yml", route(name, name+".test", map[string]string{
				"issuer":           tc.issuer,
				"clientId":         env.OktaStyleClientID,
				"clientSecretFile": secretFile("gateway-secret", env.GatewaySecret),
				"audience":         "api://orders",
			}), name, "enabled")
			user := login(t)
			exchanges := idp.Exchanges()

			r := send(t, name+".test", "/", "Bearer "+user)

			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status != http.StatusOK {
				if idp.Exchanges() != exchanges {
					t.Error("an exchange was sent despite the issuer mismatch")
				}
				return
			}
			checkExchanged(t, user, forwardedToken(t, r, user), idp.Issuer, "api://orders")
			if idp.Exchanges() != exchanges+1 {
				t.Errorf("exchanges = %d, want 1", idp.Exchanges()-exchanges)
			}
		})
	}
}
