// Package load drives Traefik the way the benchmark (cmd/bench) and the soak test (cmd/soak) need:
// a closed-loop load generator, a token endpoint and a backend cheap enough not to be what is
// measured, the users' tokens, and a table printer for the README. The real components the
// suite runs against are started by package env; these stand-ins are kept apart from them so
// that no test mistakes a stand-in for the real thing.
package load

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// TokenServer is the authorization server of the benchmark and the soak test: an RFC 8693 token
// endpoint that answers after a fixed delay with a token derived from the subject token (valid
// one hour), and counts its calls. It stands for an authorization server under load; the suite's
// protocol checks run against zitadel/oidc and the Entra server.
type TokenServer struct {
	URL   string
	delay time.Duration
	calls atomic.Int64
}

// StartTokenServer starts it on 127.0.0.1.
func StartTokenServer(delay time.Duration) (*TokenServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ts := &TokenServer{URL: "http://" + ln.Addr().String() + "/token", delay: delay}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ts.calls.Add(1)
			_ = r.ParseForm()
			time.Sleep(ts.delay)
			sum := sha256.Sum256([]byte(r.PostForm.Get("subject_token")))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"exchanged-%x","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, sum[:16])
		}))
	}()
	return ts, nil
}

// Calls counts the requests the token endpoint received.
func (ts *TokenServer) Calls() int64 { return ts.calls.Load() }

// StartNoContent starts a backend that answers 204 to everything: benchmarks measure the gateway.
func StartNoContent() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}))
	}()
	return "http://" + ln.Addr().String(), nil
}

// Loader is a closed-loop load generator: Concurrency connections, each sending its next request
// when the previous answer has been read.
type Loader struct {
	Base string // scheme and host to send to
	// Bases, when set, replaces Base: request i goes to Bases[i % len(Bases)], as a load balancer
	// spreads requests round-robin over replicas.
	Bases       []string
	Path        string // defaults to /orders
	Concurrency int
	// OK is the status that counts as a success (204 by default).
	OK int
	// Sent, when set, counts the requests answered, for a caller that acts in the middle of a run.
	Sent   *atomic.Int64
	client *http.Client
}

// Result is what one run measured.
type Result struct {
	RPS      float64 // requests per second
	P50, P99 time.Duration
	Errors   int
}

// Run sends requests with the Host header host (none when empty), request i carrying the
// Authorization value tokens[i % len(tokens)] (none when tokens is empty).
func (l *Loader) Run(host string, tokens []string, requests int) Result {
	if l.client == nil {
		l.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: l.Concurrency * 2, DisableCompression: true,
		}}
	}
	path, ok := l.Path, l.OK
	if path == "" {
		path = "/orders"
	}
	if ok == 0 {
		ok = http.StatusNoContent
	}
	var next atomic.Int64
	latencies := make([]time.Duration, requests)
	var errors atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	bases := l.Bases
	if len(bases) == 0 {
		bases = []string{l.Base}
	}
	for w := 0; w < l.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := make([]*http.Request, len(bases))
			for b, base := range bases {
				reqs[b], _ = http.NewRequest(http.MethodGet, base+path, nil)
				if host != "" {
					reqs[b].Host = host
				}
			}
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return
				}
				req := reqs[i%len(reqs)]
				if len(tokens) > 0 {
					req.Header["Authorization"] = []string{tokens[i%len(tokens)]}
				}
				t0 := time.Now()
				resp, err := l.client.Do(req)
				if err != nil {
					errors.Add(1)
					latencies[i] = time.Since(t0)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				latencies[i] = time.Since(t0)
				if l.Sent != nil {
					l.Sent.Add(1)
				}
				if resp.StatusCode != ok {
					errors.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	return Result{
		RPS:    float64(requests) / elapsed.Seconds(),
		P50:    latencies[requests/2],
		P99:    latencies[requests*99/100],
		Errors: int(errors.Load()),
	}
}

// CloseIdle closes the generator's idle keep-alive connections, so that the gateway's goroutines
// serving them end too.
func (l *Loader) CloseIdle() {
	if l.client != nil {
		l.client.CloseIdleConnections()
	}
}

// UserToken is a JWT-sized opaque token for user u of a load test.
func UserToken(u int) string {
	return fmt.Sprintf("user-%08d-%s", u, "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImF1ZCI6ImdhdGV3YXkifQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJl")
}
