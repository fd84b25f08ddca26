package oboexchange

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oboexchange/oboexchange/internal/jose/josetest"
)

// Test helpers: the secrets no log line may hold, and the tokens that carry them.

// Test credentials. captureLogs checks that none of them, nor any token made by testJWT or
// opaqueToken, ever reaches a log line.
const (
	testClientID     = "gateway:client"
	testClientSecret = "s3cr:et%+/with space"
	userToken        = "user-access-token-0123456789abcdef"
	exchangedToken   = "exchanged-token-for-backend-abcdef"
)

var (
	secretsMu sync.Mutex
	secrets   = []string{testClientSecret, userToken, exchangedToken}
)

// remember registers a value that must never be logged.
func remember(v string) string {
	secretsMu.Lock()
	secrets = append(secrets, v)
	secretsMu.Unlock()
	return v
}

// logBuffer collects what the plugin logs during one test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLogs sends the plugin's log lines to a buffer for the duration of the test and, at its
// end, fails the test if any of them holds a token or a secret.
func captureLogs(t *testing.T) *logBuffer {
	t.Helper()
	b := &logBuffer{}
	logMu.Lock()
	previous := logOutput
	logOutput = b
	logMu.Unlock()
	t.Cleanup(func() {
		logMu.Lock()
		logOutput = previous
		logMu.Unlock()
		out := b.String()
		secretsMu.Lock()
		defer secretsMu.Unlock()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("a token or secret reached the log: %q", s)
			}
		}
	})
	return b
}

// testJWT builds an unsigned JWT-shaped token with the given claims.
func testJWT(claims map[string]interface{}) string {
	return remember(josetest.UnsignedJWT(claims))
}

// opaqueToken returns a distinct opaque token.
func opaqueToken(i int) string {
	return remember("opaque-user-token-" + strconv.Itoa(i) + "-" + strconv.Itoa(int(time.Now().UnixNano()%1000000)))
}
