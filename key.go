package oboexchange

import (
	"crypto/sha256"
	"strconv"
	"time"
)

// exchange is one exchange in progress, from the cache miss that starts it to the entry it stores:
// the request's tokens, their cache key, and what caps the new token's life in the cache.
type exchange struct {
	subject string // the user's token
	actor   string // the caller's actor token (actorToken: header:), "" otherwise
	// secret identifies the pair of tokens (see keySecret); key is its SHA-256, the key of the
	// memory cache. The shared cache derives its own keys from secret.
	secret string
	key    [32]byte
	// notAfter is the earlier exp of the two tokens, zero when neither has one: an entry is never
	// served after either expired.
	notAfter time.Time
	log      *logger
}

// newExchange keys a request's tokens.
func newExchange(subject, actor string, log *logger) *exchange {
	secret := keySecret(subject, actor)
	return &exchange{subject: subject, actor: actor, secret: secret, key: sha256.Sum256([]byte(secret)), log: log}
}

// keySecret is what identifies the input of an exchange, for every cache: the subject token alone,
// or with a caller's actor token both of them, joined unambiguously (the subject's length, a colon,
// the subject, then the actor: "ab"+"c" and "a"+"bc" differ). So two agents acting for one user,
// or one agent for two users, never share an entry. Configurations with a header: actor key every
// entry this way, so such a key never meets one of a subject alone. Without an actor the memory
// key is the SHA-256 of the token itself, which ServeHTTP's fast path computes inline.
func keySecret(subject, actor string) string {
	if actor == "" {
		return subject
	}
	return strconv.Itoa(len(subject)) + ":" + subject + actor
}
