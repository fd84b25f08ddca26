package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// countingEndpoint is the authorization server of the replica and throttling tests: an RFC 8693
// token endpoint answering each subject token with a token of its own, counting the calls per
// subject and recording when they came. It can be told to throttle (429 with Retry-After).
type countingEndpoint struct {
	srv        *httptest.Server
	throttle   atomic.Bool
	retryAfter string
	mu         sync.Mutex
	calls      map[string]int
	times      []time.Time
}

func newCountingEndpoint(t *testing.T, retryAfter string) *countingEndpoint {
	t.Helper()
	e := &countingEndpoint{calls: map[string]int{}, retryAfter: retryAfter}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		subject := r.PostForm.Get("subject_token")
		e.mu.Lock()
		e.calls[subject]++
		e.times = append(e.times, time.Now())
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if e.throttle.Load() {
			w.Header().Set("Retry-After", e.retryAfter)
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"too_many_requests","error_description":"slow down"}`))
			return
		}
		fmt.Fprintf(w, `{"access_token":"%s","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, exchangedFor(subject))
	}))
	t.Cleanup(func() { e.srv.Close() })
	return e
}

func (e *countingEndpoint) url() string { return e.srv.URL + "/token" }

// callsFor counts the calls made for the given subject tokens.
func (e *countingEndpoint) callsFor(users []string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, u := range users {
		n += e.calls[u]
	}
	return n
}

// callTimes returns when the calls came.
func (e *countingEndpoint) callTimes() []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Time(nil), e.times...)
}

// exchangedFor is the token the counting endpoint issues for a subject token.
func exchangedFor(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return "exchanged-" + hex.EncodeToString(sum[:16])
}

// newUsers returns n fresh opaque user tokens, registered as secrets.
func newUsers(n int, label string) []string {
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	users := make([]string, n)
	for i := range users {
		users[i] = remember(fmt.Sprintf("%s-%04d-%x", label, i, nonce))
		remember(exchangedFor(users[i]))
	}
	return users
}

// visit is one request of a user to a replica.
type visit struct {
	to   *env.Traefik
	user string
}

// sendAll sends the visits over 8 connections and returns the requests whose answer was not a
// 200 with the user's own exchanged token.
func sendAll(t *testing.T, host string, visits []visit) int {
	t.Helper()
	var failed atomic.Int64
	next := make(chan visit)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range next {
				req, _ := http.NewRequest(http.MethodGet, v.to.WebURL+"/", nil)
				req.Host = host
				req.Header.Set("Authorization", "Bearer "+v.user)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				var got env.Received
				_ = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || strings.Join(got.Header["Authorization"], ",") != "Bearer "+exchangedFor(v.user) {
					failed.Add(1)
				}
			}
		}()
	}
	for _, v := range visits {
		next <- v
	}
	close(next)
	wg.Wait()
	return int(failed.Load())
}

// sharedCacheExample is what the suite takes from examples/kubernetes/shared-cache.yaml: the
// Valkey arguments (with the Secret's password in place of the variable), the ACL user's
// password, and the Middleware's plugin options.
type sharedCacheExample struct {
	serverArgs []string
	password   string
	options    map[string]interface{}
}

func loadSharedCacheExample(t *testing.T) sharedCacheExample {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(env.RepoRoot(), "examples/kubernetes/shared-cache.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ex sharedCacheExample
	var args []string
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var d struct {
			Kind       string            `yaml:"kind"`
			StringData map[string]string `yaml:"stringData"`
			Spec       struct {
				Plugin   map[string]map[string]interface{} `yaml:"plugin"`
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `yaml:"args"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&d); err != nil {
			break
		}
		switch d.Kind {
		case "Secret":
			ex.password = d.StringData["password"]
		case "Deployment":
			args = d.Spec.Template.Spec.Containers[0].Args
		case "Middleware":
			ex.options = d.Spec.Plugin["oboexchange"]
		}
	}
	if ex.password == "" || len(args) == 0 || ex.options == nil {
		t.Fatal("the example lacks the Secret, the Valkey Deployment or the Middleware")
	}
	for _, a := range args {
		ex.serverArgs = append(ex.serverArgs, strings.ReplaceAll(a, "$(OBO_CACHE_PASSWORD)", ex.password))
	}
	remember(ex.password)
	return ex
}

// jsonRoute is a dynamic configuration with one router, a middleware with the given plugin
// options (JSON-typed, as the Kubernetes CRD delivers them) and the echo backend.
func jsonRoute(name, host string, options map[string]interface{}) string {
	dynamic := map[string]interface{}{"http": map[string]interface{}{
		"routers": map[string]interface{}{name: map[string]interface{}{
			"rule": "Host(`" + host + "`)", "entryPoints": []string{"web"}, "middlewares": []string{name + "-obo"}, "service": name,
		}},
		"middlewares": map[string]interface{}{name + "-obo": map[string]interface{}{"plugin": map[string]interface{}{"oboexchange": options}}},
		"services": map[string]interface{}{name: map[string]interface{}{"loadBalancer": map[string]interface{}{
			"servers": []interface{}{map[string]interface{}{"url": echo.URL}},
		}}},
	}}
	b, _ := json.Marshal(dynamic)
	return string(b)
}

// Three Traefik processes share one real Valkey/Redis, configured as the Kubernetes example
// configures it (an ACL user confined to the plugin's keys, its password in a file):
//   - 600 users each visit two replicas: one exchange per user, not one per replica;
//   - Redis stopped: every user visits the third replica, 200 new users come: no error, and
//     exchanges only for the users a replica has not seen;
//   - Redis restarted (empty): 200 new users visit all three replicas: sharing resumes;
//   - no key or value in Redis holds any token, subject or exchanged.
func TestReplicasShareRedis(t *testing.T) {
	ex := loadSharedCacheExample(t)
	admin := []string{"suite-admin", "suite-admin-password"}
	redis, err := env.StartRedis(admin, append(ex.serverArgs, "--user", admin[0], "on", ">"+admin[1], "~*", "&*", "+@all")...)
	if err != nil {
		t.Fatal(err)
	}
	defer redis.Close()
	endpoint := newCountingEndpoint(t, "2")

	options := ex.options
	options["tokenEndpoint"] = endpoint.url()
	options["clientSecret"] = env.GatewaySecret
	options["sharedCache"] = strings.Replace(options["sharedCache"].(string), "valkey.traefik.svc.cluster.local:6379", redis.Addr, 1)
	options["sharedCachePasswordFile"] = secretFile("shared-cache-password", ex.password)
	// The counts below are exact: on this shared machine a 50ms round trip could miss when three
	// Traefik processes, Redis and the load compete for two cores, and a miss costs an exchange.
	options["sharedCacheTimeout"] = "500ms"
	replicas, err := env.StartReplicas(3, map[string]string{"replicas.yml": jsonRoute("replicas", "replicas.test", options)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, r := range replicas {
			if leaks := leakedSecrets(r.Log()); len(leaks) > 0 {
				t.Errorf("a replica's log holds %d token(s) or secret(s)", len(leaks))
			}
			r.Stop()
		}
	}()
	for _, r := range replicas {
		if _, err := r.WaitRouter("replicas", "enabled", 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	users := newUsers(1000, "replica-user")
	seen, unseen, late := users[:600], users[600:800], users[800:]
	visitOf := func(list []string, shift int) []visit {
		var out []visit
		for i, u := range list {
			out = append(out, visit{replicas[(i+shift)%3], u})
		}
		return out
	}

	// 1. Redis up: each user visits two replicas.
	usedBefore, _ := redisMemory(t, redis)
	if failed := sendAll(t, "replicas.test", visitOf(seen, 0)) + sendAll(t, "replicas.test", visitOf(seen, 1)); failed > 0 {
		t.Fatalf("%d failed requests with Redis up", failed)
	}
	if calls := endpoint.callsFor(seen); calls != len(seen) {
		t.Errorf("Redis up: %d token-endpoint calls for %d users on two replicas each, want %d", calls, len(seen), len(seen))
	}
	checkRedisHoldsNoToken(t, redis, users, len(seen))
	logRedisMemory(t, redis, usedBefore, len(seen))

	// 2. Redis stopped: the seen users visit the replica that has not seen them, and new users come.
	redis.Stop()
	visits := append(append(visitOf(seen, 2), visitOf(seen, 0)...), visitOf(unseen, 0)...)
	if failed := sendAll(t, "replicas.test", visits); failed > 0 {
		t.Errorf("%d failed requests with Redis stopped, want 0", failed)
	}
	if calls := endpoint.callsFor(seen); calls != 2*len(seen) {
		t.Errorf("Redis stopped: %d calls in all for the seen users, want %d (one more each, on the replica that had not seen them)", calls, 2*len(seen))
	}
	if calls := endpoint.callsFor(unseen); calls != len(unseen) {
		t.Errorf("Redis stopped: %d calls for %d new users, want one each", calls, len(unseen))
	}

	// 3. Redis restarted, empty: once each replica has tried it again, sharing resumes.
	followers := make([]*env.LogFollower, len(replicas))
	for i, r := range replicas {
		followers[i] = r.Follow()
	}
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	waitForSharedCache(t, replicas, followers)
	if failed := sendAll(t, "replicas.test", append(append(visitOf(late, 0), visitOf(late, 1)...), visitOf(late, 2)...)); failed > 0 {
		t.Errorf("%d failed requests after the restart", failed)
	}
	if calls := endpoint.callsFor(late); calls != len(late) {
		t.Errorf("Redis restarted: %d calls for %d users on three replicas each, want %d", calls, len(late), len(late))
	}
	checkRedisHoldsNoToken(t, redis, users, -1)
	for i, r := range replicas {
		if n := strings.Count(r.Log(), "shared cache unavailable"); n != 1 {
			t.Errorf("replica %d logged the outage %d times, want once", i, n)
		}
	}
}

// waitForSharedCache sends a new user to each replica until its log says the shared cache is
// reachable again (the breaker tries Redis again after its pause).
func waitForSharedCache(t *testing.T, replicas []*env.Traefik, followers []*env.LogFollower) {
	t.Helper()
	back := make([]bool, len(replicas))
	deadline := time.Now().Add(20 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		done := true
		for i, r := range replicas {
			if back[i] || strings.Contains(followers[i].Next(), "shared cache reachable again") {
				back[i] = true
				continue
			}
			done = false
			user := newUsers(1, fmt.Sprint("warm-up-", i, "-", n))[0]
			sendAll(t, "replicas.test", []visit{{r, user}})
		}
		if done {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("the replicas did not use Redis again after its restart: %v", back)
}

// checkRedisHoldsNoToken scans every key and value of Redis for the users' tokens and the tokens
// exchanged for them; keys, when not negative, is how many entries there must be.
func checkRedisHoldsNoToken(t *testing.T, redis *env.Redis, users []string, keys int) {
	t.Helper()
	entries, err := redis.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if keys >= 0 && len(entries) != keys {
		t.Errorf("Redis holds %d entries, want %d", len(entries), keys)
	}
	var all strings.Builder
	for k, v := range entries {
		if !strings.HasPrefix(k, "oboexchange:v1:") {
			t.Errorf("a key without the plugin's prefix: %q", k)
		}
		all.WriteString(k + "\n" + v + "\n")
	}
	scan := all.String()
	for _, u := range users {
		for _, token := range []string{u, exchangedFor(u), strings.TrimPrefix(exchangedFor(u), "exchanged-")} {
			if strings.Contains(scan, token) {
				t.Fatalf("Redis holds a token: %q", token)
			}
		}
	}
	t.Logf("scanned %d Redis entries (%d bytes): no subject or exchanged token among them", len(entries), len(scan))
}

// redisMemory reads used_memory from INFO.
func redisMemory(t *testing.T, redis *env.Redis) (int64, error) {
	t.Helper()
	v, err := redis.Do("INFO", "memory")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(v.(string), "\r\n") {
		if rest, ok := strings.CutPrefix(line, "used_memory:"); ok {
			fmt.Sscan(rest, &n)
		}
	}
	return n, nil
}

// logRedisMemory logs what one entry costs Redis, for the README's sizing.
func logRedisMemory(t *testing.T, redis *env.Redis, usedBefore int64, n int) {
	t.Helper()
	used, _ := redisMemory(t, redis)
	entries, _ := redis.Entries()
	var usage, keyBytes, valueBytes int64
	for k, v := range entries {
		m, err := redis.Int("MEMORY", "USAGE", k)
		if err != nil {
			t.Fatal(err)
		}
		usage += m
		keyBytes += int64(len(k))
		valueBytes += int64(len(v))
	}
	if n == 0 || len(entries) == 0 {
		return
	}
	token := len("Bearer " + exchangedFor("x"))
	t.Logf("Redis memory: %d entries; MEMORY USAGE %d bytes per entry (key %d bytes, value %d bytes for a %d-byte header); used_memory grew by %d bytes per entry",
		len(entries), usage/int64(len(entries)), keyBytes/int64(len(entries)), valueBytes/int64(len(entries)), token, (used-usedBefore)/int64(n))
}

// A token endpoint that throttles a flood of new users (429, Retry-After: 2): at most one call per
// cool-down reaches it, the new users get 503 with Retry-After, a cached user keeps getting 200,
// and once the server stops throttling the next probe lets everyone through again.
func TestThrottlingThroughTraefik(t *testing.T) {
	endpoint := newCountingEndpoint(t, "2")
	writeDynamic(t, "throttled.yml", route("throttled", "throttled.test", map[string]string{
		"tokenEndpoint": endpoint.url(), "clientId": "gateway", "clientSecret": "x", "audience": "api://throttled",
	}), "throttled", "enabled")
	cached := newUsers(1, "throttle-cached")[0]
	if failed := sendAll(t, "throttled.test", []visit{{traefik, cached}}); failed > 0 {
		t.Fatal("the cached user's first request failed")
	}
	endpoint.throttle.Store(true)
	flood := newUsers(1200, "throttle-flood")
	first := send(t, "throttled.test", "/", "Bearer "+flood[0])
	if first.status != http.StatusServiceUnavailable || first.header.Get("Retry-After") != "2" {
		t.Fatalf("the throttled request: status %d, Retry-After %q; want 503 and 2", first.status, first.header.Get("Retry-After"))
	}
	callsBefore := len(endpoint.callTimes())

	var mu sync.Mutex
	statuses := map[string]int{} // status and Retry-After
	var next atomic.Int64
	next.Store(1)
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				i := int(next.Add(1))
				if i >= len(flood) {
					return
				}
				r := send(t, "throttled.test", "/", "Bearer "+flood[i])
				mu.Lock()
				statuses[fmt.Sprint(r.status, " Retry-After:", r.header.Get("Retry-After"))]++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	cachedOK := 0
	for time.Now().Before(stop) {
		if r := send(t, "throttled.test", "/", "Bearer "+cached); r.status == http.StatusOK {
			cachedOK++
		} else {
			t.Errorf("the cached user got %d during the throttling", r.status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()

	times := endpoint.callTimes()
	t.Logf("flood of %d new users over 5s: answers %v; %d calls reached the token endpoint after the first 429; the cached user got 200 %d times",
		next.Load()-1, statuses, len(times)-callsBefore, cachedOK)
	for k := range statuses {
		if k != "503 Retry-After:1" && k != "503 Retry-After:2" {
			t.Errorf("a new user got %q, want 503 with Retry-After 1 or 2", k)
		}
	}
	if got := len(times) - callsBefore; got > 3 {
		t.Errorf("%d calls reached the token endpoint in 5s of 2s cool-downs, want at most 3 (one probe per cool-down)", got)
	}
	for i := callsBefore; i < len(times); i++ { // from the first 429 on
		if gap := times[i].Sub(times[i-1]); gap < 1900*time.Millisecond {
			t.Errorf("calls %d and %d came %v apart, within one 2s cool-down", i-1, i, gap)
		}
	}

	endpoint.throttle.Store(false)
	time.Sleep(2100 * time.Millisecond)
	rest := newUsers(5, "throttle-after")
	if failed := sendAll(t, "throttled.test", []visit{{traefik, rest[0]}}); failed > 0 {
		t.Error("the probe after the throttling failed")
	}
	var after []visit
	for _, u := range rest[1:] {
		after = append(after, visit{traefik, u})
	}
	if failed := sendAll(t, "throttled.test", after); failed > 0 {
		t.Errorf("%d new users failed once the server stopped throttling", failed)
	}
}
