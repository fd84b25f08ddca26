package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// tokenServer is the authorization server of the benchmark: an RFC 8693 token endpoint that
// answers after a fixed delay with a token derived from the subject token, and counts its calls.
type tokenServer struct {
	URL   string
	delay time.Duration
	calls atomic.Int64
}

func startTokenServer(delay time.Duration) (*tokenServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ts := &tokenServer{URL: "http://" + ln.Addr().String() + "/token", delay: delay}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ts.calls.Add(1)
			_ = r.ParseForm()
			time.Sleep(ts.delay)
			sum := sha256.Sum256([]byte(r.PostForm.Get("subject_token")))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"exchanged-%x","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, sum[:16])
		}))
	}()
	return ts, nil
}

// startBackend serves 204 to everything: the benchmark measures the gateway, not the backend.
func startBackend() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}))
	}()
	return "http://" + ln.Addr().String(), nil
}

// benchCase is one router of the benchmark and the tokens its requests carry.
type benchCase struct {
	name     string
	host     string
	tokens   []string // rotated over; empty: no Authorization header
	misses   bool     // every request a new user
	extraPID int      // another process whose CPU counts (the forwardAuth service)
}

type sample struct {
	cpuPerReq time.Duration
	rps       float64
	p50, p99  time.Duration
	errors    int
}

func throughTraefik(rounds, requests, concurrency int, missDelay time.Duration) error {
	backend, err := startBackend()
	if err != nil {
		return err
	}
	fast, err := startTokenServer(0)
	if err != nil {
		return err
	}
	slow, err := startTokenServer(missDelay)
	if err != nil {
		return err
	}
	faAddr, faPID, stopFA, err := startForwardAuthService(fast.URL)
	if err != nil {
		return err
	}
	defer stopFA()
	faSlowAddr, _, stopFASlow, err := startForwardAuthService(slow.URL)
	if err != nil {
		return err
	}
	defer stopFASlow()

	obo := func(endpoint string) string {
		return `oboexchange: {tokenEndpoint: "` + endpoint + `", clientId: gateway, clientSecret: s, audience: api://orders}`
	}
	routers := []struct{ name, middleware string }{
		{"baseline", ""},
		{"nop", "nullplugin: {}"},
		{"obo", obo(fast.URL)},
		{"forwardauth", ""},
		{"misses", obo(slow.URL)},
		{"famisses", ""},
	}
	var b strings.Builder
	b.WriteString("http:\n  routers:\n")
	for _, r := range routers {
		fmt.Fprintf(&b, "    %s:\n      rule: Host(`%s.bench`)\n      entryPoints: [web]\n      service: backend\n", r.name, r.name)
		if r.name != "baseline" {
			fmt.Fprintf(&b, "      middlewares: [%s]\n", r.name)
		}
	}
	b.WriteString("  middlewares:\n")
	for _, r := range routers {
		switch {
		case r.name == "forwardauth":
			fmt.Fprintf(&b, "    forwardauth:\n      forwardAuth:\n        address: http://%s/\n        authResponseHeaders: [Authorization]\n", faAddr)
		case r.name == "famisses":
			fmt.Fprintf(&b, "    famisses:\n      forwardAuth:\n        address: http://%s/\n        authResponseHeaders: [Authorization]\n", faSlowAddr)
		case r.middleware != "":
			fmt.Fprintf(&b, "    %s:\n      plugin:\n        %s\n", r.name, r.middleware)
		}
	}
	fmt.Fprintf(&b, "  services:\n    backend:\n      loadBalancer:\n        servers:\n          - url: %s\n", backend)

	traefik, err := env.StartTraefik(map[string]string{"bench.yml": b.String()}, "nullplugin")
	if err != nil {
		return err
	}
	defer traefik.Stop()
	for _, r := range routers {
		if _, err := traefik.WaitRouter(r.name, "enabled", 60*time.Second); err != nil {
			return err
		}
	}

	one := []string{"Bearer " + userToken(0)}
	users := make([]string, 10000)
	for i := range users {
		users[i] = "Bearer " + userToken(i)
	}
	load := &loader{base: traefik.WebURL, concurrency: concurrency}
	// Warm the caches: every user of the 10,000 once (cache misses), then all of them cached.
	if s := load.run("obo.bench", users, len(users), false); s.errors > 0 {
		return fmt.Errorf("warm-up: %d errors", s.errors)
	}
	for _, name := range []string{"forwardauth.bench"} {
		if s := load.run(name, users, len(users), false); s.errors > 0 {
			return fmt.Errorf("warm-up of %s: %d errors", name, s.errors)
		}
	}

	cases := []benchCase{
		{name: "1. baseline: no middleware", host: "baseline.bench", tokens: one},
		{name: "2. null Yaegi plugin", host: "nop.bench", tokens: one},
		{name: "3. oboexchange, cache hit, 1 user", host: "obo.bench", tokens: one},
		{name: "4. oboexchange, cache hit, 10,000 users", host: "obo.bench", tokens: users},
		{name: "5. forwardAuth to a token-exchange service", host: "forwardauth.bench", tokens: users, extraPID: faPID},
	}
	results := make([][]sample, len(cases))
	var missSamples, directSamples, faMissSamples []sample
	missRequests := requests / 10
	fmt.Printf("\nThrough Traefik %s (%d requests per case and round over %d connections, median of %d interleaved rounds)\n\n", "v3.6.12", requests, concurrency, rounds)
	nextUser := 100000
	slowBefore := slow.calls.Load()
	for r := 0; r < rounds; r++ {
		for i, c := range cases {
			s, err := measure(load, traefik.Pid(), c, requests)
			if err != nil {
				return err
			}
			results[i] = append(results[i], s)
		}
		fresh := make([]string, missRequests)
		for i := range fresh {
			fresh[i] = "Bearer " + userToken(nextUser)
			nextUser++
		}
		s, err := measure(load, traefik.Pid(), benchCase{host: "misses.bench", tokens: fresh, misses: true}, missRequests)
		if err != nil {
			return err
		}
		missSamples = append(missSamples, s)
		direct := &loader{base: strings.TrimSuffix(slow.URL, "/token"), concurrency: concurrency}
		directSamples = append(directSamples, direct.run("", fresh, missRequests, true))
		faFresh := make([]string, missRequests)
		for i := range faFresh {
			faFresh[i] = "Bearer " + userToken(nextUser)
			nextUser++
		}
		faMissSamples = append(faMissSamples, load.run("famisses.bench", faFresh, missRequests, true))
	}

	base := summarize(results[0])
	t := newTable("configuration", "Traefik CPU/request", "x baseline", "requests/s", "p50", "p99", "errors")
	for i, c := range cases {
		s := summarize(results[i])
		t.row(c.name, us(s.cpuPerReq), ratio(s.cpuPerReq, base.cpuPerReq), fmt.Sprintf("%.0f", s.rps), us(s.p50), us(s.p99), strconv.Itoa(s.errors))
	}
	t.print()
	hit := summarize(results[2])
	fa := summarize(results[4])
	fmt.Printf("\noboexchange (cache hit) against forwardAuth: %.2f x the CPU per request (Traefik and service together), p50 %s against %s.\n",
		float64(hit.cpuPerReq)/float64(fa.cpuPerReq), us(hit.p50), us(fa.p50))

	m := summarize(missSamples)
	d := summarize(directSamples)
	fam := summarize(faMissSamples)
	calls := slow.calls.Load() - slowBefore - 2*int64(missRequests*rounds) // less the direct and forwardAuth calls
	added := m.p50 - base.p50 - d.p50
	fmt.Printf("\n6. Cache misses: every request a new user, the authorization server answering after %v (%d requests per round)\n\n", missDelay, missRequests)
	t = newTable("figure", "value")
	t.row("token-endpoint calls", fmt.Sprintf("%d for %d requests", calls, missRequests*rounds))
	t.row("p50 / p99 through Traefik", ms(m.p50)+" / "+ms(m.p99))
	t.row("p50 of the token endpoint called directly", ms(d.p50))
	t.row("p50 of the baseline route", ms(base.p50))
	t.row("added by the plugin at p50 (through Traefik, less both)", us(added))
	t.row("the same for forwardAuth to the token-exchange service", us(fam.p50-base.p50-d.p50))
	t.row("errors", strconv.Itoa(m.errors+fam.errors))
	t.print()
	return nil
}

// measure runs one case and reads the CPU Traefik (and the forwardAuth service) used meanwhile.
func measure(load *loader, pid int, c benchCase, requests int) (sample, error) {
	cpu0, err := cpuTime(pid)
	if err != nil {
		return sample{}, err
	}
	extra0 := time.Duration(0)
	if c.extraPID != 0 {
		if extra0, err = cpuTime(c.extraPID); err != nil {
			return sample{}, err
		}
	}
	s := load.run(c.host, c.tokens, requests, c.misses)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return sample{}, err
	}
	used := cpu1 - cpu0
	if c.extraPID != 0 {
		extra1, err := cpuTime(c.extraPID)
		if err != nil {
			return sample{}, err
		}
		used += extra1 - extra0
	}
	s.cpuPerReq = used / time.Duration(requests)
	return s, nil
}

// summarize takes the median of each figure over the rounds; errors are added up.
func summarize(samples []sample) sample {
	var cpu, rps, p50, p99 []float64
	errors := 0
	for _, s := range samples {
		cpu = append(cpu, float64(s.cpuPerReq))
		rps = append(rps, s.rps)
		p50 = append(p50, float64(s.p50))
		p99 = append(p99, float64(s.p99))
		errors += s.errors
	}
	return sample{cpuPerReq: time.Duration(median(cpu)), rps: median(rps), p50: time.Duration(median(p50)), p99: time.Duration(median(p99)), errors: errors}
}

// cpuTime reads a process's user and system CPU time from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields are counted after its closing parenthesis.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// loader is a closed-loop load generator: concurrency connections, each sending its next request
// when the previous answer is read.
type loader struct {
	base        string
	concurrency int
	client      *http.Client
}

func (l *loader) run(host string, tokens []string, requests int, misses bool) sample {
	if l.client == nil {
		l.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: l.concurrency * 2, DisableCompression: true,
		}}
	}
	var next atomic.Int64
	latencies := make([]time.Duration, requests)
	var errors atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < l.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/orders"
			if host == "" {
				path = "/token" // straight to the token endpoint
			}
			req, _ := http.NewRequest(http.MethodGet, l.base+path, nil)
			if host != "" {
				req.Host = host
			}
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return
				}
				if len(tokens) > 0 {
					req.Header["Authorization"] = []string{tokens[i%len(tokens)]}
				}
				t0 := time.Now()
				resp, err := l.client.Do(req)
				if err != nil {
					errors.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				latencies[i] = time.Since(t0)
				if resp.StatusCode != http.StatusNoContent && (host != "" || resp.StatusCode != http.StatusOK) {
					errors.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	return sample{
		rps:    float64(requests) / elapsed.Seconds(),
		p50:    latencies[requests/2],
		p99:    latencies[requests*99/100],
		errors: int(errors.Load()),
	}
}

// startForwardAuthService runs the forwardAuth alternative as a process of its own (this binary
// with -serve-forwardauth), so that its CPU time can be read apart from Traefik's.
func startForwardAuthService(tokenEndpoint string) (string, int, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, "-serve-forwardauth", addr, "-token-endpoint", tokenEndpoint)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, cmd.Process.Pid, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", 0, nil, fmt.Errorf("the forwardAuth service did not start on %s", addr)
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f us", float64(d)/1e3) }
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}
