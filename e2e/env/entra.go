package env

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Entra is the Entra ID OBO test server (oauth2-mock-server with Entra's checks), run by Node.
// Its token endpoint has Entra's path, /<tenant>/oauth2/v2.0/token; e2e/entra/entra-mock.mjs
// describes what it checks and answers.
type Entra struct {
	Issuer, TokenEndpoint, JWKSURI string
	ClientID, ClientSecret, Tenant string

	cmd    *exec.Cmd
	stdin  io.WriteCloser // control channel: "sync N" lines; closing it stops node
	done   chan struct{}  // closed once node has exited and its stdout is drained
	stop   sync.Once
	stderr *tailBuffer
	client *http.Client

	mu       sync.Mutex
	calls    map[string]int // token-endpoint calls by grant type
	auths    map[string]int // OBO calls by client authentication: secret, certificate, federated
	synced   int            // highest sync marker node has echoed
	syncSeen chan struct{}  // closed and replaced whenever synced grows
	nextSync int
}

// mockEvent is one JSON line of the mock's stdout.
type mockEvent struct {
	Event         string `json:"event"`
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	JWKSURI       string `json:"jwks_uri"`
	GrantType     string `json:"grant_type"`
	ClientAuth    string `json:"client_auth"`
	N             int    `json:"n"`
}

// EntraCredentials are the credentials of the gateway's app registration besides its secret.
type EntraCredentials struct {
	// CertificateFile is a PEM file of the certificates uploaded to the app ("Certificates &
	// secrets", Certificates): client assertions signed with their keys are accepted.
	CertificateFile string
	// Federated are the app's federated identity credentials.
	Federated []FederatedCredential
}

// FederatedCredential trusts the assertions an external issuer makes for one subject
// (Entra: "Certificates & secrets", Federated credentials).
type FederatedCredential struct {
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences"`
}

const entraTenant = "contoso"

// StartEntra installs the mock's npm packages if e2e/entra/node_modules is missing, starts
// `node entra-mock.mjs` for the app registration clientID/clientSecret and waits until it
// listens. The mock's stdout and stderr are copied to logTo, which may be nil.
func StartEntra(clientID, clientSecret string, logTo io.Writer) (*Entra, error) {
	return StartEntraWith(clientID, clientSecret, EntraCredentials{}, logTo)
}

// StartEntraWith is StartEntra for an app registration that also has certificate or federated
// credentials.
func StartEntraWith(clientID, clientSecret string, creds EntraCredentials, logTo io.Writer) (*Entra, error) {
	federated, err := json.Marshal(creds.Federated)
	if err != nil {
		return nil, err
	}
	if creds.Federated == nil {
		federated = []byte("[]")
	}
	log := &lockedWriter{w: io.Discard}
	if logTo != nil {
		log.w = logTo
	}
	dir, err := entraDir()
	if err != nil {
		return nil, err
	}
	if err := ensureNodeModules(dir, log); err != nil {
		return nil, err
	}

	e := &Entra{
		ClientID: clientID, ClientSecret: clientSecret, Tenant: entraTenant,
		done:     make(chan struct{}),
		stderr:   &tailBuffer{max: 4096},
		client:   &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		calls:    map[string]int{},
		auths:    map[string]int{},
		syncSeen: make(chan struct{}),
	}
	e.cmd = exec.Command("node", "entra-mock.mjs")
	e.cmd.Dir = dir
	e.cmd.Env = append(os.Environ(),
		"ENTRA_TENANT="+entraTenant,
		"ENTRA_CLIENT_ID="+clientID,
		"ENTRA_CLIENT_SECRET="+clientSecret,
		"ENTRA_CLIENT_CERTS="+creds.CertificateFile,
		"ENTRA_FEDERATED_CREDENTIALS="+string(federated),
		"ENTRA_STDIN_CONTROL=1")
	e.cmd.Stderr = io.MultiWriter(log, e.stderr)
	if e.stdin, err = e.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node (is Node.js installed?): %w", err)
	}

	ready := make(chan mockEvent, 1)
	go e.readStdout(stdout, log, ready)
	select {
	case ev := <-ready:
		e.Issuer, e.TokenEndpoint, e.JWKSURI = ev.Issuer, ev.TokenEndpoint, ev.JWKSURI
		return e, nil
	case <-e.done:
		return nil, fmt.Errorf("entra mock exited before it was ready: %v\n%s", e.cmd.ProcessState, e.stderr)
	case <-time.After(30 * time.Second):
		e.Stop()
		return nil, fmt.Errorf("entra mock not ready after 30s\n%s", e.stderr)
	}
}

// entraDir finds e2e/entra from this source file, so tests work from any working directory.
func entraDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the env package's source")
	}
	return filepath.Join(filepath.Dir(file), "..", "entra"), nil
}

// ensureNodeModules runs `npm ci` once. It installs into a fresh staging directory and renames
// the result into place, so test binaries of several packages starting together never run npm
// in the same directory or see a half-installed node_modules; the loser keeps the winner's copy.
func ensureNodeModules(dir string, log io.Writer) error {
	target := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	staging, err := os.MkdirTemp(dir, ".npm-ci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	for _, name := range []string{"package.json", "package-lock.json"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(staging, name), data, 0o644); err != nil {
			return err
		}
	}
	npm := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	npm.Dir = staging
	output := &tailBuffer{max: 4096}
	npm.Stdout = io.MultiWriter(log, output)
	npm.Stderr = npm.Stdout
	if err := npm.Run(); err != nil {
		return fmt.Errorf("npm ci for %s: %w\n%s", dir, err, output)
	}
	if err := os.Rename(filepath.Join(staging, "node_modules"), target); err != nil {
		if _, statErr := os.Stat(target); statErr == nil {
			return nil // another test binary installed it first
		}
		return err
	}
	return nil
}

// readStdout copies node's stdout lines to log, hands over the ready line and counts the
// "token" lines, until node exits; then it reaps node and closes e.done.
func (e *Entra) readStdout(stdout io.Reader, log io.Writer, ready chan<- mockEvent) {
	defer close(e.done)
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		fmt.Fprintf(log, "%s\n", scanner.Bytes())
		var ev mockEvent
		if json.Unmarshal(scanner.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "ready":
			ready <- ev // buffered, and node prints it once
		case "token":
			e.mu.Lock()
			e.calls[ev.GrantType]++
			if ev.ClientAuth != "" {
				e.auths[ev.ClientAuth]++
			}
			e.mu.Unlock()
		case "sync":
			e.mu.Lock()
			if ev.N > e.synced {
				e.synced = ev.N
				close(e.syncSeen)
				e.syncSeen = make(chan struct{})
			}
			e.mu.Unlock()
		}
	}
	// Drain what a too-long line left behind, so node never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, stdout)
	_ = e.cmd.Wait()
}

// UserToken returns a user access token for API1, the gateway (aud = ClientID), with that sub.
// It is a valid OBO assertion. The subs "mfa-user", "consent-user" and "revoked-user" make the
// OBO request fail as Entra does; "expired-user" gets a token that has already expired.
func (e *Entra) UserToken(sub string) (string, error) {
	resp, err := e.client.PostForm(e.TokenEndpoint, url.Values{
		"grant_type": {"password"},
		"username":   {sub},
		"password":   {"unused"},
		"client_id":  {e.ClientID},
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("user token: HTTP %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		return "", fmt.Errorf("user token: HTTP %d: %s", resp.StatusCode, body.Error)
	}
	return body.AccessToken, nil
}

// Calls returns the token-endpoint calls seen so far for a grant type, e.g.
// "urn:ietf:params:oauth:grant-type:jwt-bearer". Every call whose response has arrived is counted.
func (e *Entra) Calls(grantType string) int {
	e.sync()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[grantType]
}

// ClientAuthCalls returns the OBO calls seen so far whose client authentication was of a kind:
// "secret", "certificate" or "federated" (refused ones included, once the mock knew the kind).
func (e *Entra) ClientAuthCalls(kind string) int {
	e.sync()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.auths[kind]
}

// sync waits until node echoes a marker sent now. Node prints a call's line before it answers
// the call, and stdout keeps order, so every line of an answered call is counted by then.
func (e *Entra) sync() {
	e.mu.Lock()
	e.nextSync++
	n := e.nextSync
	e.mu.Unlock()
	if _, err := fmt.Fprintf(e.stdin, "sync %d\n", n); err != nil {
		return // node has stopped: the counts are final
	}
	timeout := time.After(5 * time.Second)
	for {
		e.mu.Lock()
		synced, seen := e.synced >= n, e.syncSeen
		e.mu.Unlock()
		if synced {
			return
		}
		select {
		case <-seen:
		case <-e.done:
			return
		case <-timeout:
			return
		}
	}
}

// Stop ends node with SIGTERM, or kills it after 5 s, and waits until it and the goroutines
// reading it are gone.
func (e *Entra) Stop() {
	e.stop.Do(func() {
		terminate(e.cmd.Process, e.done, 5*time.Second)
		e.client.CloseIdleConnections()
	})
}

// lockedWriter lets node's stdout and stderr copiers share one log.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
