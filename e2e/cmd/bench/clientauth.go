package main

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/mitchellh/mapstructure"

	"github.com/oboexchange/oboexchange"
	"github.com/oboexchange/oboexchange/e2e/env"
	"github.com/oboexchange/oboexchange/e2e/internal/catalog"
	"github.com/oboexchange/oboexchange/e2e/internal/load"
)

// authMethods are the client authentication methods whose cache miss is measured: the options
// each adds to the common ones.
var authMethods = []struct {
	name    string
	options func(f authFiles) map[string]interface{}
}{
	{"secret (client_secret_basic)", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientSecret": "s3cret"}
	}},
	{"private_key_jwt RS256 (RSA 2048)", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientAuthMethod": "private_key_jwt", "clientKeyFile": f.rsaKey, "clientAssertionAlg": "RS256"}
	}},
	{"private_key_jwt PS256 (RSA 2048)", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientAuthMethod": "private_key_jwt", "clientKeyFile": f.rsaKey, "clientAssertionAlg": "PS256"}
	}},
	{"private_key_jwt ES256 (P-256)", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientAuthMethod": "private_key_jwt", "clientKeyFile": f.ecKey}
	}},
	{"private_key_jwt, assertion file", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientAuthMethod": "private_key_jwt", "clientAssertionFile": f.assertion}
	}},
	{"tls_client_auth (mTLS, P-256)", func(f authFiles) map[string]interface{} {
		return map[string]interface{}{"clientAuthMethod": "tls_client_auth", "clientCertFile": f.cert, "clientKeyFile": f.certKey}
	}},
}

type authFiles struct {
	rsaKey, ecKey, assertion, cert, certKey, ca string
}

// missCostByMethod measures a cache miss with each client authentication method, under Yaegi
// and compiled, against one instant token endpoint over TLS behind a private CA (which asks for a
// client certificate and accepts none), in interleaved rounds.
func missCostByMethod(gopath string, rounds int) error {
	dir, err := os.MkdirTemp("", "oboexchange-bench-auth-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files, idp, err := authSetup(dir)
	if err != nil {
		return err
	}
	defer idp.Close()
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	interpreted := make([]http.Handler, len(authMethods))
	compiled := make([]http.Handler, len(authMethods))
	for i, m := range authMethods {
		options := m.options(files)
		options["tokenEndpoint"] = idp.URL + "/token"
		options["clientId"] = fmt.Sprintf("gateway-auth-%d", i)
		options["audience"] = "api://orders"
		options["tokenEndpointCAFile"] = files.ca
		options["cacheMaxEntries"] = "1000000"
		options["logLevel"] = "off"
		if interpreted[i], err = catalog.Load(gopath, env.PluginModule, "oboexchange", options, next, os.Environ()); err != nil {
			return fmt.Errorf("%s under Yaegi: %w", m.name, err)
		}
		if compiled[i], err = loadCompiled(options, next); err != nil {
			return fmt.Errorf("%s compiled: %w", m.name, err)
		}
	}
	const ops = 300
	yaegiUs := make([][]float64, len(authMethods))
	compiledUs := make([][]float64, len(authMethods))
	user := 3000000
	for r := 0; r < rounds; r++ {
		for i := range authMethods {
			for _, side := range []struct {
				h   http.Handler
				out *[]float64
			}{{interpreted[i], &yaegiUs[i]}, {compiled[i], &compiledUs[i]}} {
				start := time.Now()
				for n := 0; n < ops; n++ {
					if status := serve(side.h, "Bearer "+load.UserToken(user)); status != 0 {
						return fmt.Errorf("%s: status %d", authMethods[i].name, status)
					}
					user++
				}
				*side.out = append(*side.out, float64(time.Since(start).Nanoseconds())/ops/1000)
			}
		}
	}
	fmt.Printf("\nCache miss by client authentication method, against an instant token endpoint over TLS behind a private CA (median of %d interleaved rounds of %d misses)\n\n", rounds, ops)
	t := load.NewTable("method", "Yaegi us/miss", "compiled us/miss", "Yaegi over secret")
	for i, m := range authMethods {
		y := median(yaegiUs[i])
		t.Row(m.name, fmt.Sprintf("%.0f", y), fmt.Sprintf("%.0f", median(compiledUs[i])), fmt.Sprintf("%+.0f us", y-median(yaegiUs[0])))
	}
	t.Print()
	secret, rs256 := median(yaegiUs[0]), median(yaegiUs[1])
	fmt.Printf("\nRSA signing (RS256 less secret) takes %.0f us of the %.0f us of an RS256 miss under Yaegi (%.0f%%).\n",
		rs256-secret, rs256, 100*(rs256-secret)/rs256)
	return nil
}

// authSetup writes the keys, certificates and assertion, and starts the token endpoint.
func authSetup(dir string) (authFiles, *httptest.Server, error) {
	var f authFiles
	pki, err := env.NewPKI(dir, "bench")
	if err != nil {
		return f, nil, err
	}
	f.ca = pki.CAFile
	if f.rsaKey, _, err = env.NewKeyFile(dir, "rsa", env.PKCS1); err != nil {
		return f, nil, err
	}
	if f.ecKey, _, err = env.NewKeyFile(dir, "ec", env.PKCS8); err != nil {
		return f, nil, err
	}
	if f.cert, f.certKey, err = pki.ClientCertificate("gateway", pkix.Name{CommonName: "gateway"}, env.SEC1); err != nil {
		return f, nil, err
	}
	f.assertion = filepath.Join(dir, "azure-identity-token")
	// Shaped as a projected service-account token; the endpoint does not check it.
	token := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL29pZGMuZXhhbXBsZSIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDp0cmFlZmlrOnRyYWVmaWsiLCJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl"
	if err := os.WriteFile(f.assertion, []byte(token), 0o600); err != nil {
		return f, nil, err
	}
	serverCert, err := pki.ServerCertificate()
	if err != nil {
		return f, nil, err
	}
	idp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"x-` + r.PostForm.Get("subject_token") + `","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`))
	}))
	idp.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pki.Pool()}
	idp.StartTLS()
	return f, idp, nil
}

// loadCompiled builds the plugin as compiled Go, with the options decoded as Traefik decodes them.
func loadCompiled(options map[string]interface{}, next http.Handler) (http.Handler, error) {
	cfg := oboexchange.CreateConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.StringToSliceHookFunc(","), WeaklyTypedInput: true, Result: cfg,
	})
	if err != nil {
		return nil, err
	}
	if err := dec.Decode(options); err != nil {
		return nil, err
	}
	return oboexchange.New(context.Background(), next, cfg, "bench-compiled")
}
