package oboexchange

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testRedisClient is a client of the server at url, as the shared cache builds it.
func testRedisClient(t *testing.T, rawURL, passwordFile, caFile string, timeout time.Duration) *redisClient {
	t.Helper()
	c := testConfig("https://idp.example.com/token")
	c.SharedCache = rawURL
	c.SharedCachePasswordFile = passwordFile
	c.SharedCacheCAFile = caFile
	c.SharedCacheTimeout = timeout.String()
	s, err := parseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	sc := newSharedCache(s, "fp")
	if err := sc.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.close() })
	return sc.client
}

// The commands of the subset against a real server: PING, GET of a missing key, SET with PX and
// GET, binary values, expiry.
func TestRedisCommands(t *testing.T) {
	r := startRedis(t)
	c := testRedisClient(t, r.url(), "", "", time.Second)

	if err := c.ping(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if v, err := c.get("missing"); err != nil || v != nil {
		t.Errorf("GET of a missing key = %q, %v; want nil, nil", v, err)
	}
	binary := []byte("a\r\nb\x00c$-1\r\n*2")
	if err := c.set("k", binary, 300*time.Millisecond); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if v, err := c.get("k"); err != nil || !bytes.Equal(v, binary) {
		t.Errorf("GET = %q, %v; want %q", v, err, binary)
	}
	ttl, _ := redisDo(t, r.addr(), nil, "PTTL", "k").([]byte)
	if ms, _ := strconv.Atoi(string(ttl)); ms <= 0 || ms > 300 {
		t.Errorf("PTTL = %s, want at most 300 ms", ttl)
	}
	time.Sleep(400 * time.Millisecond)
	if v, err := c.get("k"); err != nil || v != nil {
		t.Errorf("GET after PX = %q, %v; want nil", v, err)
	}
}

// AUTH (password alone or ACL user) and SELECT go with the first command of each connection.
func TestRedisAuthAndDatabase(t *testing.T) {
	const password = "redis-password-0123"
	remember(password)
	acl := []string{"--user", "default", "off", "--user", "gateway", "on", ">" + password, "~oboexchange:*", "+get", "+set", "+ping", "+select",
		"--user", "admin", "on", ">admin", "~*", "&*", "+@all"}
	tests := []struct {
		name     string
		server   []string
		user     string // in the URL
		password string // in the password file; none when empty
		db       string
		key      string
		wantErr  string // empty: PING, SET and GET succeed
	}{
		{name: "no password", key: "oboexchange:a"},
		{name: "password", server: []string{"--requirepass", password}, password: password, key: "oboexchange:a"},
		{name: "wrong password", server: []string{"--requirepass", password}, password: "wrong", key: "oboexchange:a", wantErr: "WRONGPASS"},
		{name: "password missing", server: []string{"--requirepass", password}, key: "oboexchange:a", wantErr: "NOAUTH"},
		{name: "ACL user", server: acl, user: "gateway", password: password, key: "oboexchange:a"},
		{name: "ACL user outside its keys", server: acl, user: "gateway", password: password, key: "other:a", wantErr: "NOPERM"},
		{name: "database 3", db: "3", key: "oboexchange:a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startRedis(t, tc.server...)
			u := "redis://" + r.addr() + "/" + tc.db
			if tc.user != "" {
				u = "redis://" + tc.user + "@" + r.addr() + "/" + tc.db
			}
			file := ""
			if tc.password != "" {
				file = writeFile(t, "redis-password", tc.password+"\n")
			}
			c := testRedisClient(t, u, file, "", time.Second)

			err := c.set(tc.key, []byte("v"), time.Minute)
			if err == nil {
				var v []byte
				v, err = c.get(tc.key)
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
			if err != nil && strings.Contains(err.Error(), password) {
				t.Errorf("the error holds the password")
			}
			if tc.db == "3" {
				admin := redisDo(t, r.addr(), nil, "GET", tc.key)
				if admin != nil {
					t.Errorf("the value is in database 0, want it in 3")
				}
			}
		})
	}
}

// rediss:// verifies the server against sharedCacheCAFile.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	caPEM, certFile, keyFile := testCertificates(t, dir)
	caFile := writeFile(t, "ca.pem", string(caPEM))
	otherCA, _, _ := testCertificates(t, t.TempDir())
	otherCAFile := writeFile(t, "other-ca.pem", string(otherCA))
	r := startRedis(t, "--tls-port", "0", "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	tests := []struct {
		name    string
		url     string
		ca      string
		wantErr bool
	}{
		{"CA bundle", "rediss://" + r.addr() + "/0", caFile, false},
		{"host name", "rediss://localhost:" + r.port + "/0", caFile, false},
		{"another CA", "rediss://" + r.addr() + "/0", otherCAFile, true},
		{"system roots", "rediss://" + r.addr() + "/0", "", true},
		{"plain text to a TLS port", "redis://" + r.addr() + "/0", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testRedisClient(t, tc.url, "", tc.ca, time.Second)
			err := c.ping()
			if (err != nil) != tc.wantErr {
				t.Errorf("PING: %v, want error %v", err, tc.wantErr)
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
	certFile := dir + "/redis.crt"
	keyFile := dir + "/redis.key"
	for path, data := range map[string][]byte{
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// Connections are reused, at most maxRedisConns are open at once, and a server restart costs
// no failed operation: a pooled connection the server closed is replaced.
func TestRedisPool(t *testing.T) {
	r := startRedis(t)
	c := testRedisClient(t, r.url(), "", "", time.Second)
	connections := func() int {
		info, _ := redisDo(t, r.addr(), nil, "INFO", "stats").([]byte)
		for _, line := range strings.Split(string(info), "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
				n, _ := strconv.Atoi(v)
				return n - 1 // less the INFO connection itself (and counted from a baseline)
			}
		}
		t.Fatal("no total_connections_received in INFO")
		return 0
	}

	before := connections()
	for i := 0; i < 50; i++ {
		if _, err := c.get("k"); err != nil {
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
			if _, err := c.get("k"); err == errRedisBusy {
				mu.Lock()
				busy++
				mu.Unlock()
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := openConns(c); n > maxRedisConns {
		t.Errorf("%d connections open, want at most %d", n, maxRedisConns)
	}
	t.Logf("200 concurrent GETs: %d connections in all, %d skipped as busy", connections(), busy)

	r.restart(t)
	if _, err := c.get("k"); err != nil {
		t.Errorf("GET after a server restart: %v, want a new connection and no error", err)
	}
}

// A server that answers garbage, never answers, or closes the connection costs at most the
// timeout, gives an error, and its connection is not reused.
func TestRedisBadServers(t *testing.T) {
	tests := []struct {
		name  string
		serve func(c net.Conn, rd *bufio.Reader)
	}{
		{"HTTP instead of RESP", answerThenWait("HTTP/1.1 400 Bad Request\r\n\r\n")},
		{"never answers", func(c net.Conn, rd *bufio.Reader) { _, _ = rd.ReadByte(); _, _ = rd.ReadByte() }},
		{"closes at once", func(c net.Conn, rd *bufio.Reader) {}},
		{"endless line", func(c net.Conn, rd *bufio.Reader) {
			_, _ = readCommand(rd)
			_, _ = c.Write(append([]byte("+"), bytes.Repeat([]byte("a"), 100000)...))
		}},
		{"oversized bulk", answerThenWait("$999999999\r\n")},
		{"array", answerThenWait("*1\r\n$1\r\na\r\n")},
		{"bulk without CRLF", answerThenWait("$1\r\nabc")},
		{"half a reply", answerThenWait("$10\r\nabc")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeRedis(t, tc.serve)
			c := testRedisClient(t, f.url(), "", "", 100*time.Millisecond)
			for i := 1; i <= 2; i++ {
				start := time.Now()
				if _, err := c.get("k"); err == nil {
					t.Fatal("no error")
				}
				if took := time.Since(start); took > 700*time.Millisecond {
					t.Errorf("the GET took %v with a 100ms timeout", took)
				}
				if got := int(f.conns.Load()); got < i {
					t.Errorf("after %d GETs, %d connections: a broken one was reused", i, got)
				}
			}
			if n := openConns(c); n != 0 {
				t.Errorf("%d connections still counted open", n)
			}
		})
	}
}

// An error reply leaves the connection usable.
func TestRedisErrorReplyKeepsConnection(t *testing.T) {
	f := startFakeRedis(t, func(c net.Conn, rd *bufio.Reader) {
		for {
			if _, err := readCommand(rd); err != nil {
				return
			}
			_, _ = c.Write([]byte("-READONLY You can't write against a read only replica.\r\n"))
		}
	})
	c := testRedisClient(t, f.url(), "", "", time.Second)
	for i := 0; i < 3; i++ {
		err := c.set("k", []byte("v"), time.Second)
		if err == nil || !isRedisError(err) || !strings.Contains(err.Error(), "READONLY") {
			t.Fatalf("SET: %v, want the READONLY reply", err)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestRedisClosed(t *testing.T) {
	r := startRedis(t)
	c := testRedisClient(t, r.url(), "", "", time.Second)
	if err := c.ping(); err != nil {
		t.Fatal(err)
	}
	c.close()
	if err := c.ping(); err != errRedisClosed {
		t.Errorf("PING after close: %v", err)
	}
	if n := openConns(c); n != 0 {
		t.Errorf("%d connections open after close", n)
	}
}

// The password file is read for each new connection: a rotated password is used once the
// server has closed the old connections.
func TestRedisPasswordRotation(t *testing.T) {
	remember("first-redis-password")
	remember("second-redis-password")
	r := startRedis(t, "--requirepass", "first-redis-password")
	file := writeFile(t, "password", "first-redis-password")
	c := testRedisClient(t, r.url(), file, "", time.Second)
	if err := c.ping(); err != nil {
		t.Fatal(err)
	}
	auth := []string{"first-redis-password"}
	redisDo(t, r.addr(), auth, "CONFIG", "SET", "requirepass", "second-redis-password")
	if err := os.WriteFile(file, []byte("second-redis-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	redisDo(t, r.addr(), []string{"second-redis-password"}, "CLIENT", "KILL", "TYPE", "normal")
	if err := c.ping(); err != nil {
		t.Errorf("PING with the rotated password: %v", err)
	}
}

func openConns(c *redisClient) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// answerThenWait is a fake server's reply: it reads one command, writes raw, then holds the
// connection open until the client closes it.
func answerThenWait(raw string) func(c net.Conn, rd *bufio.Reader) {
	return func(c net.Conn, rd *bufio.Reader) {
		_, _ = readCommand(rd)
		_, _ = c.Write([]byte(raw))
		_, _ = rd.ReadByte()
	}
}
