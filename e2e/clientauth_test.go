package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mitchellh/mapstructure"
	"gopkg.in/yaml.v3"

	"github.com/oboexchange/oboexchange"
	"github.com/oboexchange/oboexchange/e2e/env"
)

// The gateway's credentials for the secretless examples, and the servers that check them: a
// private PKI, a token front (private_key_jwt and tls_client_auth) before the RFC 8693 provider,
// and a Kubernetes service-account issuer that the Entra server trusts by a federated credential.
var (
	pki      *env.PKI
	front    *env.TokenFront
	workload *env.WorkloadIssuer

	entraCertFile, entraKeyFile string // uploaded to the Entra app registration
	oktaKeyFile                 string // registered at the front for the Okta-style client
	mtlsCertFile, mtlsKeyFile   string // the Keycloak-style client's certificate
)

// The service account of the AKS example, which the Entra app's federated credential names.
const (
	aksNamespace      = "traefik"
	aksServiceAccount = "traefik"
	oktaKeyID         = "gateway-2025"
)

// gatewayDN is the subject Keycloak's X.509 authenticator is told to expect.
var gatewayDN = pkix.Name{CommonName: env.KeycloakStyleClientID, Organization: []string{"oboexchange e2e"}}

// startSecretless makes the credentials and starts the servers; it returns what the Entra app
// registration trusts besides its secret, and a function that stops what it started.
func startSecretless() (env.EntraCredentials, func(), error) {
	var creds env.EntraCredentials
	var err error
	if pki, err = env.NewPKI(work, "private"); err != nil {
		return creds, nil, err
	}
	if entraCertFile, entraKeyFile, _, err = env.SelfSigned(work, "entra-gateway", "gateway"); err != nil {
		return creds, nil, err
	}
	var oktaPublic crypto.PublicKey
	if oktaKeyFile, oktaPublic, err = env.NewKeyFile(work, "okta-gateway", env.PKCS1); err != nil {
		return creds, nil, err
	}
	if mtlsCertFile, mtlsKeyFile, err = pki.ClientCertificate("keycloak-gateway", gatewayDN, env.SEC1); err != nil {
		return creds, nil, err
	}
	if front, err = env.StartTokenFront(idp, pki,
		env.FrontClient{ID: env.OktaStyleClientID, Method: "private_key_jwt", PublicKey: oktaPublic, KeyID: oktaKeyID},
		env.FrontClient{ID: env.KeycloakStyleClientID, Method: "tls_client_auth", Subject: gatewayDN}); err != nil {
		return creds, nil, err
	}
	if workload, err = env.StartWorkloadIssuer(); err != nil {
		front.Stop()
		return creds, nil, err
	}
	creds = env.EntraCredentials{
		CertificateFile: entraCertFile,
		Federated: []env.FederatedCredential{{
			Issuer: workload.URL, Subject: env.Subject(aksNamespace, aksServiceAccount), Audiences: []string{env.AzureTokenExchange},
		}},
	}
	return creds, func() { front.Stop(); workload.Stop() }, nil
}

// secretlessExamples are the examples of the secretless methods, with their URLs and file paths
// replaced. Okta's token endpoint has a publicly trusted certificate, the suite's is behind the
// private CA: the Okta example gets tokenEndpointCAFile added.
func secretlessExamples() map[string]struct {
	example string
	replace map[string]string
} {
	return map[string]struct {
		example string
		replace map[string]string
	}{
		"entra-certificate.yml": {"entra/entra-certificate.yml", map[string]string{
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token": entra.TokenEndpoint,
			"/run/secrets/obo-entra/tls.key":                                              entraKeyFile,
			"/run/secrets/obo-entra/tls.crt":                                              entraCertFile,
			"http://payroll:8080":                                                         echo.URL,
		}},
		"okta-private-key-jwt.yml": {"rfc8693/okta-private-key-jwt.yml", map[string]string{
			"https://example.okta.com/oauth2/default/v1/token": front.TokenEndpoint,
			"/run/secrets/obo-okta/private-key.pem":            oktaKeyFile,
			"clientKeyId: " + oktaKeyID:                        "clientKeyId: " + oktaKeyID + "\n          tokenEndpointCAFile: " + pki.CAFile,
			"http://invoices:8080":                             echo.URL,
		}},
		"keycloak-mtls.yml": {"rfc8693/keycloak-mtls.yml", map[string]string{
			"https://keycloak.corp.example/realms/demo/protocol/openid-connect/token": front.TokenEndpoint,
			"/etc/traefik/obo/tls.crt": mtlsCertFile,
			"/etc/traefik/obo/tls.key": mtlsKeyFile,
			"/etc/traefik/obo/ca.crt":  pki.CAFile,
			"http://shipping:8080":     echo.URL,
		}},
	}
}

// Entra On-Behalf-Of with a certificate credential, through Traefik with the example: the Entra
// server finds the certificate by the assertion's x5t#S256 and verifies the signature with it.
func TestEntraCertificateExample(t *testing.T) {
	for _, sub := range []string{"alice", "bob"} {
		user := entraUser(t, sub)
		certificate, secret := entra.ClientAuthCalls("certificate"), entra.ClientAuthCalls("secret")
		forwarded := forwardedToken(t, send(t, "api.example.com", "/payroll/"+sub, "Bearer "+user), user)
		checkExchanged(t, user, forwarded, entra.Issuer, "api://payroll")
		if entra.ClientAuthCalls("certificate")-certificate != 1 || entra.ClientAuthCalls("secret") != secret {
			t.Errorf("%s: certificate calls +%d, secret calls +%d; want +1 and +0", sub,
				entra.ClientAuthCalls("certificate")-certificate, entra.ClientAuthCalls("secret")-secret)
		}
	}
}

// A certificate Entra does not know: the exchange fails (502) and the log says why in Entra's
// words, without the assertion.
func TestEntraCertificateNotRegistered(t *testing.T) {
	certFile, keyFile, _, err := env.SelfSigned(t.TempDir(), "unregistered", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	writeDynamic(t, "unregistered.yml", route("unregistered", "unregistered.test", map[string]string{
		"flow": "entra", "tokenEndpoint": entra.TokenEndpoint, "clientId": entraClientID, "clientAuthMethod": "private_key_jwt",
		"clientKeyFile": keyFile, "clientCertFile": certFile, "scopes": "api://payroll/.default",
	}), "unregistered", "enabled")
	r := send(t, "unregistered.test", "/", "Bearer "+entraUser(t, "alice"))
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", r.status, r.body)
	}
	waitLog(t, "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application")
}

// waitLog waits until Traefik's log holds s.
func waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(traefik.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("Traefik's log does not hold %q", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RFC 8693 with private_key_jwt, through Traefik with the Okta example, against a token endpoint
// behind the private CA that checks each assertion (signature with the registered key, kid, aud,
// iss and sub, a jti never seen before).
func TestOktaPrivateKeyJWTExample(t *testing.T) {
	before, refusals := front.Calls("private_key_jwt"), len(front.Refusals())
	for i := 0; i < 2; i++ {
		user := login(t)
		forwarded := forwardedToken(t, send(t, "api.example.com", "/invoices", "Bearer "+user), user)
		checkExchanged(t, user, forwarded, idp.Issuer, "api://invoices")
	}
	if got := front.Calls("private_key_jwt") - before; got != 2 || len(front.Refusals()) != refusals {
		t.Errorf("assertions accepted: %d, want 2 (each with a new jti); refusals: %v", got, front.Refusals()[refusals:])
	}
}

// RFC 8693 with tls_client_auth, through Traefik with the Keycloak example: the certificate in
// the handshake, the token endpoint's certificate checked against tokenEndpointCAFile.
func TestKeycloakMTLSExample(t *testing.T) {
	before := front.Calls("tls_client_auth")
	user := login(t)
	forwarded := forwardedToken(t, send(t, "api.example.com", "/shipping", "Bearer "+user), user)
	checkExchanged(t, user, forwarded, idp.Issuer, "shipping")
	if got := front.Calls("tls_client_auth") - before; got != 1 {
		t.Errorf("certificate-authenticated calls: %d, want 1", got)
	}
}

// The same endpoint refuses a gateway that does not trust the private CA, or whose certificate
// is not the one registered for the client.
func TestPrivateCARefusals(t *testing.T) {
	strangerCert, strangerKey, err := pki.ClientCertificate("stranger", pkix.Name{CommonName: "stranger"}, env.PKCS8)
	if err != nil {
		t.Fatal(err)
	}
	options := func(alter func(map[string]string)) map[string]string {
		o := map[string]string{
			"tokenEndpoint": front.TokenEndpoint, "clientId": env.KeycloakStyleClientID, "clientAuthMethod": "tls_client_auth",
			"clientCertFile": mtlsCertFile, "clientKeyFile": mtlsKeyFile, "tokenEndpointCAFile": pki.CAFile, "audience": "shipping",
		}
		alter(o)
		return o
	}
	tests := []struct {
		name, host string
		options    map[string]string
		log        string
	}{
		{"system roots", "noca.test", options(func(o map[string]string) { delete(o, "tokenEndpointCAFile") }), "x509: certificate signed by unknown authority"},
		{"another certificate", "stranger.test", options(func(o map[string]string) { o["clientCertFile"], o["clientKeyFile"] = strangerCert, strangerKey }), "is not the registered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.TrimSuffix(tc.host, ".test")
			writeDynamic(t, name+".yml", route(name, tc.host, tc.options), name, "enabled")
			if r := send(t, tc.host, "/", "Bearer "+login(t)); r.status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502: %s", r.status, r.body)
			}
			waitLog(t, tc.log)
		})
	}
}

// aksDoc is what the AKS example's documents hold that the test reads.
type aksDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Plugin   map[string]map[string]interface{} `yaml:"plugin"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				ServiceAccountName string `yaml:"serviceAccountName"`
				Containers         []struct {
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					Projected struct {
						Sources []struct {
							ServiceAccountToken struct {
								Path     string `yaml:"path"`
								Audience string `yaml:"audience"`
							} `yaml:"serviceAccountToken"`
						} `yaml:"sources"`
					} `yaml:"projected"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// The AKS workload identity example: its parts agree (the pod label, the service account the
// federated credential names, the projected token for Entra's audience where the Middleware
// reads it), and the Middleware, decoded as Traefik decodes the CRD, runs in Traefik with a
// service-account token of the issuer Entra trusts. The kubelet's renewal is picked up, an
// expired token is refused by Entra and logged as expired, and a renewed one works again, all
// without a reload.
func TestAKSWorkloadIdentityExample(t *testing.T) {
	options, tokenPath := aksExample(t)
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	writeServiceAccountToken(t, tokenFile, time.Now())

	cfg := decodeCRD(t, options)
	if cfg.ClientAssertionFile != tokenPath || cfg.ClientAuthMethod != "private_key_jwt" || cfg.ClientID != entraClientID {
		t.Errorf("decoded config: %+v", cfg)
	}
	options["tokenEndpoint"] = entra.TokenEndpoint
	options["clientAssertionFile"] = tokenFile
	if _, err := oboexchange.New(context.Background(), http.NotFoundHandler(), decodeCRD(t, options), "aks"); err != nil {
		t.Fatalf("New: %v", err)
	}
	writeDynamic(t, "aks.yml", jsonRoute("aks", "aks.test", options), "aks", "enabled")

	exchange := func(sub string, status int) {
		t.Helper()
		user := entraUser(t, sub)
		before := entra.ClientAuthCalls("federated")
		r := send(t, "aks.test", "/reports", "Bearer "+user)
		if status == http.StatusOK {
			checkExchanged(t, user, forwardedToken(t, r, user), entra.Issuer, "api://reports")
		} else if r.status != status {
			t.Fatalf("%s: status %d, want %d: %s", sub, r.status, status, r.body)
		}
		if entra.ClientAuthCalls("federated")-before != 1 {
			t.Errorf("%s: the exchange was not authenticated by the federated credential", sub)
		}
	}
	exchange("alice", http.StatusOK)
	writeServiceAccountToken(t, tokenFile, time.Now().Add(time.Minute)) // the kubelet's renewal
	exchange("bob", http.StatusOK)
	writeServiceAccountToken(t, tokenFile, time.Now().Add(-2*time.Hour)) // expired an hour ago
	exchange("carol", http.StatusBadGateway)
	waitLog(t, "clientAssertionFile holds an expired assertion")
	waitLog(t, "AADSTS700024: Client assertion is not within its valid time range")
	writeServiceAccountToken(t, tokenFile, time.Now())
	exchange("dave", http.StatusOK)
}

// aksExample reads the example, checks that its parts agree and returns the Middleware's options
// and the path where the pod gets the token.
func aksExample(t *testing.T) (map[string]interface{}, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(env.RepoRoot(), "examples/kubernetes/aks-workload-identity.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]aksDoc{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var d aksDoc
		if err := dec.Decode(&d); err != nil {
			break
		}
		docs[d.Kind] = d
	}
	sa, deployment, middleware := docs["ServiceAccount"], docs["Deployment"], docs["Middleware"]
	options := middleware.Spec.Plugin["oboexchange"]
	pod := deployment.Spec.Template
	if pod.Metadata.Labels["azure.workload.identity/use"] != "true" {
		t.Error("the pod lacks the label azure.workload.identity/use: \"true\"")
	}
	if pod.Spec.ServiceAccountName != aksServiceAccount || sa.Metadata.Name != aksServiceAccount ||
		sa.Metadata.Namespace != aksNamespace || deployment.Metadata.Namespace != aksNamespace {
		t.Errorf("service account %s/%s, pod's %s/%s; the federated credential names %s",
			sa.Metadata.Namespace, sa.Metadata.Name, deployment.Metadata.Namespace, pod.Spec.ServiceAccountName, env.Subject(aksNamespace, aksServiceAccount))
	}
	if sa.Metadata.Annotations["azure.workload.identity/client-id"] != options["clientId"] {
		t.Errorf("service account client-id %q, Middleware clientId %v", sa.Metadata.Annotations["azure.workload.identity/client-id"], options["clientId"])
	}
	if len(pod.Spec.Volumes) != 1 || len(pod.Spec.Containers) != 1 || len(pod.Spec.Containers[0].VolumeMounts) != 1 {
		t.Fatal("want one projected volume, mounted in Traefik's container")
	}
	volume, mount := pod.Spec.Volumes[0], pod.Spec.Containers[0].VolumeMounts[0]
	token := volume.Projected.Sources[0].ServiceAccountToken
	tokenPath := path.Join(mount.MountPath, token.Path)
	if token.Audience != env.AzureTokenExchange || mount.Name != volume.Name || options["clientAssertionFile"] != tokenPath {
		t.Errorf("token audience %q, volume %q mounted as %q, clientAssertionFile %v, token at %s",
			token.Audience, volume.Name, mount.Name, options["clientAssertionFile"], tokenPath)
	}
	return options, tokenPath
}

// writeServiceAccountToken writes what the kubelet projects: a token of the pod's service account
// for Entra's audience, valid for an hour from issued.
func writeServiceAccountToken(t *testing.T, file string, issued time.Time) {
	t.Helper()
	token, err := workload.Token(aksNamespace, aksServiceAccount, env.AzureTokenExchange, issued, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	remember(token)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil { // the kubelet swaps the file atomically
		t.Fatal(err)
	}
}

// decodeCRD decodes plugin options as Traefik decodes a CRD's (JSON types, mapstructure).
func decodeCRD(t *testing.T, options map[string]interface{}) *oboexchange.Config {
	t.Helper()
	var crd map[string]interface{}
	b, _ := json.Marshal(options)
	_ = json.Unmarshal(b, &crd)
	cfg := oboexchange.CreateConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.StringToSliceHookFunc(","), WeaklyTypedInput: true, Result: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(crd); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return cfg
}
