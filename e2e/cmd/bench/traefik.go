package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
	"github.com/oboexchange/oboexchange/e2e/internal/load"
)

// benchCase is one router of the benchmark and the tokens its requests carry.
type benchCase struct {
	name     string
	host     string
	tokens   []string // rotated over
	extraPID int      // another process whose CPU counts (the forwardAuth service)
}

// sample is one case measured in one round.
type sample struct {
	load.Result
	cpuPerReq time.Duration
}

// benchRoutes is the dynamic configuration: one router per case, all to the same backend.
func benchRoutes(backend, fastIdP, slowIdP, faAddr, faSlowAddr, redisAddr string) (string, []string) {
	obo := func(endpoint string) string {
		return `plugin: {oboexchange: {tokenEndpoint: "` + endpoint + `", clientId: gateway, clientSecret: s, audience: "api://orders"}}`
	}
	// No memory cache (cacheMaxEntries 0): every request is a memory miss answered by Redis.
	redisHit := `plugin: {oboexchange: {tokenEndpoint: "` + fastIdP + `", clientId: gateway, clientSecret: s, audience: "api://orders", ` +
		`sharedCache: "redis://` + redisAddr + `/0", cacheMaxEntries: "0"}}`
	fa := func(addr string) string {
		return `forwardAuth: {address: "http://` + addr + `/", authResponseHeaders: [Authorization]}`
	}
	// Router names avoid "null", which YAML reads as no value.
	middlewares := []struct{ name, def string }{
		{"baseline", ""},
		{"nop", "plugin: {nullplugin: {}}"},
		{"obo", obo(fastIdP)},
		{"forwardauth", fa(faAddr)},
		{"misses", obo(slowIdP)},
		{"famisses", fa(faSlowAddr)},
		{"redishit", redisHit},
	}
	var b strings.Builder
	var names []string
	b.WriteString("http:\n  routers:\n")
	for _, m := range middlewares {
		names = append(names, m.name)
		fmt.Fprintf(&b, "    %s: {rule: \"Host(`%s.bench`)\", entryPoints: [web], service: backend", m.name, m.name)
		if m.def != "" {
			fmt.Fprintf(&b, ", middlewares: [%s]", m.name)
		}
		b.WriteString("}\n")
	}
	b.WriteString("  middlewares:\n")
	for _, m := range middlewares {
		if m.def != "" {
			fmt.Fprintf(&b, "    %s: {%s}\n", m.name, m.def)
		}
	}
	fmt.Fprintf(&b, "  services:\n    backend: {loadBalancer: {servers: [{url: \"%s\"}]}}\n", backend)
	return b.String(), names
}

// throughTraefik measures each configuration through one Traefik process, in interleaved rounds.
func throughTraefik(rounds, requests, concurrency int, missDelay time.Duration) error {
	s := &benchStack{}
	defer s.stop()
	if err := s.start(missDelay); err != nil {
		return err
	}
	users := make([]string, 10000)
	for i := range users {
		users[i] = "Bearer " + load.UserToken(i)
	}
	gen := &load.Loader{Base: s.traefik.WebURL, Concurrency: concurrency}
	if err := warmUp(gen, users); err != nil {
		return err
	}
	if err := waitForEntries(s.redis, len(users)); err != nil {
		return err
	}
	cases := hitCases(users, s.faPID)
	fastBefore := s.fast.Calls()
	res, err := s.measureRounds(gen, cases, rounds, requests, concurrency)
	if err != nil {
		return err
	}
	base := summarize(res.hits[0])
	printHits(cases, res.hits, base, rounds, requests, concurrency)
	fmt.Printf("Token-endpoint calls during the cache-hit and Redis-hit rounds: %d (0 expected: every case above is served by a cache).\n", s.fast.Calls()-fastBefore)
	printMisses(res, base, missDelay, rounds)
	return nil
}

// benchStack is what the measurement through Traefik runs against: a backend answering 204, a
// fast and a slow token server, a forwardAuth service in front of each, and Traefik with one
// router per configuration (benchRoutes).
type benchStack struct {
	traefik    *env.Traefik
	redis      *env.Redis
	fast, slow *load.TokenServer
	faPID      int      // the forwardAuth service of the fast token server, whose CPU counts too
	stops      []func() // what to stop, in the order it started
}

// start starts the components and waits until Traefik has enabled every router. What it started
// is stopped by stop, also when it fails half way.
func (s *benchStack) start(missDelay time.Duration) error {
	backend, err := load.StartNoContent()
	if err != nil {
		return err
	}
	if s.fast, err = load.StartTokenServer(0); err != nil {
		return err
	}
	if s.slow, err = load.StartTokenServer(missDelay); err != nil {
		return err
	}
	faAddr, faPID, stopFA, err := startForwardAuthService(s.fast.URL)
	if err != nil {
		return err
	}
	s.faPID = faPID
	s.stops = append(s.stops, stopFA)
	faSlowAddr, _, stopFASlow, err := startForwardAuthService(s.slow.URL)
	if err != nil {
		return err
	}
	s.stops = append(s.stops, stopFASlow)

	if s.redis, err = env.StartRedis(nil); err != nil {
		return err
	}
	s.stops = append(s.stops, s.redis.Close)
	dynamic, routers := benchRoutes(backend, s.fast.URL, s.slow.URL, faAddr, faSlowAddr, s.redis.Addr)
	if s.traefik, err = env.StartTraefik(map[string]string{"bench.yml": dynamic}, "nullplugin"); err != nil {
		return err
	}
	s.stops = append(s.stops, s.traefik.Stop)
	for _, r := range routers {
		if _, err := s.traefik.WaitRouter(r, "enabled", 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// stop stops what start started, the last started first.
func (s *benchStack) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// warmUp sends every user once through the plugin, through the forwardAuth service and through
// the plugin with Redis alone, so that the caches hold every user and the measured rounds see
// cache hits only.
func warmUp(gen *load.Loader, users []string) error {
	for _, host := range []string{"obo.bench", "forwardauth.bench", "redishit.bench"} {
		if r := gen.Run(host, users, len(users)); r.Errors > 0 {
			return fmt.Errorf("warm-up of %s: %d errors", host, r.Errors)
		}
	}
	return nil
}

// hitCases are the configurations compared by CPU per request. The first is the baseline the
// others are divided by; the third and the fifth are the head-to-head of printHits.
func hitCases(users []string, faPID int) []benchCase {
	one := []string{"Bearer " + load.UserToken(0)}
	return []benchCase{
		{name: "1. baseline: no middleware", host: "baseline.bench", tokens: one},
		{name: "2. null Yaegi plugin", host: "nop.bench", tokens: one},
		{name: "3. oboexchange, cache hit, 1 user", host: "obo.bench", tokens: one},
		{name: "4. oboexchange, cache hit, 10,000 users", host: "obo.bench", tokens: users},
		{name: "5. forwardAuth to a token-exchange service", host: "forwardauth.bench", tokens: users, extraPID: faPID},
		{name: "6. oboexchange, Redis hit (memory miss), 10,000 users", host: "redishit.bench", tokens: users},
	}
}

// waitForEntries waits until Redis holds n entries: the plugin writes them in the background.
func waitForEntries(redis *env.Redis, n int) error {
	for i := 0; i < 500; i++ {
		if got, err := redis.Int("DBSIZE"); err == nil && got >= int64(n) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, _ := redis.Int("DBSIZE")
	return fmt.Errorf("after the warm-up, Redis holds %d entries, want %d", got, n)
}

// roundResults is what measureRounds measured, round by round.
type roundResults struct {
	hits                     [][]sample    // by case of hitCases
	misses, direct, faMisses []load.Result // through the plugin, to the token server, through forwardAuth
	missRequests             int           // requests of each cache-miss run
	missCalls                int64         // token-endpoint calls the plugin made in its cache-miss runs
}

// measureRounds runs every case, then the three cache-miss runs, once per round. Interleaving
// spreads a slow moment of the shared machine over all configurations instead of one; each
// cache-miss run sends users never seen before.
func (s *benchStack) measureRounds(gen *load.Loader, cases []benchCase, rounds, requests, concurrency int) (roundResults, error) {
	res := roundResults{hits: make([][]sample, len(cases)), missRequests: requests / 10}
	nextUser := 100000
	fresh := func() []string {
		out := make([]string, res.missRequests)
		for i := range out {
			out[i] = "Bearer " + load.UserToken(nextUser)
			nextUser++
		}
		return out
	}
	slowBefore := s.slow.Calls()
	direct := &load.Loader{Base: strings.TrimSuffix(s.slow.URL, "/token"), Path: "/token", OK: 200, Concurrency: concurrency}
	for r := 0; r < rounds; r++ {
		for i, c := range cases {
			sm, err := measure(gen, s.traefik.Pid(), c, requests)
			if err != nil {
				return res, err
			}
			res.hits[i] = append(res.hits[i], sm)
		}
		res.misses = append(res.misses, gen.Run("misses.bench", fresh(), res.missRequests))
		res.direct = append(res.direct, direct.Run("", fresh(), res.missRequests))
		res.faMisses = append(res.faMisses, gen.Run("famisses.bench", fresh(), res.missRequests))
	}
	// Less the calls of the direct runs and of the forwardAuth service.
	res.missCalls = s.slow.Calls() - slowBefore - 2*int64(res.missRequests*rounds)
	return res, nil
}

// printHits prints what each configuration costs Traefik per request against the baseline, then
// oboexchange against forwardAuth, the design users deploy today.
func printHits(cases []benchCase, hits [][]sample, base sample, rounds, requests, concurrency int) {
	fmt.Printf("\nThrough Traefik %s: %d requests per case and round over %d connections; medians of %d interleaved rounds\n\n",
		env.TraefikVersion(), requests, concurrency, rounds)
	t := load.NewTable("configuration", "Traefik CPU/request", "x baseline", "requests/s", "p50", "p99", "errors")
	for i, c := range cases {
		s := summarize(hits[i])
		t.Row(c.name, us(s.cpuPerReq), ratio(s.cpuPerReq, base.cpuPerReq), fmt.Sprintf("%.0f", s.RPS), us(s.P50), us(s.P99), strconv.Itoa(s.Errors))
	}
	t.Print()
	hit, fa := summarize(hits[2]), summarize(hits[4])
	fmt.Printf("\noboexchange (cache hit, 1 user) against forwardAuth (Traefik's and the service's CPU): %s the CPU per request; p50 %s against %s.\n",
		ratio(hit.cpuPerReq, fa.cpuPerReq)+" x", us(hit.P50), us(fa.P50))
}

// printMisses prints what a cache miss adds to a request: the latency through Traefik less the
// baseline route and less the token endpoint called directly, for the plugin and for forwardAuth.
func printMisses(res roundResults, base sample, missDelay time.Duration, rounds int) {
	m, d, fm := median3(res.misses), median3(res.direct), median3(res.faMisses)
	fmt.Printf("\n7. Cache misses: every request a new user, the authorization server answering after %v (%d requests per round)\n\n", missDelay, res.missRequests)
	t := load.NewTable("figure", "value")
	t.Row("token-endpoint calls", fmt.Sprintf("%d for %d requests", res.missCalls, res.missRequests*rounds))
	t.Row("p50 / p99 through Traefik", ms(m.P50)+" / "+ms(m.P99))
	t.Row("p50 of the token endpoint called directly", ms(d.P50))
	t.Row("p50 of the baseline route", ms(base.P50))
	t.Row("added at p50 by oboexchange (through Traefik, less both)", us(m.P50-base.P50-d.P50))
	t.Row("added at p50 by forwardAuth to the token-exchange service", us(fm.P50-base.P50-d.P50))
	t.Row("errors", strconv.Itoa(m.Errors+fm.Errors))
	t.Print()
}

// measure runs one case and reads the CPU Traefik (and the forwardAuth service) used meanwhile.
func measure(gen *load.Loader, pid int, c benchCase, requests int) (sample, error) {
	pids := []int{pid}
	if c.extraPID != 0 {
		pids = append(pids, c.extraPID)
	}
	before, err := cpuTime(pids...)
	if err != nil {
		return sample{}, err
	}
	r := gen.Run(c.host, c.tokens, requests)
	after, err := cpuTime(pids...)
	if err != nil {
		return sample{}, err
	}
	return sample{Result: r, cpuPerReq: (after - before) / time.Duration(requests)}, nil
}

// summarize takes the median of each figure over the rounds; errors are added up.
func summarize(samples []sample) sample {
	var cpu []float64
	var results []load.Result
	for _, s := range samples {
		cpu = append(cpu, float64(s.cpuPerReq))
		results = append(results, s.Result)
	}
	return sample{Result: median3(results), cpuPerReq: time.Duration(median(cpu))}
}

// median3 is the median throughput and latencies of results; errors are added up.
func median3(results []load.Result) load.Result {
	var rps, p50, p99 []float64
	out := load.Result{}
	for _, r := range results {
		rps = append(rps, r.RPS)
		p50 = append(p50, float64(r.P50))
		p99 = append(p99, float64(r.P99))
		out.Errors += r.Errors
	}
	out.RPS = median(rps)
	out.P50 = time.Duration(median(p50))
	out.P99 = time.Duration(median(p99))
	return out
}

// cpuTime adds up the user and system CPU time of processes, from /proc/<pid>/stat.
func cpuTime(pids ...int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, err
		}
		// The command name (field 2) may hold spaces: count fields after its closing parenthesis.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		const ticksPerSecond = 100 // USER_HZ on Linux
		total += time.Duration(utime+stime) * time.Second / ticksPerSecond
	}
	return total, nil
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
