package oboexchange

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// secretSource holds the client secret: given inline, or read from clientSecretFile. A file is read
// when the middleware is created and read again when its size or modification time changes, so a
// rotated secret (a Kubernetes Secret volume, a Vault agent file) is picked up without a reload.
// Traefik logs its dynamic configuration at debug level; a file keeps the secret out of that log.
type secretSource struct {
	path string

	mu      sync.Mutex
	value   string
	size    int64
	modTime time.Time
}

func newSecretSource(inline, path string) *secretSource {
	return &secretSource{path: path, value: inline}
}

// get returns the current secret. When the file changed but cannot be read, the last good secret
// (New made sure there is one) is kept, and the error returned for the caller to log.
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
	if err := s.refresh(); err != nil {
		return err
	}
	if s.value == "" {
		return fmt.Errorf("clientSecretFile: %s is empty", s.path)
	}
	return nil
}

// refresh runs with s.mu held.
func (s *secretSource) refresh() error {
	info, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("clientSecretFile: %w", err)
	}
	if info.Size() == s.size && info.ModTime().Equal(s.modTime) && s.value != "" {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("clientSecretFile: %w", err)
	}
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return fmt.Errorf("clientSecretFile: %s is empty", s.path)
	}
	s.value = secret
	s.size = info.Size()
	s.modTime = info.ModTime()
	return nil
}
