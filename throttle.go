package oboexchange

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Throttling by the authorization server. Entra ID and Okta answer a gateway that asks too often
// with 429 and Retry-After; a 503 with Retry-After says the same. Either opens a cool-down for the
// token endpoint: no exchange is sent until it passes, and the requests that need one get 503
// with the seconds left, while cached users go on as normal. Then one exchange goes first (the
// probe); the others follow once it has had an answer that is not another throttle.

const (
	// defaultCoolDown applies when the answer has no usable Retry-After.
	defaultCoolDown = 5 * time.Second
	// maxCoolDown caps what a server may ask for.
	maxCoolDown = 5 * time.Minute
	// entraLoopCode is Entra's answer to a loop of identical requests.
	entraLoopCode = "AADSTS50196"
)

// throttleAnswer reports whether an answer of the token endpoint asks the gateway to slow down,
// and for how long: at least a second, at most maxCoolDown.
func throttleAnswer(status int, retryAfter string, now time.Time) (time.Duration, bool) {
	if status != http.StatusTooManyRequests && (status != http.StatusServiceUnavailable || retryAfter == "") {
		return 0, false
	}
	d, ok := parseRetryAfter(retryAfter, now)
	if !ok {
		d = defaultCoolDown
	}
	if d < time.Second {
		d = time.Second
	}
	if d > maxCoolDown {
		d = maxCoolDown
	}
	return d, true
}

// parseRetryAfter reads Retry-After (RFC 9110 section 10.2.3): a number of seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxCoolDown/time.Second) {
			return maxCoolDown, true // a number too large to parse is a long wait all the same
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return t.Sub(now), true
}

// failThrottledAnswer is the failure of the exchange the server throttled: the client gets the
// cool-down's 503, the log line the server's status and error.
func failThrottledAnswer(status int, coolDown time.Duration, body []byte) *failure {
	f := failThrottled(coolDown)
	f.coolDown = coolDown
	f.reason = "the token endpoint throttles (HTTP " + strconv.Itoa(status) + "); no exchange for " + coolDown.String()
	var r tokenResponse
	if json.Unmarshal(body, &r) == nil {
		f.oauthError, f.oauthDescription = r.Error, r.ErrorDescription
	}
	return f
}

// isEntraLoop reports whether Entra said it saw a loop of identical requests.
func isEntraLoop(f *failure) bool {
	return strings.Contains(f.oauthDescription, entraLoopCode)
}

// coolDown is the throttling state of one token endpoint, owned by its exchanger.
type coolDown struct {
	mu      sync.Mutex
	until   time.Time // zero: no cool-down
	probing bool
	// probeEnd is when a probe that has not come back is presumed lost (a panic), so that
	// another may go.
	probeEnd time.Time
}

// enter is called before an exchange. During a cool-down it returns the 503 to answer; when the
// cool-down is over, the first caller is the probe (probe true) and the others get the 503 until
// the probe is back.
func (c *coolDown) enter(now time.Time, probeLimit time.Duration) (probe bool, f *failure) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.until.IsZero() {
		return false, nil
	}
	if now.Before(c.until) {
		return false, failThrottled(c.until.Sub(now))
	}
	if c.probing && now.Before(c.probeEnd) {
		return false, failThrottled(time.Second)
	}
	c.probing = true
	c.probeEnd = now.Add(probeLimit)
	return true, nil
}

// leave records the outcome of an exchange: a throttle answer opens the cool-down, or extends
// it; any other answer to the probe ends it.
func (c *coolDown) leave(probe bool, f *failure, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if probe {
		c.probing = false
	}
	switch {
	case f != nil && f.coolDown > 0:
		if until := now.Add(f.coolDown); probe || until.After(c.until) {
			c.until = until
		}
	case probe:
		c.until = time.Time{}
	}
}

// active reports whether a cool-down holds new exchanges back now (its probe included).
func (c *coolDown) active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.until.IsZero()
}

// abandon gives the probe up when its exchange was not sent (maxConcurrentExchanges), so that
// the next one probes.
func (c *coolDown) abandon(probe bool) {
	if !probe {
		return
	}
	c.mu.Lock()
	c.probing = false
	c.mu.Unlock()
}
