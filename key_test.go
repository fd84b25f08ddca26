package oboexchange

import (
	"crypto/sha256"
	"testing"
)

// Without an actor the key is the SHA-256 of the token, which ServeHTTP's fast path computes inline
// and the shared cache derives its keys from; with an actor it covers both tokens, with no
// ambiguity at their boundary, and never meets the key of a subject alone.
func TestCacheKey(t *testing.T) {
	for _, subject := range []string{"abc", userToken} {
		ex := newExchange(subject, "", nil)
		if ex.key != sha256.Sum256([]byte(subject)) || ex.secret != subject {
			t.Errorf("%q alone: key %x, secret %q; want the token's SHA-256 and the token", subject, ex.key, ex.secret)
		}
	}
	keys := map[[32]byte]string{}
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"user", "agent-a"}, {"user", "agent-b"}, {"user2", "agent-a"}, {"1:a", "b"}, {"1", ":ab"}}
	for _, p := range pairs {
		ex := newExchange(p[0], p[1], nil)
		if other, seen := keys[ex.key]; seen {
			t.Errorf("%q+%q has the key of %s", p[0], p[1], other)
		}
		keys[ex.key] = p[0] + "+" + p[1]
		if ex.key == key(p[0]+p[1]) || ex.key == key(p[0]) {
			t.Errorf("%q+%q has the key of a subject alone", p[0], p[1])
		}
		if ex.key != sha256.Sum256([]byte(ex.secret)) || newExchange(p[0], p[1], nil).key != ex.key {
			t.Error("the key is not the stable hash of the secret")
		}
	}
}
