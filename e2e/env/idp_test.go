package env

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The provider signs users in and exchanges their tokens (checked here without Traefik, so a
// failure of the suite can be told apart from a failure of its authorization server).
func TestIdPLoginAndExchange(t *testing.T) {
	p, err := StartIdP(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

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
