package resp

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/resp/resptest"
)

// newClient is a client of addr with the given options (Addr and Timeout filled in when unset),
// closed when the test ends.
func newClient(t *testing.T, addr string, o Options) *Client {
	t.Helper()
	o.Addr = addr
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	c := New(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// fixed returns a Password function for a constant password.
func fixed(password string) func() (string, error) {
	return func() (string, error) { return password, nil }
}

// The commands against a real server: PING, GET of a missing key, SET with PX and GET, binary
// values, expiry.
func TestCommands(t *testing.T) {
	r := resptest.Start(t)
	c := newClient(t, r.Addr(), Options{})

	if err := c.Ping(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if v, err := c.Get("missing"); err != nil || v != nil {
		t.Errorf("GET of a missing key = %q, %v; want nil, nil", v, err)
	}
	binary := []byte("a\r\nb\x00c$-1\r\n*2")
	if err := c.Set("k", binary, 300*time.Millisecond); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if v, err := c.Get("k"); err != nil || !bytes.Equal(v, binary) {
		t.Errorf("GET = %q, %v; want %q", v, err, binary)
	}
	ttl, _ := resptest.Do(t, r.Addr(), nil, "PTTL", "k").([]byte)
	if ms, _ := strconv.Atoi(string(ttl)); ms <= 0 || ms > 300 {
		t.Errorf("PTTL = %s, want at most 300 ms", ttl)
	}
	// Expiry is the server's: wait until it has passed, by the server's own answer.
	for i := 0; i < 200; i++ {
		if v, err := c.Get("k"); err == nil && v == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("the value outlived its PX")
}

// AUTH (password alone or ACL user) and SELECT go with the first command of each connection.
// An error reply is reported by its code alone, never with the password.
func TestAuthAndDatabase(t *testing.T) {
	const password = "redis-password-0123"
	acl := []string{"--user", "default", "off", "--user", "gateway", "on", ">" + password, "~oboexchange:*", "+get", "+set", "+ping", "+select",
		"--user", "admin", "on", ">admin", "~*", "&*", "+@all"}
	tests := []struct {
		name     string
		server   []string
		user     string
		password string // none when empty
		db       int
		key      string
		wantErr  string // empty: PING, SET and GET succeed
	}{
		{name: "no password", key: "oboexchange:a"},
		{name: "password", server: []string{"--requirepass", password}, password: password, key: "oboexchange:a"},
		{name: "wrong password", server: []string{"--requirepass", password}, password: "wrong-password-4567", key: "oboexchange:a", wantErr: "WRONGPASS"},
		{name: "password missing", server: []string{"--requirepass", password}, key: "oboexchange:a", wantErr: "NOAUTH"},
		{name: "ACL user", server: acl, user: "gateway", password: password, key: "oboexchange:a"},
		{name: "ACL user outside its keys", server: acl, user: "gateway", password: password, key: "other:a", wantErr: "NOPERM"},
		{name: "AUTH to a server without a password", user: "gateway", password: password, key: "oboexchange:a", wantErr: "opening the connection: error reply"},
		{name: "database 3", db: 3, key: "oboexchange:a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := resptest.Start(t, tc.server...)
			o := Options{User: tc.user, DB: tc.db}
			if tc.password != "" {
				o.Password = fixed(tc.password)
			}
			c := newClient(t, r.Addr(), o)

			err := c.Set(tc.key, []byte("v"), time.Minute)
			if err == nil {
				var v []byte
				v, err = c.Get(tc.key)
				if err == nil && string(v) != "v" {
					t.Errorf("GET = %q", v)
				}
			}
			if tc.wantErr == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %s", err, tc.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), tc.password) && tc.password != "" || strings.Contains(err.Error(), "gateway")) {
				t.Errorf("the error %q quotes the command", err)
			}
			if tc.db == 3 {
				if v := resptest.Do(t, r.Addr(), nil, "GET", tc.key); v != nil {
					t.Errorf("the value is in database 0, want it in 3")
				}
			}
		})
	}
}

// An error reply keeps only its code: the text after it may quote the command, password included.
func TestErrorCode(t *testing.T) {
	tests := []struct{ reply, want string }{
		{"ERR unknown command 'AUTH', with args beginning with: 'user' 'p4ssw0rd'", "ERR"},
		{"WRONGPASS invalid username-password pair or user is disabled.", "WRONGPASS"},
		{"NOAUTH Authentication required.", "NOAUTH"},
		{"READONLY You can't write against a read only replica.", "READONLY"},
		{"p4ssw0rd is not a code", "ERR"},
		{"", "ERR"},
		{"NOPERM", "NOPERM"},
	}
	for _, tc := range tests {
		f := resptest.StartFake(t, resptest.AnswerThenWait("-"+tc.reply+"\r\n"))
		_, err := newClient(t, f.Addr(), Options{}).Get("k")
		if err == nil || err.Error() != "redis: error reply "+tc.want || !IsReply(err) {
			t.Errorf("reply %q: error %v, want the code %s alone", tc.reply, err, tc.want)
		}
	}
}

// rediss:// verifies the server against RootCAs.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caPEM, certFile, keyFile := testCertificates(t, dir)
	otherCA, _, _ := testCertificates(t, t.TempDir())
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := resptest.Start(t, "--tls-port", "0", "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	roots := func(pemData []byte) func() (*x509.CertPool, error) {
		return func() (*x509.CertPool, error) {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pemData)
			return pool, nil
		}
	}
	failing := func() (*x509.CertPool, error) { return nil, errors.New("CA file unreadable") }
	tests := []struct {
		name    string
		addr    string
		o       Options
		wantErr string // empty: PING succeeds; "*": any error
	}{
		{"CA bundle", r.Addr(), Options{TLS: true, ServerName: "127.0.0.1", RootCAs: roots(caPEM)}, ""},
		{"host name", "localhost:" + r.Port, Options{TLS: true, ServerName: "localhost", RootCAs: roots(caPEM)}, ""},
		{"another CA", r.Addr(), Options{TLS: true, ServerName: "127.0.0.1", RootCAs: roots(otherCA)}, "certificate"},
		{"system roots", r.Addr(), Options{TLS: true, ServerName: "127.0.0.1"}, "certificate"},
		{"no CA to be had", r.Addr(), Options{TLS: true, ServerName: "127.0.0.1", RootCAs: failing}, "CA file unreadable"},
		{"plain text to a TLS port", r.Addr(), Options{}, "*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := newClient(t, tc.addr, tc.o).Ping()
			matches := err != nil && (tc.wantErr == "*" || strings.Contains(err.Error(), tc.wantErr))
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && !matches {
				t.Errorf("PING: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// testCertificates writes a server certificate for 127.0.0.1 and localhost, signed by a new CA,
// and returns the CA's PEM with the paths of the certificate and its key.
func testCertificates(t *testing.T, dir string) ([]byte, string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile := filepath.Join(dir, "redis.crt")
	keyFile := filepath.Join(dir, "redis.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// Connections are reused, at most MaxConns are open at once, and a server restart costs no
// failed operation: a pooled connection the server closed is replaced.
func TestPool(t *testing.T) {
	r := resptest.Start(t)
	c := newClient(t, r.Addr(), Options{})
	connections := func() int {
		info, _ := resptest.Do(t, r.Addr(), nil, "INFO", "stats").([]byte)
		for _, line := range strings.Split(string(info), "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
				n, _ := strconv.Atoi(v)
				return n - 1 // less the INFO connection itself
			}
		}
		t.Fatal("no total_connections_received in INFO")
		return 0
	}

	before := connections()
	for i := 0; i < 50; i++ {
		if _, err := c.Get("k"); err != nil {
			t.Fatal(err)
		}
	}
	if n := connections() - before - 1; n != 1 {
		t.Errorf("50 sequential GETs opened %d connections, want 1", n)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	busy := 0
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Get("k"); err == ErrBusy {
				mu.Lock()
				busy++
				mu.Unlock()
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := c.Open(); n > MaxConns {
		t.Errorf("%d connections open, want at most %d", n, MaxConns)
	}
	t.Logf("200 concurrent GETs: %d connections in all, %d skipped as busy", connections(), busy)

	r.Restart(t)
	if _, err := c.Get("k"); err != nil {
		t.Errorf("GET after a server restart: %v, want a new connection and no error", err)
	}
}

// A server that answers garbage, never answers, or closes the connection costs at most the
// timeout, gives an error, and its connection is not reused.
func TestBadServers(t *testing.T) {
	tests := []struct {
		name  string
		serve func(c net.Conn, rd *bufio.Reader)
	}{
		{"HTTP instead of RESP", resptest.AnswerThenWait("HTTP/1.1 400 Bad Request\r\n\r\n")},
		{"never answers", func(c net.Conn, rd *bufio.Reader) { _, _ = rd.ReadByte(); _, _ = rd.ReadByte() }},
		{"closes at once", func(c net.Conn, rd *bufio.Reader) {}},
		{"endless line", func(c net.Conn, rd *bufio.Reader) {
			_, _ = resptest.ReadCommand(rd)
			_, _ = c.Write(append([]byte("+"), bytes.Repeat([]byte("a"), 100000)...))
		}},
		{"oversized bulk", resptest.AnswerThenWait("$999999999\r\n")},
		{"array", resptest.AnswerThenWait("*1\r\n$1\r\na\r\n")},
		{"bulk without CRLF", resptest.AnswerThenWait("$1\r\nabc")},
		{"half a reply", resptest.AnswerThenWait("$10\r\nabc")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := resptest.StartFake(t, tc.serve)
			c := newClient(t, f.Addr(), Options{Timeout: 100 * time.Millisecond})
			for i := 1; i <= 2; i++ {
				if _, err := c.Get("k"); err == nil {
					t.Fatal("no error")
				}
				if got := f.Conns(); got < i {
					t.Errorf("after %d GETs, %d connections: a broken one was reused", i, got)
				}
			}
			if n := c.Open(); n != 0 {
				t.Errorf("%d connections still counted open", n)
			}
		})
	}
}

// An error reply leaves the connection usable.
func TestErrorReplyKeepsConnection(t *testing.T) {
	f := resptest.StartFake(t, func(c net.Conn, rd *bufio.Reader) {
		for {
			if _, err := resptest.ReadCommand(rd); err != nil {
				return
			}
			_, _ = c.Write([]byte("-READONLY You can't write against a read only replica.\r\n"))
		}
	})
	c := newClient(t, f.Addr(), Options{})
	for i := 0; i < 3; i++ {
		err := c.Set("k", []byte("v"), time.Second)
		if err == nil || !IsReply(err) || !strings.Contains(err.Error(), "READONLY") {
			t.Fatalf("SET: %v, want the READONLY reply", err)
		}
	}
	if n := f.Conns(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestClosed(t *testing.T) {
	r := resptest.Start(t)
	c := newClient(t, r.Addr(), Options{})
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Ping(); err != ErrClosed {
		t.Errorf("PING after close: %v", err)
	}
	if n := c.Open(); n != 0 {
		t.Errorf("%d connections open after close", n)
	}
}

// The password is asked for each new connection: a rotated password is used once the server has
// closed the old connections; a password that cannot be had (the last good one is empty) sends no
// AUTH.
func TestPasswordRotation(t *testing.T) {
	r := resptest.Start(t, "--requirepass", "first-redis-password")
	var mu sync.Mutex
	current, asked := "first-redis-password", 0
	password := func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		asked++
		return current, nil
	}
	c := newClient(t, r.Addr(), Options{Password: password})
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	resptest.Do(t, r.Addr(), []string{"first-redis-password"}, "CONFIG", "SET", "requirepass", "second-redis-password")
	mu.Lock()
	current = "second-redis-password"
	mu.Unlock()
	resptest.Do(t, r.Addr(), []string{"second-redis-password"}, "CLIENT", "KILL", "TYPE", "normal")
	if err := c.Ping(); err != nil {
		t.Errorf("PING with the rotated password: %v", err)
	}
	if asked != 2 {
		t.Errorf("the password was asked %d times, want once per connection (2)", asked)
	}

	none := newClient(t, r.Addr(), Options{Password: func() (string, error) { return "", errors.New("unreadable") }})
	if err := none.Ping(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without a password: %v, want NOAUTH", err)
	}
}
