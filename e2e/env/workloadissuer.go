package env

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// WorkloadIssuer is a Kubernetes service-account token issuer as an AKS cluster with its OIDC
// issuer enabled publishes it: an OpenID discovery document and a JWKS, and tokens signed RS256
// with the claims of a projected service-account token. The Entra server trusts it through a
// federated identity credential, as Entra trusts the cluster's issuer URL.
type WorkloadIssuer struct {
	URL string

	key *rsa.PrivateKey
	kid string
	srv *http.Server
}

// AzureTokenExchange is the audience Entra requires of a federated assertion.
const AzureTokenExchange = "api://AzureADTokenExchange"

// StartWorkloadIssuer serves the issuer's discovery document and keys on 127.0.0.1.
func StartWorkloadIssuer() (*WorkloadIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &WorkloadIssuer{URL: "http://" + ln.Addr().String(), key: key, kid: randomString()[:16]}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(rw http.ResponseWriter, r *http.Request) {
		writeJSON(rw, map[string]interface{}{
			"issuer": w.URL, "jwks_uri": w.URL + "/openid/v1/jwks", "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/openid/v1/jwks", func(rw http.ResponseWriter, r *http.Request) {
		writeJSON(rw, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: w.kid, Algorithm: "RS256", Use: "sig"}}})
	})
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = w.srv.Serve(ln) }()
	return w, nil
}

func writeJSON(rw http.ResponseWriter, v interface{}) {
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(v)
}

// Subject is the sub of a service account's token.
func Subject(namespace, serviceAccount string) string {
	return "system:serviceaccount:" + namespace + ":" + serviceAccount
}

// Token issues the token the kubelet projects into a pod of that service account, for audience,
// valid from issued for lifetime (issued long enough ago makes an expired one).
func (w *WorkloadIssuer) Token(namespace, serviceAccount, audience string, issued time.Time, lifetime time.Duration) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: w.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", w.kid))
	if err != nil {
		return "", err
	}
	claims := map[string]interface{}{
		"iss": w.URL, "sub": Subject(namespace, serviceAccount), "aud": []string{audience},
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": issued.Add(lifetime).Unix(),
		"kubernetes.io": map[string]interface{}{
			"namespace":      namespace,
			"serviceaccount": map[string]string{"name": serviceAccount, "uid": "0d3f6c1e-5a7b-4c2d-9e8f-1a2b3c4d5e6f"},
		},
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// Stop closes the issuer.
func (w *WorkloadIssuer) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = w.srv.Shutdown(ctx)
}
