// Package rewriteplugin reads the Authorization header and writes another value: the least work a
// credential-swapping plugin can do, as a reference for oboexchange's benchmark.
package rewriteplugin

import (
	"context"
	"net/http"
)

// Config is empty.
type Config struct{}

// CreateConfig returns the empty configuration.
func CreateConfig() *Config { return &Config{} }

type rewrite struct{ next http.Handler }

// New returns the plugin.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	return &rewrite{next: next}, nil
}

func (p *rewrite) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if v := req.Header.Get("Authorization"); v != "" {
		req.Header.Set("Authorization", "Bearer exchanged")
	}
	p.next.ServeHTTP(rw, req)
}
