// The end-to-end suite: the plugin interpreted by a real Traefik binary, against two real RFC 8693
// authorization servers (zitadel/oidc, and Dex federating with it), an Entra ID On-Behalf-Of server
// (oauth2-mock-server with Entra's checks) and an echo backend. Run it with `make e2e` (part of `make test`).
package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// The Entra example's app registration, which the Entra server is started with.
const (
	entraClientID = "11111111-2222-3333-4444-555555555555"
	entraSecret   = "entra-secret~with.odd+chars"
)

var (
	idp     *env.IdP
	dex     *env.Dex
	entra   *env.Entra
	echo    *env.Echo
	traefik *env.Traefik
	work    string // temporary folder for secret files

	// Every token and secret the suite uses; none may appear in Traefik's log.
	secretsMu sync.Mutex
	secrets   = []string{env.GatewaySecret, entraSecret, env.DexSecret}
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if work, err = os.MkdirTemp("", "oboexchange-e2e-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)
	if idp, err = env.StartIdP(nil); err != nil {
		return 1, err
	}
	defer idp.Stop()
	if dex, err = env.StartDex(idp.Issuer, nil); err != nil {
		return 1, err
	}
	defer dex.Stop()
	credentials, stopSecretless, err := startSecretless()
	if err != nil {
		return 1, err
	}
	defer stopSecretless()
	if entra, err = env.StartEntraWith(entraClientID, entraSecret, credentials, nil); err != nil {
		return 1, err
	}
	defer entra.Stop()
	if echo, err = env.StartEcho(); err != nil {
		return 1, err
	}
	defer echo.Stop()
	dynamic, err := exampleConfigs()
	if err != nil {
		return 1, err
	}
	if traefik, err = env.StartTraefik(dynamic); err != nil {
		return 1, err
	}
	defer traefik.Stop()
	for _, router := range []string{"orders", "inventory", "reports", "ledger", "oboexchange-metrics", "payroll", "invoices", "shipping"} {
		if _, err := traefik.WaitRouter(router, "enabled", 60*time.Second); err != nil {
			return 1, fmt.Errorf("%w\n%s", err, traefik.Log())
		}
	}

	// The plugin's metrics are scraped while the suite runs, and checked against what it sent.
	scrapes := startScraper(500 * time.Millisecond)
	code := m.Run()
	n, problems := scrapes.finish()
	problems = append(problems, checkSuiteMetrics()...)
	fmt.Fprintf(os.Stderr, "plugin metrics: %d scrapes while the suite ran, %d problem(s)\n", n, len(problems))
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "FAIL: plugin metrics:", p)
		code = 1
	}

	if leaks := leakedSecrets(traefik.Log()); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: Traefik's log holds %d token(s) or secret(s) of the suite\n", len(leaks))
		code = 1
	}
	if code != 0 && os.Getenv("E2E_SHOW_LOG") != "" {
		fmt.Fprintln(os.Stderr, traefik.Log())
	}
	return code, nil
}

// exampleConfigs loads the dynamic configurations of examples/, with only their URLs and secret
// file paths replaced.
func exampleConfigs() (map[string]string, error) {
	gatewaySecret := secretFile("gateway-secret", env.GatewaySecret)
	entraSecretFile := secretFile("entra-secret", entraSecret)
	dexSecretFile := secretFile("dex-secret", env.DexSecret)
	files := map[string]struct {
		example string
		replace map[string]string
	}{
		"okta.yml": {"rfc8693/okta.yml", map[string]string{
			"https://example.okta.com/oauth2/default/v1/token": idp.TokenEndpoint,
			"/run/secrets/obo-client-secret":                   gatewaySecret,
			"http://orders:8080":                               echo.URL,
		}},
		"keycloak.yml": {"rfc8693/keycloak.yml", map[string]string{
			"https://keycloak.example.com/realms/demo/protocol/openid-connect/token": idp.TokenEndpoint,
			"/run/secrets/obo-client-secret":                                         gatewaySecret,
			"http://inventory:8080":                                                  echo.URL,
		}},
		"dex.yml": {"rfc8693/dex.yml", map[string]string{
			"https://dex.example.com/dex/token": dex.TokenEndpoint,
			"/run/secrets/obo-client-secret":    dexSecretFile,
			"http://ledger:8080":                echo.URL,
		}},
		"entra.yml": {"entra/entra.yml", map[string]string{
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token": entra.TokenEndpoint,
			"/run/secrets/obo-client-secret":                                              entraSecretFile,
			"http://reports:8080":                                                         echo.URL,
		}},
		"traefik-metrics.yml": {"monitoring/traefik-metrics.yml", nil},
	}
	for name, f := range secretlessExamples() {
		files[name] = f
	}
	out := map[string]string{}
	for name, f := range files {
		content, err := env.Example(f.example, f.replace)
		if err != nil {
			return nil, err
		}
		out[name] = content
	}
	return out, nil
}

// secretFile writes a client secret where the plugin's clientSecretFile reads it.
func secretFile(name, secret string) string {
	path := filepath.Join(work, name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		panic(err)
	}
	return path
}

// remember registers a token that must never reach Traefik's log.
func remember(token string) string {
	secretsMu.Lock()
	secrets = append(secrets, token)
	secretsMu.Unlock()
	return token
}

func leakedSecrets(log string) []string {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	var leaks []string
	for _, s := range secrets {
		if strings.Contains(log, s) {
			leaks = append(leaks, s)
		}
	}
	return leaks
}

// login signs the provider's administrator in and returns a fresh user token.
func login(t *testing.T) string {
	t.Helper()
	token, err := idp.Login(idp.DemoUser(), env.UserPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return remember(token)
}

// entraUser returns a user token issued by the Entra server for the gateway's app.
func entraUser(t *testing.T, sub string) string {
	t.Helper()
	token, err := entra.UserToken(sub)
	if err != nil {
		t.Fatalf("entra user token: %v", err)
	}
	return remember(token)
}

// response is what a request through Traefik returned.
type response struct {
	status   int
	header   http.Header
	body     string
	received env.Received // what the backend saw, when it was reached
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: sent} // sent: see metrics_test.go

// send makes a GET through Traefik's web entry point with a Host and an Authorization value.
func send(t *testing.T, host, path, authorization string) response {
	t.Helper()
	return sendHeader(t, host, path, "Authorization", authorization)
}

// sendHeader makes a GET through Traefik with a Host and one header (none when value is empty).
func sendHeader(t *testing.T, host, path, name, value string) response {
	t.Helper()
	headers := map[string]string{}
	if value != "" {
		headers[name] = value
	}
	return sendHeaders(t, host, path, headers)
}

// sendHeaders makes a GET through Traefik with a Host and the given headers.
func sendHeaders(t *testing.T, host, path string, headers map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, traefik.WebURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	decodeReceived(t, resp, &r)
	return r
}

// decodeReceived reads the body and, for a 200, what the backend received.
func decodeReceived(t *testing.T, resp *http.Response, r *response) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	r.body = string(b)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r.received); err != nil {
			t.Errorf("backend answer: %v: %s", err, b)
		}
	}
}

// forwardedToken returns the bearer token the backend received, and fails the test if the
// original token reached the backend anywhere (a header, the URL).
func forwardedToken(t *testing.T, r response, original string) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	for name, values := range r.received.Header {
		if strings.Contains(strings.Join(values, " "), original) {
			t.Errorf("the original token reached the backend in header %s", name)
		}
	}
	if strings.Contains(r.received.RequestURI, original) {
		t.Error("the original token reached the backend in the URL")
	}
	auth := r.received.Header["Authorization"]
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("backend Authorization = %q", auth)
	}
	return strings.TrimPrefix(auth[0], "Bearer ")
}

// writeDynamic adds a dynamic configuration file and waits for its router.
func writeDynamic(t *testing.T, name, content, router, status string) {
	t.Helper()
	if err := traefik.WriteDynamic(name, content); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = traefik.RemoveDynamic(name) })
	if _, err := traefik.WaitRouter(router, status, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
