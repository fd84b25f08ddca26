package env

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	entraTestClient = "11111111-2222-3333-4444-555555555555"
	entraTestSecret = "s3cret~with+odd/chars"
	entraJWTBearer  = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// entraAnswer is a token-endpoint response: a token or an Entra error.
type entraAnswer struct {
	status int
	header http.Header

	AccessToken   string `json:"access_token"`
	TokenType     string `json:"token_type"`
	ExpiresIn     int    `json:"expires_in"`
	ExtExpiresIn  int    `json:"ext_expires_in"`
	Error         string `json:"error"`
	Description   string `json:"error_description"`
	Codes         []int  `json:"error_codes"`
	Timestamp     string `json:"timestamp"`
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
	ErrorURI      string `json:"error_uri"`
	Suberror      string `json:"suberror"`
	Claims        string `json:"claims"`
}

// The Entra mock checks the OBO request the way Entra does and answers with Entra's errors.
// Checked with plain HTTP, without Traefik, so a failure of the suite can be told apart from a
// failure of its authorization server.
func TestEntraOnBehalfOf(t *testing.T) {
	o := startEntraOBO(t)
	t.Run("success", o.testSuccess)
	t.Run("basic client authentication and named scopes", o.testBasicAuthAndNamedScopes)
	o.testMissingParameters(t)
	o.testRefusals(t)
	t.Run("step-up", o.testStepUp)
	t.Run("consent", o.testConsent)
	t.Run("form body required", o.testFormBodyRequired)
	t.Run("POST only", o.testPostOnly)
	t.Run("calls are counted by grant type", o.testCallsCounted)
	testEntraStop(t, o.e)
}

// entraOBO is what the phases of TestEntraOnBehalfOf share: the running mock and alice, the user
// whose token their OBO requests carry.
type entraOBO struct {
	e           *Entra
	alice       string
	aliceClaims map[string]interface{}
}

// startEntraOBO starts the mock and checks what every phase relies on: the endpoint has Entra's
// path, and a user token is issued for the gateway's app.
func startEntraOBO(t *testing.T) *entraOBO {
	t.Helper()
	e, err := StartEntra(entraTestClient, entraTestSecret, entraTestLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	if !strings.HasPrefix(e.Issuer, "http://127.0.0.1:") || e.TokenEndpoint != e.Issuer+"/"+entraTenant+"/oauth2/v2.0/token" {
		t.Fatalf("issuer %q, token endpoint %q", e.Issuer, e.TokenEndpoint)
	}
	alice, err := e.UserToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	aliceClaims := entraClaims(t, alice)
	if aliceClaims["aud"] != entraTestClient || aliceClaims["sub"] != "alice" {
		t.Fatalf("user token claims %v, want aud %s and sub alice", aliceClaims, entraTestClient)
	}
	return &entraOBO{e: e, alice: alice, aliceClaims: aliceClaims}
}

// form is a valid OBO request for alice; alter, when not nil, turns it into the case at hand.
func (o *entraOBO) form(alter func(url.Values)) url.Values {
	form := url.Values{
		"grant_type":          {entraJWTBearer},
		"client_id":           {entraTestClient},
		"client_secret":       {entraTestSecret},
		"assertion":           {o.alice},
		"scope":               {"api://orders/.default"},
		"requested_token_use": {"on_behalf_of"},
	}
	if alter != nil {
		alter(form)
	}
	return form
}

// testSuccess shows the token a valid request gets: Entra's answer fields, and a token for the
// downstream API that names the same user and the gateway's app, signed with the published keys.
func (o *entraOBO) testSuccess(t *testing.T) {
	a := entraPost(t, o.e, o.form(nil), nil)
	if a.status != 200 || a.TokenType != "Bearer" || a.ExpiresIn != 3600 || a.ExtExpiresIn != 3600 {
		t.Fatalf("answer %+v", a)
	}
	claims := entraClaims(t, a.AccessToken)
	want := map[string]interface{}{
		"sub": "alice", "oid": o.aliceClaims["oid"], "name": "alice", "aud": "api://orders",
		"scp": ".default", "appid": entraTestClient, "azp": entraTestClient, "iss": o.e.Issuer,
	}
	for name, value := range want {
		if claims[name] != value {
			t.Errorf("claim %s = %v, want %v", name, claims[name], value)
		}
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 3600 {
		t.Errorf("lifetime %v s, want 3600", exp-iat)
	}
	if _, err := VerifiedClaims(a.AccessToken, o.e.Issuer); err != nil {
		t.Errorf("issued token does not verify with the discovery keys: %v", err)
	}
}

// testBasicAuthAndNamedScopes shows the other client authentication the plugin may use (HTTP
// Basic, form-encoded id and secret) and that named scopes of one resource end up in scp.
func (o *entraOBO) testBasicAuthAndNamedScopes(t *testing.T) {
	form := o.form(func(f url.Values) {
		f.Del("client_id")
		f.Del("client_secret")
		f.Set("scope", "api://orders/orders.read api://orders/orders.write offline_access")
	})
	id, secret := url.QueryEscape(entraTestClient), url.QueryEscape(entraTestSecret)
	a := entraPost(t, o.e, form, http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}})
	if a.status != 200 {
		t.Fatalf("answer %+v", a)
	}
	if claims := entraClaims(t, a.AccessToken); claims["scp"] != "orders.read orders.write" || claims["aud"] != "api://orders" {
		t.Errorf("scp %v, aud %v", claims["scp"], claims["aud"])
	}
}

// testMissingParameters shows that each required parameter is checked and named in the error.
func (o *entraOBO) testMissingParameters(t *testing.T) {
	for _, name := range []string{"grant_type", "client_id", "assertion", "scope", "requested_token_use"} {
		t.Run("missing "+name, func(t *testing.T) {
			a := entraPost(t, o.e, o.form(func(f url.Values) { f.Del(name) }), nil)
			expectEntraError(t, a, 400, "invalid_request", 900144)
			if !strings.Contains(a.Description, "'"+name+"'") {
				t.Errorf("description %q does not name %s", a.Description, name)
			}
		})
	}
}

// testRefusals shows Entra's status, error and AADSTS code for each request it refuses, none of
// them with a claims challenge (which would send the client to sign in again).
func (o *entraOBO) testRefusals(t *testing.T) {
	tests := []struct {
		name   string
		form   url.Values
		status int
		error  string
		code   int
	}{
		{"missing client_secret", o.form(func(f url.Values) { f.Del("client_secret") }), 401, "invalid_client", 7000218},
		{"wrong secret", o.form(func(f url.Values) { f.Set("client_secret", "guess") }), 401, "invalid_client", 7000215},
		{"unknown client", o.form(func(f url.Values) { f.Set("client_id", "99999999-0000-0000-0000-000000000000") }), 400, "unauthorized_client", 700016},
		{"scope without resource", o.form(func(f url.Values) { f.Set("scope", "orders.read") }), 400, "invalid_scope", 70011},
		{"scopes of two resources", o.form(func(f url.Values) { f.Set("scope", "api://orders/.default api://billing/.default") }), 400, "invalid_scope", 70011},
		{"other requested_token_use", o.form(func(f url.Values) { f.Set("requested_token_use", "exchange") }), 400, "invalid_request", 9002313},
		{"unsupported grant", o.form(func(f url.Values) { f.Set("grant_type", "client_credentials") }), 400, "unsupported_grant_type", 70003},
		{"malformed assertion", o.form(func(f url.Values) { f.Set("assertion", "not-a-jwt") }), 400, "invalid_request", 50027},
		{"assertion signed by another key", o.form(func(f url.Values) { f.Set("assertion", entraForgedToken(t, o.alice, "")) }), 400, "invalid_grant", 50013},
		{"assertion with an unknown key id", o.form(func(f url.Values) { f.Set("assertion", entraForgedToken(t, o.alice, "other-key")) }), 400, "invalid_grant", 50013},
		{"assertion for another audience", o.form(func(f url.Values) { f.Set("assertion", entraOBOToken(t, o.e, o.form(nil))) }), 400, "invalid_grant", 50013},
		{"expired assertion", o.form(func(f url.Values) { f.Set("assertion", entraUserToken(t, o.e, "expired-user")) }), 400, "invalid_grant", 500133},
		{"revoked grant", o.form(func(f url.Values) { f.Set("assertion", entraUserToken(t, o.e, "revoked-user")) }), 400, "invalid_grant", 50173},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := entraPost(t, o.e, tc.form, nil)
			expectEntraError(t, a, tc.status, tc.error, tc.code)
			if a.Claims != "" || a.Suberror != "" {
				t.Errorf("claims %q, suberror %q, want none", a.Claims, a.Suberror)
			}
		})
	}
}

// testStepUp shows Conditional Access asking for MFA: a claims challenge the plugin hands to the
// client.
func (o *entraOBO) testStepUp(t *testing.T) {
	a := entraPost(t, o.e, o.form(func(f url.Values) { f.Set("assertion", entraUserToken(t, o.e, "mfa-user")) }), nil)
	expectEntraError(t, a, 400, "invalid_grant", 50076)
	var challenge struct {
		AccessToken struct {
			Capolids struct {
				Essential bool     `json:"essential"`
				Values    []string `json:"values"`
			} `json:"capolids"`
		} `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(a.Claims), &challenge); err != nil || !challenge.AccessToken.Capolids.Essential || len(challenge.AccessToken.Capolids.Values) != 1 {
		t.Errorf("claims %q (%v), want a capolids challenge", a.Claims, err)
	}
	if a.Suberror != "basic_action" || !strings.Contains(a.Description, "multi-factor authentication to access 'api://orders'") {
		t.Errorf("suberror %q, description %q", a.Suberror, a.Description)
	}
}

// testConsent shows the answer when the user has not consented to the gateway's app.
func (o *entraOBO) testConsent(t *testing.T) {
	a := entraPost(t, o.e, o.form(func(f url.Values) { f.Set("assertion", entraUserToken(t, o.e, "consent-user")) }), nil)
	expectEntraError(t, a, 400, "invalid_grant", 65001)
	if a.Suberror != "consent_required" || !strings.Contains(a.Description, entraTestClient) {
		t.Errorf("suberror %q, description %q", a.Suberror, a.Description)
	}
}

// testFormBodyRequired shows that a JSON body is refused: the request must be form-encoded.
func (o *entraOBO) testFormBodyRequired(t *testing.T) {
	body, _ := json.Marshal(map[string]string{"grant_type": entraJWTBearer})
	req, _ := http.NewRequest(http.MethodPost, o.e.TokenEndpoint, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	expectEntraError(t, entraDo(t, req), 400, "invalid_request", 900144)
}

// testPostOnly shows that the token endpoint refuses other methods.
func (o *entraOBO) testPostOnly(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, o.e.TokenEndpoint, nil)
	expectEntraError(t, entraDo(t, req), 400, "invalid_request", 900561)
}

// testCallsCounted shows that Calls counts every answered call by grant type, refused ones
// included, which the suite's cache tests rely on.
func (o *entraOBO) testCallsCounted(t *testing.T) {
	oboBefore, passwordBefore := o.e.Calls(entraJWTBearer), o.e.Calls("password")
	for i := 0; i < 3; i++ {
		entraPost(t, o.e, o.form(nil), nil)
	}
	entraPost(t, o.e, o.form(func(f url.Values) { f.Set("client_secret", "guess") }), nil)
	entraUserToken(t, o.e, "bob")
	if got := o.e.Calls(entraJWTBearer) - oboBefore; got != 4 {
		t.Errorf("OBO calls = %d, want 4", got)
	}
	if got := o.e.Calls("password") - passwordBefore; got != 1 {
		t.Errorf("password calls = %d, want 1", got)
	}
}

// testEntraStop shows that Stop ends the mock, and that a second Stop does nothing (the
// cleanup of startEntraOBO stops it once more).
func testEntraStop(t *testing.T, e *Entra) {
	e.Stop()
	if _, err := http.Post(e.TokenEndpoint, "application/x-www-form-urlencoded", nil); err == nil {
		t.Error("the mock still answers after Stop")
	}
	e.Stop()
}

func entraPost(t *testing.T, e *Entra, form url.Values, header http.Header) entraAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return entraDo(t, req)
}

func entraDo(t *testing.T, req *http.Request) entraAnswer {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := entraAnswer{status: resp.StatusCode, header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("HTTP %d, body is not JSON: %v", resp.StatusCode, err)
	}
	return a
}

// expectEntraError checks the status and Entra's error body, trace fields included.
func expectEntraError(t *testing.T, a entraAnswer, status int, errorCode string, aadsts int) {
	t.Helper()
	if a.status != status || a.Error != errorCode || len(a.Codes) != 1 || a.Codes[0] != aadsts {
		t.Fatalf("HTTP %d %q %v, want HTTP %d %q [%d]: %s", a.status, a.Error, a.Codes, status, errorCode, aadsts, a.Description)
	}
	prefix := "AADSTS" + strconv.Itoa(aadsts) + ": "
	trailer := "\r\nTrace ID: " + a.TraceID + "\r\nCorrelation ID: " + a.CorrelationID + "\r\nTimestamp: " + a.Timestamp
	if !strings.HasPrefix(a.Description, prefix) || !strings.HasSuffix(a.Description, trailer) {
		t.Errorf("error_description %q, want %q...%q", a.Description, prefix, trailer)
	}
	if _, err := time.Parse("2006-01-02 15:04:05Z", a.Timestamp); err != nil || len(a.TraceID) != 36 || len(a.CorrelationID) != 36 {
		t.Errorf("timestamp %q, trace_id %q, correlation_id %q", a.Timestamp, a.TraceID, a.CorrelationID)
	}
	if a.ErrorURI != "https://login.microsoftonline.com/error?code="+strconv.Itoa(aadsts) {
		t.Errorf("error_uri %q", a.ErrorURI)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
}

func entraUserToken(t *testing.T, e *Entra, sub string) string {
	t.Helper()
	token, err := e.UserToken(sub)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// entraOBOToken returns a token the mock issued for a downstream API, not for the gateway.
func entraOBOToken(t *testing.T, e *Entra, form url.Values) string {
	t.Helper()
	a := entraPost(t, e, form, nil)
	if a.status != 200 {
		t.Fatalf("OBO: %+v", a)
	}
	return a.AccessToken
}

// entraForgedToken signs the claims of token with a key of its own. With kid empty it keeps the
// token's key id, so only the signature gives it away.
func entraForgedToken(t *testing.T, token, kid string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	var header map[string]interface{}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(raw, &header); err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		header["kid"] = kid
	}
	encoded, _ := json.Marshal(header)
	signed := base64.RawURLEncoding.EncodeToString(encoded) + "." + parts[1]
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(signed))
	signature, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(signature)
}

func entraClaims(t *testing.T, token string) map[string]interface{} {
	t.Helper()
	claims, err := Claims(token)
	if err != nil {
		t.Fatalf("decode token: %v", err)
	}
	return claims
}

// entraTestLog sends the mock's output to the test log, shown when a test fails or with -v.
type entraTestLog struct{ t *testing.T }

func (l entraTestLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
