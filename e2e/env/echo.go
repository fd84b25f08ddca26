package env

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Echo is the backend behind Traefik: it answers every request with what it received, so tests
// can see exactly which credential crossed the gateway.
type Echo struct {
	URL   string
	srv   *http.Server
	calls atomic.Int64
}

// Received is the body Echo answers with.
type Received struct {
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	RequestURI string              `json:"requestURI"`
	Header     map[string][]string `json:"header"`
}

// StartEcho starts the backend on 127.0.0.1.
func StartEcho() (*Echo, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &Echo{URL: "http://" + ln.Addr().String()}
	e.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(Received{Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Header: r.Header})
		}),
	}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

// Calls counts the requests that reached the backend.
func (e *Echo) Calls() int { return int(e.calls.Load()) }

// Stop closes the backend.
func (e *Echo) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}
