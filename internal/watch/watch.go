// Package watch reads files that rotate: a secret, a key, a certificate bundle, a projected
// service-account token. A File is read when the middleware is created and again each time its
// content is needed, so that a rotated file (a Kubernetes Secret volume, cert-manager, a Vault
// agent, the kubelet) is picked up without a reload, and the last good content keeps serving when
// the file goes bad. It imports the standard library only.
package watch

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// MaxSize bounds what is read of a file: the files watched are small, and a wrong path (a log, a
// device) must not fill memory.
const MaxSize = 1 << 20

// Parse turns a file's content into the value the caller uses. It runs only when the bytes
// changed.
type Parse func(data []byte) (interface{}, error)

// File is one watched file. The content is compared, not the size and modification time, so a file
// rewritten with the same size and time (cp -p, rsync -a) is seen too. A read costs far less than
// the token exchange it precedes.
type File struct {
	name  string // what the file is for (the option naming it), for messages
	path  string
	parse Parse

	mu    sync.Mutex
	raw   []byte
	value interface{}
}

// New returns a watched file; nothing is read until Load or Get.
func New(name, path string, parse Parse) *File {
	return &File{name: name, path: path, parse: parse}
}

// Path is the file's path.
func (f *File) Path() string {
	return f.path
}

// Load reads and parses the file. The middleware calls it when it is created: a file that cannot
// be used is then a configuration error. The error wraps the fs error (fs.ErrNotExist,
// fs.ErrPermission) when the file could not be read.
func (f *File) Load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refresh()
}

// Get returns the parsed content, read again. When the file can no longer be read or parsed, the
// last good value is returned with the error, for the caller to log.
func (f *File) Get() (interface{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.refresh()
	return f.value, err
}

// Hash is the SHA-256 of the content last read successfully (of no content before the first).
func (f *File) Hash() [32]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sha256.Sum256(f.raw)
}

// refresh runs with f.mu held.
func (f *File) refresh() error {
	file, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, MaxSize))
	if err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	if f.value != nil && bytes.Equal(data, f.raw) {
		return nil
	}
	value, err := f.parse(data)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", f.name, f.path, err)
	}
	// Two assignments: Yaegi v0.16.1 cannot assign an interface{} to a field in a tuple assignment.
	f.raw = data
	f.value = value
	return nil
}

// Secret parses a file holding one secret (a client secret, a password): its content without
// surrounding white space, which must not be empty. The value is a string.
func Secret(data []byte) (interface{}, error) {
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return nil, errors.New("the file is empty")
	}
	return secret, nil
}
