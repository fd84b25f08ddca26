package e2e

import (
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
