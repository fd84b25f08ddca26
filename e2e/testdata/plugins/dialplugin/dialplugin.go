// Package dialplugin is a fixture of the catalog check: its New fetches a URL, as a plugin that
// discovers its authorization server eagerly would. The check must refuse it.
package dialplugin

import (
	"context"
	"net/http"
)

// Config is the URL New fetches.
type Config struct {
	URL string
}

// CreateConfig returns an empty configuration.
func CreateConfig() *Config {
	return &Config{}
}

// New fetches the URL (and ignores the result).
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if resp, err := http.Get(config.URL); err == nil {
		resp.Body.Close()
	}
	return next, nil
}
