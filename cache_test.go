package oboexchange

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

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
		{name: "expires_in earlier than exp", expiresIn: time.Minute * 5, newExp: testNow.Add(time.Hour), want: 5*time.Minute - margin},
		{name: "exp earlier than expires_in", expiresIn: time.Hour, newExp: testNow.Add(5 * time.Minute), want: 5*time.Minute - margin},
		{name: "exp passed despite expires_in", expiresIn: time.Hour, newExp: testNow.Add(-time.Second), want: 0},
		{name: "neither: not cached", want: 0},
		{name: "new token already expired", newExp: testNow.Add(-time.Minute), want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ttl, ok := lifetime(testNow, tc.expiresIn, tc.newExp, tc.subjectExp, margin)
			if tc.want == 0 {
				if ok {
					t.Errorf("cached for %v, want not cached", ttl)
				}
				return
			}
			if !ok || ttl != tc.want {
				t.Errorf("cached for %v (ok %v), want %v", ttl, ok, tc.want)
			}
		})
	}
}

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
		k := key("new" + strconv.Itoa(i))
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
		c.put(key(strconv.Itoa(i)), &entry{expires: in(time.Hour)})
	}
	for i := 0; i < 10000; i++ {
		if c.get(key(strconv.Itoa(i))) == nil {
			t.Fatalf("entry %d evicted before the cache was full", i)
		}
	}
	for i := 10000; i < 30000; i++ {
		c.put(key(strconv.Itoa(i)), &entry{expires: in(time.Hour)})
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

// Whether an answer is cached, told by the token endpoint calls: two requests at once, then a
// third after a pause.
func TestCaching(t *testing.T) {
	newToken := testJWT(map[string]interface{}{"aud": "backend", "exp": time.Now().Add(time.Hour).Unix()})
	tests := []struct {
		name      string
		respond   func(w http.ResponseWriter, r *http.Request)
		noCache   bool          // cacheMaxEntries: 0
		otherUser bool          // the second request is another user's
		pause     time.Duration // before the third request
		want      [2]int        // calls after two requests, after three
		forwarded string        // the backend's Authorization, when not the exchangedToken
	}{
		{name: "cached for expires_in", respond: issue(exchangedToken, 3600), want: [2]int{1, 1}},
		{name: "another user is another exchange", respond: issue(exchangedToken, 3600), otherUser: true, want: [2]int{2, 2}},
		{name: "short-lived: cached half its life", respond: issue(exchangedToken, 1), pause: 600 * time.Millisecond, want: [2]int{1, 2}},
		{name: "neither expires_in nor exp: not cached", respond: reply(200, bearerAccessToken+`"access_token":"`+exchangedToken+`"}`), want: [2]int{2, 3}},
		{name: "cached for the new token's exp", respond: reply(200, bearerAccessToken+`"access_token":"`+newToken+`"}`), want: [2]int{1, 1}, forwarded: "Bearer " + newToken},
		{name: "cacheMaxEntries 0 disables the cache", respond: issue(exchangedToken, 3600), noCache: true, want: [2]int{2, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			captureLogs(t)
			ts := newTokenServer(t, tc.respond)
			c := testConfig(ts.url())
			if tc.noCache {
				c.CacheMaxEntries = 0
			}
			h, b := newTestMiddleware(t, c)
			second := userToken
			if tc.otherUser {
				second = opaqueToken(7)
			}

			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)
			wantStatus(t, call(h, "Bearer "+second), http.StatusNoContent)
			afterTwo := ts.count()
			time.Sleep(tc.pause)
			wantStatus(t, call(h, "Bearer "+userToken), http.StatusNoContent)

			if got := [2]int{afterTwo, ts.count()}; got != tc.want {
				t.Errorf("token endpoint calls after two and three requests = %v, want %v", got, tc.want)
			}
			forwarded := tc.forwarded
			if forwarded == "" {
				forwarded = "Bearer " + exchangedToken
			}
			if b.count() != 3 || b.header.Get("Authorization") != forwarded {
				t.Errorf("backend calls = %d with %q; want 3 with %q", b.count(), b.header.Get("Authorization"), forwarded)
			}
		})
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

// The subject's exp caps an entry on the cache's monotonic clock, measured from the wall clock
// when the token is stored: a wall clock that stepped forward since the process started (NTP) must
// not stretch the entry past the subject token's expiry.
func TestSubjectExpiryAfterClockStep(t *testing.T) {
	x := newExchanger("clock-step", &settings{endpoint: &url.URL{Scheme: "https", Host: "idp.test"}, maxEntries: 10})
	// A wall clock an hour ahead of where the monotonic clock would put it.
	wall := time.Now().Round(0).Add(time.Hour)
	ex := newExchange(userToken, "", newLogger("t", levelOff))
	ex.notAfter = wall.Add(10 * time.Minute)
	e := x.store(ex, tokenResult{header: "Bearer x", expiresIn: time.Hour}, wall, 0)
	if left := e.expires - time.Since(epoch); left > 10*time.Minute || left < 9*time.Minute {
		t.Errorf("the entry lives %v, want the subject token's remaining 10m", left)
	}
}

// Lifetimes are spread: a random part, at most a tenth of the token's life, comes off, never
// below half the token's life (what the margin rule keeps for a short-lived token).
func TestSpread(t *testing.T) {
	tests := []struct {
		name     string
		ttl      time.Duration // from lifetime
		life     time.Duration
		min, max time.Duration
	}{
		{"an hour's token", time.Hour - 30*time.Second, time.Hour, 54*time.Minute - 30*time.Second, time.Hour - 30*time.Second},
		{"short-lived: kept half its life", 30 * time.Second, time.Minute, 30 * time.Second, 30 * time.Second},
		{"floor: half its life", 50 * time.Second, 90 * time.Second, 45 * time.Second, 50 * time.Second},
		{"capped by the subject below half: kept", 10 * time.Minute, time.Hour, 10 * time.Minute, 10 * time.Minute},
		{"capped by the subject above half", 40 * time.Minute, time.Hour, 34 * time.Minute, 40 * time.Minute},
		{"a lifetime too short to spread", time.Nanosecond * 5, time.Nanosecond * 9, time.Nanosecond * 5, time.Nanosecond * 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for i := 0; i < 200; i++ {
				got := spread(tc.ttl, tc.life)
				if got < tc.min || got > tc.max {
					t.Fatalf("spread(%v, %v) = %v, want within [%v, %v]", tc.ttl, tc.life, got, tc.min, tc.max)
				}
				seen[got] = true
			}
			if tc.min != tc.max && len(seen) < 10 {
				t.Errorf("200 draws gave %d distinct lifetimes: not spread", len(seen))
			}
		})
	}
}

// The users exchanged together do not expire together: their entries spread over the last tenth
// of the token's life.
func TestExchangedTogetherExpireApart(t *testing.T) {
	captureLogs(t)
	ts := newTokenServer(t, issuePerSubject(3600))
	h, _ := newTestMiddleware(t, testConfig(ts.url()))
	x := h.(*Middleware).x
	var first, last time.Duration
	for i := 0; i < 50; i++ {
		user := opaqueToken(900 + i)
		wantStatus(t, call(h, "Bearer "+user), http.StatusNoContent)
		e := x.cache.get(key(user))
		if i == 0 || e.expires < first {
			first = e.expires
		}
		if e.expires > last {
			last = e.expires
		}
	}
	if spanned := last - first; spanned < time.Minute || spanned > 6*time.Minute {
		t.Errorf("50 users exchanged together expire over %v, want minutes apart (at most 6)", spanned)
	}
}
