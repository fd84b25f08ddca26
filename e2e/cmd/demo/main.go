// Command demo runs oboexchange inside a real Traefik in front of a backend, with a real RFC 8693
// authorization server, signs a user in, sends requests through the gateway and shows what the
// backend received. `make demo` runs it; -exit stops after the walkthrough.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
)

func main() {
	exit := flag.Bool("exit", false, "stop after the walkthrough instead of serving until Ctrl-C")
	flag.Parse()
	if err := run(*exit); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run walks through the demo a phase at a time, then serves until Ctrl-C unless exit is set.
func run(exit bool) error {
	d := &demo{}
	defer d.stop()
	if err := d.start(); err != nil {
		return err
	}
	user, err := d.signIn()
	if err != nil {
		return err
	}
	first, err := d.firstRequest(user)
	if err != nil {
		return err
	}
	if err := d.cachedRequest(user, first); err != nil {
		return err
	}
	if err := d.metrics(); err != nil {
		return err
	}
	if exit {
		fmt.Println("\nDemo complete.")
		return nil
	}
	return d.serve(user)
}

// demo is the running walkthrough: the components it started and a folder for its files.
type demo struct {
	work    string // the client secret file and the user token for curl
	idp     *env.IdP
	echo    *env.Echo
	traefik *env.Traefik
}

// start starts the authorization server, the backend and Traefik, printing where each listens.
func (d *demo) start() error {
	var err error
	if d.work, err = os.MkdirTemp("", "oboexchange-demo-"); err != nil {
		return err
	}
	if err := d.startIdP(); err != nil {
		return err
	}
	if err := d.startBackend(); err != nil {
		return err
	}
	return d.startTraefik()
}

// stop stops what start started, the last started first, and removes the folder.
func (d *demo) stop() {
	if d.traefik != nil {
		d.traefik.Stop()
	}
	if d.echo != nil {
		d.echo.Stop()
	}
	if d.idp != nil {
		d.idp.Stop()
	}
	if d.work != "" {
		_ = os.RemoveAll(d.work)
	}
}

// startIdP starts a real RFC 8693 authorization server, not a stand-in.
func (d *demo) startIdP() error {
	step("Starting the authorization server (zitadel/oidc OpenID Provider, RFC 8693 token exchange)")
	var err error
	if d.idp, err = env.StartIdP(nil); err != nil {
		return err
	}
	fmt.Println("   issuer:", d.idp.Issuer)
	return nil
}

// startBackend starts the echo backend, which shows which credential crossed the gateway.
func (d *demo) startBackend() error {
	step("Starting the backend (echoes the request it receives)")
	var err error
	if d.echo, err = env.StartEcho(); err != nil {
		return err
	}
	fmt.Println("   backend:", d.echo.URL)
	return nil
}

// startTraefik starts Traefik with the Okta example as users copy it, only its URLs and secret
// file changed, so the demo shows the configuration users will write.
func (d *demo) startTraefik() error {
	step("Starting Traefik with the oboexchange plugin (examples/rfc8693/okta.yml)")
	secret := filepath.Join(d.work, "obo-client-secret")
	if err := os.WriteFile(secret, []byte(env.GatewaySecret), 0o600); err != nil {
		return err
	}
	dynamic, err := env.Example("rfc8693/okta.yml", map[string]string{
		"https://example.okta.com/oauth2/default/v1/token": d.idp.TokenEndpoint,
		"/run/secrets/obo-client-secret":                   secret,
		"http://orders:8080":                               d.echo.URL,
	})
	if err != nil {
		return err
	}
	metrics, err := env.Example("monitoring/traefik-metrics.yml", nil)
	if err != nil {
		return err
	}
	if d.traefik, err = env.StartTraefik(map[string]string{"orders.yml": dynamic, "metrics.yml": metrics}); err != nil {
		return err
	}
	for _, router := range []string{"orders", "oboexchange-metrics"} {
		if _, err := d.traefik.WaitRouter(router, "enabled", 60*time.Second); err != nil {
			return err
		}
	}
	fmt.Println("   gateway:", d.traefik.WebURL, "  Traefik's API and metrics:", d.traefik.APIURL)
	fmt.Println("   the plugin's metrics (examples/monitoring/traefik-metrics.yml):", d.traefik.MetricsURL+env.PluginMetricsPath)
	return nil
}

// signIn gets a user token the way a web front end would, so the token the gateway exchanges is
// a real one.
func (d *demo) signIn() (string, error) {
	step("Signing in " + d.idp.DemoUser() + " (authorization code flow with PKCE, as a web front end would)")
	return d.idp.Login(d.idp.DemoUser(), env.UserPassword)
}

// firstRequest shows the exchange: the backend receives another token than the client sent,
// after one call to the token endpoint. It returns the token the backend received.
func (d *demo) firstRequest(user string) (string, error) {
	step("GET /orders/42 through Traefik with the user's token")
	first, took, err := get(d.traefik.WebURL, user)
	if err != nil {
		return "", err
	}
	fmt.Printf("   HTTP 200 in %v; the token endpoint was called %d time(s)\n", took.Round(time.Millisecond), d.idp.Exchanges())
	return first, compare(user, first)
}

// cachedRequest shows the cache: the same request gets the same exchanged token without another
// call to the token endpoint.
func (d *demo) cachedRequest(user, first string) error {
	step("The same request again: answered from the plugin's cache")
	second, took, err := get(d.traefik.WebURL, user)
	if err != nil {
		return err
	}
	same := "the same exchanged token"
	if second != first {
		same = "a different token"
	}
	fmt.Printf("   HTTP 200 in %v with %s; the token endpoint was still called %d time(s)\n", took.Round(time.Millisecond), same, d.idp.Exchanges())
	return nil
}

// metrics reads the plugin's metrics as Prometheus would (its own text parser) and shows the cache
// hit ratio and the token endpoint's latency they give.
func (d *demo) metrics() error {
	step("The plugin's metrics, read from " + d.traefik.MetricsURL + env.PluginMetricsPath)
	ms, err := d.traefik.PluginMetrics()
	if err != nil {
		return err
	}
	orders := map[string]string{"middleware": "orders-obo@file"}
	hits := ms.Sum("oboexchange_requests_total", with(orders, "result", "hit"))
	exchanged := ms.Sum("oboexchange_requests_total", with(orders, "result", "exchanged"))
	if hits+exchanged == 0 {
		return fmt.Errorf("the metrics show no request of orders-obo@file")
	}
	fmt.Printf("   oboexchange_requests_total: %.0f hit, %.0f exchanged: hit ratio %.0f%%\n", hits, exchanged, 100*hits/(hits+exchanged))
	n := ms.Sum("oboexchange_exchange_duration_seconds", orders)
	if n > 0 {
		mean := time.Duration(ms.LatencySum("oboexchange_exchange_duration_seconds", orders) / n * float64(time.Second))
		fmt.Printf("   oboexchange_exchange_duration_seconds: %.0f exchange(s), %v on average at the token endpoint\n", n, mean.Round(100*time.Microsecond))
	}
	return nil
}

// with returns labels plus one more.
func with(labels map[string]string, name, value string) map[string]string {
	out := map[string]string{name: value}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// serve leaves everything running for the reader to try with curl, until Ctrl-C.
func (d *demo) serve(user string) error {
	tokenFile := filepath.Join(d.work, "user-token")
	if err := os.WriteFile(tokenFile, []byte(user), 0o600); err != nil {
		return err
	}
	fmt.Printf("\nRunning. Try it (the user token lives 5 minutes):\n\n  curl -s -H \"Host: api.example.com\" -H \"Authorization: Bearer $(cat %s)\" %s/orders/42\n\n", tokenFile, d.traefik.WebURL)
	fmt.Printf("and read the plugin's metrics:\n\n  curl -s %s%s\n\n", d.traefik.MetricsURL, env.PluginMetricsPath)
	fmt.Println("Press Ctrl-C to stop.")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	return nil
}

func step(s string) { fmt.Println("\n==> " + s) }

// get sends the request and returns the bearer token the backend received.
func get(base, token string) (string, time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/orders/42", nil)
	req.Host = "api.example.com"
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	took := time.Since(start)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", took, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	var received env.Received
	if err := json.Unmarshal(body, &received); err != nil {
		return "", took, err
	}
	auth := strings.Join(received.Header["Authorization"], ",")
	return strings.TrimPrefix(auth, "Bearer "), took, nil
}

// compare prints the claims of both tokens side by side.
func compare(sent, received string) error {
	a, err := env.Claims(sent)
	if err != nil {
		return err
	}
	b, err := env.Claims(received)
	if err != nil {
		return err
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 3, ' ', 0)
	fmt.Fprintln(w, "   claim\ttoken the client sent\ttoken the backend received")
	fmt.Fprintln(w, "   -----\t--------------------\t--------------------------")
	for _, c := range []string{"iss", "sub", "aud", "client_id", "exp"} {
		fmt.Fprintf(w, "   %s\t%s\t%s\n", c, claim(a, c), claim(b, c))
	}
	fmt.Fprintf(w, "   (token)\t%s\t%s\n", fingerprint(sent), fingerprint(received))
	return w.Flush()
}

func claim(claims map[string]interface{}, name string) string {
	v, ok := claims[name]
	if !ok {
		return "-"
	}
	if name == "exp" {
		if f, ok := v.(float64); ok {
			t := time.Unix(int64(f), 0)
			return t.UTC().Format("15:04:05Z") + " (in " + time.Until(t).Round(time.Second).String() + ")"
		}
	}
	if list, ok := v.([]interface{}); ok {
		var s []string
		for _, x := range list {
			s = append(s, fmt.Sprint(x))
		}
		return strings.Join(s, ", ")
	}
	return fmt.Sprint(v)
}

// fingerprint shows a token's first and last characters only.
func fingerprint(token string) string {
	if len(token) < 16 {
		return "..."
	}
	return token[:6] + "..." + token[len(token)-6:]
}
