package oboexchange

import (
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // a part of the error that names the option and the fix
	}{
		{"missing endpoint", func(c *Config) { c.TokenEndpoint = "" }, "tokenEndpoint is required"},
		{"relative endpoint", func(c *Config) { c.TokenEndpoint = "/oauth2/token" }, "tokenEndpoint: \"/oauth2/token\" is not an absolute URL"},
		{"ftp endpoint", func(c *Config) { c.TokenEndpoint = "ftp://idp.example.com/token" }, `tokenEndpoint: scheme "ftp" is not supported`},
		{"endpoint with credentials", func(c *Config) { c.TokenEndpoint = "https://user:pw@idp.example.com/token" }, "remove the user information"},
		{"endpoint with fragment", func(c *Config) { c.TokenEndpoint = "https://idp.example.com/token#x" }, "remove the #fragment"},
		{"plain http to a remote host", func(c *Config) { c.TokenEndpoint = "http://idp.example.com/token" }, "uses http, which would send the client secret"},
		{"unknown flow", func(c *Config) { c.Flow = "saml" }, `flow: unknown value "saml"`},
		{"missing client id", func(c *Config) { c.ClientID = " " }, "clientId is required"},
		{"two secrets", func(c *Config) { c.ClientSecretFile = "/run/secret" }, "clientSecret and clientSecretFile are both set"},
		{"no secret for basic", func(c *Config) { c.ClientSecret = "" }, `clientSecret or clientSecretFile is required with clientAuthMethod "client_secret_basic"`},
		{"secret with none", func(c *Config) { c.ClientAuthMethod = "none" }, `clientAuthMethod "none" sends no secret`},
		{"unknown auth method", func(c *Config) { c.ClientAuthMethod = "client_secret_jwt" }, `clientAuthMethod: unknown value "client_secret_jwt"`},
		{"entra without scopes", func(c *Config) { c.Flow = "entra"; c.Audience = nil }, `scopes is required with flow "entra"`},
		{"entra with audience", func(c *Config) { c.Flow = "entra"; c.Scopes = []string{"api://x/.default"} }, "audience and resource are RFC 8693 parameters"},
		{"entra with token type", func(c *Config) {
			c.Flow = "entra"
			c.Audience = nil
			c.Scopes = []string{"api://x/.default"}
			c.SubjectTokenType = "urn:ietf:params:oauth:token-type:jwt"
		}, "subjectTokenType and requestedTokenType are RFC 8693 parameters"},
		{"relative resource", func(c *Config) { c.Resource = []string{"orders"} }, `resource: "orders" is not an absolute URI`},
		{"reserved extra param", func(c *Config) { c.ExtraParams = map[string]string{"Scope": "admin"} }, `extraParams: "Scope" is set by the plugin itself`},
		{"bad timeout", func(c *Config) { c.Timeout = "10" }, `timeout: "10" is not a duration`},
		{"zero timeout", func(c *Config) { c.Timeout = "0s" }, `timeout: "0s" must be above zero`},
		{"negative margin", func(c *Config) { c.ExpiryMargin = "-1s" }, `expiryMargin: "-1s" is negative`},
		{"bad negative ttl", func(c *Config) { c.NegativeCacheTTL = "soon" }, `negativeCacheTTL: "soon" is not a duration`},
		{"negative cache size", func(c *Config) { c.CacheMaxEntries = -1 }, "cacheMaxEntries: -1 is negative"},
		{"zero concurrency", func(c *Config) { c.MaxConcurrentExchanges = 0 }, "maxConcurrentExchanges: 0 must be at least 1"},
		{"bad source", func(c *Config) { c.TokenSources = []string{"Authorization"} }, `tokenSources: "Authorization" is not of the form`},
		{"unknown source kind", func(c *Config) { c.TokenSources = []string{"body:token"} }, `tokenSources: unknown source kind "body"`},
		{"duplicate source", func(c *Config) { c.TokenSources = []string{"header:Authorization", "header:authorization"} }, "tokenSources: header:Authorization is listed twice"},
		{"bad header name", func(c *Config) { c.TokenSources = []string{"header:X Token"} }, `tokenSources: "X Token" is not a valid header name`},
		{"bad cookie name", func(c *Config) { c.TokenSources = []string{"cookie:a;b"} }, `tokenSources: "a;b" is not a valid cookie name`},
		{"bad query name", func(c *Config) { c.TokenSources = []string{"query:a&b"} }, `tokenSources: "a&b" is not a usable query parameter name`},
		{"bad upstream header", func(c *Config) { c.UpstreamHeader = "X Token" }, `upstreamHeader: "X Token" is not a valid header name`},
		{"bad log level", func(c *Config) { c.LogLevel = "verbose" }, `logLevel: unknown value "verbose"`},
		{"missing secret file", func(c *Config) { c.ClientSecret = ""; c.ClientSecretFile = "/nonexistent/secret" }, "clientSecretFile:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantConfigError(t, tc.modify, tc.want) })
	}
}

func TestConfigAccepted(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"http on loopback", func(c *Config) { c.TokenEndpoint = "http://127.0.0.1:8080/token" }},
		{"http on localhost", func(c *Config) { c.TokenEndpoint = "http://localhost:8080/token" }},
		{"http on ipv6 loopback", func(c *Config) { c.TokenEndpoint = "http://[::1]:8080/token" }},
		{"http allowed explicitly", func(c *Config) {
			c.TokenEndpoint = "http://keycloak.internal/token"
			c.AllowInsecureTokenEndpoint = true
		}},
		{"public client", func(c *Config) { c.ClientSecret = ""; c.ClientAuthMethod = "none" }},
		{"entra", func(c *Config) { c.Flow = "Entra"; c.Audience = nil; c.Scopes = []string{"api://x/.default"} }},
		{"cache disabled", func(c *Config) { c.CacheMaxEntries = 0; c.NegativeCacheTTL = "0s" }},
		{"all sources", func(c *Config) {
			c.TokenSources = []string{"header:Authorization", "query:access_token", "cookie:session"}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("https://idp.example.com/oauth2/token")
			tc.modify(c)
			if _, err := New(context.Background(), http.NotFoundHandler(), c, "test"); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	s, err := parseConfig(testConfig("https://idp.example.com/oauth2/token"))
	if err != nil {
		t.Fatal(err)
	}
	if s.flow != flowRFC8693 || s.authMethod != authBasic || s.subjectTokenType != tokenTypeAccessToken ||
		s.timeout != 10*time.Second || s.margin != 30*time.Second || s.negativeTTL != 10*time.Second ||
		s.maxEntries != 10000 || s.maxConcurrent != 128 || s.upstreamHeader != "Authorization" ||
		s.logLevel != levelInfo {
		t.Errorf("unexpected defaults: %+v", s)
	}
	if !reflect.DeepEqual(s.sources, []source{{kind: sourceHeader, name: "Authorization", scheme: true}}) {
		t.Errorf("sources = %+v", s.sources)
	}

	c := CreateConfig()
	c.Flow = "entra"
	c.TokenEndpoint = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"
	c.ClientID = "app"
	c.ClientSecret = "x"
	c.Scopes = []string{"api://a/.default api://b/.default", " "}
	s, err = parseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.authMethod != authPost || s.subjectTokenType != "" || !reflect.DeepEqual(s.scopes, []string{"api://a/.default", "api://b/.default"}) {
		t.Errorf("entra defaults: method %q, subject type %q, scopes %q", s.authMethod, s.subjectTokenType, s.scopes)
	}
}
