package oboexchange

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	levelDebug = iota
	levelInfo
	levelWarn
	levelError
	levelOff
)

var logLevels = map[string]int{
	"debug": levelDebug, "info": levelInfo, "": levelInfo, "warn": levelWarn, "error": levelError, "off": levelOff,
}

var levelNames = []string{"debug", "info", "warn", "error"}

// logOutput receives the plugin's log lines. Inside Traefik, os.Stdout is the process's standard
// output, where Traefik writes its own log by default. Tests swap it to read what was logged.
var (
	logMu     sync.Mutex
	logOutput io.Writer = os.Stdout
)

// logger writes one logfmt line per event, tagged with the middleware name. Callers pass only
// values that cannot hold a secret; a token is identified by tokenHash.
type logger struct {
	name  string
	level int
}

func newLogger(name string, level int) *logger {
	return &logger{name: name, level: level}
}

func (l *logger) enabled(level int) bool {
	return level >= l.level
}

// log writes msg with key/value pairs; values are quoted when they need it, so a value from the
// authorization server cannot forge a line or a field.
func (l *logger) log(level int, msg string, kv ...string) {
	if !l.enabled(level) {
		return
	}
	var b strings.Builder
	b.WriteString("time=")
	b.WriteString(time.Now().UTC().Format(time.RFC3339))
	b.WriteString(" level=")
	b.WriteString(levelNames[level])
	b.WriteString(" plugin=oboexchange middleware=")
	b.WriteString(logValue(l.name))
	b.WriteString(" msg=")
	b.WriteString(logValue(msg))
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteByte(' ')
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(logValue(kv[i+1]))
	}
	b.WriteByte('\n')
	logMu.Lock()
	_, _ = io.WriteString(logOutput, b.String())
	logMu.Unlock()
}

// maxLogValue bounds one logged value (an error_description can be long).
const maxLogValue = 300

// logValue quotes a value that is empty or holds spaces, quotes or control characters.
func logValue(v string) string {
	if len(v) > maxLogValue {
		v = v[:maxLogValue] + "..."
	}
	if v == "" || strings.ContainsAny(v, " \"=\\") || strconv.Quote(v) != `"`+v+`"` {
		return strconv.Quote(v)
	}
	return v
}

// redactedRun is the shortest run of a token's characters that redact hides: a server may quote
// the token whole, cut short or encoded in part, and a run this long is worth hiding wherever it
// appears.
const redactedRun = 16

// redact replaces in s the token, and every run of redactedRun or more of its characters, with
// "[subject token]". s is first cut to 1 KiB: a logged value is cut to maxLogValue anyway.
func redact(s, token string) string {
	return redactAs(s, token, "[subject token]")
}

// redactActor is redact for the actor token.
func redactActor(s, token string) string {
	return redactAs(s, token, "[actor token]")
}

// redactAs replaces the token and its long runs with label.
func redactAs(s, token, label string) string {
	if len(s) > 1024 {
		s = s[:1024]
	}
	if token == "" {
		return s
	}
	if len(token) < redactedRun {
		return strings.ReplaceAll(s, token, label)
	}
	var b strings.Builder
	last := 0
	for i := 0; i+redactedRun <= len(s); {
		if !strings.Contains(token, s[i:i+redactedRun]) {
			i++
			continue
		}
		end := i + redactedRun
		for end < len(s) && strings.Contains(token, s[i:end+1]) {
			end++
		}
		b.WriteString(s[last:i])
		b.WriteString(label)
		last, i = end, end
	}
	b.WriteString(s[last:])
	return b.String()
}

// tokenHash identifies a token in a log line without revealing it: the first 12 hex digits of
// its SHA-256.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
