package oboexchange

import (
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"
)

// epoch is the reference of the cache's clock: expiries are kept as time.Since(epoch), one
// monotonic clock read per lookup, immune to wall-clock jumps.
var epoch = time.Now()

// entry is what a cache holds for one subject token: in the exchanger's cache, the ready-made
// header value of the exchanged token; in its negative cache, the rejection the authorization
// server gave.
type entry struct {
	header    string        // "Bearer <exchanged token>"
	rejection *failure      // set for a remembered invalid_grant or access_denied
	expires   time.Duration // since epoch; the entry is not used from then on
}

// cache maps the SHA-256 of a subject token to its entry; the raw token is never kept. It is
// split into shards, each behind its own read-write mutex, so that requests of different users do
// not contend on one lock: a cache hit takes one read lock. A counter shared by the shards keeps
// the number of entries at most max; eviction drops expired entries first, then random ones.
type cache struct {
	shards []*shard
	mask   byte
	max    int64
	count  atomic.Int64

	// evictions counts the entries dropped to keep the bound (metrics).
	evictions atomic.Int64
}

type shard struct {
	mu sync.RWMutex
	m  map[[32]byte]*entry
	// earliest is a lower bound of the expiries in m: no entry has expired before it.
	earliest time.Duration
	// hits counts the cache hits of ServeHTTP's fast path (metrics): a native atomic add, next to
	// the read lock the lookup takes anyway.
	hits atomic.Int64
}

// shardCount is used when the bound is large; a small cache (and the tests of the bound) uses one
// shard.
const shardCount = 16

func newCache(maxEntries int) *cache {
	n := shardCount
	if maxEntries < 64*shardCount {
		n = 1
	}
	c := &cache{mask: byte(n - 1), max: int64(maxEntries)}
	for i := 0; i < n; i++ {
		c.shards = append(c.shards, &shard{m: map[[32]byte]*entry{}})
	}
	return c
}

// get returns the live entry for key, or nil. It is the whole of the cache-hit path.
func (c *cache) get(key [32]byte) *entry {
	s := c.shards[key[0]&c.mask]
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e == nil || e.expires <= time.Since(epoch) {
		return nil
	}
	return e
}

// put stores an entry. Past the bound, the shard the entry lands in drops its expired entries or,
// if none has expired, one live entry at random, so the bound holds whatever the traffic and the
// work stays within one shard.
func (c *cache) put(key [32]byte, e *entry) {
	if c.max == 0 {
		return
	}
	s := c.shards[key[0]&c.mask]
	s.mu.Lock()
	_, replaced := s.m[key]
	s.m[key] = e
	if e.expires < s.earliest {
		s.earliest = e.expires
	}
	if !replaced && c.count.Add(1) > c.max {
		dropped := int64(s.evict(key, time.Since(epoch)))
		c.count.Add(-dropped)
		c.evictions.Add(dropped)
	}
	s.mu.Unlock()
}

// evict runs with the shard locked and returns how many entries it dropped. The scan for expired
// entries (an interpreted loop under Yaegi, about half a millisecond for a full shard of the
// default cache) runs only when one may have expired, as told by earliest; otherwise one entry
// goes, picked by the map's random order, never keep (the entry just stored) unless it is alone.
func (s *shard) evict(keep [32]byte, now time.Duration) int {
	dropped := 0
	if now >= s.earliest {
		earliest := time.Duration(math.MaxInt64)
		for k, e := range s.m {
			if e.expires <= now {
				delete(s.m, k)
				dropped++
			} else if e.expires < earliest {
				earliest = e.expires
			}
		}
		s.earliest = earliest
	}
	if dropped > 0 {
		return dropped
	}
	for k := range s.m {
		if k != keep {
			delete(s.m, k)
			return 1
		}
	}
	delete(s.m, keep)
	return 1
}

// len counts the entries, expired ones included (metrics, tests and benchmarks).
func (c *cache) len() int {
	return int(c.count.Load())
}

// evicted counts the entries dropped to keep the bound (metrics).
func (c *cache) evicted() int64 {
	return c.evictions.Load()
}

// hits sums the fast path's hits over the shards (metrics).
func (c *cache) hits() int64 {
	var n int64
	for _, s := range c.shards {
		n += s.hits.Load()
	}
	return n
}

// lifetime says for how long an exchanged token may be served from the cache: its lifetime (the
// earlier of expires_in and its own exp) less the margin (half of it when it lives less than twice
// the margin), and never beyond the exp of the subject token, so an expired user token is never
// answered from the cache. The exps are wall-clock times and are compared with now's wall clock;
// the result is a duration, which the cache adds to its monotonic clock. ok is false when the token
// must not be cached at all.
func lifetime(now time.Time, expiresIn time.Duration, newTokenExp, subjectExp time.Time, margin time.Duration) (time.Duration, bool) {
	now = now.Round(0) // the wall clock alone, like the exps
	ttl := tokenLife(now, expiresIn, newTokenExp)
	if ttl <= 0 {
		return 0, false
	}
	if ttl >= 2*margin {
		ttl -= margin
	} else {
		ttl /= 2
	}
	if !subjectExp.IsZero() {
		if left := subjectExp.Sub(now); left < ttl {
			ttl = left
		}
	}
	if ttl <= 0 {
		return 0, false
	}
	return ttl, true
}

// tokenLife is what is left of an exchanged token's life: the earlier of expires_in and its own
// exp (either alone when the other is missing); zero or less when it has none or has expired.
func tokenLife(now time.Time, expiresIn time.Duration, newTokenExp time.Time) time.Duration {
	life := expiresIn
	if !newTokenExp.IsZero() {
		if left := newTokenExp.Round(0).Sub(now.Round(0)); life <= 0 || left < life {
			life = left
		}
	}
	return life
}

// spread takes a random part, at most a tenth of the token's life, off a cache lifetime, so that
// the users exchanged together (after a rollout, every active user at once) do not all come back
// in the same second. It never goes below half the token's life, the least the margin rule keeps
// for a short-lived token (a lifetime already shorter, capped by the subject token, is kept).
func spread(ttl, life time.Duration) time.Duration {
	if life/10 <= 0 {
		return ttl
	}
	floor := life / 2
	if ttl < floor {
		floor = ttl
	}
	reduced := ttl - time.Duration(rand.Int63n(int64(life/10)+1))
	if reduced < floor {
		return floor
	}
	return reduced
}
