package oboexchange

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientSecretFile is read at start and again when the file changes.
func TestClientSecretFileRotation(t *testing.T) {
	logs := captureLogs(t)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("first-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	remember("first-secret")
	remember("second-secret-longer")
	ts := newTokenServer(t, issuePerSubject(3600))
	h := secretFileMiddleware(t, ts, path)

	wantStatus(t, call(h, "Bearer "+opaqueToken(1)), http.StatusNoContent)
	if got := ts.last(t).form.Get("client_secret"); got != "first-secret" {
		t.Errorf("client_secret = %q, want the file's content without the newline", got)
	}

	if err := os.WriteFile(path, []byte("second-secret-longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(2)), http.StatusNoContent)
	if got := ts.last(t).form.Get("client_secret"); got != "second-secret-longer" {
		t.Errorf("after rotation client_secret = %q", got)
	}

	// A file that disappears keeps the last good secret in use, and says so in the log.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, call(h, "Bearer "+opaqueToken(3)), http.StatusNoContent)
	if got := ts.last(t).form.Get("client_secret"); got != "second-secret-longer" {
		t.Errorf("after removal client_secret = %q", got)
	}
	if !strings.Contains(logs.String(), `level=warn`) || !strings.Contains(logs.String(), "client secret file could not be read again") {
		t.Errorf("no warning in the log: %s", logs.String())
	}
}

// A secret file rewritten with the same size and modification time (cp -p, rsync -a) is read
// again all the same.
func TestClientSecretFileSameSizeAndTime(t *testing.T) {
	captureLogs(t)
	path := filepath.Join(t.TempDir(), "secret")
	stamp := time.Now().Add(-time.Hour).Truncate(time.Second)
	write := func(secret string) {
		remember(secret)
		if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, stamp, stamp); err != nil {
			t.Fatal(err)
		}
	}
	write("secret-one-aaaa")
	ts := newTokenServer(t, issuePerSubject(3600))
	h := secretFileMiddleware(t, ts, path)
	wantStatus(t, call(h, "Bearer "+opaqueToken(11)), http.StatusNoContent)

	write("secret-two-bbbb")
	wantStatus(t, call(h, "Bearer "+opaqueToken(12)), http.StatusNoContent)
	if got := ts.last(t).form.Get("client_secret"); got != "secret-two-bbbb" {
		t.Errorf("client_secret = %q after a rewrite with the same size and time", got)
	}
}
