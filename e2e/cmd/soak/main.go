// Command soak puts oboexchange inside Traefik under load and reloads: a burst of concurrent first
// requests of one user, a long run over many users, then configuration reloads under load, then
// three replicas sharing one Redis that is restarted under load (replicas.go). It prints what the
// authorization server saw, the errors, and Traefik's memory and goroutines (for the replicas, the
// largest of the three).
// `make soak` runs it; the README's Reliability section records its figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
	"github.com/oboexchange/oboexchange/e2e/internal/load"
)

func main() {
	users := flag.Int("users", 10000, "distinct users")
	requests := flag.Int("requests", 1000000, "requests of the long run")
	burst := flag.Int("burst", 500, "concurrent first requests of one user")
	delay := flag.Duration("delay", 50*time.Millisecond, "how long the authorization server takes to answer")
	concurrency := flag.Int("concurrency", 64, "connections of the load generator")
	reloads := flag.Int("reloads", 1000, "configuration reloads under load")
	replicaUsers := flag.Int("replica-users", 10000, "distinct users of each part of the replicas phase (0 skips it)")
	replicaRequests := flag.Int("replica-requests", 100000, "requests of each part of the replicas phase")
	only := flag.String("only", "", "run only this phase: replicas")
	flag.Parse()
	var err error
	if *only == "replicas" {
		err = runReplicas(*replicaUsers, *replicaRequests, *concurrency, *delay)
	} else {
		err = run(*users, *requests, *burst, *concurrency, *reloads, *delay, *replicaUsers, *replicaRequests)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// soakRoute is the plugin's router; logLevel debug makes the plugin log each New ("configured"),
// which is how reloads are counted. The cache holds every user of the run (a cache smaller than
// the active users sends the ones it drops back to the authorization server).
func soakRoute(tokenEndpoint, backend string, cacheSize int) string {
	return `http:
  routers:
    soak: {rule: "Host(` + "`soak.test`" + `)", entryPoints: [web], service: backend, middlewares: [soak-obo]}
  middlewares:
    soak-obo:
      plugin:
        oboexchange: {tokenEndpoint: "` + tokenEndpoint + `", clientId: gateway, clientSecret: s, audience: "api://orders", logLevel: debug, cacheMaxEntries: "` + strconv.Itoa(cacheSize) + `"}
  services:
    backend: {loadBalancer: {servers: [{url: "` + backend + `"}], serversTransport: quick}}
  # Idle connections to the backend close after 1 s instead of 90 s, so that the goroutines
  # counted after each phase are not Traefik's connection pool.
  serversTransports:
    quick: {forwardingTimeouts: {idleConnTimeout: 1s}}
`
}

// otherRoute is an unrelated router; rewriting it makes Traefik apply a new configuration.
func otherRoute(i int, backend string) string {
	return "http:\n  routers:\n    other:\n      rule: \"Host(`other-" + strconv.Itoa(i) + ".test`)\"\n      entryPoints: [web]\n      service: other\n" +
		"  services:\n    other: {loadBalancer: {servers: [{url: \"" + backend + "\"}]}}\n"
}

type snapshot struct {
	rssMiB     float64
	heapMiB    float64
	goroutines int
}

// take reads Traefik's memory and goroutines from its Prometheus metrics.
func take(t *env.Traefik) (snapshot, error) {
	rss, err := t.Metric("process_resident_memory_bytes")
	if err != nil {
		return snapshot{}, err
	}
	heap, err := t.Metric("go_memstats_heap_inuse_bytes")
	if err != nil {
		return snapshot{}, err
	}
	g, err := t.Metric("go_goroutines")
	if err != nil {
		return snapshot{}, err
	}
	return snapshot{rssMiB: rss / (1 << 20), heapMiB: heap / (1 << 20), goroutines: int(g)}, nil
}

// settle closes the load generators' idle connections and lets Traefik's goroutines for them
// end before a snapshot.
func settle(t *env.Traefik, loaders ...*load.Loader) (snapshot, error) {
	for _, l := range loaders {
		l.CloseIdle()
	}
	time.Sleep(3 * time.Second)
	return take(t)
}

// run runs the phases in order, each adding its row to the table printed at the end, and compares
// Traefik before and after the reloads.
func run(users, requests, burst, concurrency, reloads int, delay time.Duration, replicaUsers, replicaRequests int) error {
	s := &soak{}
	defer s.stop()
	if err := s.start(users, concurrency, delay); err != nil {
		return err
	}
	if err := s.burst(burst); err != nil {
		return err
	}
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i] = "Bearer " + load.UserToken(i)
	}
	beforeReloads, err := s.longRun(tokens, requests)
	if err != nil {
		return err
	}
	afterReloads, err := s.reloads(tokens, reloads)
	if err != nil {
		return err
	}
	if err := s.idle(); err != nil {
		return err
	}
	if replicaUsers > 0 {
		if err := s.replicas(replicaUsers, replicaRequests, concurrency, delay); err != nil {
			return err
		}
	}
	fmt.Println()
	s.tab.Print()
	fmt.Printf("\nOver the reloads: RSS %+.1f MiB, Go heap %+.1f MiB, goroutines %+d.\n",
		afterReloads.rssMiB-beforeReloads.rssMiB, afterReloads.heapMiB-beforeReloads.heapMiB, afterReloads.goroutines-beforeReloads.goroutines)
	return nil
}

// soak is the running test: Traefik with the plugin, its authorization server and backend, the
// load generator of the long run, and the table each phase adds its row to.
type soak struct {
	t       *env.Traefik
	idp     *load.TokenServer
	backend string
	gen     *load.Loader
	tab     *load.Table
}

// start starts the backend, the authorization server and Traefik, sends a few requests of one
// user so that the first snapshot is of a Traefik that has served the plugin, and records it.
func (s *soak) start(users, concurrency int, delay time.Duration) error {
	var err error
	if s.backend, err = load.StartNoContent(); err != nil {
		return err
	}
	if s.idp, err = load.StartTokenServer(delay); err != nil {
		return err
	}
	if s.t, err = env.StartTraefik(map[string]string{"soak.yml": soakRoute(s.idp.URL, s.backend, 2*users), "other.yml": otherRoute(0, s.backend)}); err != nil {
		return err
	}
	if _, err := s.t.WaitRouter("soak", "enabled", 60*time.Second); err != nil {
		return err
	}
	s.gen = &load.Loader{Base: s.t.WebURL, Concurrency: concurrency}
	if r := s.gen.Run("soak.test", []string{"Bearer warm-up-user"}, 10); r.Errors > 0 {
		return fmt.Errorf("warm-up: %d errors", r.Errors)
	}
	snap, err := settle(s.t, s.gen)
	if err != nil {
		return err
	}
	fmt.Printf("Soak test: Traefik %s with oboexchange (cacheMaxEntries %d); the authorization server answers after %v.\n\n", env.TraefikVersion(), 2*users, delay)
	s.tab = load.NewTable("phase", "requests", "errors", "token-endpoint calls", "expected calls", "Traefik RSS", "Go heap in use", "goroutines", "took")
	s.row("after start", 10, 0, s.idp.Calls(), 1, snap, 0)
	return nil
}

// stop stops Traefik, if start got that far.
func (s *soak) stop() {
	if s.t != nil {
		s.t.Stop()
	}
}

// row adds a phase's figures to the table.
func (s *soak) row(phase string, n, errors int, calls, expected int64, snap snapshot, took time.Duration) {
	s.addRow(phase, n, errors, calls, strconv.FormatInt(expected, 10), snap, took)
}

// addRow is row with the expected calls as text (a range, for the Redis restart).
func (s *soak) addRow(phase string, n, errors int, calls int64, expected string, snap snapshot, took time.Duration) {
	s.tab.Row(phase, strconv.Itoa(n), strconv.Itoa(errors), strconv.FormatInt(calls, 10), expected,
		fmt.Sprintf("%.1f MiB", snap.rssMiB), fmt.Sprintf("%.1f MiB", snap.heapMiB), strconv.Itoa(snap.goroutines), took.Round(time.Second).String())
}

// burst shows single flight under Traefik: n concurrent first requests of one user make one
// exchange.
func (s *soak) burst(n int) error {
	calls0 := s.idp.Calls()
	t0 := time.Now()
	burstGen := &load.Loader{Base: s.t.WebURL, Concurrency: n}
	r := burstGen.Run("soak.test", []string{"Bearer burst-user"}, n)
	snap, err := settle(s.t, burstGen)
	if err != nil {
		return err
	}
	s.row(fmt.Sprintf("burst: %d concurrent first requests of one user", n), n, r.Errors, s.idp.Calls()-calls0, 1, snap, time.Since(t0))
	return nil
}

// longRun shows the cache over many users and requests: users take turns, so every user's first
// request is a miss and the rest hit, one exchange per user, while memory and goroutines stay
// flat. It prints progress after each chunk and returns the snapshot after the run.
func (s *soak) longRun(tokens []string, requests int) (snapshot, error) {
	users := len(tokens)
	calls0 := s.idp.Calls()
	t0 := time.Now()
	errors := 0
	const chunk = 100000
	for done := 0; done < requests; done += chunk {
		n := chunk
		if requests-done < n {
			n = requests - done
		}
		// Each chunk starts where the previous one stopped in the rotation of users.
		rotated := append(append([]string(nil), tokens[done%users:]...), tokens[:done%users]...)
		res := s.gen.Run("soak.test", rotated, n)
		errors += res.Errors
		snap, err := take(s.t)
		if err != nil {
			return snapshot{}, err
		}
		fmt.Printf("  %7d requests: %6.0f req/s, p50 %v, p99 %v, RSS %.1f MiB, heap %.1f MiB, goroutines %d\n",
			done+n, res.RPS, res.P50.Round(time.Microsecond), res.P99.Round(time.Microsecond), snap.rssMiB, snap.heapMiB, snap.goroutines)
	}
	snap, err := settle(s.t, s.gen)
	if err != nil {
		return snapshot{}, err
	}
	s.row(fmt.Sprintf("long run: %d requests over %d users", requests, users), requests, errors, s.idp.Calls()-calls0, int64(users), snap, time.Since(t0))
	return snap, nil
}

// reloads shows the plugin across configuration reloads under load: the cache survives (no
// exchange), nothing fails, and nothing grows. It returns the snapshot after the reloads.
func (s *soak) reloads(tokens []string, reloads int) (snapshot, error) {
	calls0 := s.idp.Calls()
	t0 := time.Now()
	applied, served, failed, err := reloadUnderLoad(s.t, s.gen, tokens, s.backend, reloads)
	if err != nil {
		return snapshot{}, err
	}
	snap, err := settle(s.t, s.gen)
	if err != nil {
		return snapshot{}, err
	}
	s.row(fmt.Sprintf("%d reloads under load (%d applied to the plugin)", reloads, applied), served, failed, s.idp.Calls()-calls0, 0, snap, time.Since(t0))
	return snap, nil
}

// idle shows that nothing is left behind: once the plugin's idle connections to the
// authorization server (at most 32, kept 90 s like net/http's default) have closed too,
// goroutines go back to where they started.
func (s *soak) idle() error {
	time.Sleep(95 * time.Second)
	snap, err := take(s.t)
	if err != nil {
		return err
	}
	s.row("after 95 s without traffic", 0, 0, 0, 0, snap, 95*time.Second)
	return nil
}

// reloadUnderLoad rewrites an unrelated router reloads times, each time waiting until the plugin
// has been created again, while requests of the cached users keep flowing.
func reloadUnderLoad(t *env.Traefik, gen *load.Loader, tokens []string, backend string, reloads int) (applied, served, failed int, err error) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	var n, errs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			r := gen.Run("soak.test", tokens, 5000)
			n.Add(5000)
			errs.Add(int64(r.Errors))
		}
	}()
	log := t.Follow()
	const marker = "middleware=soak-obo@file msg=configured"
	for i := 1; i <= reloads; i++ {
		if err = t.WriteDynamic("other.yml", otherRoute(i, backend)); err != nil {
			break
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(log.Next(), marker) {
			if time.Now().After(deadline) {
				err = fmt.Errorf("reload %d did not reach the plugin within 10s", i)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			break
		}
		applied++
	}
	stop.Store(true)
	wg.Wait()
	return applied, int(n.Load()), int(errs.Load()), err
}
