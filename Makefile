# oboexchange: `make demo` runs the plugin inside a real Traefik; `make test` runs every test.
# Everything a run needs (yaegi, the Traefik binary, node packages) is installed on first use into
# CACHE_DIR, outside the repository, and reused by later runs.

MODULE        := github.com/oboexchange/oboexchange
YAEGI_VERSION := v0.16.1
CACHE_DIR     ?= $(HOME)/.cache/oboexchange
YAEGI         := $(CACHE_DIR)/yaegi-$(YAEGI_VERSION)/yaegi
GOPATH_DIR    := $(CACHE_DIR)/gopath

.PHONY: test lint unit yaegi-test

test: lint unit yaegi-test

lint:
	@test -z "$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go'))" || { echo "gofmt needed on:"; gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go'); exit 1; }
	go vet ./...

# Compiled, with the race detector.
unit:
	go test -race -count=1 ./...

# Interpreted, as Traefik runs the plugin: yaegi needs the package in a GOPATH layout.
yaegi-test: $(YAEGI)
	@mkdir -p $(GOPATH_DIR)/src/$(dir $(MODULE))
	@ln -sfn $(CURDIR) $(GOPATH_DIR)/src/$(MODULE)
	cd $(GOPATH_DIR)/src/$(MODULE) && GOPATH=$(GOPATH_DIR) GO111MODULE=off $(YAEGI) test -v . 2>&1 | \
		tee $(CACHE_DIR)/yaegi-test.log | grep -E '^(--- FAIL|FAIL|PASS|ok|panic)' ; \
		grep -q '^PASS$$' $(CACHE_DIR)/yaegi-test.log && ! grep -q '^--- FAIL' $(CACHE_DIR)/yaegi-test.log

$(YAEGI):
	GOBIN=$(dir $(YAEGI)) go install github.com/traefik/yaegi/cmd/yaegi@$(YAEGI_VERSION)
