package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oboexchange/oboexchange/e2e/env"
	"github.com/oboexchange/oboexchange/e2e/internal/load"
)

// The replicas phase: three Traefik processes behind a round-robin "load balancer" (the load
// generator), sharing one Redis with a password, against their own authorization server. First the
// cache fills (one exchange per user, not one per replica), then Redis is stopped for a few seconds
// and restarted empty while new users keep coming (no error; the users a replica meets during the
// outage cost an exchange), then new users again (sharing has resumed).

const soakRedisPassword = "soak-redis-password-0123456789"

// replicaRoute is soakRoute with the shared cache.
func replicaRoute(tokenEndpoint, backend, redisAddr, passwordFile string, cacheSize int) string {
	return strings.Replace(soakRoute(tokenEndpoint, backend, cacheSize), "cacheMaxEntries:",
		`sharedCache: "redis://`+redisAddr+`/0", sharedCachePasswordFile: "`+passwordFile+`", cacheMaxEntries:`, 1)
}

// replicaSet is what the phase runs against.
type replicaSet struct {
	redis    *env.Redis
	idp      *load.TokenServer
	replicas []*env.Traefik
	gen      *load.Loader
	dir      string
}

func (r *replicaSet) stop() {
	for _, t := range r.replicas {
		t.Stop()
	}
	if r.redis != nil {
		r.redis.Close()
	}
	_ = os.RemoveAll(r.dir)
}

// runReplicas runs the replicas phase alone (-only replicas) and prints its table.
func runReplicas(users, requests, concurrency int, delay time.Duration) error {
	s := &soak{tab: load.NewTable("phase", "requests", "errors", "token-endpoint calls", "expected calls", "Traefik RSS", "Go heap in use", "goroutines", "took")}
	var err error
	if s.backend, err = load.StartNoContent(); err != nil {
		return err
	}
	if err := s.replicas(users, requests, concurrency, delay); err != nil {
		return err
	}
	fmt.Println()
	s.tab.Print()
	return nil
}

// replicas runs the phase and adds its three rows to the table.
func (s *soak) replicas(users, requests, concurrency int, delay time.Duration) error {
	if users%3 == 0 {
		users++ // else round-robin would send each user to the same replica every time
	}
	r := &replicaSet{}
	defer r.stop()
	if err := r.start(s.backend, users, concurrency, delay); err != nil {
		return err
	}
	fmt.Printf("\nReplicas: 3 Traefik processes sharing %s, requests round-robin over them.\n", redisVersion(r.redis))

	first := userTokens(3000000, users)
	calls0, t0 := r.idp.Calls(), time.Now()
	res := r.gen.Run("soak.test", first, requests)
	snap, err := r.settle()
	if err != nil {
		return err
	}
	s.addRow(fmt.Sprintf("3 replicas, 1 Redis: %d requests over %d users, round-robin", requests, users), requests, res.Errors,
		r.idp.Calls()-calls0, strconv.Itoa(users), snap, time.Since(t0))
	if err := printRedisMemory(r.redis); err != nil {
		return err
	}

	second := userTokens(4000000, users)
	calls0, t0 = r.idp.Calls(), time.Now()
	errs, err := r.runWithRestart(second, requests)
	if err != nil {
		return err
	}
	if snap, err = r.settle(); err != nil {
		return err
	}
	s.addRow(fmt.Sprintf("Redis stopped 3 s, restarted empty, under load: %d requests over %d new users", requests, users), requests, errs,
		r.idp.Calls()-calls0, fmt.Sprintf("%d to %d", users, 3*users), snap, time.Since(t0))

	third := userTokens(5000000, users)
	calls0, t0 = r.idp.Calls(), time.Now()
	res = r.gen.Run("soak.test", third, requests)
	if snap, err = r.settle(); err != nil {
		return err
	}
	s.addRow(fmt.Sprintf("after the restart: %d requests over %d new users", requests, users), requests, res.Errors,
		r.idp.Calls()-calls0, strconv.Itoa(users), snap, time.Since(t0))
	return nil
}

func (r *replicaSet) start(backend string, users, concurrency int, delay time.Duration) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "oboexchange-soak-"); err != nil {
		return err
	}
	passwordFile := filepath.Join(r.dir, "redis-password")
	if err := os.WriteFile(passwordFile, []byte(soakRedisPassword+"\n"), 0o600); err != nil {
		return err
	}
	if r.redis, err = env.StartRedis([]string{soakRedisPassword}, "--requirepass", soakRedisPassword); err != nil {
		return err
	}
	if r.idp, err = load.StartTokenServer(delay); err != nil {
		return err
	}
	route := replicaRoute(r.idp.URL, backend, r.redis.Addr, passwordFile, 4*users)
	if r.replicas, err = env.StartReplicas(3, map[string]string{"soak.yml": route}); err != nil {
		return err
	}
	var bases []string
	for _, t := range r.replicas {
		if _, err := t.WaitRouter("soak", "enabled", 60*time.Second); err != nil {
			return err
		}
		bases = append(bases, t.WebURL)
	}
	r.gen = &load.Loader{Bases: bases, Concurrency: concurrency}
	return nil
}

// runWithRestart sends the requests; half way through the first round of the users, Redis is
// stopped for 3 s and started again, empty, while the load goes on. The users met during the
// outage are exchanged on each replica they visit until Redis is back.
func (r *replicaSet) runWithRestart(tokens []string, requests int) (int, error) {
	var sent atomic.Int64
	gen := &load.Loader{Bases: r.gen.Bases, Concurrency: r.gen.Concurrency, Sent: &sent}
	defer gen.CloseIdle()
	result := make(chan load.Result)
	go func() { result <- gen.Run("soak.test", tokens, requests) }()
	for sent.Load() < int64(len(tokens)/2) {
		time.Sleep(10 * time.Millisecond)
	}
	r.redis.Stop()
	fmt.Printf("  Redis stopped after %d requests\n", sent.Load())
	time.Sleep(3 * time.Second)
	err := r.redis.Start()
	fmt.Printf("  Redis started again after %d requests\n", sent.Load())
	res := <-result
	return res.Errors, err
}

// settle lets the replicas' goroutines for closed connections end and returns the largest
// figures among the three.
func (r *replicaSet) settle() (snapshot, error) {
	r.gen.CloseIdle()
	time.Sleep(3 * time.Second)
	var most snapshot
	for _, t := range r.replicas {
		snap, err := take(t)
		if err != nil {
			return snapshot{}, err
		}
		if snap.rssMiB > most.rssMiB {
			most.rssMiB = snap.rssMiB
		}
		if snap.heapMiB > most.heapMiB {
			most.heapMiB = snap.heapMiB
		}
		if snap.goroutines > most.goroutines {
			most.goroutines = snap.goroutines
		}
	}
	return most, nil
}

// printRedisMemory prints what the entries cost Redis.
func printRedisMemory(redis *env.Redis) error {
	keys, err := redis.Int("DBSIZE")
	if err != nil {
		return err
	}
	info, err := redis.Do("INFO", "memory")
	if err != nil {
		return err
	}
	var used, empty int64
	for _, line := range strings.Split(info.(string), "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "used_memory_startup:"); ok {
			empty, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if keys > 0 {
		fmt.Printf("  Redis holds %d entries in %.1f MiB (used_memory less used_memory_startup): %d bytes per entry, for a %d-byte token\n",
			keys, float64(used-empty)/(1<<20), (used-empty)/keys, len("exchanged-")+32)
	}
	return nil
}

func redisVersion(redis *env.Redis) string {
	info, err := redis.Do("INFO", "server")
	if err != nil {
		return "Redis"
	}
	for _, line := range strings.Split(info.(string), "\r\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			return "Redis " + v
		}
	}
	return "Redis"
}

// userTokens are n users' Authorization values, numbered from first.
func userTokens(first, n int) []string {
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = "Bearer " + load.UserToken(first+i)
	}
	return tokens
}
