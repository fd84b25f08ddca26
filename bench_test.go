package oboexchange

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"
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
