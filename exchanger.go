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

// obtain returns the entry for a subject token the cache does not hold. Concurrent calls for the
// same key share one exchange (single flight): the first runs it, the others wait for its result,
// which the timeout bounds. actor is the caller's actor token (header: actors), part of the key.
// Each call counts its request's result.
func (x *exchanger) obtain(token, actor string, subjectExp time.Time, key [32]byte, log *logger) (*entry, *failure) {
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
	} else if e := x.shared.lookup(pairSecret(token, actor), subjectExp, log); e != nil {
		// Another replica exchanged this token: keep it in memory for what is left of its life.
		x.cache.put(key, e)
		fl.entry = e
		fl.result = resultSharedHit
	} else {
		fl.entry, fl.failure = x.run(token, actor, subjectExp, key, log)
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
// the storing of the new token.
// subjectExp is the subject token's exp (zero when it has none), which caps the cache lifetime.
// A panic (a bug) is answered 502 and logged, rather than leaving the flight and the admission
// slot taken for ever. Each exchange is counted once for the metrics, a panic included.
func (x *exchanger) run(token, actor string, subjectExp time.Time, key [32]byte, log *logger) (e *entry, f *failure) {
	counted := false
	defer func() {
		if r := recover(); r != nil {
			log.log(levelError, "token exchange failed", "reason", "internal error", "panic", redactActor(redact(fmt.Sprint(r), token), actor),
				"subject", tokenHash(token))
			f = failInternal // e is still nil: no return statement ran (Yaegi cannot assign a bare nil here)
			if !counted {
				x.counters.exchange(failInternal.outcome)
			}
		}
	}()
	probe, f := x.cooling.enter(time.Now(), x.endpoint.timeout+time.Second)
	if f != nil {
		x.counters.exchange(f.outcome)
		log.log(levelDebug, "token exchange refused", "reason", f.reason, "subject", tokenHash(token))
		return nil, f
	}
	if f := x.admit(token, log); f != nil {
		x.counters.exchange(f.outcome)
		x.cooling.abandon(probe)
		return nil, f
	}
	res, f, latency := x.roundTrip(token, actor, log)
	x.cooling.leave(probe, f, time.Now())
	x.counters.exchanged(f, latency)
	counted = true
	if f != nil {
		return nil, x.failed(token, key, f, latency, log)
	}
	return x.store(token, actor, key, res, subjectExp, time.Now(), latency, log), nil
}

// admit takes one of the maxConcurrentExchanges slots, or refuses at once: a hung authorization
// server must not pile up goroutines and memory. roundTrip gives the slot back.
func (x *exchanger) admit(token string, log *logger) *failure {
	if x.active.Add(1) > x.maxConcurrent {
		x.active.Add(-1)
		log.log(levelWarn, "token exchange refused", "reason", failBusy.reason, "subject", tokenHash(token))
		return failBusy
	}
	return nil
}

// roundTrip sends the exchange with the current client credentials (clientauth.go), to the token
// endpoint (discovered when issuer is set), with the actor token when one is configured, and
// releases the admission slot. callerActor is the caller's actor token (header: actors).
func (x *exchanger) roundTrip(token, callerActor string, log *logger) (tokenResult, *failure, time.Duration) {
	defer x.active.Add(-1)
	cred, warnings := x.endpoint.auth.current(time.Now())
	for _, w := range warnings {
		log.log(levelWarn, w.msg, "error", w.detail)
	}
	start := time.Now()
	endpoint, f := x.endpoint.tokenURL(log)
	if f != nil {
		return tokenResult{}, f, time.Since(start)
	}
	actor, f := x.actor.token(x.endpoint, endpoint, cred, callerActor, log)
	if f != nil {
		return tokenResult{}, f, time.Since(start)
	}
	res, f := x.endpoint.exchange(endpoint, token, actor, cred)
	if f != nil && actor != "" {
		f = x.actor.judge(f, actor)
	}
	return res, f, time.Since(start)
}

// failed logs a failed exchange, without any part of the token even where the server quotes it,
// and remembers a rejection of the subject token for negativeTTL.
func (x *exchanger) failed(token string, key [32]byte, f *failure, latency time.Duration, log *logger) *failure {
	level := levelError
	if f.status == http.StatusUnauthorized || f.coolDown > 0 {
		level = levelWarn
	}
	reason := f.reason
	if isEntraLoop(f) {
		reason = "Entra detected a loop of identical requests (" + entraLoopCode + "); " + reason
	}
	log.log(level, "token exchange failed", "flow", x.flow, "host", x.host, "status", strconv.Itoa(f.status),
		"reason", redact(reason, token), "error", redact(f.oauthError, token),
		"error_description", redact(f.oauthDescription, token), "latency", millis(latency), "subject", tokenHash(token))
	if f.cacheable && x.negativeTTL > 0 {
		x.rejections.put(key, &entry{rejection: f, expires: time.Since(epoch) + x.negativeTTL})
	}
	return f
}

// store caches the new token for its lifetime (see lifetime and spread) and returns its entry;
// with a shared cache, the token is written to Redis too, in the background. now is the
// wall-clock time the lifetime is measured from; the entry's expiry is on the cache's monotonic
// clock.
func (x *exchanger) store(token, actor string, key [32]byte, res tokenResult, subjectExp, now time.Time, latency time.Duration, log *logger) *entry {
	e := &entry{header: res.header}
	ttl, cached := lifetime(now, res.expiresIn, res.exp, subjectExp, x.margin)
	if cached {
		ttl = spread(ttl, tokenLife(now, res.expiresIn, res.exp))
		e.expires = time.Since(epoch) + ttl
		x.cache.put(key, e)
		x.shared.store(pairSecret(token, actor), res.header, ttl, now, log)
	}
	// Arguments are built only when the line is written: this path runs on every cache miss.
	if log.enabled(levelDebug) {
		log.log(levelDebug, "token exchanged", "flow", x.flow, "host", x.host, "latency", millis(latency),
			"cached_for", ttl.Round(time.Second).String(), "cache", x.id, "subject", tokenHash(token))
	}
	return e
}

// millis formats a latency for the log.
func millis(d time.Duration) string {
	return d.Round(time.Millisecond / 10).String()
}
