package oboexchange

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// The Redis protocol (RESP2) subset the shared cache needs: AUTH and SELECT when a connection
// opens, GET, SET ... PX, PING. No client library is vendored: redigo does not load under Yaegi,
// and this is all the plugin asks of Redis or Valkey.

const (
	// maxRedisConns bounds the connections one shared cache opens; an operation that finds them
	// all busy is skipped (a miss), not queued. Background writes take at most maxSharedWrites of
	// them, so that lookups always find some.
	maxRedisConns = 64
	// maxRedisIdle is how long an unused connection is kept: a NAT or a load balancer may drop it
	// silently, and a fresh one costs less than an operation that times out.
	maxRedisIdle = 60 * time.Second
	// maxRedisLine bounds a status or error line of the server; maxRedisBulk a value.
	maxRedisLine = 1024
	maxRedisBulk = 64 << 10
)

// errRedisBusy says every connection is in use; the caller treats it as a miss.
var errRedisBusy = errors.New("all shared cache connections are busy")

// errRedisClosed says the shared cache was dropped with its exchanger.
var errRedisClosed = errors.New("the shared cache is closed")

// redisClient is a small pool of connections to one Redis or Valkey server. Every round trip
// has its own deadline (sharedCacheTimeout), so a server that hangs costs at most that long.
type redisClient struct {
	addr     string
	useTLS   bool
	host     string       // server name checked against the certificate
	ca       *watchedFile // sharedCacheCAFile; nil: the system's roots
	user     string       // ACL user; empty: the default user
	password *watchedFile // sharedCachePasswordFile; nil: no AUTH
	db       int
	timeout  time.Duration

	mu     sync.Mutex
	idle   []*redisConn // most recently used last
	open   int          // connections in use or idle
	closed bool
	// fileProblem is a password or CA file that could no longer be read (the last good content
	// is used); reported once by takeFileProblem.
	fileProblem  string
	fileReported bool
}

// redisConn is one connection and its reader.
type redisConn struct {
	nc      net.Conn
	rd      *bufio.Reader
	lastUse time.Time
	fresh   bool // AUTH and SELECT not sent yet
}

// redisError is an error reply of the server: -ERR, -WRONGPASS, -NOPERM, -READONLY, -OOM...
// The connection stays usable after one.
type redisError struct{ msg string }

func (e *redisError) Error() string { return "redis: " + e.msg }

// get returns the value of key, or nil when it has none.
func (c *redisClient) get(key string) ([]byte, error) {
	return c.do("GET", key)
}

// set stores value under key for ttl (PX, in milliseconds, at least 1).
func (c *redisClient) set(key string, value []byte, ttl time.Duration) error {
	ms := ttl.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	reply, err := c.do("SET", key, string(value), "PX", strconv.FormatInt(ms, 10))
	if err == nil && string(reply) != "OK" {
		err = fmt.Errorf("redis: SET answered %q", truncate(string(reply), 40))
	}
	return err
}

// ping checks the connection, the credentials and the database.
func (c *redisClient) ping() error {
	reply, err := c.do("PING")
	if err == nil && string(reply) != "PONG" {
		err = fmt.Errorf("redis: PING answered %q", truncate(string(reply), 40))
	}
	return err
}

// do runs one command. A connection taken from the pool may have been closed by the server
// meanwhile (a restart, an idle timeout): when it fails without timing out, the command is sent
// once more on a new connection.
func (c *redisClient) do(args ...string) ([]byte, error) {
	conn, err := c.take()
	if err != nil {
		return nil, err
	}
	reused := !conn.fresh
	reply, err := c.roundTrip(conn, args)
	if err != nil && reused && !isTimeout(err) && !isRedisError(err) {
		if conn, err = c.take(); err != nil {
			return nil, err
		}
		reply, err = c.roundTrip(conn, args)
	}
	return reply, err
}

// roundTrip sends the command (after AUTH and SELECT on a new connection, in the same write, so
// that a new connection also costs one round trip) and reads the replies. The connection goes
// back to the pool unless it broke; a failure on it also empties the pool, whose connections
// most likely share its fate.
func (c *redisClient) roundTrip(conn *redisConn, args []string) ([]byte, error) {
	var buf []byte
	n := 0
	if conn.fresh {
		for _, cmd := range c.handshake() {
			buf = appendCommand(buf, cmd)
			n++
		}
	}
	buf = appendCommand(buf, args)
	n++
	reply, err := exchangeReplies(conn, buf, n, c.timeout)
	if err != nil && !isRedisError(err) {
		// Broken, or not authenticated: never reused.
		c.discard(conn)
		c.closeIdle()
		return nil, err
	}
	conn.fresh = false
	c.put(conn)
	return reply, err
}

// exchangeReplies writes buf and reads n replies within timeout, returning the last reply or the
// first error reply. An error reply to AUTH or SELECT (all but the last command) is returned as a
// plain error: the connection is not usable.
func exchangeReplies(conn *redisConn, buf []byte, n int, timeout time.Duration) ([]byte, error) {
	if err := conn.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := conn.nc.Write(buf); err != nil {
		return nil, err
	}
	var reply []byte
	var first error
	for i := 0; i < n; i++ {
		r, err := readReply(conn.rd)
		if err != nil && !isRedisError(err) {
			return nil, err
		}
		if err != nil && first == nil && i < n-1 {
			first = errors.New("redis: opening the connection: " + err.(*redisError).msg)
		} else if err != nil && first == nil {
			first = err
		}
		reply = r
	}
	return reply, first
}

// handshake is what a new connection sends before its first command.
func (c *redisClient) handshake() [][]string {
	var cmds [][]string
	if c.password != nil {
		password, err := c.readPassword()
		if err == nil || password != "" {
			if c.user != "" {
				cmds = append(cmds, []string{"AUTH", c.user, password})
			} else {
				cmds = append(cmds, []string{"AUTH", password})
			}
		}
	}
	if c.db != 0 {
		cmds = append(cmds, []string{"SELECT", strconv.Itoa(c.db)})
	}
	return cmds
}

// readPassword reads the password file; on an error, the last good password is returned with it
// and the problem is noted for takeFileProblem.
func (c *redisClient) readPassword() (string, error) {
	v, err := c.password.get()
	c.noteFile(err)
	password, _ := v.(string)
	return password, err
}

// noteFile records whether a watched file could be read.
func (c *redisClient) noteFile(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.fileProblem, c.fileReported = "", false
		return
	}
	c.fileProblem = err.Error()
}

// takeFileProblem returns a file problem the first time it is seen, for one log line.
func (c *redisClient) takeFileProblem() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fileProblem == "" || c.fileReported {
		return ""
	}
	c.fileReported = true
	return c.fileProblem
}

// take returns an idle connection, or a new one when fewer than maxRedisConns are open.
func (c *redisClient) take() (*redisConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errRedisClosed
	}
	now := time.Now()
	for len(c.idle) > 0 {
		conn := c.idle[len(c.idle)-1]
		c.idle = c.idle[:len(c.idle)-1]
		if now.Sub(conn.lastUse) < maxRedisIdle {
			c.mu.Unlock()
			return conn, nil
		}
		c.open--
		_ = conn.nc.Close()
	}
	if c.open >= maxRedisConns {
		c.mu.Unlock()
		return nil, errRedisBusy
	}
	c.open++
	c.mu.Unlock()
	conn, err := c.dial()
	if err != nil {
		c.mu.Lock()
		c.open--
		c.mu.Unlock()
		return nil, err
	}
	return conn, nil
}

// dial opens a connection, with TLS for rediss://. Connecting and the TLS handshake each have
// the round-trip timeout.
func (c *redisClient) dial() (*redisConn, error) {
	d := &net.Dialer{Timeout: c.timeout}
	nc, err := d.Dial("tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if c.useTLS {
		cfg, err := c.tlsConfig()
		if err != nil {
			_ = nc.Close()
			return nil, err
		}
		tc := tls.Client(nc, cfg)
		_ = tc.SetDeadline(time.Now().Add(c.timeout))
		if err := tc.Handshake(); err != nil {
			_ = nc.Close()
			return nil, err
		}
		nc = tc
	}
	return &redisConn{nc: nc, rd: bufio.NewReaderSize(nc, 4096), fresh: true}, nil
}

// tlsConfig verifies the server against sharedCacheCAFile, read again for each new connection so
// that a renewed bundle is used, or against the system's roots.
func (c *redisClient) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: c.host, MinVersion: tls.VersionTLS12}
	if c.ca == nil {
		return cfg, nil
	}
	v, err := c.ca.get()
	c.noteFile(err)
	pool, _ := v.(*x509.CertPool)
	if pool == nil {
		return nil, err
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// put returns a healthy connection to the pool.
func (c *redisClient) put(conn *redisConn) {
	conn.lastUse = time.Now()
	c.mu.Lock()
	if c.closed {
		c.open--
		c.mu.Unlock()
		_ = conn.nc.Close()
		return
	}
	c.idle = append(c.idle, conn)
	c.mu.Unlock()
}

// discard closes a connection that must not be reused.
func (c *redisClient) discard(conn *redisConn) {
	_ = conn.nc.Close()
	c.mu.Lock()
	c.open--
	c.mu.Unlock()
}

// closeIdle closes the idle connections.
func (c *redisClient) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.open -= len(idle)
	c.mu.Unlock()
	for _, conn := range idle {
		_ = conn.nc.Close()
	}
}

// close closes the idle connections and makes the client refuse new operations; the ones in
// progress end within their deadline and close their connection.
func (c *redisClient) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.closeIdle()
}

// appendCommand encodes a command as a RESP array of bulk strings.
func appendCommand(buf []byte, args []string) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(len(args)), 10)
	buf = append(buf, '\r', '\n')
	for _, a := range args {
		buf = append(buf, '$')
		buf = strconv.AppendInt(buf, int64(len(a)), 10)
		buf = append(buf, '\r', '\n')
		buf = append(buf, a...)
		buf = append(buf, '\r', '\n')
	}
	return buf
}

// readReply reads one reply: a status (+), an error (-, as a *redisError), an integer (:) or a
// bulk string ($, nil for a missing value). Anything else, arrays included (no command of the
// subset answers with one), is a protocol error and the connection is dropped.
func readReply(rd *bufio.Reader) ([]byte, error) {
	line, err := readLine(rd)
	if err != nil {
		return nil, err
	}
	switch line[0] {
	case '+', ':':
		return []byte(line[1:]), nil
	case '-':
		return nil, &redisError{msg: truncate(line[1:], 200)}
	case '$':
		return readBulk(rd, line[1:])
	}
	return nil, fmt.Errorf("redis: unexpected reply type %q", truncate(line, 20))
}

// readLine reads a line ending in CRLF, without it; at most maxRedisLine bytes.
func readLine(rd *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := rd.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxRedisLine {
			return "", errors.New("redis: reply line too long")
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return "", err
		}
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return "", errors.New("redis: malformed reply line")
	}
	return string(line[:len(line)-2]), nil
}

// readBulk reads the body of a bulk string whose length is given.
func readBulk(rd *bufio.Reader, length string) ([]byte, error) {
	n, err := strconv.Atoi(length)
	if err != nil || n < -1 || n > maxRedisBulk {
		return nil, fmt.Errorf("redis: bad bulk length %q", truncate(length, 20))
	}
	if n == -1 {
		return nil, nil
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, err
	}
	if b[n] != '\r' || b[n+1] != '\n' {
		return nil, errors.New("redis: malformed bulk string")
	}
	return b[:n], nil
}

// isRedisError reports whether err is an error reply of the server (the connection is fine).
func isRedisError(err error) bool {
	_, ok := err.(*redisError)
	return ok
}

// isTimeout reports whether err is a deadline that passed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// truncate cuts s to n bytes for a message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
