package oboexchange

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
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
	endpoint    *endpointClient
	flow        string
	host        string
	cache       *cache
	margin      time.Duration
	negativeTTL time.Duration

	maxConcurrent int64
	active        atomic.Int64 // exchanges running now

	flightsMu sync.Mutex
	flights   map[[32]byte]*flight

	// Guarded by registryMu.
	refs      int       // live middleware instances using this exchanger
	idleSince time.Time // when refs dropped to zero
}

// flight is one exchange in progress; requests for the same subject token wait for it.
type flight struct {
	done    chan struct{}
	entry   *entry
	failure *failure
}

// obtain returns the entry for a subject token the cache does not hold. Concurrent calls for the
// same token share one exchange (single flight): the first runs it, the others wait for its result,
// which the timeout bounds.
func (x *exchanger) obtain(token string, subjectExp time.Time, key [32]byte, log *logger) (*entry, *failure) {
	x.flightsMu.Lock()
	if fl := x.flights[key]; fl != nil {
		x.flightsMu.Unlock()
		<-fl.done
		return fl.entry, fl.failure
	}
	fl := &flight{done: make(chan struct{})}
	x.flights[key] = fl
	x.flightsMu.Unlock()

	// An exchange that finished between our cache miss and taking the flight has filled the cache.
	if e := x.cache.get(key); e != nil {
		fl.entry = e
	} else {
		fl.entry, fl.failure = x.run(token, subjectExp, key, log)
	}

	x.flightsMu.Lock()
	delete(x.flights, key)
	x.flightsMu.Unlock()
	close(fl.done)
	return fl.entry, fl.failure
}

// run performs one exchange: admission within the concurrency bound, the round trip to the
// token endpoint, then either the failure handling or the storing of the new token.
// subjectExp is the subject token's exp (zero when it has none), which caps the cache lifetime.
func (x *exchanger) run(token string, subjectExp time.Time, key [32]byte, log *logger) (*entry, *failure) {
	if f := x.admit(token, log); f != nil {
		return nil, f
	}
	res, f, latency := x.roundTrip(token, log)
	if f != nil {
		return nil, x.failed(token, key, f, latency, log)
	}
	return x.store(token, key, res, subjectExp, latency, log), nil
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

// roundTrip sends the exchange with the current client secret and releases the admission slot.
func (x *exchanger) roundTrip(token string, log *logger) (tokenResult, *failure, time.Duration) {
	defer x.active.Add(-1)
	secret, err := x.endpoint.secret.get()
	if err != nil {
		log.log(levelWarn, "client secret file could not be read again; the last good secret is used", "error", err.Error())
	}
	start := time.Now()
	res, f := x.endpoint.exchange(token, secret)
	return res, f, time.Since(start)
}

// failed logs a failed exchange, without the token even where the server quotes it, and remembers
// a rejection of the subject token for negativeCacheTTL.
func (x *exchanger) failed(token string, key [32]byte, f *failure, latency time.Duration, log *logger) *failure {
	level := levelError
	if f.status == http.StatusUnauthorized {
		level = levelWarn
	}
	description := strings.ReplaceAll(f.oauthDescription, token, "[subject token]")
	log.log(level, "token exchange failed", "flow", x.flow, "host", x.host, "status", strconv.Itoa(f.status),
		"reason", f.reason, "error", f.oauthError, "error_description", description,
		"latency", millis(latency), "subject", tokenHash(token))
	if f.cacheable && x.negativeTTL > 0 {
		x.cache.put(key, &entry{rejection: f, expires: time.Since(epoch) + x.negativeTTL})
	}
	return f
}

// store caches the new token for its lifetime (see lifetime) and returns its entry.
func (x *exchanger) store(token string, key [32]byte, res tokenResult, subjectExp time.Time, latency time.Duration, log *logger) *entry {
	now := time.Now()
	e := &entry{header: res.header}
	until, cached := lifetime(now, res.expiresIn, res.exp, subjectExp, x.margin)
	if cached {
		e.expires = until.Sub(epoch)
		x.cache.put(key, e)
	}
	// Arguments are built only when the line is written: this path runs on every cache miss.
	if log.enabled(levelDebug) {
		cachedFor := "0s"
		if cached {
			cachedFor = until.Sub(now).Round(time.Second).String()
		}
		log.log(levelDebug, "token exchanged", "flow", x.flow, "host", x.host, "latency", millis(latency),
			"cached_for", cachedFor, "subject", tokenHash(token))
	}
	return e
}

// millis formats a latency for the log.
func millis(d time.Duration) string {
	return d.Round(time.Millisecond / 10).String()
}

// The registry of exchangers, shared by every instance of the plugin in this Traefik.
var (
	registryMu sync.Mutex
	registry   = map[string]*exchanger{}
)

// An exchanger no instance uses is kept for idleGrace, because Traefik cancels the old
// configuration's context before it creates the new configuration's middlewares; at most
// maxIdle such exchangers are kept, so memory stays bounded across any number of reloads.
const (
	idleGrace = time.Minute
	maxIdle   = 8
)

// acquireExchanger returns the exchanger for these settings, creating it if needed.
func acquireExchanger(s *settings) (*exchanger, error) {
	fp := fingerprint(s)
	registryMu.Lock()
	defer registryMu.Unlock()
	sweepIdle(time.Now())
	x := registry[fp]
	if x == nil {
		x = newExchanger(fp, s)
	}
	if err := x.endpoint.secret.load(); err != nil {
		return nil, err
	}
	registry[fp] = x
	x.refs++
	return x, nil
}

func newExchanger(fp string, s *settings) *exchanger {
	return &exchanger{
		fingerprint:   fp,
		endpoint:      newEndpointClient(s),
		flow:          s.flow,
		host:          s.endpoint.Host,
		cache:         newCache(s.maxEntries),
		margin:        s.margin,
		negativeTTL:   s.negativeTTL,
		maxConcurrent: int64(s.maxConcurrent),
		flights:       map[[32]byte]*flight{},
	}
}

// releaseExchanger is called when the context of a middleware instance is cancelled.
func releaseExchanger(x *exchanger) {
	registryMu.Lock()
	defer registryMu.Unlock()
	x.refs--
	if x.refs == 0 {
		x.idleSince = time.Now()
	}
}

// sweepIdle drops the exchangers that have been unused for longer than idleGrace, and the oldest
// idle ones beyond maxIdle. It runs with registryMu held.
func sweepIdle(now time.Time) {
	var idle []*exchanger
	for fp, x := range registry {
		if x.refs > 0 {
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

func drop(fp string, x *exchanger) {
	delete(registry, fp)
	x.endpoint.http.CloseIdleConnections()
}

// fingerprint identifies the settings that shape the exchange and the cache. Two instances share
// an exchanger, and so cached tokens, only when all of these are equal. The secret is included
// through its hash, so a changed secret starts a new cache rather than serving tokens obtained
// with the old one.
func fingerprint(s *settings) string {
	secret := sha256.Sum256([]byte(s.clientSecret))
	fields := []interface{}{
		s.flow, s.endpoint.String(), s.clientID, hex.EncodeToString(secret[:]), s.clientSecretFile,
		s.authMethod, s.audience, s.resource, s.scopes, s.subjectTokenType, s.requestedTokenType,
		s.extraParams, s.timeout.String(), s.maxEntries, s.margin.String(), s.negativeTTL.String(),
		s.maxConcurrent,
	}
	// json.Marshal sorts map keys and quotes every string, so the encoding is unambiguous.
	b, _ := json.Marshal(fields)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
