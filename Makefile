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
FUZZ_TARGETS    := FuzzExtractCredential FuzzParseTokenResponse FuzzJWTExpiry
FUZZTIME        ?= 10s
STATICCHECK     := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_FILES        := $(wildcard $(shell git ls-files --cached --others --exclude-standard '*.go'))

# The Redis (or Valkey) server the shared-cache tests start their own instances of: installed from
# the distribution's packages when missing (valkey-server where the distribution has it), and
# passed to the tests, which then never skip.
FIND_REDIS      := $$(command -v valkey-server || command -v redis-server)

.PHONY: test lint unit yaegi-test fuzz e2e demo bench soak traefik redis

test: lint unit yaegi-test fuzz e2e

lint:
	@unformatted="$$(gofmt -l $(GO_FILES))"; test -z "$$unformatted" || { echo "gofmt needed on: $$unformatted"; exit 1; }
	go vet ./...
	$(STATICCHECK) ./...
	cd e2e && go vet ./... && $(STATICCHECK) ./...

# Compiled, with the race detector.
unit: redis
	REDIS_SERVER=$(FIND_REDIS) go test -race -count=1 ./...

# Interpreted, as Traefik runs the plugin: yaegi needs the package in a GOPATH layout.
yaegi-test: $(YAEGI) redis
	@mkdir -p $(GOPATH_DIR)/src/$(dir $(MODULE))
	@ln -sfn $(CURDIR) $(GOPATH_DIR)/src/$(MODULE)
	cd $(GOPATH_DIR)/src/$(MODULE) && REDIS_SERVER=$(FIND_REDIS) GOPATH=$(GOPATH_DIR) GO111MODULE=off $(YAEGI) test -v . 2>&1 | \
		tee $(LOG_DIR)/yaegi-test.log | grep -E '^(--- FAIL|FAIL|PASS|ok|panic)'
	@! grep -q -- '--- FAIL' $(LOG_DIR)/yaegi-test.log

# A short run of each fuzz target (their seed corpora are in testdata/fuzz and run with `unit`).
fuzz:
	@for target in $(FUZZ_TARGETS); do \
		go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done

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
