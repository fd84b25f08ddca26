package oboexchange

import (
	"net/http"
	"strings"
	"testing"
)

// Failed exchanges are logged once, with what an operator needs and no secret; cache hits are not
// logged at the default level.
func TestLogLines(t *testing.T) {
	logs := captureLogs(t)
	ts := newTokenServer(t, firstThen(
		reply(401, `{"error":"invalid_client","error_description":"Client authentication failed"}`),
		issue(exchangedToken, 3600)))
	h, _ := newTestMiddleware(t, testConfig(ts.url()))

	wantStatus(t, call(h, "Bearer "+userToken), 502)
	line := logs.String()
	for _, want := range []string{
		"level=error", "middleware=test-obo", `msg="token exchange failed"`, "flow=rfc8693",
		"host=" + strings.TrimPrefix(ts.srv.URL, "http://"), "status=502", "error=invalid_client",
		`error_description="Client authentication failed"`, "latency=", "subject=" + tokenHash(userToken),
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s:\n%s", want, line)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("want one line, got:\n%s", line)
	}

	wantStatus(t, call(h, "Bearer "+userToken), 204)
	before := logs.String()
	wantStatus(t, call(h, "Bearer "+userToken), 204)
	if logs.String() != before {
		t.Errorf("a cache hit was logged: %s", strings.TrimPrefix(logs.String(), before))
	}
}

func TestLogLevels(t *testing.T) {
	tests := []struct {
		name string // the logLevel
		want int    // lines for one refused request, one successful exchange and one failed exchange
	}{
		{"debug", 4}, // + "configured" at New
		{"info", 1},
		{"warn", 1},
		{"error", 1},
		{"off", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := captureLogs(t)
			ts := newTokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.PostForm.Get("subject_token") == "bad" {
					answer(w, 500, `{}`)
					return
				}
				issue(exchangedToken, 3600)(w, r)
			})
			c := testConfig(ts.url())
			c.LogLevel = tc.name
			h, _ := newTestMiddleware(t, c)
			call(h, "")
			call(h, "Bearer "+userToken)
			call(h, "Bearer bad")
			if got := strings.Count(logs.String(), "\n"); got != tc.want {
				t.Errorf("%d lines, want %d:\n%s", got, tc.want, logs.String())
			}
		})
	}
}

func TestLogValueQuoting(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "plain", "plain"},
		{"empty", "", `""`},
		{"space", "two words", `"two words"`},
		{"line break", "line\nbreak", `"line\nbreak"`},
		{"quote", `a"b`, `"a\"b"`},
		{"equals sign", "k=v", `"k=v"`},
		{"too long", strings.Repeat("x", maxLogValue+5), strings.Repeat("x", maxLogValue) + "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := logValue(tc.in); got != tc.want {
				t.Errorf("logValue(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// The debug line at New names the cache by a random id, never by the fingerprint, which hashes the
// client secret.
func TestConfiguredLineNamesCacheByRandomID(t *testing.T) {
	logs := captureLogs(t)
	c := testConfig("https://idp.example.com/oauth2/token")
	c.LogLevel = "debug"
	h, _ := newTestMiddleware(t, c)
	x := h.(*Middleware).x
	if !strings.Contains(logs.String(), "cache="+x.id) || len(x.id) != 12 {
		t.Errorf("the line does not name the cache by its id %q:\n%s", x.id, logs.String())
	}
	if strings.Contains(logs.String(), x.fingerprint[:8]) {
		t.Errorf("the fingerprint reached the log:\n%s", logs.String())
	}
}
