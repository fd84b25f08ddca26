package oboexchange

import (
	"sync"
	"sync/atomic"
	"time"
)

// epoch is the reference of the cache's clock: expiries are kept as time.Since(epoch), one
// monotonic clock read per lookup, immune to wall-clock jumps.
var epoch = time.Now()

// entry is what the cache holds for one subject token: either the ready-made header value of the
// exchanged token, or (negative cache) the rejection the authorization server gave.
type entry struct {
	header    string        // "Bearer <exchanged token>"
	rejection *failure      // set for a remembered invalid_grant
	expires   time.Duration // since epoch; the entry is not used from then on
}

// cache maps the SHA-256 of a subject token to its entry; the raw token is never kept. It is
// split into shards, each behind its own read-write mutex, so that requests of different users do
// not contend on one lock: a cache hit takes one read lock. A counter shared by the shards keeps
// the number of entries at most max.
type cache struct {
	shards []*shard
	mask   byte
	max    int64
	count  atomic.Int64
}

type shard struct {
	mu sync.RWMutex
	m  map[[32]byte]*entry
}

// shardCount is used when the bound is large; a small cache (and the tests of the bound) uses one
// shard, where eviction always picks the globally best victim.
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
// if none has expired, the one closest to expiry, so the bound holds whatever the traffic and the
// work stays within one shard.
func (c *cache) put(key [32]byte, e *entry) {
	if c.max == 0 {
		return
	}
	s := c.shards[key[0]&c.mask]
	s.mu.Lock()
	_, replaced := s.m[key]
	s.m[key] = e
	if !replaced && c.count.Add(1) > c.max {
		c.count.Add(-int64(s.evict(key, time.Since(epoch))))
	}
	s.mu.Unlock()
}

// evict runs with the shard locked; it never drops keep (the entry just stored) unless it is the
// only candidate, and returns how many entries it dropped.
func (s *shard) evict(keep [32]byte, now time.Duration) int {
	var soonest [32]byte
	soonestAt := time.Duration(-1)
	dropped := 0
	for k, e := range s.m {
		if e.expires <= now {
			delete(s.m, k)
			dropped++
		} else if k != keep && (soonestAt < 0 || e.expires < soonestAt) {
			soonest = k
			soonestAt = e.expires
		}
	}
	if dropped > 0 {
		return dropped
	}
	if soonestAt < 0 {
		soonest = keep
	}
	delete(s.m, soonest)
	return 1
}

// len counts the entries, expired ones included (tests and benchmarks).
func (c *cache) len() int {
	return int(c.count.Load())
}

// lifetime says until when an exchanged token may be served from the cache: its lifetime less the
// margin (half its lifetime when it lives less than twice the margin), and never beyond the exp of
// the subject token, so an expired user token is never answered from the cache. ok is false when
// the token must not be cached at all.
func lifetime(now time.Time, expiresIn time.Duration, newTokenExp, subjectExp time.Time, margin time.Duration) (time.Time, bool) {
	if expiresIn <= 0 && !newTokenExp.IsZero() {
		expiresIn = newTokenExp.Sub(now)
	}
	if expiresIn <= 0 {
		return time.Time{}, false
	}
	if expiresIn >= 2*margin {
		expiresIn -= margin
	} else {
		expiresIn /= 2
	}
	until := now.Add(expiresIn)
	if !subjectExp.IsZero() && subjectExp.Before(until) {
		until = subjectExp
	}
	if !until.After(now) {
		return time.Time{}, false
	}
	return until, true
}
