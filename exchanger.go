package oboexchange

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// exchanger is the state shared by every middleware instance with the same exchange settings:
// the token endpoint client (with its connection pool), the cache, the exchanges in flight.
// Traefik calls New for each router using the middleware and again on every configuration
// reload, so this state lives in a package-level registry, keyed by a fingerprint of the
// settings, rather than in the instance.
type exchanger struct {
	fingerprint string
	id          string // random, names this cache in log lines (the fingerprint hashes the secret)
	endpoint    *endpointClient
	flow        string
	host        string
	cache       *cache // exchanged tokens
	margin      time.Duration

	// rejections is the negative cache: a subject token the server refused, for negativeTTL. It has
	// a small bound of its own, so a flood of junk tokens cannot evict live users from cache.
	rejections  *cache
	negativeTTL time.Duration

	maxConcurrent int64
	active        atomic.Int64 // exchanges running now

	flightsMu sync.Mutex
	flights   map[[32]byte]*flight

	actor *actorSource // nil without actorToken

	// Guarded by registryMu.
	refs      int       // live middleware instances using this exchanger
	idleSince time.Time // when refs dropped to zero

	// What the metrics count (metrics.go).
	counters *counters

	// Several replicas: the Redis tier (nil when sharedCache is not set) and the token endpoint's
	// throttling cool-down.
	shared  *sharedCache
	cooling coolDown
}

// flight is one exchange in progress; requests for the same subject token wait for it.
type flight struct {
	done    chan struct{}
	entry   *entry
	failure *failure
	result  string // for requests_total, the same for every request the flight serves
}

// obtain returns the entry for tokens the cache does not hold. Concurrent calls for the same key
// share one exchange (single flight): the first runs it, the others wait for its result, which the
// timeout bounds. Each call counts its request's result.
func (x *exchanger) obtain(ex *exchange) (*entry, *failure) {
	key := ex.key
	x.flightsMu.Lock()
	if fl := x.flights[key]; fl != nil {
		x.flightsMu.Unlock()
		<-fl.done
		x.count(fl.result)
		return fl.entry, fl.failure
	}
	fl := &flight{done: make(chan struct{})}
	x.flights[key] = fl
	x.flightsMu.Unlock()
	// Deferred, so that the waiters are released whatever happens below.
	defer x.land(key, fl)

	// An exchange that finished between our cache miss and taking the flight has filled a cache.
	if e := x.cache.get(key); e != nil {
		fl.entry = e
		fl.result = resultHit
	} else if f := x.rejected(key); f != nil {
		fl.failure = f
		fl.result = resultRejectedCached
	} else if e := x.shared.lookup(ex.secret, ex.notAfter, ex.log); e != nil {
		// Another replica exchanged this token: keep it in memory for what is left of its life.
		x.cache.put(key, e)
		fl.entry = e
		fl.result = resultSharedHit
	} else {
		fl.entry, fl.failure = x.run(ex)
		fl.result = resultExchanged
		if fl.failure != nil {
			fl.result = resultFailed
		}
	}
	x.count(fl.result)
	return fl.entry, fl.failure
}

// land ends a flight: later requests start their own, waiting ones read its result.
func (x *exchanger) land(key [32]byte, fl *flight) {
	x.flightsMu.Lock()
	delete(x.flights, key)
	x.flightsMu.Unlock()
	close(fl.done)
}

// rejected returns the remembered rejection of a subject token, or nil.
func (x *exchanger) rejected(key [32]byte) *failure {
	if e := x.rejections.get(key); e != nil {
		return e.rejection
	}
	return nil
}

// run performs one exchange: admission (no throttling cool-down, see throttle.go, and within the
// concurrency bound), the round trip to the token endpoint, then either the failure handling or
// the storing of the new token. A panic (a bug) is answered 502 and logged, rather than leaving
// the flight and the admission slot taken for ever. Each exchange is counted once for the metrics,
// a panic included.
func (x *exchanger) run(ex *exchange) (e *entry, f *failure) {
	counted := false
	defer func() {
		if r := recover(); r != nil {
			ex.log.log(levelError, "token exchange failed", "reason", "internal error", "panic", redactActor(redact(fmt.Sprint(r), ex.subject), ex.actor),
				"subject", tokenHash(ex.subject))
			f = failInternal // e is still nil: no return statement ran (Yaegi cannot assign a bare nil here)
			if !counted {
				x.counters.exchange(failInternal.outcome)
			}
		}
	}()
	probe, f := x.cooling.enter(time.Now(), x.endpoint.timeout+time.Second)
	if f != nil {
		x.counters.exchange(f.outcome)
		ex.log.log(levelDebug, "token exchange refused", "reason", f.reason, "subject", tokenHash(ex.subject))
		return nil, f
	}
	if f := x.admit(ex); f != nil {
		x.counters.exchange(f.outcome)
		x.cooling.abandon(probe)
		return nil, f
	}
	res, f, latency := x.roundTrip(ex)
	x.cooling.leave(probe, f, time.Now())
	x.counters.exchanged(f, latency)
	counted = true
	if f != nil {
		return nil, x.failed(ex, f, latency)
	}
	return x.store(ex, res, time.Now(), latency), nil
}

// inFlight is the number of exchanges waiting for the token endpoint now (metrics).
func (x *exchanger) inFlight() int64 {
	return x.active.Load()
}

// admit takes one of the maxConcurrentExchanges slots, or refuses at once: a hung authorization
// server must not pile up goroutines and memory. roundTrip gives the slot back.
func (x *exchanger) admit(ex *exchange) *failure {
	if x.active.Add(1) > x.maxConcurrent {
		x.active.Add(-1)
		ex.log.log(levelWarn, "token exchange refused", "reason", failBusy.reason, "subject", tokenHash(ex.subject))
		return failBusy
	}
	return nil
}

// roundTrip sends the exchange with the current client credentials (clientauth.go), to the token
// endpoint (discovered when issuer is set), with the actor token when one is configured, and
// releases the admission slot.
func (x *exchanger) roundTrip(ex *exchange) (tokenResult, *failure, time.Duration) {
	defer x.active.Add(-1)
	cred, warnings := x.endpoint.auth.current(time.Now())
	for _, w := range warnings {
		ex.log.log(levelWarn, w.msg, "error", w.detail)
	}
	start := time.Now()
	endpoint, f := x.endpoint.tokenURL(cred, ex.log)
	if f != nil {
		return tokenResult{}, f, time.Since(start)
	}
	actor, f := x.actor.token(x.endpoint, endpoint, cred, ex.actor, ex.log)
	if f != nil {
		return tokenResult{}, f, time.Since(start)
	}
	res, f := x.endpoint.exchange(endpoint, ex.subject, x.actor.param(actor), cred)
	if f != nil && actor != "" {
		f = x.actor.judge(f, actor)
	}
	return res, f, time.Since(start)
}

// failed logs a failed exchange, without any part of the token even where the server quotes it,
// and remembers a rejection of the subject token for negativeTTL.
func (x *exchanger) failed(ex *exchange, f *failure, latency time.Duration) *failure {
	token := ex.subject
	level := levelError
	if f.status == http.StatusUnauthorized || f.coolDown > 0 {
		level = levelWarn
	}
	reason := f.reason
	if isEntraLoop(f) {
		reason = "Entra detected a loop of identical requests (" + entraLoopCode + "); " + reason
	}
	ex.log.log(level, "token exchange failed", "flow", x.flow, "host", x.host, "status", strconv.Itoa(f.status),
		"reason", redact(reason, token), "error", redact(f.oauthError, token),
		"error_description", redact(f.oauthDescription, token), "latency", millis(latency), "subject", tokenHash(token))
	if f.cacheable && x.negativeTTL > 0 {
		x.rejections.put(ex.key, &entry{rejection: f, expires: time.Since(epoch) + x.negativeTTL})
	}
	return f
}

// store caches the new token for its lifetime (see lifetime and spread) and returns its entry;
// with a shared cache, the token is written to Redis too, in the background. now is the
// wall-clock time the lifetime is measured from; the entry's expiry is on the cache's monotonic
// clock.
func (x *exchanger) store(ex *exchange, res tokenResult, now time.Time, latency time.Duration) *entry {
	e := &entry{header: res.header}
	ttl, cached := lifetime(now, res.expiresIn, res.exp, ex.notAfter, x.margin)
	if cached {
		ttl = spread(ttl, tokenLife(now, res.expiresIn, res.exp))
		e.expires = time.Since(epoch) + ttl
		x.cache.put(ex.key, e)
		x.shared.store(ex.secret, res.header, ttl, now, ex.log)
	}
	// Arguments are built only when the line is written: this path runs on every cache miss.
	if ex.log.enabled(levelDebug) {
		ex.log.log(levelDebug, "token exchanged", "flow", x.flow, "host", x.host, "latency", millis(latency),
			"cached_for", ttl.Round(time.Second).String(), "cache", x.id, "subject", tokenHash(ex.subject))
	}
	return e
}

// millis formats a latency for the log.
func millis(d time.Duration) string {
	return d.Round(time.Millisecond / 10).String()
}
