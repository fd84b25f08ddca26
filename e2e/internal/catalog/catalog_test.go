package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oboexchange/oboexchange/e2e/env"
)

// The plugin loads as the catalog loads it; the check refuses a module that lacks a sub-package
// the plugin imports, and a plugin whose New uses the network.
func TestCatalogCheck(t *testing.T) {
	root := env.RepoRoot()
	files, err := ModuleFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	var withoutWatch []string
	for _, f := range files {
		if !strings.HasPrefix(f, "internal/watch/") {
			withoutWatch = append(withoutWatch, f)
		}
	}
	dialer, _ := env.FixturePlugin("dialplugin")
	tests := []struct {
		name    string
		root    string
		files   []string
		wantErr string // empty: accepted
	}{
		{"the plugin", root, files, ""},
		{"a sub-package missing from the module", root, withoutWatch, "internal/watch"},
		{"New dials", dialer, walk(t, dialer), "New used the network: dial idp.example.com:443"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.root, tc.files)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Check: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// The module holds the plugin's packages and none of the nested modules.
func TestModuleFiles(t *testing.T) {
	files, err := ModuleFiles(env.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, f := range files {
		has[f] = true
		if strings.HasPrefix(f, "e2e/") {
			t.Errorf("%s belongs to the e2e module", f)
		}
	}
	for _, want := range []string{"go.mod", ".traefik.yml", "oboexchange.go", "internal/jose/jose.go", "internal/resp/resp.go", "internal/watch/watch.go"} {
		if !has[want] {
			t.Errorf("%s is not in the module", want)
		}
	}
}

func walk(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
