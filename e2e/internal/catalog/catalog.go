// Package catalog loads a plugin the way Traefik's Plugin Catalog analyzer and Traefik itself do:
// from the files a module zip of its repository holds, in a fresh GOPATH, interpreted by Yaegi
// with the standard library's symbols alone; CreateConfig, the manifest's testData decoded as
// Traefik decodes plugin options, New within 10 s with the network off, then one request.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/mitchellh/mapstructure"
	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib"
	"gopkg.in/yaml.v3"
)

// newTimeout is how long the analyzer gives New.
const newTimeout = 10 * time.Second

// Manifest is the part of .traefik.yml the analyzer reads.
type Manifest struct {
	DisplayName string                 `yaml:"displayName"`
	Type        string                 `yaml:"type"`
	Import      string                 `yaml:"import"`
	Summary     string                 `yaml:"summary"`
	TestData    map[string]interface{} `yaml:"testData"`
}

// ModuleFiles lists the files a module zip of the repository at root holds: those git tracks
// (so a file never added is missing, as it would be from the catalog's download), without the
// folders that are modules of their own (a go.mod of theirs), which a module zip leaves out.
func ModuleFiles(root string) ([]string, error) {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	all := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	nested := map[string]bool{}
	for _, f := range all {
		if path.Base(f) == "go.mod" && path.Dir(f) != "." {
			nested[path.Dir(f)] = true
		}
	}
	var files []string
	for _, f := range all {
		if !inNested(f, nested) {
			files = append(files, f)
		}
	}
	return files, nil
}

func inNested(f string, nested map[string]bool) bool {
	for dir := path.Dir(f); dir != "."; dir = path.Dir(dir) {
		if nested[dir] {
			return true
		}
	}
	return false
}

// Check loads the plugin whose files (relative to root) are given, as the analyzer does.
func Check(root string, files []string) error {
	raw, err := os.ReadFile(filepath.Join(root, ".traefik.yml"))
	if err != nil {
		return fmt.Errorf("the manifest: %w", err)
	}
	var m Manifest
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("the manifest: %w", err)
	}
	if m.DisplayName == "" || m.Type != "middleware" || m.Import == "" || m.Summary == "" || m.TestData == nil {
		return errors.New("the manifest needs displayName, type: middleware, import, summary and testData")
	}
	gopath, err := os.MkdirTemp("", "oboexchange-catalog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(gopath)
	if err := Layout(root, files, filepath.Join(gopath, "src", m.Import)); err != nil {
		return err
	}
	dials, restore := networkOff()
	defer restore()
	h, err := loadWithin(gopath, m, newTimeout)
	if err != nil {
		return err
	}
	if d := dials(); len(d) > 0 {
		return fmt.Errorf("the plugin's New used the network: %s", strings.Join(d, ", "))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://gateway.test/", nil))
	if rec.Code >= 500 {
		return fmt.Errorf("a request without a token got %d: %s", rec.Code, rec.Body.String())
	}
	if d := dials(); len(d) > 0 {
		return fmt.Errorf("a request without a token used the network: %s", strings.Join(d, ", "))
	}
	return nil
}

// Layout copies the files into dir, the plugin's folder in a GOPATH.
func Layout(root string, files []string, dir string) error {
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// loadWithin loads the plugin with its testData, and gives up after timeout.
func loadWithin(gopath string, m Manifest, timeout time.Duration) (http.Handler, error) {
	type result struct {
		h   http.Handler
		err error
	}
	done := make(chan result, 1)
	go func() {
		pkg := strings.ReplaceAll(path.Base(m.Import), "-", "_")
		h, err := Load(gopath, m.Import, pkg, m.TestData, http.NotFoundHandler(), analyzerEnv())
		done <- result{h, err}
	}()
	select {
	case r := <-done:
		return r.h, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("the plugin's New did not return within %v", timeout)
	}
}

// Load loads a plugin the way Traefik does (pkg/plugins/middlewareyaegi.go): one interpreter with
// the standard library's symbols and a GOPATH holding the sources, CreateConfig, then the options
// decoded by mapstructure with Traefik's settings (weak typing, comma-separated lists), then New.
func Load(gopath, module, pkg string, options map[string]interface{}, next http.Handler, environ []string) (http.Handler, error) {
	i := interp.New(interp.Options{GoPath: gopath, Env: environ})
	if err := i.Use(stdlib.Symbols); err != nil {
		return nil, err
	}
	if _, err := i.Eval(`import "` + module + `"`); err != nil {
		return nil, fmt.Errorf("import %s: %w", module, err)
	}
	fnNew, err := i.Eval(pkg + ".New")
	if err != nil {
		return nil, err
	}
	fnCreateConfig, err := i.Eval(pkg + ".CreateConfig")
	if err != nil {
		return nil, err
	}
	cfg := fnCreateConfig.Call(nil)[0]
	if len(options) > 0 {
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
			DecodeHook:       mapstructure.StringToSliceHookFunc(","),
			WeaklyTypedInput: true,
			Result:           cfg.Interface(),
		})
		if err != nil {
			return nil, err
		}
		if err := dec.Decode(options); err != nil {
			return nil, fmt.Errorf("decoding the options: %w", err)
		}
	}
	out := fnNew.Call([]reflect.Value{reflect.ValueOf(context.Background()), reflect.ValueOf(next), cfg, reflect.ValueOf("catalog")})
	if err, _ := out[1].Interface().(error); err != nil {
		return nil, fmt.Errorf("the plugin's New: %w", err)
	}
	return out[0].Interface().(http.Handler), nil
}

// analyzerEnv is this process's environment without the variables the analyzer unsets: those
// whose names hold token, password, _url, _host or _port.
func analyzerEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		lower := strings.ToLower(name)
		if strings.Contains(lower, "token") || strings.Contains(lower, "password") || strings.Contains(lower, "_url") ||
			strings.Contains(lower, "_host") || strings.Contains(lower, "_port") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// networkOff makes every connection and name lookup of this process fail, and records them: the
// plugin's HTTP clients are clones of http.DefaultTransport (its dialer included), and every name
// goes through net.DefaultResolver. It returns the record and a function that turns the network on
// again.
func networkOff() (func() []string, func()) {
	var mu sync.Mutex
	var attempts []string
	record := func(what string) error {
		mu.Lock()
		attempts = append(attempts, what)
		mu.Unlock()
		return errors.New("the network is off during the catalog check")
	}
	transport, resolver := http.DefaultTransport, net.DefaultResolver
	off := http.DefaultTransport.(*http.Transport).Clone()
	off.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, record("dial " + addr)
	}
	off.DialTLSContext = off.DialContext
	off.Proxy = nil
	http.DefaultTransport = off
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, record("name lookup through " + addr)
	}}
	dials := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), attempts...)
	}
	return dials, func() { http.DefaultTransport, net.DefaultResolver = transport, resolver }
}
