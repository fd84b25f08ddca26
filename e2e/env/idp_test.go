package env

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The provider signs users in and exchanges their tokens (checked here without Traefik, so a
// failure of the suite can be told apart from a failure of its authorization server).
func TestIdPLoginAndExchange(t *testing.T) {
	p := startIdP(t)

	user, err := p.Login(p.DemoUser(), UserPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	claims, err := Claims(user)
	if err != nil || claims["sub"] != "id1" {
		t.Fatalf("user token claims %v, err %v", claims, err)
	}

	req, _ := http.NewRequest(http.MethodPost, p.TokenEndpoint, strings.NewReader(url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {user},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"audience":           {"api://orders"},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(KeycloakStyleClientID), url.QueryEscape(GatewaySecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || p.Exchanges() != 1 {
		t.Fatalf("exchange: HTTP %d, exchanges %d", resp.StatusCode, p.Exchanges())
	}
}

// Delegation: an agent's own token, sent as the actor token, is verified by the provider and named
// in the act claim of the issued token; a forged one is refused by the provider.
func TestIdPDelegation(t *testing.T) {
	p := startIdP(t)
	user, err := p.Login(p.DemoUser(), UserPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	agent, err := p.ClientToken(AgentA, AgentSecret)
	if err != nil {
		t.Fatal(err)
	}
	if claims, err := VerifiedClaims(agent, p.Issuer); err != nil || claims["sub"] != AgentA {
		t.Fatalf("agent token claims %v, err %v", claims, err)
	}
	forged := agent[:len(agent)-4] + "AAAA"

	tests := []struct {
		name, actor string
		status      int
		wantError   string
	}{
		{"agent token", agent, 200, ""},
		{"forged agent token", forged, 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var answer struct {
				AccessToken      string `json:"access_token"`
				Error            string `json:"error"`
				ErrorDescription string `json:"error_description"`
			}
			status := postForm(t, p.TokenEndpoint, url.Values{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      {user},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"actor_token":        {tc.actor},
				"actor_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
				"audience":           {"api://orders"},
			}, &answer)
			if status != tc.status || answer.Error != tc.wantError {
				t.Fatalf("HTTP %d %s %q, want %d %q", status, answer.Error, answer.ErrorDescription, tc.status, tc.wantError)
			}
			if tc.status != 200 {
				if !strings.Contains(answer.ErrorDescription, "actor_token") {
					t.Errorf("error_description %q does not name the actor token", answer.ErrorDescription)
				}
				return
			}
			claims, err := VerifiedClaims(answer.AccessToken, p.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			act, _ := claims["act"].(map[string]interface{})
			if claims["sub"] != "id1" || act["sub"] != AgentA {
				t.Errorf("sub %v act %v, want id1 and act.sub %s", claims["sub"], claims["act"], AgentA)
			}
		})
	}
}

// postForm sends a token request as the Keycloak-style gateway client and decodes the answer.
func postForm(t *testing.T, endpoint string, form url.Values, into interface{}) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(KeycloakStyleClientID), url.QueryEscape(GatewaySecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// startIdP starts the provider for one test.
func startIdP(t *testing.T) *IdP {
	t.Helper()
	p, err := StartIdP(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
