package oboexchange

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

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
	old, release := newReloadable(t, testConfig(ts.url()))
	call(old, "Bearer "+userToken)
	x := old.x

	release()
	reloaded, _ := newTestMiddleware(t, testConfig(ts.url()))
	call(reloaded, "Bearer "+userToken)

	if reloaded.(*Middleware).x != x || ts.count() != 1 {
		t.Errorf("after reload: same exchanger %v, calls %d; want true and 1", reloaded.(*Middleware).x == x, ts.count())
	}
}

func TestIdleExchangersAreDropped(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	m, release := newReloadable(t, testConfig(ts.url()))
	x := m.x
	release()

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

// A reload releases every exchanger before New takes them up again: however many configurations
// there are, none of those coming back is dropped, and no user is exchanged again.
func TestReloadKeepsEveryCache(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	const configs, reloads = 24, 20
	releases := make([]func(), configs)
	first := make([]*exchanger, configs)
	load := func() {
		for i := range releases {
			c := testConfig(ts.url())
			c.Audience = []string{"reload-all-" + strconv.Itoa(i)}
			m, release := newReloadable(t, c)
			releases[i] = release
			x := m.x
			if first[i] == nil {
				first[i] = x
				wantStatus(t, call(m, "Bearer "+userToken), http.StatusNoContent)
			}
			if x != first[i] {
				t.Fatalf("configuration %d got a new exchanger: its cache was dropped", i)
			}
		}
	}
	load()
	for r := 0; r < reloads; r++ {
		for _, release := range releases {
			release()
		}
		load()
	}
	for i, x := range first {
		if x.cache.get(key(userToken)) == nil {
			t.Errorf("configuration %d lost its cached token", i)
		}
	}
	if ts.count() != configs {
		t.Errorf("token endpoint calls = %d, want %d: one per configuration", ts.count(), configs)
	}
}

// Idle exchangers past the reload grace are bounded to maxIdle, the oldest dropped first.
func TestIdleExchangersBounded(t *testing.T) {
	captureLogs(t)
	dropIdleExchangers() // those of earlier tests would count against the bound
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	var released []*exchanger
	for i := 0; i < maxIdle+5; i++ {
		c := testConfig(ts.url())
		c.Audience = []string{"reload-" + strconv.Itoa(i)}
		m, release := newReloadable(t, c)
		release() // waits: every release must have happened before the sweep
		released = append(released, m.x)
	}
	registryMu.Lock()
	for i, x := range released {
		x.idleSince = time.Now().Add(-reloadGrace - time.Duration(len(released)-i)*time.Second)
	}
	registryMu.Unlock()
	newTestMiddleware(t, testConfig(ts.url()))

	registryMu.Lock()
	defer registryMu.Unlock()
	for i, x := range released {
		_, kept := registry[x.fingerprint]
		if want := i >= len(released)-maxIdle; kept != want {
			t.Errorf("idle exchanger %d (of %d, oldest first): kept %v, want %v", i, len(released), kept, want)
		}
	}
}

// A dropped configuration's cache leaves memory after idleGrace even when no reload follows: the
// release arms a timer that sweeps.
func TestIdleSweepWithoutReload(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issue(exchangedToken, 3600))
	c := testConfig(ts.url())
	c.Audience = []string{"swept-by-timer"}
	m, release := newReloadable(t, c)
	x := m.x
	release()

	registryMu.Lock()
	armed := sweepArmed
	x.idleSince = time.Now().Add(-idleGrace - time.Second)
	registryMu.Unlock()
	if !armed {
		t.Fatal("no sweep is scheduled after a release")
	}
	sweepLater() // what the timer runs
	registryMu.Lock()
	_, kept := registry[x.fingerprint]
	registryMu.Unlock()
	if kept {
		t.Error("an exchanger idle for longer than idleGrace is still registered")
	}
}
