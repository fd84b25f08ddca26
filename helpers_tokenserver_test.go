package oboexchange

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// Test helpers: fake token endpoints that record what they receive and answer as a test says.

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

// newTokenServer starts a token endpoint that answers with respond, until the test ends.
func newTokenServer(t *testing.T, respond func(w http.ResponseWriter, r *http.Request)) *tokenServer {
	t.Helper()
	ts := &tokenServer{respond: respond, path: "/t" + strconv.Itoa(int(servers.Add(1))) + "/oauth2/token"}
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
		answer(w, 200, `{"access_token":"`+token+`","issued_token_type":"`+issued+`","token_type":"Bearer","expires_in":`+strconv.Itoa(expiresIn)+`}`)
	}
}

// issuePerSubject answers with a token derived from the subject token, so tests can tell users apart.
func issuePerSubject(expiresIn int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		subject := r.PostForm.Get("subject_token") + r.PostForm.Get("assertion")
		issue("x-"+subject, expiresIn)(w, r)
	}
}

// newTLSTokenServer is a token endpoint over TLS with a server certificate of ca. With clientCA,
// it requires a client certificate signed by that CA, as an RFC 8705 server does.
func newTLSTokenServer(t testing.TB, ca, clientCA *josetest.CA, respond func(w http.ResponseWriter, r *http.Request)) *tokenServer {
	t.Helper()
	ts := &tokenServer{respond: respond}
	ts.srv = httptest.NewUnstartedServer(ts.handler())
	ts.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.ServerCertificate(t)}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		ts.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		ts.srv.TLS.ClientCAs = clientCA.Pool()
	}
	ts.srv.StartTLS()
	t.Cleanup(func() { ts.srv.Close() })
	return ts
}

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
