package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// What each real server of the suite answers to a user token it cannot verify (a signature no
// key made, an exp still valid), and what the client gets through Traefik: the README's recipes
// state these answers. A 401 is remembered (negative cache), so the same token sent again does
// not reach the server; a 502 is not.
func TestRecipesForgedUserToken(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		user      func(*testing.T) string
		calls     func() int // the server's token-exchange (or OBO) calls so far
		answer    string     // the OAuth error the server answered, as the plugin logs it
		status    int
		challenge string
	}{
		{"zitadel/oidc", "/orders", login, idp.Exchanges, "invalid_request", http.StatusBadGateway, ""},
		{"Dex", "/ledger/7", login, dex.Exchanges, "access_denied", http.StatusUnauthorized, `Bearer error="invalid_token"`},
		{"Entra", "/reports",
			func(t *testing.T) string { return entraUser(t, "alice") },
			func() int { return entra.Calls("urn:ietf:params:oauth:grant-type:jwt-bearer") },
			"invalid_grant", http.StatusUnauthorized, `Bearer error="invalid_token"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forged := remember(env.ForgeSignature(tc.user(t)))
			wantCalls := []int{1, 1} // the first request, then the same token again
			if tc.status == http.StatusUnauthorized {
				wantCalls[1] = 0
			}
			log := traefik.Follow()
			for i, want := range wantCalls {
				backend, before := echo.Calls(), tc.calls()
				r := send(t, "api.example.com", tc.path, "Bearer "+forged)
				if r.status != tc.status {
					t.Fatalf("request %d: status %d, want %d: %s", i+1, r.status, tc.status, r.body)
				}
				if got := r.header.Get("WWW-Authenticate"); got != tc.challenge {
					t.Errorf("request %d: WWW-Authenticate = %q, want %q", i+1, got, tc.challenge)
				}
				if echo.Calls() != backend {
					t.Errorf("request %d: the backend was called", i+1)
				}
				if got := tc.calls() - before; got != want {
					t.Errorf("request %d: the server was called %d time(s), want %d", i+1, got, want)
				}
			}
			if lines := log.Next(); !strings.Contains(lines, "error="+tc.answer+" ") {
				t.Errorf("the plugin did not log the server's error %s:\n%s", tc.answer, lines)
			}
		})
	}
}
