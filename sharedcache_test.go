package oboexchange

import (
	"bufio"
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose/josetest"
	"github.com/oboexchange/oboexchange/internal/resp"
	"github.com/oboexchange/oboexchange/internal/resp/resptest"
)

func TestSharedCacheConfig(t *testing.T) {
	dir := t.TempDir()
	passwordFile := writeFile(t, dir, "password", []byte("redis-password-1\n"))
	remember("redis-password-1")
	caFile := writeFile(t, dir, "ca.pem", josetest.NewCA(t, "ca").PEM)
	tests := []struct {
		name    string
		modify  func(c *Config)
		want    string // the error; empty when accepted
		wantURL string // the URL as the settings hold it, when accepted
	}{
		{name: "not set", modify: func(c *Config) {}},
		{name: "host alone", modify: func(c *Config) { c.SharedCache = "redis://valkey.traefik" }, wantURL: "redis://valkey.traefik:6379/0"},
		{name: "port and database", modify: func(c *Config) { c.SharedCache = " redis://10.0.0.5:6380/3 " }, wantURL: "redis://10.0.0.5:6380/3"},
		{name: "IPv6", modify: func(c *Config) { c.SharedCache = "redis://[::1]/1" }, wantURL: "redis://[::1]:6379/1"},
		{name: "ACL user with password file", modify: func(c *Config) {
			c.SharedCache = "REDISS://gateway@valkey:6380/0"
			c.SharedCachePasswordFile = passwordFile
			c.SharedCacheCAFile = caFile
		}, wantURL: "rediss://gateway@valkey:6380/0"},
		{name: "password in the URL", modify: func(c *Config) { c.SharedCache = "redis://gateway:hunter2-secret@valkey/0" }, want: "sharedCache: remove the password from the URL"},
		{name: "password alone in the URL", modify: func(c *Config) { c.SharedCache = "redis://:hunter2-secret@valkey/0" }, want: "sharedCache: remove the password from the URL"},
		{name: "ACL user without password file", modify: func(c *Config) { c.SharedCache = "redis://gateway@valkey/0" }, want: "sharedCache: the URL names an ACL user; set sharedCachePasswordFile"},
		{name: "other scheme", modify: func(c *Config) { c.SharedCache = "memcached://cache:11211" }, want: `sharedCache: scheme "memcached" is not supported`},
		{name: "no host", modify: func(c *Config) { c.SharedCache = "valkey:6379" }, want: "sharedCache: not a Redis URL"},
		{name: "bad database", modify: func(c *Config) { c.SharedCache = "redis://valkey/cache" }, want: `sharedCache: "/cache" is not a database number`},
		{name: "query", modify: func(c *Config) { c.SharedCache = "redis://valkey/0?timeout=1s" }, want: "sharedCache: remove the query"},
		{name: "password file without sharedCache", modify: func(c *Config) { c.SharedCachePasswordFile = passwordFile }, want: "sharedCachePasswordFile and sharedCacheCAFile need sharedCache"},
		{name: "CA file without TLS", modify: func(c *Config) { c.SharedCache = "redis://valkey/0"; c.SharedCacheCAFile = caFile }, want: "sharedCacheCAFile is the CA bundle for TLS"},
		{name: "missing password file", modify: func(c *Config) {
			c.SharedCache = "redis://valkey/0"
			c.SharedCachePasswordFile = "/nonexistent/password"
		}, want: "sharedCachePasswordFile:"},
		{name: "CA file without a certificate", modify: func(c *Config) {
			c.SharedCache = "rediss://valkey/0"
			c.SharedCacheCAFile = passwordFile
		}, want: "sharedCacheCAFile: " + passwordFile + ": no PEM certificate found"},
		{name: "bad timeout", modify: func(c *Config) { c.SharedCacheTimeout = "50" }, want: `sharedCacheTimeout: "50" is not a duration`},
		{name: "zero timeout", modify: func(c *Config) { c.SharedCacheTimeout = "0s" }, want: `sharedCacheTimeout: "0s" must be above zero`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("https://idp.example.com/oauth2/token")
			tc.modify(c)
			h, err := New(context.Background(), http.NotFoundHandler(), c, "test")
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error = %v, want %q", err, tc.want)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("the error quotes the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			s, _ := parseConfig(c)
			if got := redisURL(s.sharedCache); got != tc.wantURL {
				t.Errorf("sharedCache = %q, want %q", got, tc.wantURL)
			}
			if s.sharedCacheTimeout != 50*time.Millisecond {
				t.Errorf("sharedCacheTimeout = %v, want the 50ms default", s.sharedCacheTimeout)
			}
			if (h.(*Middleware).x.shared != nil) != (tc.wantURL != "") {
				t.Errorf("shared tier present = %v", h.(*Middleware).x.shared != nil)
			}
		})
	}
}

// The shared cache options are part of the fingerprint: instances with another Redis do not share
// an exchanger.
func TestSharedCacheInFingerprint(t *testing.T) {
	a := testConfig("https://idp.example.com/token")
	b := testConfig("https://idp.example.com/token")
	b.SharedCache = "redis://valkey/0"
	sa, _ := parseConfig(a)
	sb, _ := parseConfig(b)
	if fingerprint(sa) == fingerprint(sb) {
		t.Error("a configuration with a shared cache has the fingerprint of one without")
	}
}

// The Redis key and the sealing key come from the token and the fingerprint; the key shows
// neither, and each changes with either.
func TestSharedCacheKeys(t *testing.T) {
	s := &sharedCache{fingerprint: []byte("fingerprint-a")}
	other := &sharedCache{fingerprint: []byte("fingerprint-b")}
	k1, seal1 := s.keys(userToken)
	k2, _ := s.keys(userToken + "x")
	k3, _ := other.keys(userToken)
	again, sealAgain := s.keys(userToken)
	if !strings.HasPrefix(k1, sharedKeyPrefix) || len(k1) != len(sharedKeyPrefix)+64 {
		t.Errorf("key %q, want the prefix and 64 hex digits", k1)
	}
	if k1 != again || string(seal1) != string(sealAgain) {
		t.Error("the keys are not stable")
	}
	if k1 == k2 || k1 == k3 {
		t.Error("another token or another configuration gives the same key")
	}
	if len(seal1) != 32 || strings.Contains(k1, hex.EncodeToString(seal1)) {
		t.Error("the sealing key is not 32 bytes, or the lookup key shows it")
	}
	if strings.Contains(k1, userToken) || strings.Contains(k1, tokenHash(userToken)) {
		t.Error("the key shows the token or the hash the logs use")
	}
}

// A value opens only under its own key, with its own sealing key, unaltered.
func TestSealedValues(t *testing.T) {
	s := &sharedCache{fingerprint: []byte("fingerprint-a")}
	other := &sharedCache{fingerprint: []byte("fingerprint-b")}
	key, seal := s.keys(userToken)
	otherKey, otherSeal := s.keys(opaqueToken(1))
	_, otherConfigSeal := other.keys(userToken)
	expires := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	value, err := sealValue(seal, key, "Bearer "+exchangedToken, expires)
	if err != nil {
		t.Fatal(err)
	}
	flipped := func(i int) []byte {
		v := append([]byte(nil), value...)
		v[i] ^= 1
		return v
	}
	bad, _ := sealValue(seal, key, "Bearer a\r\nX-Evil: 1", expires)
	empty, _ := sealValue(seal, key, "Bearer ", expires)
	tests := []struct {
		name  string
		seal  []byte
		key   string
		value []byte
		ok    bool
	}{
		{"as written", seal, key, value, true},
		{"moved to another user's key", otherSeal, otherKey, value, false},
		{"under another key, with the right sealing key", seal, otherKey, value, false},
		{"written by another configuration", otherConfigSeal, key, value, false},
		{"version flipped", seal, key, flipped(0), false},
		{"nonce flipped", seal, key, flipped(5), false},
		{"ciphertext flipped", seal, key, flipped(1 + gcmNonceSize + 3), false},
		{"tag flipped", seal, key, flipped(len(value) - 1), false},
		{"truncated", seal, key, value[:len(value)-1], false},
		{"too short", seal, key, value[:10], false},
		{"empty", seal, key, nil, false},
		{"header that cannot go into a request", seal, key, bad, false},
		{"empty token", seal, key, empty, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			header, exp, ok := openValue(tc.seal, tc.key, tc.value)
			if ok != tc.ok {
				t.Fatalf("opened = %v, want %v", ok, tc.ok)
			}
			if ok && (header != "Bearer "+exchangedToken || !exp.Equal(expires)) {
				t.Errorf("opened %q expiring %v", header, exp)
			}
		})
	}
	if strings.Contains(string(value), exchangedToken) {
		t.Error("the sealed value shows the token")
	}
	again, _ := sealValue(seal, key, "Bearer "+exchangedToken, expires)
	if string(again) == string(value) {
		t.Error("two seals of the same token are equal: the nonce is not random")
	}
}

// Two replicas sharing one Redis: a user exchanged by one is served by the other without a call,
// from memory afterwards, for what is left of the entry's lifetime; Redis holds neither token.
func TestSharedCacheAcrossReplicas(t *testing.T) {
	logs := captureLogs(t)
	r := resptest.Start(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	c := sharedConfig(ts.url(), r.URL())
	a, _ := replica(t, c)
	b, backendB := replica(t, c)
	user := opaqueToken(1)

	wantStatus(t, call(a, "Bearer "+user), http.StatusNoContent)
	resptest.WaitForKeys(t, r.Addr(), 1)
	wantStatus(t, call(b, "Bearer "+user), http.StatusNoContent)
	wantStatus(t, call(b, "Bearer "+user), http.StatusNoContent)

	if ts.count() != 1 {
		t.Errorf("token endpoint calls = %d, want 1 for two replicas", ts.count())
	}
	if got := backendB.header.Get("Authorization"); got != "Bearer x-"+user {
		t.Errorf("replica b forwarded %q", got)
	}
	ea, eb := a.cache.get(key(user)), b.cache.get(key(user))
	if ea == nil || eb == nil {
		t.Fatal("an entry is missing from memory")
	}
	if d := ea.expires - eb.expires; d > time.Second || d < -time.Second {
		t.Errorf("replica b keeps the entry %v apart from replica a, want the same expiry", d)
	}
	for k, v := range resptest.Entries(t, r.Addr()) {
		for _, secret := range []string{user, "x-" + user, tokenHash(user)} {
			if strings.Contains(k, secret) || strings.Contains(string(v), secret) {
				t.Errorf("Redis holds %q in %q", secret, k)
			}
		}
	}
	if !strings.Contains(logs.String(), "token exchanged") {
		t.Error("no exchange logged")
	}
}

// A Redis hit lives in memory for the rest of the entry's lifetime, never beyond the subject
// token's exp; an entry whose sealed expiry has passed is a miss.
func TestSharedCacheHitLifetime(t *testing.T) {
	captureLogs(t)
	r := resptest.Start(t)
	ts := newTokenServer(t, issuePerSubject(60)) // cached for 30s: the margin takes the rest
	c := sharedConfig(ts.url(), r.URL())
	tests := []struct {
		name       string
		subjectExp time.Duration // of the reading replica's request; none when zero
		wait       time.Duration
		want       time.Duration // 0: a miss
	}{
		{name: "rest of the lifetime", want: 30 * time.Second},
		{name: "capped by the subject token", subjectExp: 10 * time.Second, want: 10 * time.Second},
		{name: "read later", wait: 1500 * time.Millisecond, want: 28500 * time.Millisecond},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := replica(t, c)
			b, _ := replica(t, c)
			user := opaqueToken(100 + i)
			wantStatus(t, call(a, "Bearer "+user), http.StatusNoContent)
			resptest.WaitForKeys(t, r.Addr(), i+1)
			time.Sleep(tc.wait)
			var exp time.Time
			if tc.subjectExp > 0 {
				exp = time.Now().Add(tc.subjectExp)
			}
			e := b.x.shared.lookup(user, exp, b.log)
			if e == nil {
				t.Fatal("a miss")
			}
			if left := e.expires - time.Since(epoch); left > tc.want || left < tc.want-time.Second {
				t.Errorf("kept for %v, want %v", left, tc.want)
			}
		})
	}
	s := &sharedCache{fingerprint: []byte("x")}
	k, seal := s.keys(userToken)
	expired, _ := sealValue(seal, k, "Bearer x", time.Now().Add(-time.Second))
	admin := resp.New(resp.Options{Addr: r.Addr(), Timeout: time.Second})
	t.Cleanup(func() { admin.Close() })
	if err := admin.Set(k, expired, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.client = admin
	if e := s.lookup(userToken, time.Time{}, newLogger("t", levelOff)); e != nil {
		t.Error("an entry whose sealed expiry has passed was served")
	}
}

// Someone with full access to Redis cannot serve one user's token to another: a value moved to
// another user's key, altered, or written under another configuration is a miss, and the user is
// exchanged for their own token.
func TestSharedCacheTamperedValues(t *testing.T) {
	logs := captureLogs(t)
	r := resptest.Start(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	c := sharedConfig(ts.url(), r.URL())
	other := sharedConfig(ts.url(), r.URL())
	other.Audience = []string{"another-backend"}
	tests := []struct {
		name   string
		tamper func(victimKey, attackerKey, otherConfigKey string, entries map[string][]byte)
	}{
		{"the attacker's value under the victim's key", func(victim, attacker, _ string, e map[string][]byte) {
			resptest.Do(t, r.Addr(), nil, "SET", victim, string(e[attacker]))
		}},
		{"a flipped byte", func(victim, _, _ string, e map[string][]byte) {
			v := append([]byte(nil), e[victim]...)
			v[len(v)/2] ^= 0x20
			resptest.Do(t, r.Addr(), nil, "SET", victim, string(v))
		}},
		{"a value written by another configuration", func(victim, _, otherConfig string, e map[string][]byte) {
			resptest.Do(t, r.Addr(), nil, "SET", victim, string(e[otherConfig]))
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resptest.Do(t, r.Addr(), nil, "FLUSHALL")
			a, _ := replica(t, c)
			b, backendB := replica(t, c)
			o, _ := replica(t, other)
			victim, attacker := opaqueToken(200+i), opaqueToken(300+i)
			wantStatus(t, call(a, "Bearer "+victim), http.StatusNoContent)
			wantStatus(t, call(a, "Bearer "+attacker), http.StatusNoContent)
			wantStatus(t, call(o, "Bearer "+victim), http.StatusNoContent)
			resptest.WaitForKeys(t, r.Addr(), 3)
			victimKey, _ := a.x.shared.keys(victim)
			attackerKey, _ := a.x.shared.keys(attacker)
			otherKey, _ := o.x.shared.keys(victim)
			tc.tamper(victimKey, attackerKey, otherKey, resptest.Entries(t, r.Addr()))
			calls := ts.count()

			wantStatus(t, call(b, "Bearer "+victim), http.StatusNoContent)
			if got := backendB.header.Get("Authorization"); got != "Bearer x-"+victim {
				t.Errorf("the victim's request was forwarded with %q", got)
			}
			if ts.count() != calls+1 {
				t.Errorf("token endpoint calls = %d, want %d: the tampered value must be a miss", ts.count(), calls+1)
			}
		})
	}
	if !strings.Contains(logs.String(), "shared cache value ignored") {
		t.Error("the ignored values are not logged at debug level")
	}
}

// Redis is never a dependency: unreachable, hanging, answering garbage, refusing AUTH, read-only
// or out of memory, every request is answered as without it, within the round-trip timeout, and
// the log gets one warning, not one per request.
func TestSharedCacheFallback(t *testing.T) {
	closed := resptest.FreePort(t)
	hang := resptest.StartFake(t, func(c net.Conn, rd *bufio.Reader) { _, _ = rd.ReadByte(); _, _ = rd.ReadByte() })
	garbage := resptest.StartFake(t, func(c net.Conn, rd *bufio.Reader) {
		_, _ = resptest.ReadCommand(rd)
		_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	})
	auth := resptest.Start(t, "--requirepass", "right-redis-password")
	readOnly := resptest.Start(t, "--replicaof", "127.0.0.1", closed)
	full := resptest.Start(t, "--maxmemory", "1", "--maxmemory-policy", "noeviction")
	wrongPassword := writeFile(t, t.TempDir(), "password", []byte("wrong-redis-password"))
	remember("right-redis-password")
	remember("wrong-redis-password")
	tests := []struct {
		name, url, passwordFile string
	}{
		{"unreachable", "redis://127.0.0.1:" + closed + "/0", ""},
		{"hanging", hang.URL(), ""},
		{"garbage", garbage.URL(), ""},
		{"wrong password", auth.URL(), wrongPassword},
		{"read-only replica", readOnly.URL(), ""},
		{"out of memory", full.URL(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			ts := newTokenServer(t, issuePerSubject(3600))
			c := sharedConfig(ts.url(), tc.url)
			c.SharedCachePasswordFile = tc.passwordFile
			c.SharedCacheTimeout = "100ms"
			h, b := replica(t, c)
			const users = 12
			for i := 0; i < users; i++ {
				user := opaqueToken(400 + i)
				start := time.Now()
				wantStatus(t, call(h, "Bearer "+user), http.StatusNoContent)
				if took := time.Since(start); took > time.Second {
					t.Errorf("request %d took %v with a 100ms Redis timeout", i, took)
				}
				if got := b.header.Get("Authorization"); got != "Bearer x-"+user {
					t.Errorf("forwarded %q", got)
				}
				time.Sleep(20 * time.Millisecond) // lets the background write of this user fail
			}
			if ts.count() != users {
				t.Errorf("token endpoint calls = %d, want %d", ts.count(), users)
			}
			if n := strings.Count(logs.String(), "shared cache unavailable"); n != 1 {
				t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
			}
		})
	}
}

// After breakerFailures failures Redis is left alone for the pause; then one operation tries
// again, and once Redis answers the cache is shared again and the log says so.
func TestSharedCacheBreaker(t *testing.T) {
	logs := captureLogs(t)
	var healthy atomic.Bool
	f := resptest.StartFake(t, func(c net.Conn, rd *bufio.Reader) {
		for healthy.Load() {
			cmd, err := resptest.ReadCommand(rd)
			if err != nil {
				return
			}
			if cmd[0] == "GET" {
				_, _ = c.Write([]byte("$-1\r\n"))
			} else {
				_, _ = c.Write([]byte("+OK\r\n"))
			}
		}
	})
	ts := newTokenServer(t, issuePerSubject(3600))
	c := sharedConfig(ts.url(), f.URL())
	h, _ := replica(t, c)
	h.x.shared.breaker.pause = 300 * time.Millisecond
	send := func(n int) {
		for i := 0; i < n; i++ {
			wantStatus(t, call(h, "Bearer "+opaqueToken(500+i)), http.StatusNoContent)
		}
	}

	send(20)
	if n := f.Conns(); n < breakerFailures || n > breakerFailures+2 {
		t.Errorf("%d connections for 20 users, want about %d: the breaker did not open", n, breakerFailures)
	}
	before := f.Conns()
	time.Sleep(350 * time.Millisecond)
	send(5)
	if n := f.Conns() - before; n != 1 {
		t.Errorf("%d connections after the pause, want 1 (the probe)", n)
	}
	healthy.Store(true)
	time.Sleep(350 * time.Millisecond)
	send(1)
	if h.x.shared.breaker.openUntil.Load() != 0 {
		t.Error("the breaker is still open after a successful probe")
	}
	// The recovery is logged when a write (in the background) succeeds.
	waitFor(t, func() bool { return strings.Contains(logs.String(), "reachable again") })
	out := logs.String()
	if strings.Count(out, "shared cache unavailable") != 1 || strings.Count(out, "shared cache reachable again") != 1 {
		t.Errorf("want one warning and one recovery line:\n%s", out)
	}
}

// The write to Redis does not delay the response, and at most maxSharedWrites run at once: a
// server that takes GET but never answers SET costs a request nothing, and its writes end by
// themselves at the timeout.
func TestSharedCacheWriteInBackground(t *testing.T) {
	captureLogs(t)
	release := make(chan struct{})
	f := resptest.StartFake(t, func(c net.Conn, rd *bufio.Reader) {
		for {
			cmd, err := resptest.ReadCommand(rd)
			if err != nil || cmd[0] != "GET" {
				<-release // SET: no answer until the test is done with the requests
				return
			}
			_, _ = c.Write([]byte("$-1\r\n"))
		}
	})
	ts := newTokenServer(t, issuePerSubject(3600))
	c := sharedConfig(ts.url(), f.URL())
	// A write that waited would hold its request far longer than the test lasts: each request
	// returning while every write is still unanswered is the proof, with no race against a clock.
	c.SharedCacheTimeout = "10m"
	h, _ := replica(t, c)
	s := h.x.shared
	s.breaker.pause = time.Hour // the hung writes must not stop the GETs

	for i := 0; i < maxSharedWrites+4; i++ {
		wantStatus(t, call(h, "Bearer "+opaqueToken(600+i)), http.StatusNoContent)
		want := i + 1
		if want > maxSharedWrites {
			want = maxSharedWrites
		}
		if len(s.writes) != want {
			t.Fatalf("after request %d, %d writes in progress, want %d", i, len(s.writes), want)
		}
	}
	if s.dropped.Load() != 4 {
		t.Errorf("%d writes dropped, want 4", s.dropped.Load())
	}
	close(release)
	waitFor(t, func() bool { return len(s.writes) == 0 })
}

// When the exchanger is dropped, its shared cache closes: nothing new starts.
func TestSharedCacheClosedWithExchanger(t *testing.T) {
	captureLogs(t)
	r := resptest.Start(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	ctx, cancel := context.WithCancel(context.Background())
	c := sharedConfig(ts.url(), r.URL())
	c.Audience = []string{"closed-with-exchanger"}
	h, err := New(ctx, &backend{}, c, "r1")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(700)), http.StatusNoContent)
	x := h.(*Middleware).x
	resptest.WaitForKeys(t, r.Addr(), 1)
	cancel()
	waitFor(t, func() bool { return refs(x) == 0 })
	registryMu.Lock()
	drop(x.fingerprint, x)
	registryMu.Unlock()
	if err := x.shared.client.Ping(); err != resp.ErrClosed {
		t.Errorf("PING after the drop: %v, want the closed error", err)
	}
	if n := x.shared.client.Open(); n != 0 {
		t.Errorf("%d connections open after the drop", n)
	}
}
