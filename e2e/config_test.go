package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mitchellh/mapstructure"
	"gopkg.in/yaml.v3"

	"github.com/oboexchange/oboexchange"
	"github.com/oboexchange/oboexchange/e2e/env"
)

// The Docker labels of examples/docker-compose, decoded by Traefik's own label decoder (the one
// its Docker provider uses): every value arrives as a string and lists as comma-separated text.
func TestDockerComposeLabels(t *testing.T) {
	tool := os.Getenv("LABELS2CONF")
	if tool == "" {
		t.Fatal("LABELS2CONF is not set: run the suite with `make e2e`")
	}
	var compose struct {
		Services map[string]struct {
			Labels []string `yaml:"labels"`
		} `yaml:"services"`
	}
	raw, err := os.ReadFile(filepath.Join(env.RepoRoot(), "examples/docker-compose/docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	// What docker compose does with ${VAR}, and the secret's mount point moved to a local file.
	replacer := strings.NewReplacer(
		"${OBO_TOKEN_ENDPOINT}", idp.TokenEndpoint,
		"${OBO_CLIENT_ID}", env.KeycloakStyleClientID,
		"/run/secrets/obo-client-secret", secretFile("compose-secret", env.GatewaySecret),
		"Host(`orders.localhost`)", "Host(`compose.test`)",
	)
	labels := replacer.Replace(strings.Join(compose.Services["orders"].Labels, "\n"))
	cmd := exec.Command(tool)
	cmd.Stdin = strings.NewReader(labels)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("labels2conf: %v", err)
	}
	var conf map[string]interface{}
	if err := json.Unmarshal(out, &conf); err != nil {
		t.Fatal(err)
	}
	// What the Docker provider adds: the container's address as the server, and the container's
	// one service as the router's service. Empty tcp/udp/tls sections are dropped.
	httpConf := conf["http"].(map[string]interface{})
	conf = map[string]interface{}{"http": httpConf}
	httpConf["services"].(map[string]interface{})["orders"] = map[string]interface{}{"loadBalancer": map[string]interface{}{
		"servers": []interface{}{map[string]interface{}{"url": echo.URL}},
	}}
	httpConf["routers"].(map[string]interface{})["orders"].(map[string]interface{})["service"] = "orders"
	// Router and middleware names from labels would collide with the Okta example's; rename them.
	renamed := strings.NewReplacer(`"orders"`, `"compose"`, `"orders-obo"`, `"compose-obo"`)
	content, _ := json.Marshal(conf)
	writeDynamic(t, "compose.yml", renamed.Replace(string(content)), "compose", "enabled")

	user := login(t)
	r := send(t, "compose.test", "/", "Bearer "+user)
	forwarded := forwardedToken(t, r, user)
	remember(forwarded)
	claims, err := env.VerifiedClaims(forwarded, idp.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	aud := env.Audiences(claims)
	sort.Strings(aud)
	if strings.Join(aud, ",") != "api://audit,api://orders" {
		t.Errorf("aud = %v, want both audiences of the comma list", aud)
	}
}

// A configuration New refuses disables the router; Traefik logs the plugin's own message.
func TestBadConfigDisablesRouter(t *testing.T) {
	writeDynamic(t, "broken.yml", route("broken", "broken.test", map[string]string{
		"clientId": "gateway", "clientSecret": "x", "audience": "a",
	}), "broken", "disabled")

	if r := send(t, "broken.test", "/", "Bearer "+login(t)); r.status != http.StatusNotFound {
		t.Errorf("status %d, want 404 from a disabled router", r.status)
	}
	if !strings.Contains(traefik.Log(), "tokenEndpoint is required") {
		t.Error("Traefik's log does not hold the plugin's error")
	}
}

// The Kubernetes example: its Middleware's plugin options, with the urn:k8s:secret: reference
// resolved as Traefik does and JSON-typed as the CRD delivers them, decoded by mapstructure with
// Traefik's settings, then run in Traefik.
func TestKubernetesExample(t *testing.T) {
	docs := kubernetesDocs(t)
	var options map[string]interface{}
	secrets := map[string]map[string]string{}
	for _, d := range docs {
		switch d.Kind {
		case "Secret":
			secrets[d.Metadata.Name] = d.StringData
		case "Middleware":
			options = d.Spec.Plugin["oboexchange"]
		}
	}
	if options == nil {
		t.Fatal("no oboexchange Middleware in the example")
	}
	for k, v := range options {
		if s, ok := v.(string); ok && strings.HasPrefix(s, "urn:k8s:secret:") {
			parts := strings.Split(s, ":")
			options[k] = secrets[parts[3]][parts[4]]
		}
	}
	if options["clientSecret"] != "replace-with-the-gateway-client-secret" {
		t.Fatalf("clientSecret not resolved: %v", options["clientSecret"])
	}
	// The CRD reaches Traefik as JSON: numbers are float64.
	var crd map[string]interface{}
	b, _ := json.Marshal(options)
	_ = json.Unmarshal(b, &crd)

	cfg := oboexchange.CreateConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToSliceHookFunc(","),
		WeaklyTypedInput: true,
		Result:           cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(crd); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if cfg.CacheMaxEntries != 20000 || cfg.MaxConcurrentExchanges != 64 || cfg.ExpiryMargin != "60s" ||
		strings.Join(cfg.Audience, ",") != "api://orders" || cfg.ClientID != env.OktaStyleClientID {
		t.Errorf("decoded config: %+v", cfg)
	}
	if _, err := oboexchange.New(context.Background(), http.NotFoundHandler(), cfg, "k8s"); err != nil {
		t.Fatalf("New: %v", err)
	}

	// And in Traefik, against the provider.
	crd["tokenEndpoint"] = idp.TokenEndpoint
	crd["clientSecret"] = env.GatewaySecret
	crd["clientId"] = env.OktaStyleClientID
	dynamic := map[string]interface{}{"http": map[string]interface{}{
		"routers": map[string]interface{}{"k8s": map[string]interface{}{
			"rule": "Host(`k8s.test`)", "entryPoints": []string{"web"}, "middlewares": []string{"k8s-obo"}, "service": "k8s",
		}},
		"middlewares": map[string]interface{}{"k8s-obo": map[string]interface{}{"plugin": map[string]interface{}{"oboexchange": crd}}},
		"services": map[string]interface{}{"k8s": map[string]interface{}{"loadBalancer": map[string]interface{}{
			"servers": []interface{}{map[string]interface{}{"url": echo.URL}},
		}}},
	}}
	content, _ := json.Marshal(dynamic)
	writeDynamic(t, "k8s.yml", string(content), "k8s", "enabled")
	user := login(t)
	checkExchanged(t, user, forwardedToken(t, send(t, "k8s.test", "/", "Bearer "+user), user), idp.Issuer, "api://orders")
}

type k8sDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Plugin map[string]map[string]interface{} `yaml:"plugin"`
	} `yaml:"spec"`
}

func kubernetesDocs(t *testing.T) []k8sDoc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(env.RepoRoot(), "examples/kubernetes/oboexchange.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []k8sDoc
	for {
		var d k8sDoc
		if err := dec.Decode(&d); err != nil {
			break
		}
		docs = append(docs, d)
	}
	if len(docs) != 3 {
		t.Fatalf("%d documents, want Secret, Middleware, IngressRoute", len(docs))
	}
	return docs
}
