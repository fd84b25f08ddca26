// Package resp is the small Redis protocol (RESP2) client of the shared cache: a pool of
// connections to one Redis or Valkey server, and the commands the cache needs (AUTH and SELECT when
// a connection opens, GET, SET ... PX, PING). No client library is vendored: redigo does not load
// under Yaegi, and this is all the plugin asks of the server. It imports the standard library only.
package resp

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

const (
	// MaxConns bounds the connections one client opens; an operation that finds them all busy
	// fails at once with ErrBusy (the caller treats it as a miss), it is not queued.
	MaxConns = 64
	// maxIdle is how long an unused connection is kept: a NAT or a load balancer may drop it
	// silently, and a fresh one costs less than an operation that times out.
	maxIdle = 60 * time.Second
	// maxLine bounds a status or error line of the server; maxBulk a value.
	maxLine = 1024
	maxBulk = 64 << 10
)

// ErrBusy says every connection is in use.
var ErrBusy = errors.New("all shared cache connections are busy")

// ErrClosed says the client was closed.
var ErrClosed = errors.New("the shared cache is closed")

// Options say where the server is and how to open a connection to it.
type Options struct {
	Addr       string // host:port
	TLS        bool   // rediss://
	ServerName string // checked against the server's certificate
	// RootCAs returns the CAs the server's certificate is verified against, read again for each
	// new connection so that a renewed bundle is used; nil means the system's roots. When it
	// returns an error with a pool, the pool (the last good one) is used.
	RootCAs func() (*x509.CertPool, error)
	User    string // ACL user; empty for the default user
	// Password returns the password sent with AUTH, read for each new connection so that a
	// rotated one is used; nil means no AUTH. When it returns an error with a password (the last
	// good one), that password is sent.
	Password func() (string, error)
	DB       int
	Timeout  time.Duration // of each round trip, of connecting and of the TLS handshake
}

// Client is a small pool of connections to one server. Every round trip has its own deadline,
// so a server that hangs costs at most Options.Timeout.
type Client struct {
	o Options

	mu     sync.Mutex
	idle   []*conn // most recently used last
	open   int     // connections in use or idle
	closed bool
}

// conn is one connection and its reader.
type conn struct {
	nc      net.Conn
	rd      *bufio.Reader
	lastUse time.Time
	fresh   bool // AUTH and SELECT not sent yet
}

// replyError is an error reply of the server: -ERR, -WRONGPASS, -NOPERM, -READONLY, -OOM... The
// connection stays usable after one. Only the code is kept: the text after it can quote the
// command, and a refused AUTH quotes the password ("-ERR unknown command 'AUTH', with args
// beginning with: 'user' 'password'").
type replyError struct{ code string }

func (e *replyError) Error() string { return "redis: error reply " + e.code }

// IsReply reports whether err is an error reply of the server (the connection itself is fine).
func IsReply(err error) bool {
	_, ok := err.(*replyError)
	return ok
}

// New returns a client; no connection is opened until the first command.
func New(o Options) *Client {
	return &Client{o: o}
}

// Get returns the value of key, or nil when it has none.
func (c *Client) Get(key string) ([]byte, error) {
	return c.do("GET", key)
}

// Set stores value under key for ttl (PX, in milliseconds, at least 1).
func (c *Client) Set(key string, value []byte, ttl time.Duration) error {
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

// Ping checks the connection, the credentials and the database.
func (c *Client) Ping() error {
	reply, err := c.do("PING")
	if err == nil && string(reply) != "PONG" {
		err = fmt.Errorf("redis: PING answered %q", truncate(string(reply), 40))
	}
	return err
}

// Close closes the idle connections and makes the client refuse new commands with ErrClosed;
// the ones in progress end within their deadline and close their connection.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.closeIdle()
}

// Open is the number of connections open, in use or idle.
func (c *Client) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// do runs one command. A connection taken from the pool may have been closed by the server
// meanwhile (a restart, an idle timeout): when it fails without timing out, the command is sent
// once more on a new connection.
func (c *Client) do(args ...string) ([]byte, error) {
	cn, err := c.take()
	if err != nil {
		return nil, err
	}
	reused := !cn.fresh
	reply, err := c.roundTrip(cn, args)
	if err != nil && reused && !isTimeout(err) && !IsReply(err) {
		if cn, err = c.take(); err != nil {
			return nil, err
		}
		reply, err = c.roundTrip(cn, args)
	}
	return reply, err
}

// roundTrip sends the command (after AUTH and SELECT on a new connection, in the same write, so
// that a new connection also costs one round trip) and reads the replies. The connection goes
// back to the pool unless it broke; a failure on it also empties the pool, whose connections
// most likely share its fate.
func (c *Client) roundTrip(cn *conn, args []string) ([]byte, error) {
	var buf []byte
	n := 0
	if cn.fresh {
		for _, cmd := range c.handshake() {
			buf = appendCommand(buf, cmd)
			n++
		}
	}
	buf = appendCommand(buf, args)
	n++
	reply, err := exchangeReplies(cn, buf, n, c.o.Timeout)
	if err != nil && !IsReply(err) {
		// Broken, or not authenticated: never reused.
		c.discard(cn)
		c.closeIdle()
		return nil, err
	}
	cn.fresh = false
	c.put(cn)
	return reply, err
}

// exchangeReplies writes buf and reads n replies within timeout, returning the last reply or the
// first error reply. An error reply to AUTH or SELECT (all but the last command) is returned as a
// plain error: the connection is not usable.
func exchangeReplies(cn *conn, buf []byte, n int, timeout time.Duration) ([]byte, error) {
	if err := cn.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := cn.nc.Write(buf); err != nil {
		return nil, err
	}
	var reply []byte
	var first error
	for i := 0; i < n; i++ {
		r, err := readReply(cn.rd)
		if err != nil && !IsReply(err) {
			return nil, err
		}
		if err != nil && first == nil && i < n-1 {
			first = errors.New("redis: opening the connection: error reply " + err.(*replyError).code)
		} else if err != nil && first == nil {
			first = err
		}
		reply = r
	}
	return reply, first
}

// handshake is what a new connection sends before its first command.
func (c *Client) handshake() [][]string {
	var cmds [][]string
	if c.o.Password != nil {
		password, err := c.o.Password()
		if err == nil || password != "" {
			if c.o.User != "" {
				cmds = append(cmds, []string{"AUTH", c.o.User, password})
			} else {
				cmds = append(cmds, []string{"AUTH", password})
			}
		}
	}
	if c.o.DB != 0 {
		cmds = append(cmds, []string{"SELECT", strconv.Itoa(c.o.DB)})
	}
	return cmds
}

// take returns an idle connection, or a new one when fewer than MaxConns are open.
func (c *Client) take() (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	now := time.Now()
	for len(c.idle) > 0 {
		cn := c.idle[len(c.idle)-1]
		c.idle = c.idle[:len(c.idle)-1]
		if now.Sub(cn.lastUse) < maxIdle {
			c.mu.Unlock()
			return cn, nil
		}
		c.open--
		_ = cn.nc.Close()
	}
	if c.open >= MaxConns {
		c.mu.Unlock()
		return nil, ErrBusy
	}
	c.open++
	c.mu.Unlock()
	cn, err := c.dial()
	if err != nil {
		c.mu.Lock()
		c.open--
		c.mu.Unlock()
		return nil, err
	}
	return cn, nil
}

// dial opens a connection, with TLS when asked. Connecting and the TLS handshake each have the
// round-trip timeout.
func (c *Client) dial() (*conn, error) {
	d := &net.Dialer{Timeout: c.o.Timeout}
	nc, err := d.Dial("tcp", c.o.Addr)
	if err != nil {
		return nil, err
	}
	if c.o.TLS {
		cfg, err := c.tlsConfig()
		if err != nil {
			_ = nc.Close()
			return nil, err
		}
		tc := tls.Client(nc, cfg)
		_ = tc.SetDeadline(time.Now().Add(c.o.Timeout))
		if err := tc.Handshake(); err != nil {
			_ = nc.Close()
			return nil, err
		}
		nc = tc
	}
	return &conn{nc: nc, rd: bufio.NewReaderSize(nc, 4096), fresh: true}, nil
}

// tlsConfig verifies the server against RootCAs, or against the system's roots.
func (c *Client) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: c.o.ServerName, MinVersion: tls.VersionTLS12}
	if c.o.RootCAs == nil {
		return cfg, nil
	}
	pool, err := c.o.RootCAs()
	if pool == nil {
		return nil, err
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// put returns a healthy connection to the pool.
func (c *Client) put(cn *conn) {
	cn.lastUse = time.Now()
	c.mu.Lock()
	if c.closed {
		c.open--
		c.mu.Unlock()
		_ = cn.nc.Close()
		return
	}
	c.idle = append(c.idle, cn)
	c.mu.Unlock()
}

// discard closes a connection that must not be reused.
func (c *Client) discard(cn *conn) {
	_ = cn.nc.Close()
	c.mu.Lock()
	c.open--
	c.mu.Unlock()
}

// closeIdle closes the idle connections.
func (c *Client) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.open -= len(idle)
	c.mu.Unlock()
	for _, cn := range idle {
		_ = cn.nc.Close()
	}
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

// readReply reads one reply: a status (+), an error (-, as a *replyError), an integer (:) or a
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
		return nil, &replyError{code: errorCode(line[1:])}
	case '$':
		return readBulk(rd, line[1:])
	}
	return nil, fmt.Errorf("redis: unexpected reply type %q", line[:1])
}

// errorCode is the first word of an error reply, when it is a code (capital letters, as Redis and
// Valkey write them: ERR, WRONGPASS, NOAUTH, NOPERM, READONLY, OOM...); "ERR" otherwise.
func errorCode(text string) string {
	code := text
	for i := 0; i < len(text); i++ {
		if text[i] == ' ' {
			code = text[:i]
			break
		}
	}
	if code == "" || len(code) > 32 {
		return "ERR"
	}
	for i := 0; i < len(code); i++ {
		if code[i] < 'A' || code[i] > 'Z' {
			return "ERR"
		}
	}
	return code
}

// readLine reads a line ending in CRLF, without it; at most maxLine bytes.
func readLine(rd *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := rd.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
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
	if err != nil || n < -1 || n > maxBulk {
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

// isTimeout reports whether err is a deadline that passed. The net package's errors carry it
// themselves (*net.OpError), unwrapped.
func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// truncate cuts s to n bytes for a message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
