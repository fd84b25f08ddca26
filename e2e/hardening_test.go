package e2e

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A token read from the query string or a cookie is removed there; the rest of the URL and the
// other cookies reach the backend as sent, and no header Traefik adds carries the token.
func TestQueryAndCookieSources(t *testing.T) {
	writeDynamic(t, "sources.yml", route("sources", "sources.test", gatewayOptions("api://sources", "tokenSources", "query:access_token,cookie:session")), "sources", "enabled")
	user := login(t)

	r := send(t, "sources.test", "/path?keep=1&access_token="+user+"&also=2", "")
	forwardedToken(t, r, user)
	if r.received.RequestURI != "/path?keep=1&also=2" {
		t.Errorf("backend URI = %q", r.received.RequestURI)
	}

	r = sendHeader(t, "sources.test", "/cookie", "Cookie", "theme=dark; session="+user+"; lang=en")
	forwardedToken(t, r, user)
	if got := strings.Join(r.received.Header["Cookie"], "; "); got != "theme=dark; lang=en" {
		t.Errorf("backend Cookie = %q", got)
	}
}

// While the authorization server hangs, exchanges past maxConcurrentExchanges are refused at once
// with 503 and Retry-After, the ones in flight end with 504 at the timeout, and other routes of
// the same Traefik keep answering.
func TestHungServerIsBounded(t *testing.T) {
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() { // accept and hold every connection
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	writeDynamic(t, "hung.yml", route("hung", "hung.test", map[string]string{
		"tokenEndpoint": "http://" + hang.Addr().String() + "/token", "clientId": "gateway", "clientSecret": "x",
		"audience": "a", "timeout": "3s", "maxConcurrentExchanges": "4",
	}), "hung", "enabled")
	cached := login(t)
	forwardedToken(t, send(t, "api.example.com", "/orders", "Bearer "+cached), cached)

	const users = 20
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < users; i++ {
		token := login(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := send(t, "hung.test", "/", "Bearer "+token)
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
			if r.status == http.StatusServiceUnavailable && r.header.Get("Retry-After") != "1" {
				t.Errorf("503 without Retry-After: 1")
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the hung exchanges are in flight now
	start := time.Now()
	forwardedToken(t, send(t, "api.example.com", "/orders", "Bearer "+cached), cached)
	other := time.Since(start)
	wg.Wait()

	t.Logf("statuses %v; another route answered in %v while the server hung", statuses, other)
	if statuses[http.StatusGatewayTimeout] != 4 || statuses[http.StatusServiceUnavailable] != users-4 {
		t.Errorf("statuses = %v, want 4 x 504 and %d x 503", statuses, users-4)
	}
	if other > 2*time.Second {
		t.Errorf("another route took %v while the authorization server hung", other)
	}
}

// A query token hidden after a ";" (which Traefik's proxy turns into "&") is found like any other:
// twice is a malformed request, once it is exchanged and removed. Cookies are read from the raw
// header however many there are (req.Cookies() gives up past 3,000).
func TestSmuggledCredentials(t *testing.T) {
	writeDynamic(t, "smuggle.yml", route("smuggle", "smuggle.test", gatewayOptions("api://smuggle", "tokenSources", "query:access_token,cookie:session")), "smuggle", "enabled")
	user := login(t)
	manyCookies := strings.Repeat("c=1; ", 3000)

	calls, exchanges := echo.Calls(), idp.Exchanges()
	for _, r := range []response{
		send(t, "smuggle.test", "/?access_token="+user+"&z=0;access_token="+user, ""),
		sendHeader(t, "smuggle.test", "/?access_token="+user, "Cookie", manyCookies+"session="+user),
	} {
		if r.status != http.StatusBadRequest || r.header.Get("WWW-Authenticate") != `Bearer error="invalid_request"` {
			t.Errorf("status %d, WWW-Authenticate %q; want 400 invalid_request", r.status, r.header.Get("WWW-Authenticate"))
		}
	}
	if echo.Calls() != calls || idp.Exchanges() != exchanges {
		t.Error("a request with the token in two places reached the backend or the authorization server")
	}

	r := send(t, "smuggle.test", "/p?z=0;access_token="+user+";keep=1", "")
	forwardedToken(t, r, user)
	r = sendHeader(t, "smuggle.test", "/cookies", "Cookie", manyCookies+"session="+user)
	forwardedToken(t, r, user)
	if got := strings.Join(r.received.Header["Cookie"], "; "); strings.Contains(got, "session=") {
		t.Errorf("the token cookie reached the backend")
	}
}
