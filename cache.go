package oboexchange

import (
	"sync"
	"time"
)

// entry is what the cache holds for one subject token: either the ready-made header value of the
// exchanged token, or (negative cache) the rejection the authorization server gave.
type entry struct {
	header    string   // "Bearer <exchanged token>"
	rejection *failure // set for a remembered invalid_grant
	expires   int64    // Unix nanoseconds; the entry is not used from then on
}

// cache maps the SHA-256 of a subject token to its entry. The raw token is never kept. It is
// split into shards, each behind its own read-write mutex, so that requests of different users
// do not contend on one lock; a cache hit takes one read lock.
type cache struct {
	shards   []*shard
	mask     byte
	perShard int // entries allowed in each shard; the shards together hold at most maxEntries
}

type shard struct {
	mu sync.RWMutex
	m  map[[32]byte]*entry
}

// shardCount is used when the bound is large enough to divide; small caches (and tests of the
// bound) use one shard so the bound is exact.
const shardCount = 16

func newCache(maxEntries int) *cache {
	n := shardCount
	if maxEntries < 64*shardCount {
		n = 1
	}
	c := &cache{mask: byte(n - 1), perShard: maxEntries / n}
	for i := 0; i < n; i++ {
		c.shards = append(c.shards, &shard{m: map[[32]byte]*entry{}})
	}
	return c
}

// get returns the live entry for key, or nil. It is the whole of the cache-hit path.
func (c *cache) get(key [32]byte, now int64) *entry {
	s := c.shards[key[0]&c.mask]
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e == nil || e.expires <= now {
		return nil
	}
	return e
}

// put stores an entry. A full shard first drops its expired entries and, if none had expired,
// the one closest to expiry, so the bound holds whatever the traffic.
func (c *cache) put(key [32]byte, e *entry, now time.Time) {
	if c.perShard == 0 {
		return
	}
	s := c.shards[key[0]&c.mask]
	s.mu.Lock()
	if _, ok := s.m[key]; !ok && len(s.m) >= c.perShard {
		s.evict(now.UnixNano())
	}
	s.m[key] = e
	s.mu.Unlock()
}

// evict runs with the shard locked.
func (s *shard) evict(now int64) {
	var soonest [32]byte
	soonestAt := int64(-1)
	dropped := false
	for k, e := range s.m {
		if e.expires <= now {
			delete(s.m, k)
			dropped = true
		} else if soonestAt < 0 || e.expires < soonestAt {
			soonest, soonestAt = k, e.expires
		}
	}
	if !dropped && soonestAt >= 0 {
		delete(s.m, soonest)
	}
}

// len counts the entries, expired ones included (tests and benchmarks).
func (c *cache) len() int {
	n := 0
	for _, s := range c.shards {
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
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
