package oboexchange

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oboexchange/oboexchange/internal/resp"
	"github.com/oboexchange/oboexchange/internal/watch"
)

// The shared cache: an optional second tier on Redis or Valkey, so that the replicas of a Traefik
// deployment exchange each user's token once rather than once each. Memory is asked first, then
// Redis, then the authorization server; a successful exchange is written to Redis in the
// background. Redis never holds anything usable without the user's own token: the key is an HMAC
// of the subject token under the configuration's fingerprint, and the value is the exchanged token
// sealed with AES-256-GCM under another key derived from the same two, with the Redis key as
// additional data. Redis is an optimisation, never a dependency: whatever goes wrong with it, the
// request goes on with memory and the exchange.

const (
	// sharedKeyPrefix starts every key the plugin writes, so that an ACL can confine it
	// (~oboexchange:*) and an operator can tell its keys apart.
	sharedKeyPrefix = "oboexchange:v1:"
	// sharedValueVersion is the first byte of a value: the layout below.
	sharedValueVersion = 1
	// A value is version, nonce, then the sealed expiry (Unix milliseconds) and header.
	gcmNonceSize = 12
	gcmTagSize   = 16
	// maxSharedWrites bounds the background writes in progress; past it a write is dropped
	// (another replica will exchange that user once more), never queued.
	maxSharedWrites = 32
	// After breakerFailures failures in a row, Redis is left alone for breakerPause; then one
	// operation tries again.
	breakerFailures = 5
	breakerPause    = 5 * time.Second
)

// sharedCache is the Redis tier of one exchanger. A nil *sharedCache is a disabled tier: every
// method does nothing, so the exchanger calls them without checking.
type sharedCache struct {
	client      *resp.Client
	password    *watch.File // sharedCachePasswordFile; nil: no AUTH
	ca          *watch.File // sharedCacheCAFile; nil: the system's roots
	fingerprint []byte
	writes      chan struct{} // one token per background write in progress
	breaker     breaker
	dropped     atomic.Int64 // writes dropped past maxSharedWrites (tests)

	// fileProblem is a password or CA file that could no longer be read (the last good content
	// is used), logged once by report.
	filesMu      sync.Mutex
	fileProblem  string
	fileReported bool
}

// newSharedCache returns the tier for the settings, or nil when sharedCache is not set. It does
// no I/O: connections are opened on first use.
func newSharedCache(s *settings, fingerprint string) *sharedCache {
	if s.sharedCache == nil {
		return nil
	}
	sc := &sharedCache{fingerprint: []byte(fingerprint), writes: make(chan struct{}, maxSharedWrites)}
	sc.breaker.pause = breakerPause
	u := s.sharedCache
	db, _ := strconv.Atoi(strings.TrimPrefix(u.Path, "/"))
	o := resp.Options{
		Addr:       u.Host,
		TLS:        u.Scheme == "rediss",
		ServerName: u.Hostname(),
		DB:         db,
		Timeout:    s.sharedCacheTimeout,
	}
	if u.User != nil {
		o.User = u.User.Username()
	}
	if s.sharedCachePasswordFile != "" {
		sc.password = watch.New("sharedCachePasswordFile", s.sharedCachePasswordFile, watch.Secret)
		o.Password = func() (string, error) { return sc.readPassword() }
	}
	if s.sharedCacheCAFile != "" {
		sc.ca = watch.New("sharedCacheCAFile", s.sharedCacheCAFile, parseCAFile)
		o.RootCAs = func() (*x509.CertPool, error) { return sc.readCA() }
	}
	sc.client = resp.New(o)
	return sc
}

// load reads the password and CA files, for New: a file that cannot be used is a configuration
// error.
func (s *sharedCache) load() error {
	if s == nil {
		return nil
	}
	for _, f := range []*watch.File{s.password, s.ca} {
		if f == nil {
			continue
		}
		if err := f.Load(); err != nil {
			return err
		}
	}
	return nil
}

// readPassword reads the password file for a new connection; on an error, the last good password
// is returned with it, and the problem noted for report.
func (s *sharedCache) readPassword() (string, error) {
	v, err := s.password.Get()
	s.noteFile(err)
	password, _ := v.(string)
	return password, err
}

// readCA reads the CA file for a new TLS connection, as readPassword does the password.
func (s *sharedCache) readCA() (*x509.CertPool, error) {
	v, err := s.ca.Get()
	s.noteFile(err)
	pool, _ := v.(*x509.CertPool)
	return pool, err
}

// noteFile records whether a watched file could be read.
func (s *sharedCache) noteFile(err error) {
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	if err == nil {
		s.fileProblem, s.fileReported = "", false
		return
	}
	s.fileProblem = err.Error()
}

// takeFileProblem returns a file problem the first time it is seen, for one log line.
func (s *sharedCache) takeFileProblem() string {
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	if s.fileProblem == "" || s.fileReported {
		return ""
	}
	s.fileReported = true
	return s.fileProblem
}

// close is called when the exchanger is dropped: no new operation starts, and the background
// writes in progress end within their deadline.
func (s *sharedCache) close() {
	if s != nil {
		s.client.Close()
	}
}

// lookup asks Redis for the token after a memory miss. It returns nil on a miss, on any failure,
// and for a value that does not open (moved from another key, altered, written by another
// configuration). A hit lives in memory for what is left of its lifetime, never beyond the subject
// token's exp.
func (s *sharedCache) lookup(token string, subjectExp time.Time, log *logger) *entry {
	if s == nil || !s.breaker.allow(time.Now()) {
		return nil
	}
	redisKey, sealKey := s.keys(token)
	value, err := s.client.Get(redisKey)
	s.report(err, value != nil, log)
	if err != nil || value == nil {
		return nil
	}
	header, expires, ok := openValue(sealKey, redisKey, value)
	if !ok {
		log.log(levelDebug, "shared cache value ignored: it does not open with this token and configuration", "subject", tokenHash(token))
		return nil
	}
	now := time.Now()
	left := expires.Sub(now)
	if !subjectExp.IsZero() && subjectExp.Sub(now) < left {
		left = subjectExp.Sub(now)
	}
	if left <= 0 {
		return nil
	}
	return &entry{header: header, expires: time.Since(epoch) + left}
}

// store writes an exchanged token to Redis for ttl (counted from now, the wall clock its expiry is
// sealed with) without making the response wait: the write runs in a goroutine of its own that
// ends within the round-trip deadlines. At most maxSharedWrites run at once; past that, the write
// is dropped.
func (s *sharedCache) store(token, header string, ttl time.Duration, now time.Time, log *logger) {
	if s == nil || ttl < time.Millisecond {
		return
	}
	select {
	case s.writes <- struct{}{}:
	default:
		s.dropped.Add(1)
		return
	}
	if !s.breaker.allow(now) {
		<-s.writes
		return
	}
	redisKey, sealKey := s.keys(token)
	value, err := sealValue(sealKey, redisKey, header, now.Add(ttl))
	if err != nil {
		s.breaker.abandon()
		<-s.writes
		return
	}
	go s.write(redisKey, value, ttl, log)
}

// write is one background write; it gives its place back when done.
func (s *sharedCache) write(key string, value []byte, ttl time.Duration, log *logger) {
	defer func() { <-s.writes }()
	s.report(s.client.Set(key, value, ttl), true, log)
}

// report feeds the outcome of an operation to the breaker and logs what changed: one warning when
// Redis becomes unusable, one line when it is back, never one per request. useful tells a write
// that succeeded or a read that found a value from a read that found nothing: only the former
// shows that Redis works (a read-only replica or a full server answers reads, and refuses every
// write). The password and the ACL user are never part of an error.
func (s *sharedCache) report(err error, useful bool, log *logger) {
	if problem := s.takeFileProblem(); problem != "" {
		log.log(levelWarn, "shared cache: a password or CA file could not be read again; the last good one is used", "error", problem)
	}
	switch {
	case err == nil:
		if s.breaker.success(useful) {
			log.log(levelInfo, "shared cache reachable again")
		}
	case err == resp.ErrBusy || err == resp.ErrClosed:
		s.breaker.abandon()
	default:
		if s.breaker.failure(time.Now()) {
			log.log(levelWarn, "shared cache unavailable; serving from memory and exchanging until it answers again",
				"error", err.Error(), "retry_every", s.breaker.pause.String())
		}
	}
}

// keys derives, from the subject token and the configuration's fingerprint, the Redis key and the
// key that seals the value: an HMAC of the token under the fingerprint, expanded with two distinct
// labels. Without the token, neither can be computed, and one tells nothing of the other.
func (s *sharedCache) keys(token string) (string, []byte) {
	m := hmac.New(sha256.New, s.fingerprint)
	m.Write([]byte(token))
	prk := m.Sum(nil)
	return sharedKeyPrefix + hex.EncodeToString(expand(prk, "lookup key")), expand(prk, "value key")
}

// expand is one HMAC-SHA256 of a label under prk (HKDF-Expand for a single block).
func expand(prk []byte, label string) []byte {
	m := hmac.New(sha256.New, prk)
	m.Write([]byte("oboexchange shared cache v1 " + label))
	m.Write([]byte{1})
	return m.Sum(nil)
}

// sealValue encrypts the header and its expiry with AES-256-GCM, the Redis key as additional data,
// so that a value copied under another key does not open.
func sealValue(sealKey []byte, redisKey, header string, expires time.Time) ([]byte, error) {
	aead, err := newGCM(sealKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+gcmNonceSize, 1+gcmNonceSize+8+len(header)+gcmTagSize)
	out[0] = sharedValueVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	plain := make([]byte, 8+len(header))
	binary.BigEndian.PutUint64(plain, uint64(expires.UnixMilli()))
	copy(plain[8:], header)
	return aead.Seal(out, out[1:1+gcmNonceSize], plain, []byte(redisKey)), nil
}

// openValue decrypts a value; ok is false for anything that is not a value sealed under this key
// and Redis key, or whose header could not go into a request.
func openValue(sealKey []byte, redisKey string, value []byte) (header string, expires time.Time, ok bool) {
	if len(value) < 1+gcmNonceSize+8+gcmTagSize || value[0] != sharedValueVersion {
		return "", time.Time{}, false
	}
	aead, err := newGCM(sealKey)
	if err != nil {
		return "", time.Time{}, false
	}
	plain, err := aead.Open(nil, value[1:1+gcmNonceSize], value[1+gcmNonceSize:], []byte(redisKey))
	if err != nil {
		return "", time.Time{}, false
	}
	header = string(plain[8:])
	if !strings.HasPrefix(header, "Bearer ") || !isVisibleASCII(header[7:]) || len(header) == 7 {
		return "", time.Time{}, false
	}
	return header, time.UnixMilli(int64(binary.BigEndian.Uint64(plain))), true
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// breaker stops asking Redis after breakerFailures failures in a row, for pause; then one
// operation (the probe) tries again while the others still skip Redis, and its success closes
// the breaker.
type breaker struct {
	pause     time.Duration
	failures  atomic.Int32
	openUntil atomic.Int64 // Unix nanoseconds; 0 while closed
	probing   atomic.Bool
	down      atomic.Bool // the outage was logged
}

// up reports whether the shared cache is in use: not skipped after failures (metrics).
func (s *sharedCache) up() bool {
	return s.breaker.openUntil.Load() == 0
}

// allow says whether an operation may go to Redis now.
func (b *breaker) allow(now time.Time) bool {
	until := b.openUntil.Load()
	if until == 0 {
		return true
	}
	if now.UnixNano() < until {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// success closes the breaker. Only a useful success (see report) clears the failures: after a
// mere answer the next failure opens the breaker again. It returns true when a useful success
// ends an outage that was logged.
func (b *breaker) success(useful bool) bool {
	if b.openUntil.Load() != 0 {
		b.openUntil.Store(0)
		b.probing.Store(false)
	}
	if !useful {
		return false
	}
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	return b.down.Load() && b.down.CompareAndSwap(true, false)
}

// failure counts a failure and opens the breaker at the threshold, or again after a failed probe;
// it returns true when this starts an outage, to be logged once.
func (b *breaker) failure(now time.Time) bool {
	n := b.failures.Add(1)
	if n >= breakerFailures || b.openUntil.Load() != 0 {
		b.openUntil.Store(now.Add(b.pause).UnixNano())
		b.probing.Store(false)
		return b.down.CompareAndSwap(false, true)
	}
	return false
}

// abandon ends a probe that did not reach Redis (every connection busy), so the next operation
// probes instead.
func (b *breaker) abandon() {
	b.probing.Store(false)
}

// parseSharedCache checks the shared cache options (see the README's "Running several
// replicas").
func parseSharedCache(s *settings, c *Config) error {
	var err error
	if s.sharedCacheTimeout, err = parseDuration("sharedCacheTimeout", c.SharedCacheTimeout, "50ms"); err != nil {
		return err
	}
	if s.sharedCacheTimeout <= 0 {
		return fmt.Errorf("sharedCacheTimeout: %q must be above zero, for example 50ms", c.SharedCacheTimeout)
	}
	s.sharedCachePasswordFile = strings.TrimSpace(c.SharedCachePasswordFile)
	s.sharedCacheCAFile = strings.TrimSpace(c.SharedCacheCAFile)
	raw := strings.TrimSpace(c.SharedCache)
	if raw == "" {
		if s.sharedCachePasswordFile != "" || s.sharedCacheCAFile != "" {
			return errors.New("sharedCachePasswordFile and sharedCacheCAFile need sharedCache: set it to the server's URL (redis://host:6379/0 or rediss://host:6380/0), or remove them")
		}
		return nil
	}
	u, err := parseRedisURL(raw, s.sharedCachePasswordFile != "")
	if err != nil {
		return err
	}
	if s.sharedCacheCAFile != "" && u.Scheme != "rediss" {
		return errors.New("sharedCacheCAFile is the CA bundle for TLS: use a rediss:// URL in sharedCache, or remove it")
	}
	s.sharedCache = u
	return nil
}

// parseRedisURL reads redis://[user@]host[:port][/db] or rediss://..., and returns it with the
// port (6379 by default) and the database ("/0" by default) written out. The raw value is never
// quoted in an error: it may hold a password.
func parseRedisURL(raw string, hasPassword bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, errors.New("sharedCache: not a Redis URL; write it as redis://host:6379/0, or rediss://host:6380/0 for TLS")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("sharedCache: scheme %q is not supported; use redis:// or rediss:// (TLS)", u.Scheme)
	}
	if _, set := u.User.Password(); set {
		return nil, errors.New("sharedCache: remove the password from the URL (it would show in Traefik's configuration log) and put it in the file named by sharedCachePasswordFile")
	}
	if u.User != nil && u.User.Username() != "" && !hasPassword {
		return nil, errors.New("sharedCache: the URL names an ACL user; set sharedCachePasswordFile to the file holding its password")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("sharedCache: remove the query and the fragment from the URL; the other settings are sharedCachePasswordFile, sharedCacheTimeout and sharedCacheCAFile")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" {
		db = "0"
	}
	if n, err := strconv.Atoi(db); err != nil || n < 0 {
		return nil, fmt.Errorf("sharedCache: %q is not a database number; end the URL with /0 or another number", "/"+db)
	}
	u.Path = "/" + db
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "6379")
	}
	return u, nil
}

// redisURL is the sharedCache URL as the fingerprint holds it; empty for memory only.
func redisURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}
