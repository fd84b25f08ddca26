package oboexchange

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// maxSecretFile bounds what is read of clientSecretFile.
const maxSecretFile = 64 * 1024

// secretSource holds the client secret: given inline, or read from clientSecretFile. A file is read
// when the middleware is created and again before every exchange, so a rotated secret (a Kubernetes
// Secret volume, a Vault agent file) is picked up without a reload, even when it is rewritten with
// the same size and modification time (cp -p, rsync -a). A read costs far less than the exchange
// it precedes. Traefik logs its dynamic configuration at debug level; a file keeps the secret out
// of that log.
type secretSource struct {
	path string

	mu    sync.Mutex
	value string
}

func newSecretSource(inline, path string) *secretSource {
	return &secretSource{path: path, value: inline}
}

// get returns the current secret. When the file cannot be read, the last good secret (New made
// sure there is one) is kept, and the error returned for the caller to log.
func (s *secretSource) get() (string, error) {
	if s.path == "" {
		return s.value, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.refresh()
	return s.value, err
}

// load reads the file now, for New: a file that cannot be read is a configuration error.
func (s *secretSource) load() error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh()
}

// refresh runs with s.mu held.
func (s *secretSource) refresh() error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("clientSecretFile: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile))
	if err != nil {
		return fmt.Errorf("clientSecretFile: %w", err)
	}
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return fmt.Errorf("clientSecretFile: %s is empty", s.path)
	}
	s.value = secret
	return nil
}
