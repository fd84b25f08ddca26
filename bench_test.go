package oboexchange

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose"
	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// Compiled benchmarks of the cache-hit path and of the cache's memory. The figures that matter
// for users (under Yaegi, and through Traefik) come from `make bench`; see the README.

func benchmarkHit(b *testing.B, users int) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		answer(w, 200, bearerAccessToken+`"access_token":"x-`+r.PostForm.Get("subject_token")+`","expires_in":3600}`)
	}))
	defer ts.Close()
	c := testConfig(ts.URL + "/token")
	c.LogLevel = "off"
	h, err := New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), c, "bench")
	if err != nil {
		b.Fatal(err)
	}
	values := make([][]string, users)
	for u := range values {
		values[u] = []string{"Bearer user-" + strconv.Itoa(u) + "-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl"}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header["Authorization"] = values[u]
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header["Authorization"] = values[i%users]
		h.ServeHTTP(w, req)
	}
}

func BenchmarkServeHTTPCacheHit(b *testing.B)           { benchmarkHit(b, 1) }
func BenchmarkServeHTTPCacheHit10000Users(b *testing.B) { benchmarkHit(b, 10000) }

// BenchmarkCacheMemory reports the heap one cached entry takes beyond its token, with 100,000
// entries.
func BenchmarkCacheMemory(b *testing.B) {
	const n = 100000
	const header = "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImF1ZCI6ImFwaTovL29yZGVycyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := newCache(n)
		for u := 0; u < n; u++ {
			// Each entry gets its own copy of the header, as an exchange would.
			c.put(sha256.Sum256([]byte(strconv.Itoa(u))), &entry{header: string([]byte(header)), expires: in(time.Hour)})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
		b.ReportMetric(perEntry-float64(len(header)), "bytes-beyond-token/entry")
		runtime.KeepAlive(c)
	}
}

// benchmarkMiss measures a cache miss (every request a new user) with one client authentication
// method, against an instant token endpoint over TLS behind a test CA (tokenEndpointCAFile), so
// that the methods differ only in what each adds: a signature, a file read, a client certificate.
func benchmarkMiss(b *testing.B, method string) {
	dir := b.TempDir()
	ca, clientCA := josetest.NewCA(b, "bench server CA"), josetest.NewCA(b, "bench client CA")
	var required *josetest.CA
	c := CreateConfig()
	c.ClientID, c.Audience, c.LogLevel, c.CacheMaxEntries = "gateway", []string{"api://orders"}, "off", 1000000
	c.TokenEndpointCAFile = writeFile(b, dir, "ca.pem", ca.PEM)
	c.ClientAuthMethod = "private_key_jwt"
	switch method {
	case "secret":
		c.ClientAuthMethod, c.ClientSecret = "client_secret_basic", "s3cret"
	case "RS256", "PS256":
		c.ClientKeyFile, c.ClientAssertionAlg = writeFile(b, dir, "key.pem", josetest.PKCS8(b, josetest.RSAKey(b, 1))), method
	case "ES256":
		c.ClientKeyFile = writeFile(b, dir, "key.pem", josetest.PKCS8(b, josetest.ECKey(b, elliptic.P256())))
	case "assertion file":
		c.ClientAssertionFile = writeFile(b, dir, "token", []byte(benchAssertion))
	case "mTLS":
		key := josetest.ECKey(b, elliptic.P256())
		c.ClientAuthMethod, required = "tls_client_auth", clientCA
		c.ClientKeyFile = writeFile(b, dir, "tls.key", josetest.PKCS8(b, key))
		c.ClientCertFile = writeFile(b, dir, "tls.crt", josetest.PEM("CERTIFICATE", clientCA.Issue(b, &key.PublicKey, "gateway", false)))
	}
	ts := newTLSTokenServer(b, ca, required, func(w http.ResponseWriter, r *http.Request) {
		answer(w, 200, bearerAccessToken+`"access_token":"x-`+r.PostForm.Get("subject_token")+`","expires_in":3600}`)
	})
	c.TokenEndpoint = ts.url()
	h, err := New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), c, "bench-miss")
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header["Authorization"] = []string{"Bearer miss-" + strconv.Itoa(i) + "-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2ln"}
		h.ServeHTTP(w, req)
	}
	b.StopTimer()
	if w.Code != http.StatusOK {
		b.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
}

// benchAssertion stands for a projected service-account token (the endpoint does not check it).
const benchAssertion = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL29pZGMuZXhhbXBsZSIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDp0cmFlZmlrOnRyYWVmaWsiLCJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwiZXhwIjo0MTAyNDQ0ODAwfQ.c2lnbmF0dXJl"

func BenchmarkCacheMiss(b *testing.B) {
	for _, method := range []string{"secret", "RS256", "PS256", "ES256", "assertion file", "mTLS"} {
		b.Run(method, func(b *testing.B) { benchmarkMiss(b, method) })
	}
}

// BenchmarkSignAssertion is the cost of signing one client assertion, the part of a
// private_key_jwt miss that grows with the key.
func BenchmarkSignAssertion(b *testing.B) {
	keys := map[string]interface{}{"RS256": josetest.RSAKey(b, 1), "PS256": josetest.RSAKey(b, 1), "ES256": josetest.ECKey(b, elliptic.P256()), "ES384": josetest.ECKey(b, elliptic.P384())}
	for _, alg := range []string{"RS256", "PS256", "ES256", "ES384"} {
		b.Run(alg, func(b *testing.B) {
			v, err := parseKeyFile(alg, flowRFC8693)(josetest.PKCS8(b, keys[alg]))
			if err != nil {
				b.Fatal(err)
			}
			k := v.(*jose.PrivateKey)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := signAssertion(k, nil, "gateway", "https://idp.example.com/token", "", time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
