// Package nullplugin is a Traefik plugin that only calls the next handler: the benchmark measures
// oboexchange against it, as the cost any interpreted plugin has.
package nullplugin

import (
	"context"
	"net/http"
)

// Config is empty.
type Config struct{}

// CreateConfig returns the empty configuration.
func CreateConfig() *Config { return &Config{} }

type null struct{ next http.Handler }

// New returns the plugin.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	return &null{next: next}, nil
}

func (n *null) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	n.next.ServeHTTP(rw, req)
}
