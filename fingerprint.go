package oboexchange

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// fingerprint identifies the settings that shape the exchange and the cache. Two instances share
// an exchanger, and so cached tokens, only when all of these are equal: every field of settings is
// here, unless notFingerprinted says why not (a test walks the fields). The secret is included
// through its hash, so a changed secret starts a new cache rather than serving tokens obtained
// with the old one; the files of the client authentication enter by path and by a hash of their
// content (clientAuth.contentHash). The fingerprint is never logged: a short hash of a weak secret
// could be confirmed by guessing offline.
func fingerprint(s *settings) string {
	secret := sha256.Sum256([]byte(s.clientSecret))
	fields := []interface{}{
		s.flow, s.endpointString(), s.clientID, hex.EncodeToString(secret[:]), s.clientSecretFile,
		s.authMethod, s.audience, s.resource, s.scopes, s.subjectTokenType, s.requestedTokenType,
		s.extraParams, s.timeout.String(), s.maxEntries, s.margin.String(), s.negativeTTL.String(),
		s.maxConcurrent,
		s.actorKind, s.actorPath, s.actorHeader, s.actorTokenType, s.actorScopes, s.issuer,
		s.allowInsecure,
		s.clientKeyFile, s.clientCertFile, s.clientAssertionFile, s.clientAssertionAlg, s.clientKeyID,
		s.clientAssertionAudience, s.tokenEndpointCAFile, s.clientFilesHash,
		redisURL(s.sharedCache), s.sharedCachePasswordFile, s.sharedCacheTimeout.String(), s.sharedCacheCAFile,
	}
	// json.Marshal sorts map keys and quotes every string, so the encoding is unambiguous.
	b, _ := json.Marshal(fields)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// notFingerprinted are the fields of settings the fingerprint leaves out, each with the reason.
var notFingerprinted = map[string]string{
	"sources":        "per instance: where this router's requests carry the token; the cache is keyed by the token alone",
	"upstreamHeader": "per instance: where this router's backend reads the new token",
	"logLevel":       "per instance",
	"issuerURL":      "parsed from issuer, which is in",
	"clientAuth":     "the files named by the ...File options, which are in, as read by New; their content is in through clientFilesHash",
}
