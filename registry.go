package oboexchange

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// The registry of exchangers, shared by every instance of the plugin in this Traefik. Traefik
// calls New for every router and again on every configuration reload, cancelling the previous
// instances' contexts just before: an exchanger whose configuration comes back finds its cache
// here, warm.
var (
	registryMu sync.Mutex
	registry   = map[string]*exchanger{}
	sweepArmed bool // a sweep timer is pending
)

// How long an exchanger no instance uses is kept:
//   - reloadGrace: always, however many there are. A reload releases every exchanger before New
//     takes them up again, so a bound on idle ones must never count those of the reload in
//     progress, or a cluster with many routes would lose its caches on every reload.
//   - idleGrace: at most maxIdle of them past reloadGrace, then none: a dropped configuration's
//     cache, with its bearer tokens, leaves memory within idleGrace.
const (
	reloadGrace = 10 * time.Second
	idleGrace   = time.Minute
	maxIdle     = 8
)

// acquireExchanger returns the exchanger for these settings, creating it if needed, for the
// middleware instance Traefik named name.
func acquireExchanger(s *settings, name string) (*exchanger, error) {
	fp := fingerprint(s)
	registryMu.Lock()
	defer registryMu.Unlock()
	sweepIdle(time.Now())
	x := registry[fp]
	if x == nil {
		x = newExchanger(fp, s)
	}
	if err := x.actor.load(); err != nil {
		return nil, err
	}
	if err := x.shared.load(); err != nil {
		return nil, err
	}
	registry[fp] = x
	x.refs++
	x.counters.join(name)
	return x, nil
}

func newExchanger(fp string, s *settings) *exchanger {
	return &exchanger{
		fingerprint:   fp,
		id:            randomID(),
		endpoint:      newEndpointClient(s),
		flow:          s.flow,
		host:          s.host(),
		cache:         newCache(s.maxEntries),
		margin:        s.margin,
		rejections:    newCache((s.maxEntries + 9) / 10),
		negativeTTL:   s.negativeTTL,
		maxConcurrent: int64(s.maxConcurrent),
		flights:       map[[32]byte]*flight{},
		actor:         newActorSource(s),
		counters:      newCounters(),
		shared:        newSharedCache(s, fp),
	}
}

// randomID names a cache in log lines: random, so it says nothing about the settings.
func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// releaseExchanger is called when the context of a middleware instance is cancelled.
func releaseExchanger(x *exchanger, name string) {
	registryMu.Lock()
	defer registryMu.Unlock()
	now := time.Now()
	x.refs--
	x.counters.leave(name, now)
	if x.refs == 0 {
		x.idleSince = now
	}
	sweepIdle(now)
	scheduleSweep(now)
}

// sweepIdle drops the exchangers unused for longer than idleGrace, and the oldest beyond maxIdle
// among those unused for longer than reloadGrace. It runs with registryMu held.
func sweepIdle(now time.Time) {
	var idle []*exchanger
	for fp, x := range registry {
		if x.refs > 0 || now.Sub(x.idleSince) < reloadGrace {
			continue
		}
		if now.Sub(x.idleSince) > idleGrace {
			drop(fp, x)
			continue
		}
		idle = append(idle, x)
	}
	for len(idle) > maxIdle {
		oldest := 0
		for i, x := range idle {
			if x.idleSince.Before(idle[oldest].idleSince) {
				oldest = i
			}
		}
		drop(idle[oldest].fingerprint, idle[oldest])
		idle = append(idle[:oldest], idle[oldest+1:]...)
	}
}

// scheduleSweep arms one timer for when the earliest idle exchanger's grace ends, so that a cache
// is dropped on time even when no reload and no release follows. A timer is not a goroutine that
// lives on: it runs sweepLater once, which arms the next one if idle exchangers remain. It runs
// with registryMu held.
func scheduleSweep(now time.Time) {
	if sweepArmed {
		return
	}
	next, found := time.Duration(0), false
	for _, x := range registry {
		if x.refs > 0 {
			continue
		}
		due := x.idleSince.Add(reloadGrace).Sub(now)
		if now.Sub(x.idleSince) >= reloadGrace {
			due = x.idleSince.Add(idleGrace).Sub(now)
		}
		if !found || due < next {
			next, found = due, true
		}
	}
	if !found {
		return
	}
	if next < time.Second {
		next = time.Second
	}
	sweepArmed = true
	time.AfterFunc(next, sweepLater)
}

func sweepLater() {
	registryMu.Lock()
	defer registryMu.Unlock()
	now := time.Now()
	sweepArmed = false
	sweepIdle(now)
	scheduleSweep(now)
}

func drop(fp string, x *exchanger) {
	delete(registry, fp)
	x.endpoint.closeIdle()
	x.shared.close()
}
