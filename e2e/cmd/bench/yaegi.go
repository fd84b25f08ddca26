package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
	"github.com/oboexchange/oboexchange/e2e/internal/catalog"
	"github.com/oboexchange/oboexchange/e2e/internal/load"
)

// gopathWithPlugins lays out the plugins' sources the way yaegi expects them.
func gopathWithPlugins() (string, error) {
	gopath, err := os.MkdirTemp("", "oboexchange-bench-gopath-")
	if err != nil {
		return "", err
	}
	if err := env.CopyPlugin(env.RepoRoot(), filepath.Join(gopath, "src", env.PluginModule)); err != nil {
		return "", err
	}
	for _, p := range []string{"nullplugin", "rewriteplugin"} {
		src, module := env.FixturePlugin(p)
		if err := env.CopyPlugin(src, filepath.Join(gopath, "src", module)); err != nil {
			return "", err
		}
	}
	return gopath, nil
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// inProcess measures ServeHTTP of each plugin under Yaegi, in interleaved rounds, and the memory
// of 100,000 cached entries.
func inProcess(rounds, ops int, memEntries int) error {
	gopath, err := gopathWithPlugins()
	if err != nil {
		return err
	}
	defer os.RemoveAll(gopath)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"x-` + r.PostForm.Get("subject_token") + `","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`))
	}))
	defer idp.Close()
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	obo := map[string]interface{}{
		"tokenEndpoint": idp.URL + "/token", "clientId": "gateway", "clientSecret": "s", "audience": "api://orders",
	}

	null, err := catalog.Load(gopath, "github.com/oboexchange/nullplugin", "nullplugin", nil, next, os.Environ())
	if err != nil {
		return err
	}
	rewrite, err := catalog.Load(gopath, "github.com/oboexchange/rewriteplugin", "rewriteplugin", nil, next, os.Environ())
	if err != nil {
		return err
	}
	oboHandler, err := catalog.Load(gopath, env.PluginModule, "oboexchange", obo, next, os.Environ())
	if err != nil {
		return err
	}
	const users = 10000
	tokens := make([]string, users)
	for u := range tokens {
		tokens[u] = "Bearer " + load.UserToken(u)
		if status := serve(oboHandler, tokens[u]); status != 0 {
			return fmt.Errorf("warm-up exchange for user %d: status %d", u, status)
		}
	}

	cases := []struct {
		name    string
		handler http.Handler
		tokens  []string
	}{
		{"null plugin (only calls next)", null, tokens[:1]},
		{"rewrite plugin (reads and sets Authorization)", rewrite, tokens[:1]},
		{"oboexchange, cache hit, one user", oboHandler, tokens[:1]},
		{"oboexchange, cache hit, 10,000 users", oboHandler, tokens},
	}
	redisHandler, stopRedis, err := redisHitPlugin(gopath, idp.URL, next, tokens)
	if err != nil {
		return err
	}
	defer stopRedis()
	cases = append(cases, struct {
		name    string
		handler http.Handler
		tokens  []string
	}{"oboexchange, Redis hit (memory miss), 10,000 users", redisHandler, tokens})
	perOp := make([][]float64, len(cases))
	allocs := make([][]float64, len(cases))
	for r := 0; r < rounds; r++ {
		for c, tc := range cases {
			ns, a := timeServe(tc.handler, tc.tokens, ops)
			perOp[c] = append(perOp[c], ns)
			allocs[c] = append(allocs[c], a)
		}
	}
	nullNs := median(perOp[0])
	fmt.Printf("\nServeHTTP under Yaegi %s, in process, loaded as Traefik loads plugins (median of %d interleaved rounds of %d calls)\n\n", "v0.16.1", rounds, ops)
	t := load.NewTable("case", "us/request", "over null plugin", "allocs/request")
	for c, tc := range cases {
		m := median(perOp[c])
		t.Row(tc.name, fmt.Sprintf("%.1f", m/1000), fmt.Sprintf("%+.1f us", (m-nullNs)/1000), fmt.Sprintf("%.0f", median(allocs[c])))
	}
	t.Print()

	missHandler, err := catalog.Load(gopath, env.PluginModule, "oboexchange", map[string]interface{}{
		"tokenEndpoint": idp.URL + "/token", "clientId": "gateway-miss", "clientSecret": "s", "audience": "api://orders",
		"cacheMaxEntries": "20000",
	}, next, os.Environ())
	if err != nil {
		return err
	}
	if err := missCost(missHandler, idp.URL, rounds); err != nil {
		return err
	}
	if err := missCostByMethod(gopath, rounds); err != nil {
		return err
	}
	if memEntries > 0 {
		return cacheMemory(gopath, idp.URL, next, memEntries)
	}
	return nil
}

// serve runs one request and returns 0 when it reached the next handler, else the status.
func serve(h http.Handler, authorization string) int {
	req := httptest.NewRequest(http.MethodGet, "http://gateway.test/orders", nil)
	req.Header.Set("Authorization", authorization)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return rec.Code
	}
	return 0
}

// timeServe calls the handler ops times, rotating over tokens, and returns nanoseconds and heap
// allocations per call. The request is reused; its Authorization header is reset each time, as
// the plugin replaces it.
func timeServe(h http.Handler, tokens []string, ops int) (float64, float64) {
	req := httptest.NewRequest(http.MethodGet, "http://gateway.test/orders", nil)
	w := &discard{h: http.Header{}}
	values := make([][]string, len(tokens))
	for i, tok := range tokens {
		values[i] = []string{tok}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := 0; i < ops; i++ {
		req.Header["Authorization"] = values[i%len(values)]
		h.ServeHTTP(w, req)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return float64(elapsed.Nanoseconds()) / float64(ops), float64(after.Mallocs-before.Mallocs) / float64(ops)
}

// cacheMemory fills a cache of n entries through ServeHTTP under Yaegi and reports the heap it
// takes per entry, less the exchanged token itself.
func cacheMemory(gopath, idpURL string, next http.Handler, n int) error {
	h, err := catalog.Load(gopath, env.PluginModule, "oboexchange", map[string]interface{}{
		"tokenEndpoint": idpURL + "/token", "clientId": "gateway-mem", "clientSecret": "s", "audience": "api://mem",
		"cacheMaxEntries": strconv.Itoa(n),
	}, next, os.Environ())
	if err != nil {
		return err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tokenBytes := 0
	for u := 0; u < n; u++ {
		tok := load.UserToken(1000000 + u)
		tokenBytes += len("Bearer x-" + tok)
		if status := serve(h, "Bearer "+tok); status != 0 {
			return fmt.Errorf("exchange %d: status %d", u, status)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	fmt.Printf("\nCache memory under Yaegi: %d entries take %.1f MiB of heap: %.0f bytes per entry, of which %.0f are the exchanged token's header value, so %.0f bytes beyond the token\n",
		n, float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), perEntry, float64(tokenBytes)/float64(n), perEntry-float64(tokenBytes)/float64(n))
	runtime.KeepAlive(h)
	return nil
}

// missCost measures a cache miss under Yaegi against an instant token endpoint, beside the same
// token-endpoint round trip made by compiled code: the difference is what the plugin adds. Its
// cache is large enough that no eviction happens.
func missCost(h http.Handler, idpURL string, rounds int) error {
	const ops = 1000
	client := &http.Client{}
	var plugin, native []float64
	next := 2000000
	for r := 0; r < rounds; r++ {
		start := time.Now()
		for i := 0; i < ops; i++ {
			if status := serve(h, "Bearer "+load.UserToken(next)); status != 0 {
				return fmt.Errorf("miss: status %d", status)
			}
			next++
		}
		plugin = append(plugin, float64(time.Since(start).Nanoseconds())/ops)
		start = time.Now()
		for i := 0; i < ops; i++ {
			resp, err := client.PostForm(idpURL+"/token", map[string][]string{"subject_token": {load.UserToken(next)}})
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			next++
		}
		native = append(native, float64(time.Since(start).Nanoseconds())/ops)
	}
	fmt.Printf("\nCache miss under Yaegi against an instant token endpoint: %.0f us per request; the same round trip from compiled code: %.0f us; added by the plugin: %.0f us (medians of %d rounds of %d)\n",
		median(plugin)/1000, median(native)/1000, (median(plugin)-median(native))/1000, rounds, ops)
	return nil
}

// redisHitPlugin loads oboexchange with a shared cache and no memory cache (cacheMaxEntries 0), and
// sends every user once, so that each later request is a memory miss answered by Redis: the
// plugin's work plus one loopback round trip to Redis.
func redisHitPlugin(gopath, idpURL string, next http.Handler, tokens []string) (http.Handler, func(), error) {
	redis, err := env.StartRedis(nil)
	if err != nil {
		return nil, nil, err
	}
	h, err := catalog.Load(gopath, env.PluginModule, "oboexchange", map[string]interface{}{
		"tokenEndpoint": idpURL + "/token", "clientId": "gateway-redis", "clientSecret": "s", "audience": "api://orders",
		"sharedCache": "redis://" + redis.Addr + "/0", "cacheMaxEntries": "0",
	}, next, os.Environ())
	if err == nil {
		for u, tok := range tokens {
			if status := serve(h, tok); status != 0 {
				err = fmt.Errorf("warm-up exchange for user %d through Redis: status %d", u, status)
				break
			}
		}
	}
	if err == nil {
		err = waitForEntries(redis, len(tokens))
	}
	if err != nil {
		redis.Close()
		return nil, nil, err
	}
	return h, redis.Close, nil
}
