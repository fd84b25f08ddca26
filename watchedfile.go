package oboexchange

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// maxWatchedFile bounds what is read of a watched file (a secret, a key, a certificate bundle).
const maxWatchedFile = 1 << 20

// watchedFile is a file the plugin reads when the middleware is created and again each time it
// needs the content, so that a rotated secret, key or certificate (a Kubernetes Secret volume,
// cert-manager, a Vault agent file, a re-projected service-account token) is picked up without a
// reload. The content is compared, not the size and modification time, so a file rewritten with
// the same size and time (cp -p, rsync -a) is seen too; parse runs only when the bytes changed.
// A read costs far less than the exchange it precedes. Files also keep secrets out of Traefik's
// configuration log.
type watchedFile struct {
	option string // the option naming the file, for messages
	path   string
	parse  func(data []byte) (interface{}, error)

	mu    sync.Mutex
	raw   []byte
	value interface{}
}

func newWatchedFile(option, path string, parse func(data []byte) (interface{}, error)) *watchedFile {
	return &watchedFile{option: option, path: path, parse: parse}
}

// load reads and parses the file, for New: a file that cannot be used is a configuration error.
func (w *watchedFile) load() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refresh()
}

// get returns the parsed content. When the file can no longer be read or parsed, the last good
// value is kept and the error returned for the caller to log.
func (w *watchedFile) get() (interface{}, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.refresh()
	return w.value, err
}

// refresh runs with w.mu held.
func (w *watchedFile) refresh() error {
	f, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("%s: %w", w.option, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxWatchedFile))
	if err != nil {
		return fmt.Errorf("%s: %w", w.option, err)
	}
	if w.value != nil && bytes.Equal(data, w.raw) {
		return nil
	}
	value, err := w.parse(data)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", w.option, w.path, err)
	}
	// Two assignments: Yaegi v0.16.1 cannot assign an interface{} to a field in a tuple assignment.
	w.raw = data
	w.value = value
	return nil
}

// parseSecret reads a secret file: its content without surrounding white space, not empty.
func parseSecret(data []byte) (interface{}, error) {
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return nil, fmt.Errorf("the file is empty")
	}
	return secret, nil
}

// secretSource is the client secret: given inline, or a watched clientSecretFile.
type secretSource struct {
	inline string
	file   *watchedFile // nil for an inline secret
}

func newSecretSource(inline, path string) *secretSource {
	if path == "" {
		return &secretSource{inline: inline}
	}
	return &secretSource{file: newWatchedFile("clientSecretFile", path, parseSecret)}
}

// load reads the secret file, for New.
func (s *secretSource) load() error {
	if s.file == nil {
		return nil
	}
	return s.file.load()
}

// get returns the current secret; on a file error, the last good one and the error.
func (s *secretSource) get() (string, error) {
	if s.file == nil {
		return s.inline, nil
	}
	v, err := s.file.get()
	secret, _ := v.(string)
	return secret, err
}
