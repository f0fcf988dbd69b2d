SHELL := /bin/bash
# LogLine. On a fresh machine: `make run` (a private dev server) and
# `make test` (everything). Needs Go and PostgreSQL server binaries
# (Debian: apt-get install postgresql); the browser tests use Debian's
# chromium (installed by `make test` where it may) and skip, saying so,
# without it.

GO       ?= go
GOFLAGS  ?=
PKGS     ?= ./...
TESTTIME ?= 30m

.PHONY: run test check bench lint build pg browser seeds quickjs console client

## run: private PostgreSQL under .logline/, migrate, and serve (logline dev);
## ADDR=HOST:PORT is its --addr (default $LOGLINE_ADDR, else :8080)
run: pg build
	bin/logline dev $(if $(ADDR),--addr '$(ADDR)')

## test: every test, against private PostgreSQL servers the tests start
test: pg browser
	$(GO) test $(GOFLAGS) -race -count=1 -timeout $(TESTTIME) $(PKGS)

## check: the edit loop — lint, then the packages that test fast (the span
## format, the ledger, seeds, tools) without -race; `make test` runs them all
CHECKPKGS ?= ./abi/... ./host/span/... ./host/ledger/... ./host/telemetry/... ./seeds/... ./tools/...
check: pg lint
	$(GO) test $(GOFLAGS) -count=1 -timeout 5m $(CHECKPKGS)

## bench: every benchmark; each prints BENCH lines (ours vs baseline)
bench: pg
	$(GO) test $(GOFLAGS) -run '^$$' -bench . -benchtime 1x -timeout 60m $(PKGS) | tee .bench.out | grep -E '^(BENCH|ok|FAIL|---)' ; \
		test $${PIPESTATUS[0]} -eq 0

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## seeds: regenerate seeds/*.ndjson from guests/ and seeds/prompts.json
seeds:
	$(GO) run ./tools/seedgen

## client: regenerate host/api/client/openapi.json (the OpenAPI document the
## server serves) and, with npm, the TypeScript client's src/schema.d.ts
client:
	$(GO) run ./tools/openapi
	@if command -v npm >/dev/null; then \
		cd host/api/client && npm ci --no-audit --no-fund && npm run gen; \
	else echo "no npm: host/api/client/src/schema.d.ts is not regenerated" >&2; fi

## quickjs: rebuild guests/quickjs/quickjs.wasm from its pinned recipe (needs
## clang, lld, wasi-libc, and npm once to fetch the source; make test does not)
quickjs:
	tools/quickjs/build.sh

## console: rebuild the web console (host/api/console/dist, embedded in the
## binary) from host/api/console/src with the pinned recipe in tools/console
## (needs npm once, for the dependencies; make run and make test do not)
console:
	cd tools/console && npm ci --no-audit --no-fund && node build.mjs

## build: the logline binary in ./bin
build:
	$(GO) build -o bin/logline ./cmd/logline

# pg: PostgreSQL server binaries must be on this machine (tests and `make run`
# start private servers from them). Installs them on Debian-family machines
# when missing and we may (root).
pg:
	@tools/ensure-postgres

# browser: Chromium for the browser tests (tools/ensure-chromium installs
# Debian's package when missing and we may); without it they skip.
browser:
	@tools/ensure-chromium || echo "no Chromium: the browser tests will skip" >&2
