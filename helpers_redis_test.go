package oboexchange

import "testing"

// Test helpers for the shared cache (the servers themselves are internal/resp/resptest's).

// sharedConfig is testConfig with the shared cache at redisURL, logging at debug level.
func sharedConfig(endpoint, redisURL string) *Config {
	c := testConfig(endpoint)
	c.SharedCache = redisURL
	c.LogLevel = "debug"
	return c
}

// replica builds the middleware as another Traefik process would: the same configuration, but an
// exchanger of its own (New would hand it this process's).
func replica(t *testing.T, c *Config) (*Middleware, *backend) {
	t.Helper()
	s, err := parseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	x := newExchanger(fingerprint(s), s)
	if err := x.shared.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.shared.close() })
	b := &backend{}
	m := &Middleware{next: b, sources: s.sources, upstreamHeader: "Authorization", log: newLogger("replica", s.logLevel),
		x: x, cache: x.cache, fastHeader: "Authorization"}
	return m, b
}
