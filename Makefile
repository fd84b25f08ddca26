SHELL := /bin/bash
# Every recipe line fails on the first failing command, pipelines included.
.SHELLFLAGS := -eo pipefail -c

# oboexchange: `make demo` runs the plugin inside a real Traefik; `make test` runs every test.
# Everything a run needs (yaegi, the Traefik binary, node packages) is installed on first use into
# CACHE_DIR, outside the repository, and reused by later runs.

MODULE          := github.com/oboexchange/oboexchange
YAEGI_VERSION   := v0.16.1
TRAEFIK_VERSION := v3.6.12
CACHE_DIR       ?= $(HOME)/.cache/oboexchange
YAEGI           := $(CACHE_DIR)/yaegi-$(YAEGI_VERSION)/yaegi
TRAEFIK         := $(CACHE_DIR)/traefik-$(TRAEFIK_VERSION)
LABELS2CONF     := $(CACHE_DIR)/labels2conf-$(TRAEFIK_VERSION)
# The GOPATH that yaegi test needs, and where test logs go: per checkout when several run at once.
GOPATH_DIR      ?= $(CACHE_DIR)/gopath
LOG_DIR         ?= $(CACHE_DIR)
E2E_ENV         := TRAEFIK_BIN=$(TRAEFIK) LABELS2CONF=$(LABELS2CONF)
# The plugin's packages: the root and each package under internal/ that has tests.
PACKAGES        := . $(patsubst %/,%,$(sort $(dir $(wildcard internal/*/*_test.go internal/*/*/*_test.go))))
# Fuzz targets as package:target:inputs. A budget counted in inputs (-fuzztime Nx) has no deadline,
# so Go 1.26's fuzzing coordinator cannot fail it with "context deadline exceeded" at the end of a
# timed run (golang/go#75804); each budget is about 10 s of fuzzing on a loaded 2-core machine.
FUZZ_TARGETS    := .:FuzzExtractCredential:50000 .:FuzzParseTokenResponse:80000 internal/jose:FuzzExpiry:200000
STATICCHECK     := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_FILES        := $(wildcard $(shell git ls-files --cached --others --exclude-standard '*.go'))

# The Redis (or Valkey) server the shared-cache tests start their own instances of: installed from
# the distribution's packages when missing (valkey-server where the distribution has it), and
# passed to the tests, which then never skip.
FIND_REDIS      := $$(command -v valkey-server || command -v redis-server)

.PHONY: test lint unit yaegi-test fuzz catalog e2e demo bench soak traefik redis

test: lint unit yaegi-test fuzz catalog e2e

lint:
	@unformatted="$$(gofmt -l $(GO_FILES))"; test -z "$$unformatted" || { echo "gofmt needed on: $$unformatted"; exit 1; }
	go vet ./...
	$(STATICCHECK) ./...
	cd e2e && go vet ./... && $(STATICCHECK) ./...

# Compiled, with the race detector.
unit: redis
	REDIS_SERVER=$(FIND_REDIS) go test -race -count=1 ./...

# Interpreted, as Traefik runs the plugin: yaegi needs the packages in a GOPATH layout, and tests
# one package at a time. -unsafe serves the test of the fingerprint alone (fingerprint_test.go);
# the plugin itself never imports unsafe, as the catalog check shows.
yaegi-test: $(YAEGI) redis
	@mkdir -p $(GOPATH_DIR)/src/$(dir $(MODULE)) $(LOG_DIR)
	@ln -sfn $(CURDIR) $(GOPATH_DIR)/src/$(MODULE)
	@: > $(LOG_DIR)/yaegi-test.log
	for pkg in $(PACKAGES); do \
		echo "yaegi test $$pkg"; \
		(cd $(GOPATH_DIR)/src/$(MODULE)/$$pkg && REDIS_SERVER=$(FIND_REDIS) GOPATH=$(GOPATH_DIR) GO111MODULE=off $(YAEGI) test -unsafe -v .) 2>&1 | \
			tee -a $(LOG_DIR)/yaegi-test.log | grep -E '^(--- FAIL|FAIL|PASS|ok|panic)'; \
	done
	@! grep -q -E -- '^(--- FAIL|FAIL|panic)' $(LOG_DIR)/yaegi-test.log

# A fixed number of inputs for each fuzz target (their seed corpora are in testdata/fuzz of each
# package and run with `unit`). A failing input fails the run and is written to testdata/fuzz.
fuzz:
	@for spec in $(FUZZ_TARGETS); do \
		IFS=: read -r pkg target inputs <<< "$$spec"; \
		echo "fuzz $$pkg $$target $${inputs} inputs"; \
		(cd $$pkg && go test -run '^$$' -fuzz "^$$target\$$" -fuzztime "$${inputs}x" .) || exit 1; \
	done

# The plugin as the Plugin Catalog loads it: the files git tracks (a module zip's), a fresh GOPATH,
# Yaegi with the standard library alone, the manifest's testData, New offline within 10 s.
catalog:
	cd e2e && go test -count=1 ./internal/catalog/

$(YAEGI):
	GOBIN=$(dir $(YAEGI)) go install github.com/traefik/yaegi/cmd/yaegi@$(YAEGI_VERSION)

redis:
	@if ! command -v valkey-server >/dev/null && ! command -v redis-server >/dev/null; then \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update && \
		pkg=redis-server; apt-cache policy valkey-server 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null && pkg=valkey-server; \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y $$pkg; \
	fi

# End-to-end: the plugin inside a real Traefik, against real authorization servers.
e2e: $(TRAEFIK) $(LABELS2CONF) redis
	cd e2e && REDIS_SERVER=$(FIND_REDIS) $(E2E_ENV) go test -count=1 -timeout 30m -v ./... 2>&1 | tee $(LOG_DIR)/e2e.log | \
		grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' | grep -v '{"event":'

# The main job: Traefik with the plugin, a real authorization server, a backend, and a walkthrough.
demo: $(TRAEFIK)
	cd e2e && $(E2E_ENV) go run ./cmd/demo $(DEMO_FLAGS)

# Performance: the plugin under Yaegi in process, then through Traefik beside the alternatives.
bench: $(TRAEFIK) redis
	go test -run '^$$' -bench . -benchmem -count 5 . | tee $(CACHE_DIR)/bench-compiled.log
	cd e2e && go build -o $(CACHE_DIR)/bench ./cmd/bench && REDIS_SERVER=$(FIND_REDIS) $(E2E_ENV) $(CACHE_DIR)/bench $(BENCH_FLAGS)

# Reliability: a burst, a long run over many users and reloads under load, through Traefik.
soak: $(TRAEFIK) redis
	cd e2e && go build -o $(CACHE_DIR)/soak ./cmd/soak && REDIS_SERVER=$(FIND_REDIS) $(E2E_ENV) $(CACHE_DIR)/soak $(SOAK_FLAGS)

traefik: $(TRAEFIK)

# Traefik is built once per version (a cold build takes several minutes) from e2e/traefikbuild,
# a module of its own so that the plugin module stays free of dependencies.
$(TRAEFIK):
	@mkdir -p $(CACHE_DIR)
	cd e2e/traefikbuild && go build -trimpath -o $@.tmp \
		-ldflags "-X github.com/traefik/traefik/v3/pkg/version.Version=$(TRAEFIK_VERSION)" \
		github.com/traefik/traefik/v3/cmd/traefik && mv $@.tmp $@

$(LABELS2CONF):
	@mkdir -p $(CACHE_DIR)
	cd e2e/traefikbuild && go build -trimpath -o $@ ./labels2conf
