# authgate: the README's commands.
#
#   make run    build bin/caddy and serve the demo Caddyfile
#   make test   install what the tests need, vet and staticcheck, test, fuzz every target briefly
#   make fuzz   only the fuzzing; `make fuzz FUZZ_TIME=60s` is the long run
#   make bench  run the benchmarks: micro-benchmarks, then the load
#               benchmarks of the gateway against plain reverse_proxy and
#               of the provider's token endpoint against its signing floor
#
# The whole of `make test` is meant to stay well under 15 minutes on 2 cores.

GO ?= go

# bash, for pipefail in `unit`.
SHELL := bash

# The demo client's secret, read by the Caddyfile as {env.DEMO_APP_SECRET}.
# Change it for anything but a demo on your own machine.
DEMO_APP_SECRET ?= demo-app-secret
DEMO_SERVICE_SECRET ?= demo-service-secret
DEMO_API_SECRET ?= demo-api-secret

# Bound on one `go test` run of every package, end-to-end tests included.
TEST_TIMEOUT ?= 10m
# How long each fuzz target runs in `make test`: 11 targets at 5s, plus
# building and replaying each one's corpus, are about two minutes on 2
# cores. `make fuzz FUZZ_TIME=60s` runs each for a minute, the long run
# for after a change to something that parses what clients send.
FUZZ_TIME ?= 5s

# Debian packages that some test needs, installed by `make deps` where
# missing: chromium for the browser tests of the gateway (e2e/, driven with
# chromedp at /usr/bin/chromium); redis-server for the Redis store's tests
# (idp/redisstore/), which start a server of their own and fail without one.
APT_PACKAGES ?= chromium redis-server
# Folders whose package-lock.json `make deps` installs with `npm ci`.
NPM_DIRS ?= examples/spa examples/oidc-client-js

.PHONY: all build run deps vet unit fuzz test bench

# `make test` runs its steps in order, even under -j.
.NOTPARALLEL:

all: build

build:
	$(GO) build -o bin/caddy ./cmd/caddy

# The SPA example's npm packages (oidc-client-ts), installed from its lockfile.
SPA_MODULES = examples/spa/node_modules/.package-lock.json
$(SPA_MODULES): examples/spa/package.json examples/spa/package-lock.json
	cd examples/spa && npm ci --no-audit --no-fund

# The oidc-client 1.11 example's, likewise.
JS_MODULES = examples/oidc-client-js/node_modules/.package-lock.json
$(JS_MODULES): examples/oidc-client-js/package.json examples/oidc-client-js/package-lock.json
	cd examples/oidc-client-js && npm ci --no-audit --no-fund

run: build $(SPA_MODULES) $(JS_MODULES)
	DEMO_APP_SECRET='$(DEMO_APP_SECRET)' DEMO_SERVICE_SECRET='$(DEMO_SERVICE_SECRET)' DEMO_API_SECRET='$(DEMO_API_SECRET)' bin/caddy run --config Caddyfile --adapter caddyfile

deps:
	@command -v $(GO) >/dev/null || { echo "deps: $(GO) not found" >&2; exit 1; }
	@missing=; \
	for p in $(APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		echo "deps: installing$$missing"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@for d in $(NPM_DIRS); do \
		echo "deps: npm ci in $$d"; \
		(cd "$$d" && npm ci --no-audit --no-fund) || exit 1; \
	done

# staticcheck, pinned, run through the module proxy like any dependency.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path '*/node_modules/*')); \
	if [ -n "$$unformatted" ]; then echo "vet: gofmt -w these files:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# go test -json, printed as a plain go test prints, with a count of what
# ran at the end (internal/testsummary), kept for `make test`'s last line.
unit:
	@mkdir -p bin
	@set -o pipefail; $(GO) test -json -timeout $(TEST_TIMEOUT) ./... | $(GO) run ./internal/testsummary -o bin/unit-summary

# Every fuzz target for FUZZ_TIME each (scripts/fuzz says how).
fuzz:
	GO='$(GO)' scripts/fuzz $(FUZZ_TIME)

test: deps vet unit fuzz
	@echo "make test passed: $$(cat bin/unit-summary); $$(cat bin/fuzz-summary)"

# The micro-benchmarks run as long as -benchtime says; the load benchmark of
# ./bench/ time their own rounds (about a minute and half a minute), so they
# run once.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v '/bench$$')
	$(GO) test -run '^$$' -bench . -benchtime=1x -timeout 10m ./bench/
