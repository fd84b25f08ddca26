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

func run(exit bool) error {
	work, err := os.MkdirTemp("", "oboexchange-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("Starting the authorization server (zitadel/oidc OpenID Provider, RFC 8693 token exchange)")
	idp, err := env.StartIdP(nil)
	if err != nil {
		return err
	}
	defer idp.Stop()
	fmt.Println("   issuer:", idp.Issuer)

	step("Starting the backend (echoes the request it receives)")
	echo, err := env.StartEcho()
	if err != nil {
		return err
	}
	defer echo.Stop()
	fmt.Println("   backend:", echo.URL)

	step("Starting Traefik with the oboexchange plugin (examples/rfc8693/okta.yml)")
	secret := filepath.Join(work, "obo-client-secret")
	if err := os.WriteFile(secret, []byte(env.GatewaySecret), 0o600); err != nil {
		return err
	}
	dynamic, err := env.Example("rfc8693/okta.yml", map[string]string{
		"https://example.okta.com/oauth2/default/v1/token": idp.TokenEndpoint,
		"/run/secrets/obo-client-secret":                   secret,
		"http://orders:8080":                               echo.URL,
	})
	if err != nil {
		return err
	}
	traefik, err := env.StartTraefik(map[string]string{"orders.yml": dynamic})
	if err != nil {
		return err
	}
	defer traefik.Stop()
	if _, err := traefik.WaitRouter("orders", "enabled", 60*time.Second); err != nil {
		return err
	}
	fmt.Println("   gateway:", traefik.WebURL, "  API and metrics:", traefik.APIURL)

	step("Signing in " + idp.DemoUser() + " (authorization code flow with PKCE, as a web front end would)")
	user, err := idp.Login(idp.DemoUser(), env.UserPassword)
	if err != nil {
		return err
	}

	step("GET /orders/42 through Traefik with the user's token")
	first, took1, err := get(traefik.WebURL, user)
	if err != nil {
		return err
	}
	fmt.Printf("   HTTP 200 in %v; the token endpoint was called %d time(s)\n", took1.Round(time.Millisecond), idp.Exchanges())
	if err := compare(user, first); err != nil {
		return err
	}

	step("The same request again: answered from the plugin's cache")
	second, took2, err := get(traefik.WebURL, user)
	if err != nil {
		return err
	}
	same := "the same exchanged token"
	if second != first {
		same = "a different token"
	}
	fmt.Printf("   HTTP 200 in %v with %s; the token endpoint was still called %d time(s)\n", took2.Round(time.Millisecond), same, idp.Exchanges())

	if exit {
		fmt.Println("\nDemo complete.")
		return nil
	}
	tokenFile := filepath.Join(work, "user-token")
	if err := os.WriteFile(tokenFile, []byte(user), 0o600); err != nil {
		return err
	}
	fmt.Printf("\nRunning. Try it (the user token lives 5 minutes):\n\n  curl -s -H \"Host: api.example.com\" -H \"Authorization: Bearer $(cat %s)\" %s/orders/42\n\n", tokenFile, traefik.WebURL)
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
