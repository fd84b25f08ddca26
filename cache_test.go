package oboexchange

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"testing"
	"time"
)

var testNow = time.Unix(1900000000, 0)

func TestLifetime(t *testing.T) {
	margin := 30 * time.Second
	tests := []struct {
		name       string
		expiresIn  time.Duration
		newExp     time.Time
		subjectExp time.Time
		want       time.Duration // from testNow; 0 means not cached
	}{
		{name: "expires_in less the margin", expiresIn: time.Hour, want: time.Hour - margin},
		{name: "exactly twice the margin", expiresIn: 60 * time.Second, want: 30 * time.Second},
		{name: "short-lived: half its life", expiresIn: 40 * time.Second, want: 20 * time.Second},
		{name: "capped by the subject token", expiresIn: time.Hour, subjectExp: testNow.Add(10 * time.Minute), want: 10 * time.Minute},
		{name: "subject expires later", expiresIn: time.Hour, subjectExp: testNow.Add(2 * time.Hour), want: time.Hour - margin},
		{name: "subject already expired", expiresIn: time.Hour, subjectExp: testNow.Add(-time.Second), want: 0},
		{name: "new token exp without expires_in", newExp: testNow.Add(10 * time.Minute), want: 10*time.Minute - margin},
		{name: "expires_in wins over exp", expiresIn: time.Minute * 5, newExp: testNow.Add(time.Hour), want: 5*time.Minute - margin},
		{name: "neither: not cached", want: 0},
		{name: "new token already expired", newExp: testNow.Add(-time.Minute), want: 0},
	}
	for _, tc := range tests {
		until, ok := lifetime(testNow, tc.expiresIn, tc.newExp, tc.subjectExp, margin)
		if tc.want == 0 {
			if ok {
				t.Errorf("%s: cached until +%v, want not cached", tc.name, until.Sub(testNow))
			}
			continue
		}
		if !ok || until.Sub(testNow) != tc.want {
			t.Errorf("%s: until +%v (ok %v), want +%v", tc.name, until.Sub(testNow), ok, tc.want)
		}
	}
}

func key(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// in returns an expiry d from now on the cache's clock.
func in(d time.Duration) time.Duration { return time.Since(epoch) + d }

func TestCacheBoundEvictsExpiredFirst(t *testing.T) {
	c := newCache(3)
	c.put(key("a"), &entry{header: "a", expires: in(time.Minute)})
	c.put(key("b"), &entry{header: "b", expires: in(-time.Second)}) // expired
	c.put(key("c"), &entry{header: "c", expires: in(time.Hour)})

	// Full: the expired entry goes, the live ones stay.
	c.put(key("d"), &entry{header: "d", expires: in(time.Hour)})
	for _, k := range []string{"a", "c", "d"} {
		if c.get(key(k)) == nil {
			t.Errorf("%s was evicted, want the expired b evicted", k)
		}
	}
	if c.len() != 3 {
		t.Errorf("len = %d, want 3", c.len())
	}

	// Replacing an entry of a full cache evicts nothing.
	c.put(key("d"), &entry{header: "d2", expires: in(time.Hour)})
	if c.len() != 3 || c.get(key("a")) == nil || c.get(key("c")) == nil || c.get(key("d")).header != "d2" {
		t.Errorf("replacing d changed the other entries")
	}

	// An entry that expires while in the cache goes before live ones.
	c.put(key("a"), &entry{header: "a", expires: in(50 * time.Millisecond)})
	time.Sleep(60 * time.Millisecond)
	c.put(key("g"), &entry{header: "g", expires: in(time.Hour)})
	if c.get(key("c")) == nil || c.get(key("d")) == nil || c.get(key("g")) == nil || c.len() != 3 {
		t.Errorf("a live entry was evicted instead of the one that expired")
	}

	// Nothing expired: one live entry goes, never the one just stored.
	for i := 0; i < 20; i++ {
		k := key("new" + itoa(i))
		c.put(k, &entry{header: "n", expires: in(time.Hour)})
		if c.get(k) == nil || c.len() != 3 {
			t.Fatalf("insert %d: stored %v, len %d; want stored and 3", i, c.get(k) != nil, c.len())
		}
	}
}

// With shards, the bound holds across them and no entry is evicted before the bound is reached.
func TestCacheBoundSharded(t *testing.T) {
	c := newCache(10000)
	if len(c.shards) != shardCount {
		t.Fatalf("shards = %d", len(c.shards))
	}
	for i := 0; i < 10000; i++ {
		c.put(key(itoa(i)), &entry{expires: in(time.Hour)})
	}
	for i := 0; i < 10000; i++ {
		if c.get(key(itoa(i))) == nil {
			t.Fatalf("entry %d evicted before the cache was full", i)
		}
	}
	for i := 10000; i < 30000; i++ {
		c.put(key(itoa(i)), &entry{expires: in(time.Hour)})
	}
	n := 0
	for _, s := range c.shards {
		n += len(s.m)
	}
	if n != 10000 || c.len() != 10000 {
		t.Errorf("entries = %d (count %d), want 10000", n, c.len())
	}
}

func TestCacheGetIgnoresExpired(t *testing.T) {
	c := newCache(10)
	c.put(key("a"), &entry{expires: in(-time.Nanosecond)})
	c.put(key("b"), &entry{expires: in(time.Minute)})
	if c.get(key("a")) != nil {
		t.Error("an expired entry is served")
	}
	if c.get(key("b")) == nil {
		t.Error("a live entry is not served")
	}
}

func TestCacheHit(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	for i := 0; i < 5; i++ {
		wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	}
	if ts.count() != 1 || b.count() != 5 {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want 1 and 5", ts.count(), b.count())
	}
	// Another user is another exchange.
	wantStatus(t, call(h, "Bearer "+opaqueToken(7)), http.StatusNoContent)
	if ts.count() != 2 {
		t.Errorf("token endpoint calls = %d, want 2", ts.count())
	}
}

func TestCacheExpiry(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 1)) // lives 1 s, under twice the margin: cached 0.5 s
	h, _ := newTestMiddleware(t, testConfig(ts.url()))

	call(h, "Bearer "+userToken)
	call(h, "Bearer "+userToken)
	if ts.count() != 1 {
		t.Fatalf("calls = %d before expiry, want 1", ts.count())
	}
	time.Sleep(600 * time.Millisecond)
	wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
	if ts.count() != 2 {
		t.Errorf("calls = %d after expiry, want 2", ts.count())
	}
}

func TestNotCachedWithoutLifetime(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		answer(w, 200, `{"access_token":"`+exchangedToken+`","token_type":"Bearer"}`)
	})
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	call(h, "Bearer "+userToken)
	call(h, "Bearer "+userToken)
	if ts.count() != 2 {
		t.Errorf("calls = %d, want 2: a token without expires_in or exp is not cached", ts.count())
	}
}

func TestCachedByNewTokenExp(t *testing.T) {
	captureLogs(t)
	newToken := testJWT(map[string]interface{}{"aud": "backend", "exp": time.Now().Add(time.Hour).Unix()})
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		answer(w, 200, `{"access_token":"`+newToken+`","token_type":"Bearer"}`)
	})
	h, b := newTestMiddleware(t, testConfig(ts.url()))
	call(h, "Bearer "+userToken)
	call(h, "Bearer "+userToken)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1: the new token's exp gives its lifetime", ts.count())
	}
	if b.header.Get("Authorization") != "Bearer "+newToken {
		t.Error("backend did not get the new token")
	}
}

// An expired user token is never answered from the cache: the entry ends at the subject's exp.
func TestSubjectExpiryCapsCache(t *testing.T) {
	captureLogs(t)
	subject := testJWT(map[string]interface{}{"sub": "alice", "exp": time.Now().Add(1500 * time.Millisecond).Unix()})
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	wantStatus(t, call(h, "Bearer "+subject), http.StatusNoContent)
	time.Sleep(1600 * time.Millisecond)
	rec := call(h, "Bearer "+subject)

	wantStatus(t, rec, http.StatusUnauthorized)
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	if ts.count() != 1 || b.count() != 1 {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want 1 and 1", ts.count(), b.count())
	}
}

func TestCacheDisabled(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := testConfig(ts.url())
	c.CacheMaxEntries = 0
	h, _ := newTestMiddleware(t, c)
	call(h, "Bearer "+userToken)
	call(h, "Bearer "+userToken)
	if ts.count() != 2 {
		t.Errorf("calls = %d, want 2 with cacheMaxEntries 0", ts.count())
	}
}

// Concurrent first requests for one user cause exactly one call to the token endpoint.
func TestSingleFlight(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		issue(exchangedToken, 3600)(w, r)
	})
	h, b := newTestMiddleware(t, testConfig(ts.url()))

	const n = 50
	codes := make(chan int, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes <- call(h, "Bearer "+userToken).Code
		}()
	}
	close(start)
	wg.Wait()
	close(codes)

	for code := range codes {
		if code != http.StatusNoContent {
			t.Errorf("status %d, want 204", code)
		}
	}
	if ts.count() != 1 || b.count() != n {
		t.Errorf("token endpoint calls = %d, backend calls = %d; want 1 and %d", ts.count(), b.count(), n)
	}
}

// Traefik calls New per router and on every reload: identical configurations share one cache,
// different ones never do.
func TestCacheSharedAcrossNew(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	first, _ := newTestMiddleware(t, testConfig(ts.url()))
	second, b := newTestMiddleware(t, testConfig(ts.url()))

	call(first, "Bearer "+userToken)
	call(second, "Bearer "+userToken)
	if ts.count() != 1 {
		t.Errorf("calls = %d, want 1: identical configurations share the cache", ts.count())
	}
	if b.header.Get("Authorization") != "Bearer x-"+userToken {
		t.Errorf("second instance forwarded %q", b.header.Get("Authorization"))
	}

	variants := []func(c *Config){
		func(c *Config) { c.Audience = []string{"other"} },
		func(c *Config) { c.Scopes = []string{"admin"} },
		func(c *Config) { c.ClientID = "other-client" },
		func(c *Config) { c.ClientSecret = "other-secret" },
		func(c *Config) { c.RequestedTokenType = "urn:ietf:params:oauth:token-type:jwt" },
		func(c *Config) { c.ExtraParams = map[string]string{"tenant": "x"} },
	}
	for i, modify := range variants {
		c := testConfig(ts.url())
		modify(c)
		h, _ := newTestMiddleware(t, c)
		call(h, "Bearer "+userToken)
		if ts.count() != 2+i {
			t.Errorf("variant %d: calls = %d, want %d: a different configuration must not share entries", i, ts.count(), 2+i)
		}
	}
}

// A reload cancels the old context before the new middlewares are created: the exchanger (and
// its cache) must survive that gap, and an exchanger no one takes up again is dropped later.
func TestExchangerSurvivesReload(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ctx, cancel := context.WithCancel(context.Background())
	old, err := New(ctx, &backend{}, testConfig(ts.url()), "r1")
	if err != nil {
		t.Fatal(err)
	}
	call(old, "Bearer "+userToken)
	x := old.(*Middleware).x

	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })
	reloaded, _ := newTestMiddleware(t, testConfig(ts.url()))
	call(reloaded, "Bearer "+userToken)

	if reloaded.(*Middleware).x != x || ts.count() != 1 {
		t.Errorf("after reload: same exchanger %v, calls %d; want true and 1", reloaded.(*Middleware).x == x, ts.count())
	}
}

func TestIdleExchangersAreDropped(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, &backend{}, testConfig(ts.url()), "r1")
	if err != nil {
		t.Fatal(err)
	}
	x := h.(*Middleware).x
	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })

	registryMu.Lock()
	x.idleSince = time.Now().Add(-idleGrace - time.Second)
	registryMu.Unlock()
	c := testConfig(ts.url())
	c.Audience = []string{"unrelated"}
	newTestMiddleware(t, c) // any New sweeps

	registryMu.Lock()
	_, kept := registry[x.fingerprint]
	registryMu.Unlock()
	if kept {
		t.Error("an exchanger idle for longer than idleGrace is still registered")
	}
}

func TestIdleExchangersBounded(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	for i := 0; i < maxIdle+5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		c := testConfig(ts.url())
		c.Audience = []string{"reload-" + itoa(i)}
		if _, err := New(ctx, &backend{}, c, "r"); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitFor(t, func() bool { return idleCount() >= maxIdle })
	newTestMiddleware(t, testConfig(ts.url()))
	if n := idleCount(); n > maxIdle {
		t.Errorf("idle exchangers = %d, want at most %d", n, maxIdle)
	}
}

func refs(x *exchanger) int {
	registryMu.Lock()
	defer registryMu.Unlock()
	return x.refs
}

func idleCount() int {
	registryMu.Lock()
	defer registryMu.Unlock()
	n := 0
	for _, x := range registry {
		if x.refs == 0 {
			n++
		}
	}
	return n
}

// waitFor polls a condition that another goroutine makes true (context.AfterFunc runs its
// function in a goroutine of its own).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached within 1s")
}
