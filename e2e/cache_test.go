package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Repeated requests of one user reach the token endpoint once.
func TestCacheThroughTraefik(t *testing.T) {
	user := login(t)
	before := idp.Exchanges()
	var first string
	for i := 0; i < 10; i++ {
		forwarded := forwardedToken(t, send(t, "api.example.com", "/orders", "Bearer "+user), user)
		remember(forwarded)
		if i == 0 {
			first = forwarded
		} else if forwarded != first {
			t.Fatal("a cached request forwarded another token")
		}
	}
	if got := idp.Exchanges() - before; got != 1 {
		t.Errorf("token-exchange calls = %d for 10 requests, want 1", got)
	}
}

// Concurrent first requests of one user reach the token endpoint once.
func TestSingleFlightThroughTraefik(t *testing.T) {
	idp.SetDelay(300 * time.Millisecond)
	defer idp.SetDelay(0)
	user := login(t)
	before := idp.Exchanges()

	const n = 30
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, traefik.WebURL+"/orders", nil)
			req.Host = "api.example.com"
			req.Header.Set("Authorization", "Bearer "+user)
			resp, err := client.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("status %d, want 200", s)
		}
	}
	if got := idp.Exchanges() - before; got != 1 {
		t.Errorf("token-exchange calls = %d for %d concurrent first requests, want 1", got, n)
	}
}

// A reload re-creates the middleware (Traefik calls New again) but the cache survives it, and 50
// reloads do not grow Traefik's goroutines.
func TestReloadKeepsCacheAndGoroutines(t *testing.T) {
	writeDynamic(t, "reload.yml", route("reload", "reload.test", gatewayOptions("api://reload", "logLevel", "debug")), "reload", "enabled")
	user := login(t)
	forwardedToken(t, send(t, "reload.test", "/", "Bearer "+user), user)
	exchanges := idp.Exchanges()
	created := strings.Count(traefik.Log(), "middleware=reload-obo@file msg=configured")

	// Touch an unrelated router: Traefik applies a new configuration and re-creates every
	// middleware.
	writeDynamic(t, "unrelated.yml", route("unrelated", "unrelated.test", map[string]string{
		"tokenEndpoint": idp.TokenEndpoint, "clientId": "gateway", "clientSecret": "x", "audience": "u",
	}), "unrelated", "enabled")
	waitFor(t, func() bool {
		return strings.Count(traefik.Log(), "middleware=reload-obo@file msg=configured") > created
	})
	forwardedToken(t, send(t, "reload.test", "/", "Bearer "+user), user)
	if idp.Exchanges() != exchanges {
		t.Errorf("token-exchange calls went from %d to %d after a reload: the cache did not survive", exchanges, idp.Exchanges())
	}

	baseline := goroutines(t)
	for i := 0; i < 50; i++ {
		if err := traefik.WriteDynamic("unrelated.yml", route("unrelated", "unrelated.test", map[string]string{
			"tokenEndpoint": idp.TokenEndpoint, "clientId": "gateway", "clientSecret": "x", "audience": fmt.Sprint("u", i),
		})); err != nil {
			t.Fatal(err)
		}
		// Traefik throttles provider events; a request per round lets each configuration land.
		time.Sleep(150 * time.Millisecond)
		forwardedToken(t, send(t, "reload.test", "/", "Bearer "+user), user)
	}
	reloads := strings.Count(traefik.Log(), "middleware=reload-obo@file msg=configured") - created
	if reloads < 10 {
		t.Errorf("only %d reloads reached the plugin", reloads)
	}
	// A leak would add at least one goroutine per reload; a few come and go with connections and
	// timers, so the count is given 15 s to come back near the baseline.
	after := goroutines(t)
	for deadline := time.Now().Add(15 * time.Second); after > baseline+10 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		after = goroutines(t)
	}
	t.Logf("%d configurations applied; goroutines %d before, %d after", reloads, baseline, after)
	if after > baseline+10 {
		t.Errorf("goroutines grew from %d to %d over %d reloads", baseline, after, reloads)
	}
	if idp.Exchanges() != exchanges {
		t.Errorf("token-exchange calls went from %d to %d over the reloads", exchanges, idp.Exchanges())
	}
}

func goroutines(t *testing.T) int {
	t.Helper()
	n, err := traefik.Metric("go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("condition not reached in 30s")
}

// A reload releases every cache before Traefik re-creates the middlewares. With many
// configurations (24 audiences, as a cluster with a route per API has) none may be dropped on the
// way: 20 reloads, and no user goes back to the authorization server.
func TestManyConfigurationsSurviveReloads(t *testing.T) {
	const configs, reloads = 24, 20
	writeDynamic(t, "fleet.yml", fleet(configs), fmt.Sprint("fleet-", configs-1), "enabled")
	user := login(t)
	sendAll := func() {
		for i := 0; i < configs; i++ {
			forwardedToken(t, send(t, fmt.Sprintf("fleet-%d.test", i), "/", "Bearer "+user), user)
		}
	}
	sendAll()
	exchanges := idp.Exchanges()
	created := func() int { return strings.Count(traefik.Log(), "middleware=fleet-0-obo@file msg=configured") }

	for r := 0; r < reloads; r++ {
		before := created()
		writeDynamic(t, "fleet-trigger.yml", route("fleettrigger", "fleet-trigger.test", map[string]string{
			"tokenEndpoint": idp.TokenEndpoint, "clientId": "gateway", "clientSecret": "x", "audience": fmt.Sprint("trigger-", r),
		}), "fleettrigger", "enabled")
		waitFor(t, func() bool { return created() > before })
		sendAll()
	}
	if got := idp.Exchanges() - exchanges; got != 0 {
		t.Errorf("%d token exchanges over %d reloads of %d configurations, want 0: caches were dropped", got, reloads, configs)
	}
}

// fleet is a dynamic configuration of n routers fleet-<i>.test, each with a middleware of its own
// audience, logging at debug level so that the suite can count their creations.
func fleet(n int) string {
	var routers, middlewares strings.Builder
	for i := 0; i < n; i++ {
		name := fmt.Sprint("fleet-", i)
		routers.WriteString("    " + name + ":\n      rule: Host(`" + name + ".test`)\n      entryPoints: [web]\n")
		routers.WriteString("      middlewares: [" + name + "-obo]\n      service: fleet\n")
		middlewares.WriteString("    " + name + "-obo:\n      plugin:\n        oboexchange:\n")
		for k, v := range gatewayOptions("api://fleet-"+fmt.Sprint(i), "logLevel", "debug") {
			middlewares.WriteString("          " + k + ": \"" + v + "\"\n")
		}
	}
	return "http:\n  routers:\n" + routers.String() + "  middlewares:\n" + middlewares.String() +
		"  services:\n    fleet:\n      loadBalancer:\n        servers:\n          - url: " + echo.URL + "\n"
}
