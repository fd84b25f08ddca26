package env

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Dex exchanges a token of the upstream provider for one of its own, and answers each mistake the
// way the README's Dex recipe says (checked here without Traefik, so a failure of the suite can be
// told apart from a failure of its authorization server).
func TestDexExchange(t *testing.T) {
	idp, err := StartIdP(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Stop()
	dex, err := StartDex(idp.Issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dex.Stop()
	user, err := idp.Login(idp.DemoUser(), UserPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}

	tests := []struct {
		name   string
		change func(url.Values)
		status int
		error  string
	}{
		{"exchanged", func(url.Values) {}, http.StatusOK, ""},
		{"subject token Dex cannot verify", func(f url.Values) { f.Set("subject_token", ForgeSignature(user)) }, http.StatusUnauthorized, "access_denied"},
		{"no connector_id", func(f url.Values) { f.Del("connector_id") }, http.StatusBadRequest, "invalid_request"},
		{"subject_token_type jwt", func(f url.Values) { f.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt") }, http.StatusBadRequest, "request_not_supported"},
		{"peer that does not trust the gateway", func(f url.Values) { f.Set("scope", "audience:server:client_id:other") }, http.StatusInternalServerError, "server_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      {user},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"connector_id":       {DexConnectorID},
				"scope":              {"federated:id audience:server:client_id:" + DexPeer},
			}
			tc.change(form)
			before := dex.Exchanges()
			status, answer := postDex(t, dex, form)
			if code, _ := answer["error"].(string); status != tc.status || code != tc.error {
				t.Fatalf("HTTP %d error %q, want %d %q", status, code, tc.status, tc.error)
			}
			if dex.Exchanges() != before+1 {
				t.Errorf("exchanges counted %d, want %d", dex.Exchanges(), before+1)
			}
			if tc.status == http.StatusOK {
				checkDexAnswer(t, dex, answer)
			}
		})
	}
}

// checkDexAnswer checks a successful answer: an access token Dex signed, for the peer, naming the
// upstream user and connector.
func checkDexAnswer(t *testing.T, dex *Dex, answer map[string]interface{}) {
	t.Helper()
	if answer["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" || answer["token_type"] != "bearer" {
		t.Errorf("issued_token_type %v, token_type %v", answer["issued_token_type"], answer["token_type"])
	}
	token, _ := answer["access_token"].(string)
	claims, err := VerifiedClaims(token, dex.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	if aud := strings.Join(Audiences(claims), ","); aud != DexPeer+","+DexClientID {
		t.Errorf("aud = %s, want the peer, then the gateway", aud)
	}
	federated, _ := claims["federated_claims"].(map[string]interface{})
	if federated["user_id"] != "id1" || federated["connector_id"] != DexConnectorID {
		t.Errorf("federated_claims = %v", claims["federated_claims"])
	}
}

func postDex(t *testing.T, dex *Dex, form url.Values) (int, map[string]interface{}) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, dex.TokenEndpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(DexClientID), url.QueryEscape(DexSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer map[string]interface{}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("HTTP %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, answer
}
