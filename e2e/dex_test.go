package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// Federation through Traefik with the Dex example: a user of the upstream provider (zitadel/oidc)
// reaches the backend with a token of another server, Dex, which verified the user's token
// upstream. The backend's token is signed by Dex, for the peer, and names the upstream user.
func TestRFC8693DexExample(t *testing.T) {
	user := login(t)
	before := dex.Exchanges()
	r := send(t, "api.example.com", "/ledger/7", "Bearer "+user)

	forwarded := remember(forwardedToken(t, r, user))
	if got := dex.Exchanges() - before; got != 1 {
		t.Errorf("Dex exchanges = %d, want 1", got)
	}
	claims, err := env.VerifiedClaims(forwarded, dex.Issuer)
	if err != nil {
		t.Fatalf("forwarded token: %v", err)
	}
	if aud := strings.Join(env.Audiences(claims), ","); aud != env.DexPeer+","+env.DexClientID {
		t.Errorf("aud = %s, want the peer %s (then the gateway)", aud, env.DexPeer)
	}
	userClaims, _ := env.Claims(user)
	federated, _ := claims["federated_claims"].(map[string]interface{})
	if federated["user_id"] == nil || federated["user_id"] != userClaims["sub"] || federated["connector_id"] != env.DexConnectorID {
		t.Errorf("federated_claims = %v, want the upstream user %v through %s", federated, userClaims["sub"], env.DexConnectorID)
	}
}

// A token Dex cannot verify (its signature forged, its exp still valid): Dex answers 401
// access_denied, the client gets 401 invalid_token and the backend is not called. The plugin
// remembers the refusal, so the same token sent again does not reach Dex.
func TestDexRefusesForgedToken(t *testing.T) {
	forged := remember(env.ForgeSignature(login(t)))
	tests := []struct {
		name     string
		dexCalls int
	}{
		{"first request: Dex refuses the token", 1},
		{"same token again: answered from the negative cache", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls, exchanges := echo.Calls(), dex.Exchanges()
			r := send(t, "api.example.com", "/ledger/7", "Bearer "+forged)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.status, r.body)
			}
			if got := r.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if echo.Calls() != calls {
				t.Error("the backend was called")
			}
			if got := dex.Exchanges() - exchanges; got != tc.dexCalls {
				t.Errorf("Dex exchanges = %d, want %d", got, tc.dexCalls)
			}
		})
	}
}
