package env

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PluginModule is the module name Traefik loads the plugin by.
const PluginModule = "github.com/oboexchange/oboexchange"

// Traefik is a Traefik process with the plugin in local mode (sources under
// plugins-local/src/<module>/ of its working directory) and a watched dynamic configuration folder.
type Traefik struct {
	Dir        string // working directory: plugins-local, configuration, log
	DynamicDir string // the file provider's folder
	WebURL     string // the "web" entry point
	APIURL     string // the loopback "traefik" entry point: API, ping, metrics
	MetricsURL string // the "metrics" entry point: the plugin's own metrics (examples/monitoring)

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
}

// RepoRoot is the plugin repository (two levels above this file).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// TraefikBinary is the Traefik build the suite runs (make builds it once into its cache folder).
func TraefikBinary() (string, error) {
	bin := os.Getenv("TRAEFIK_BIN")
	if bin == "" {
		return "", errors.New("TRAEFIK_BIN is not set: run the suite with `make e2e` (or `make test`), which builds Traefik once and sets it")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("TRAEFIK_BIN: %w", err)
	}
	return bin, nil
}

// TraefikVersion is the version the Traefik binary reports.
func TraefikVersion() string {
	bin, err := TraefikBinary()
	if err != nil {
		return "(unknown version)"
	}
	out, _ := exec.Command(bin, "version").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "(unknown version)"
}

// StartTraefik starts Traefik with the static configuration of examples/static/traefik.yml, with
// its ports and folder replaced by free loopback ports and a temporary folder, and a shorter
// configuration throttle. Dynamic configuration files given in dynamic (name to content) are in
// place before it starts. Fixture plugins (see FixturePlugin) named in otherPlugins are loaded
// beside oboexchange.
func StartTraefik(dynamic map[string]string, otherPlugins ...string) (*Traefik, error) {
	bin, err := TraefikBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "oboexchange-traefik-")
	if err != nil {
		return nil, err
	}
	t := &Traefik{Dir: dir, DynamicDir: filepath.Join(dir, "dynamic"), done: make(chan struct{})}
	if err := os.MkdirAll(t.DynamicDir, 0o755); err != nil {
		return nil, err
	}
	if err := CopyPlugin(RepoRoot(), filepath.Join(dir, "plugins-local", "src", PluginModule)); err != nil {
		return nil, err
	}
	for _, p := range otherPlugins {
		src, module := FixturePlugin(p)
		if err := CopyPlugin(src, filepath.Join(dir, "plugins-local", "src", module)); err != nil {
			return nil, err
		}
	}
	for name, content := range dynamic {
		if err := t.WriteDynamic(name, content); err != nil {
			return nil, err
		}
	}
	static, err := t.staticConfig(otherPlugins)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "traefik.yml"), []byte(static), 0o644); err != nil {
		return nil, err
	}
	if t.logFile, err = os.Create(filepath.Join(dir, "traefik.log")); err != nil {
		return nil, err
	}
	t.cmd = exec.Command(bin, "--configFile="+filepath.Join(dir, "traefik.yml"))
	t.cmd.Dir = dir
	t.cmd.Stdout = t.logFile
	t.cmd.Stderr = t.logFile
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = t.cmd.Wait(); close(t.done) }()
	if err := t.waitReady(90 * time.Second); err != nil {
		log := t.Log() // before Stop, which removes the folder holding it
		t.Stop()
		return nil, fmt.Errorf("%w; log:\n%s", err, tail(log, 40))
	}
	return t, nil
}

// StartReplicas starts n Traefik processes with the same dynamic configuration, side by side, as
// the replicas of one deployment behind a load balancer. On an error, those started are stopped.
func StartReplicas(n int, dynamic map[string]string) ([]*Traefik, error) {
	replicas := make([]*Traefik, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replicas[i], errs[i] = StartTraefik(dynamic)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, t := range replicas {
			if t != nil {
				t.Stop()
			}
		}
		return nil, err
	}
	return replicas, nil
}

// staticConfig is examples/static/traefik.yml with the example's ports and folder replaced.
func (t *Traefik) staticConfig(otherPlugins []string) (string, error) {
	web, err := freePort()
	if err != nil {
		return "", err
	}
	api, err := freePort()
	if err != nil {
		return "", err
	}
	metrics, err := freePort()
	if err != nil {
		return "", err
	}
	t.WebURL = "http://127.0.0.1:" + web
	t.APIURL = "http://127.0.0.1:" + api
	t.MetricsURL = "http://127.0.0.1:" + metrics
	return Example("static/traefik.yml", map[string]string{
		`":8000"`:              `"127.0.0.1:` + web + `"`,
		`"127.0.0.1:8080"`:     `"127.0.0.1:` + api + `"`,
		`":8082"`:              `"127.0.0.1:` + metrics + `"`,
		"/etc/traefik/dynamic": t.DynamicDir,
		// Traefik coalesces configuration changes that come within 2 s (providersThrottleDuration);
		// a shorter window lets each of the suite's many reloads reach the plugin.
		"providers:\n":      "providers:\n  providersThrottleDuration: 50ms\n",
		"  localPlugins:\n": "  localPlugins:\n" + localPlugins(otherPlugins),
	})
}

// localPlugins declares fixture plugins in the static configuration.
func localPlugins(names []string) string {
	var b strings.Builder
	for _, n := range names {
		_, module := FixturePlugin(n)
		b.WriteString("    " + n + ":\n      moduleName: " + module + "\n")
	}
	return b.String()
}

// FixturePlugin returns the folder and the module of a fixture plugin: a minimal Traefik plugin
// of e2e/testdata/plugins/<name> (module github.com/oboexchange/<name>) that the benchmark
// measures oboexchange against. They sit under testdata, which the go tool skips, because each
// is a module of its own that only Traefik and Yaegi load.
func FixturePlugin(name string) (dir, module string) {
	return filepath.Join(RepoRoot(), "e2e", "testdata", "plugins", name), "github.com/oboexchange/" + name
}

// Example reads a file of examples/ and makes the given replacements, each of which must apply:
// an example that drifts from what the suite expects fails the suite instead of rotting.
func Example(name string, replace map[string]string) (string, error) {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "examples", name))
	if err != nil {
		return "", err
	}
	s := string(b)
	for old, repl := range replace {
		if !strings.Contains(s, old) {
			return "", fmt.Errorf("examples/%s no longer contains %q", name, old)
		}
		s = strings.ReplaceAll(s, old, repl)
	}
	return s, nil
}

// CopyPlugin copies what Traefik loads of a plugin from the folder src to dst: the Go files of
// the package and of its sub-packages (internal/...), without tests, with go.mod and the manifest.
// The folders that hold no plugin code (e2e, examples, docs, testdata) are left out.
func CopyPlugin(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(name, ".") || skippedDirs[name]) {
				return filepath.SkipDir
			}
			return nil
		}
		keep := (rel == "go.mod" || rel == ".traefik.yml") || (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"))
		if !keep {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

// skippedDirs hold no plugin code.
var skippedDirs = map[string]bool{"e2e": true, "examples": true, "docs": true, "testdata": true, "node_modules": true, "bin": true}

// WriteDynamic writes a file of the dynamic configuration atomically (Traefik watches the folder).
func (t *Traefik) WriteDynamic(name, content string) error {
	tmp := filepath.Join(t.Dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(t.DynamicDir, name))
}

// RemoveDynamic deletes a file of the dynamic configuration.
func (t *Traefik) RemoveDynamic(name string) error {
	return os.Remove(filepath.Join(t.DynamicDir, name))
}

func (t *Traefik) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-t.done:
			return errors.New("traefik exited")
		default:
		}
		if resp, err := http.Get(t.APIURL + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("traefik did not answer /ping in time")
}

// WaitRouter waits until the router (from the file provider) has the given status ("enabled" or
// "disabled") in Traefik's API, and returns the API's description of it.
func (t *Traefik) WaitRouter(name, status string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get(t.APIURL + "/api/http/routers/" + name + "@file")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if resp.StatusCode == http.StatusOK && strings.Contains(last, `"status":"`+status+`"`) {
				return last, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last, fmt.Errorf("router %s not %s after %v (last: %s)", name, status, timeout, last)
}

// Metric reads one value of Traefik's Prometheus metrics (go_goroutines,
// process_resident_memory_bytes, process_cpu_seconds_total...).
func (t *Traefik) Metric(name string) (float64, error) {
	resp, err := http.Get(t.APIURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			return strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name+" ")), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// Pid is Traefik's process id.
func (t *Traefik) Pid() int { return t.cmd.Process.Pid }

// Log returns everything Traefik (and the plugin) printed so far.
func (t *Traefik) Log() string {
	b, _ := os.ReadFile(filepath.Join(t.Dir, "traefik.log"))
	return string(b)
}

// LogFollower reads what Traefik logs from a point on, a complete line at a time.
type LogFollower struct {
	t       *Traefik
	offset  int64
	partial string
}

// Follow starts reading Traefik's log from its current end.
func (t *Traefik) Follow() *LogFollower {
	info, err := os.Stat(filepath.Join(t.Dir, "traefik.log"))
	f := &LogFollower{t: t}
	if err == nil {
		f.offset = info.Size()
	}
	return f
}

// Next returns the complete lines logged since the previous call.
func (f *LogFollower) Next() string {
	file, err := os.Open(filepath.Join(f.t.Dir, "traefik.log"))
	if err != nil {
		return ""
	}
	defer file.Close()
	b, _ := io.ReadAll(io.NewSectionReader(file, f.offset, 1<<40))
	f.offset += int64(len(b))
	text := f.partial + string(b)
	cut := strings.LastIndexByte(text, '\n') + 1
	f.partial = text[cut:]
	return text[:cut]
}

// Stop ends Traefik (SIGTERM, then SIGKILL after 10 s) and removes its folder.
func (t *Traefik) Stop() {
	if t.cmd != nil && t.cmd.Process != nil {
		terminate(t.cmd.Process, t.done, 10*time.Second)
	}
	if t.logFile != nil {
		t.logFile.Close()
	}
	if os.Getenv("KEEP_TRAEFIK_DIR") == "" {
		_ = os.RemoveAll(t.Dir)
	}
}

// terminate sends SIGTERM, kills the process after grace, and waits until done is closed (by the
// goroutine waiting for the process).
func terminate(p *os.Process, done <-chan struct{}, grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = p.Kill()
		<-done
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
