package oboexchange

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test helpers: building the middleware, calling it, and checking its answers.

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

// writeFile writes data to dir/name and returns the path: the one file writer of the tests (a
// rotation test rewrites the same path).
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
