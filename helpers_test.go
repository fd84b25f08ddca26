package oboexchange

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Test credentials. captureLogs checks that none of them, nor any token made by testJWT or
// opaqueToken, ever reaches a log line.
const (
	testClientID     = "gateway:client"
	testClientSecret = "s3cr:et%+/with space"
	userToken        = "user-access-token-0123456789abcdef"
	exchangedToken   = "exchanged-token-for-backend-abcdef"
)

var (
	secretsMu sync.Mutex
	secrets   = []string{testClientSecret, userToken, exchangedToken}
)

// remember registers a value that must never be logged.
func remember(v string) string {
	secretsMu.Lock()
	secrets = append(secrets, v)
	secretsMu.Unlock()
	return v
}

// logBuffer collects what the plugin logs during one test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLogs sends the plugin's log lines to a buffer for the duration of the test and, at its
// end, fails the test if any of them holds a token or a secret.
func captureLogs(t *testing.T) *logBuffer {
	t.Helper()
	b := &logBuffer{}
	logMu.Lock()
	previous := logOutput
	logOutput = b
	logMu.Unlock()
	t.Cleanup(func() {
		logMu.Lock()
		logOutput = previous
		logMu.Unlock()
		out := b.String()
		secretsMu.Lock()
		defer secretsMu.Unlock()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("a token or secret reached the log: %q", s)
			}
		}
	})
	return b
}

// recorded is one request the fake token endpoint received.
type recorded struct {
	form   url.Values
	header http.Header
	peer   *x509.Certificate // the client certificate of the TLS handshake, if any
}

// tokenServer is an httptest token endpoint that records each request and answers with respond.
type tokenServer struct {
	srv     *httptest.Server
	path    string // unique to this server, see url
	calls   atomic.Int32
	mu      sync.Mutex
	reqs    []recorded
	respond func(w http.ResponseWriter, r *http.Request)
}

func newTokenServer(t *testing.T, respond func(w http.ResponseWriter, r *http.Request)) *tokenServer {
	t.Helper()
	ts := &tokenServer{respond: respond, path: "/t" + itoa(int(servers.Add(1))) + "/oauth2/token"}
	ts.srv = httptest.NewServer(ts.handler())
	t.Cleanup(func() { ts.srv.Close() })
	return ts
}

// handler records each request, then answers it with respond.
func (ts *tokenServer) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		rec := recorded{form: r.PostForm, header: r.Header.Clone()}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			rec.peer = r.TLS.PeerCertificates[0]
		}
		ts.mu.Lock()
		ts.reqs = append(ts.reqs, rec)
		ts.mu.Unlock()
		ts.calls.Add(1)
		ts.respond(w, r)
	})
}

// servers numbers the token servers of the test binary.
var servers atomic.Int32

// url is the token endpoint. Its path is unique to this server: exchangers are shared by
// configuration across the whole test binary, and a port the system reuses must not give a test
// the cache of an earlier one (go test -count=N).
func (ts *tokenServer) url() string { return ts.srv.URL + ts.path }

func (ts *tokenServer) count() int { return int(ts.calls.Load()) }

func (ts *tokenServer) last(t *testing.T) recorded {
	t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.reqs) == 0 {
		t.Fatal("the token endpoint received no request")
	}
	return ts.reqs[len(ts.reqs)-1]
}

// answer writes a JSON body with a status.
func answer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// reply answers every request with the same status and JSON body.
func reply(status int, body string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { answer(w, status, body) }
}

// bearerAccessToken starts the JSON of an RFC 8693 answer that issues an access token.
const bearerAccessToken = `{"issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer",`

// hanging answers no request until the client gives up or the test ends.
func hanging(t *testing.T) func(w http.ResponseWriter, r *http.Request) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
}

// firstThen answers the first request with first and every later one with then.
func firstThen(first, then func(w http.ResponseWriter, r *http.Request)) func(w http.ResponseWriter, r *http.Request) {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			first(w, r)
			return
		}
		then(w, r)
	}
}

// issue answers every request with the same token and lifetime, of the type requested (an access
// token by default), as an RFC 8693 server does.
func issue(token string, expiresIn int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		issued := r.PostForm.Get("requested_token_type")
		if issued == "" {
			issued = tokenTypeAccessToken
		}
		answer(w, 200, `{"access_token":"`+token+`","issued_token_type":"`+issued+`","token_type":"Bearer","expires_in":`+itoa(expiresIn)+`}`)
	}
}

// issuePerSubject answers with a token derived from the subject token, so tests can tell users apart.
func issuePerSubject(expiresIn int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		subject := r.PostForm.Get("subject_token") + r.PostForm.Get("assertion")
		issue("x-"+subject, expiresIn)(w, r)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// testConfig is an RFC 8693 configuration against the given endpoint.
func testConfig(endpoint string) *Config {
	c := CreateConfig()
	c.TokenEndpoint = endpoint
	c.ClientID = testClientID
	c.ClientSecret = testClientSecret
	c.Audience = []string{"backend"}
	return c
}

// backend is the next handler; it records what reached it.
type backend struct {
	mu     sync.Mutex
	calls  int
	header http.Header
	url    string
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.calls++
	b.header = r.Header.Clone()
	b.url = r.URL.String()
	b.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// newTestMiddleware builds the middleware with context.Background, as the Plugin Catalog does.
func newTestMiddleware(t *testing.T, c *Config) (http.Handler, *backend) {
	t.Helper()
	b := &backend{}
	h, err := New(context.Background(), b, c, "test-obo")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h, b
}

// newReloadable builds the middleware with a context of its own, as Traefik does; release cancels
// it, as Traefik's next configuration does, and waits until the exchanger is released
// (context.AfterFunc runs the release in a goroutine).
func newReloadable(t *testing.T, c *Config) (*Middleware, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, &backend{}, c, "reloadable")
	if err != nil {
		t.Fatal(err)
	}
	m := h.(*Middleware)
	return m, func() {
		cancel()
		waitFor(t, func() bool { return refs(m.x) == 0 })
	}
}

// secretFileMiddleware builds a middleware whose client secret (client_secret_post) is read from
// path, against ts.
func secretFileMiddleware(t *testing.T, ts *tokenServer, path string) http.Handler {
	t.Helper()
	c := testConfig(ts.url())
	c.ClientSecret = ""
	c.ClientSecretFile = path
	c.ClientAuthMethod = "client_secret_post"
	h, _ := newTestMiddleware(t, c)
	return h
}

// callTogether sends one request per token, all released at once, and fails the test unless each
// gets the status want.
func callTogether(t *testing.T, h http.Handler, tokens []string, want int) {
	t.Helper()
	codes := make(chan int, len(tokens))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, token := range tokens {
		token := token // Yaegi: goroutines over a loop variable would all see its last value
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes <- call(h, "Bearer "+token).Code
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != want {
			t.Errorf("status %d, want %d", code, want)
		}
	}
}

// wantConfigError makes New refuse testConfig changed by modify, with an error containing want
// (the option's name and the fix).
func wantConfigError(t *testing.T, modify func(c *Config), want string) {
	t.Helper()
	c := testConfig("https://idp.example.com/oauth2/token")
	modify(c)
	_, err := New(context.Background(), http.NotFoundHandler(), c, "test")
	if err == nil {
		t.Fatalf("New accepted the configuration, want an error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error = %q, want it to contain %q", err, want)
	}
}

// call sends a GET with the given Authorization value (none when empty).
func call(h http.Handler, authorization string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://gateway.test/api", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// testJWT builds an unsigned JWT-shaped token with the given claims.
func testJWT(claims map[string]interface{}) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return remember(enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString(payload) + ".c2lnbmF0dXJl")
}

// opaqueToken returns a distinct opaque token.
func opaqueToken(i int) string {
	return remember("opaque-user-token-" + itoa(i) + "-" + itoa(int(time.Now().UnixNano()%1000000)))
}

// wantStatus fails the test when the response is not the expected status.
func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d (body %s)", rec.Code, status, rec.Body.String())
	}
}

var testNow = time.Unix(1900000000, 0)

func key(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// in returns an expiry d from now on the cache's clock.
func in(d time.Duration) time.Duration { return time.Since(epoch) + d }

// wantForm compares the whole form the token endpoint received with the expected one.
func wantForm(t *testing.T, got, want url.Values) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("form:\n got %v\nwant %v", got, want)
	}
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// checkErrorBody asserts a short JSON error body with the expected code that holds nothing from
// the request or the authorization server.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder, code string) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body is not JSON: %q", rec.Body.String())
	}
	if body["error"] != code || body["error_description"] == "" || len(body) != 2 {
		t.Errorf("body = %v, want error %q and a description", body, code)
	}
	for _, leak := range []string{userToken, exchangedToken, testClientSecret, "SERVER-DETAIL"} {
		if strings.Contains(rec.Body.String(), leak) {
			t.Errorf("body holds %q", leak)
		}
	}
}

func auth(v string) func(r *http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", v) }
}

func refs(x *exchanger) int {
	registryMu.Lock()
	defer registryMu.Unlock()
	return x.refs
}

// dropIdleExchangers empties the registry of the exchangers no instance uses.
func dropIdleExchangers() {
	registryMu.Lock()
	defer registryMu.Unlock()
	for fp, x := range registry {
		if x.refs == 0 {
			drop(fp, x)
		}
	}
}

// waitFor polls a condition that another goroutine makes true (context.AfterFunc runs its
// function in a goroutine of its own).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached within 1s")
}

// callWith sends a GET with the given headers, as name/value pairs (a name may repeat).
func callWith(h http.Handler, pairs ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://gateway.test/api", nil)
	for i := 0; i+1 < len(pairs); i += 2 {
		req.Header.Add(pairs[i], pairs[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Keys, certificates and assertions for the client authentication tests. Keys are generated in
// the tests, not committed; RSA keys are slow to make, so each is made once per test binary.
var (
	testKeysMu  sync.Mutex
	testRSAKeys = map[int]*rsa.PrivateKey{}
)

// testRSAKey returns the n-th 2048-bit RSA test key.
func testRSAKey(t testing.TB, n int) *rsa.PrivateKey {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	if k := testRSAKeys[n]; k != nil {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	testRSAKeys[n] = k
	return k
}

func testECKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publicOf returns the public half of a test key.
func publicOf(key interface{}) interface{} {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	}
	return nil
}

// testCA is a private certificate authority of the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serialCounter atomic.Int64

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := testECKey(t, elliptic.P256())
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(serialCounter.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pemEncode("CERTIFICATE", der)}
}

// issue signs a certificate for public: a server certificate for 127.0.0.1, or a client
// certificate named cn.
func (ca *testCA) issue(t testing.TB, public interface{}, cn string, server bool) []byte {
	t.Helper()
	template := &x509.Certificate{
		SerialNumber: big.NewInt(serialCounter.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		template.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, public, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tlsCertificate is a server certificate of this CA for 127.0.0.1.
func (ca *testCA) tlsCertificate(t testing.TB) tls.Certificate {
	t.Helper()
	key := testECKey(t, elliptic.P256())
	return tls.Certificate{Certificate: [][]byte{ca.issue(t, &key.PublicKey, "127.0.0.1", true)}, PrivateKey: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func pemEncode(blockType string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
}

// pkcs8PEM is a test key as a PKCS#8 PEM file.
func pkcs8PEM(t testing.TB, key interface{}) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemEncode("PRIVATE KEY", der)
}

// writeTestFile writes data to dir/name and returns the path.
func writeTestFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// redisBinary is the Redis or Valkey server the tests start: $REDIS_SERVER, else valkey-server or
// redis-server on PATH. The tests that need it skip only when there is none and REDIS_SERVER is
// unset; make sets it, so under `make test` they always run.
func redisBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("REDIS_SERVER"); bin != "" {
		return bin
	}
	// os/exec is not among Yaegi's packages: the PATH is searched by hand, and the server started
	// with os.StartProcess.
	for _, name := range []string{"valkey-server", "redis-server"} {
		for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
			path := filepath.Join(dir, name)
			if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
				return path
			}
		}
	}
	t.Skip("no valkey-server or redis-server on PATH and REDIS_SERVER unset (`make unit` installs one)")
	return ""
}

// redisServer is a real Redis (or Valkey) on a free loopback port, stopped when the test ends.
type redisServer struct {
	bin  string
	port string
	args []string
	proc *os.Process
	done chan struct{}
}

// startRedis starts a server with extra arguments (--requirepass, --user, --tls-port...); with
// --tls-port among them, its port is the TLS one.
func startRedis(t *testing.T, args ...string) *redisServer {
	t.Helper()
	r := &redisServer{bin: redisBinary(t), port: freePort(t), args: args}
	r.start(t)
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *redisServer) addr() string { return "127.0.0.1:" + r.port }

func (r *redisServer) url() string { return "redis://" + r.addr() + "/0" }

func (r *redisServer) start(t *testing.T) {
	t.Helper()
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port", r.port}
	for i, a := range r.args {
		if a == "--tls-port" {
			args[len(args)-1] = "0"
			r.args[i+1] = r.port
		}
	}
	argv := append(append([]string{r.bin}, args...), r.args...)
	proc, err := os.StartProcess(r.bin, argv, &os.ProcAttr{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting %s: %v", r.bin, err)
	}
	done := make(chan struct{})
	r.proc, r.done = proc, done
	go func() {
		_, _ = proc.Wait()
		close(done)
	}()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", r.addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s", r.bin, r.addr())
}

// stop kills the server (the tests need no graceful shutdown: nothing is saved).
func (r *redisServer) stop() {
	if r.proc == nil {
		return
	}
	_ = r.proc.Kill()
	<-r.done
	r.proc = nil
}

// restart stops the server and starts it again on the same port, empty.
func (r *redisServer) restart(t *testing.T) {
	t.Helper()
	r.stop()
	r.start(t)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// redisDo is the tests' own view of a server, apart from the client under test: one command on a
// connection of its own, after AUTH when auth is given. It returns a []byte, nil, an error reply
// as a *redisError, or for an array the []interface{} of its elements.
func redisDo(t *testing.T, addr string, auth []string, args ...string) interface{} {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	if len(auth) > 0 {
		buf = appendCommand(buf, append([]string{"AUTH"}, auth...))
	}
	if _, err := c.Write(appendCommand(buf, args)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(c)
	if len(auth) > 0 {
		if _, err := readReply(rd); err != nil {
			t.Fatalf("AUTH: %v", err)
		}
	}
	v, err := readTestReply(rd)
	if err != nil && !isRedisError(err) {
		t.Fatalf("%s: %v", args[0], err)
	}
	if err != nil {
		return err
	}
	return v
}

func readTestReply(rd *bufio.Reader) (interface{}, error) {
	b, err := rd.Peek(1)
	if err != nil {
		return nil, err
	}
	if b[0] != '*' {
		v, err := readReply(rd)
		if v == nil {
			return nil, err
		}
		return v, err
	}
	line, err := readLine(rd)
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(line[1:])
	var out []interface{}
	for i := 0; i < n; i++ {
		v, err := readTestReply(rd)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// redisEntries returns every key of the server with its value.
func redisEntries(t *testing.T, addr string, auth ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	keys, _ := redisDo(t, addr, auth, "KEYS", "*").([]interface{})
	for _, k := range keys {
		name := string(k.([]byte))
		v, _ := redisDo(t, addr, auth, "GET", name).([]byte)
		out[name] = v
	}
	return out
}

// waitForRedisKeys waits until the server holds n keys (writes run in the background).
func waitForRedisKeys(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < 400; i++ {
		keys, _ := redisDo(t, addr, nil, "KEYS", "*").([]interface{})
		if len(keys) == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the shared cache does not hold %d keys", n)
}

// fakeRedis is a server that answers each connection with serve, for the failures a real server
// does not make on demand: garbage, silence, a connection closed at once.
type fakeRedis struct {
	ln    net.Listener
	conns atomic.Int32
}

func startFakeRedis(t *testing.T, serve func(c net.Conn, rd *bufio.Reader)) *fakeRedis {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return f
}

func (f *fakeRedis) url() string { return "redis://" + f.ln.Addr().String() + "/0" }

// readCommand reads one command a client sent to a fake server.
func readCommand(rd *bufio.Reader) ([]string, error) {
	line, err := readLine(rd)
	if err != nil {
		return nil, err
	}
	if line[0] != '*' {
		return nil, errors.New("not a command")
	}
	n, _ := strconv.Atoi(line[1:])
	var args []string
	for i := 0; i < n; i++ {
		l, err := readLine(rd)
		if err != nil {
			return nil, err
		}
		b, err := readBulk(rd, l[1:])
		if err != nil {
			return nil, err
		}
		args = append(args, string(b))
	}
	return args, nil
}

// sharedConfig is testConfig with the shared cache at redisURL, logging at debug level.
func sharedConfig(endpoint, redisURL string) *Config {
	c := testConfig(endpoint)
	c.SharedCache = redisURL
	c.LogLevel = "debug"
	return c
}

// replica builds the middleware as another Traefik process would: the same configuration, but an
// exchanger of its own (New would hand it this process's).
func replica(t *testing.T, c *Config) (*Middleware, *backend) {
	t.Helper()
	s, err := parseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	x := newExchanger(fingerprint(s), s)
	if err := x.shared.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.shared.close() })
	b := &backend{}
	m := &Middleware{next: b, sources: s.sources, upstreamHeader: "Authorization", log: newLogger("replica", s.logLevel),
		x: x, cache: x.cache, fastHeader: "Authorization"}
	return m, b
}

// writeFile writes a file in a temporary folder and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTLSTokenServer is a token endpoint over TLS with a server certificate of ca. With clientCA,
// it requires a client certificate signed by that CA, as an RFC 8705 server does.
func newTLSTokenServer(t testing.TB, ca, clientCA *testCA, respond func(w http.ResponseWriter, r *http.Request)) *tokenServer {
	t.Helper()
	ts := &tokenServer{respond: respond}
	ts.srv = httptest.NewUnstartedServer(ts.handler())
	ts.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.tlsCertificate(t)}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		ts.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		ts.srv.TLS.ClientCAs = clientCA.pool()
	}
	ts.srv.StartTLS()
	t.Cleanup(func() { ts.srv.Close() })
	return ts
}

// verifyAssertion checks a client assertion's signature with the public key, for its alg, and
// returns its header and claims. RSA-PSS is verified with a salt of exactly 32 bytes, the hash
// length; ECDSA signatures must be r and s of the curve's size.
func verifyAssertion(t *testing.T, assertion string, public interface{}) (map[string]interface{}, map[string]interface{}) {
	t.Helper()
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		t.Fatalf("assertion has %d parts", len(parts))
	}
	header, claims := decodePart(t, parts[0]), decodePart(t, parts[1])
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	input := []byte(parts[0] + "." + parts[1])
	sum256 := sha256.Sum256(input)
	sum384 := sha512.Sum384(input)
	alg, _ := header["alg"].(string) // a string: Yaegi cannot switch on an interface{} against string cases
	switch alg {
	case "RS256":
		err = rsa.VerifyPKCS1v15(public.(*rsa.PublicKey), crypto.SHA256, sum256[:], signature)
	case "PS256":
		err = rsa.VerifyPSS(public.(*rsa.PublicKey), crypto.SHA256, sum256[:], signature, &rsa.PSSOptions{SaltLength: 32})
	case "ES256":
		err = verifyECDSA(public.(*ecdsa.PublicKey), sum256[:], signature, 32)
	case "ES384":
		err = verifyECDSA(public.(*ecdsa.PublicKey), sum384[:], signature, 48)
	default:
		t.Fatalf("alg %q", alg)
	}
	if err != nil {
		t.Fatalf("%s signature does not verify: %v", alg, err)
	}
	return header, claims
}

func verifyECDSA(public *ecdsa.PublicKey, digest, signature []byte, size int) error {
	if len(signature) != 2*size {
		return fmt.Errorf("signature is %d bytes, want %d (r and s of %d bytes)", len(signature), 2*size, size)
	}
	r := new(big.Int).SetBytes(signature[:size])
	s := new(big.Int).SetBytes(signature[size:])
	if !ecdsa.Verify(public, digest, r, s) {
		return errors.New("ecdsa.Verify failed")
	}
	return nil
}

func decodePart(t *testing.T, part string) map[string]interface{} {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatalf("part %q: %v", part, err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("part %q: %v", raw, err)
	}
	return m
}

// x5tS256 computes the x5t#S256 of a certificate independently of the plugin.
func x5tS256(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
