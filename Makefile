# The test command of README.md, and what CI runs: `make test`.
GO ?= go
PKGS := ./...

.PHONY: all build test deps check vet fmt policy race fuzz bench clean

all: build

build:
	$(GO) build -o bin/sockwarden ./cmd/sockwarden

# Everything CI checks, in order of cost, after installing the Debian
# packages the tests need when they are missing (scripts/deps.sh; as root).
test: deps fmt vet policy race fuzz load

deps:
	scripts/deps.sh

# The example policy as a policy repository's CI checks it: formatted (opa
# fmt's format), compiling in strict mode, its Rego unit tests passing.
policy:
	$(GO) run ./cmd/sockwarden policy fmt --fail -l examples/policy policy/default
	$(GO) run ./cmd/sockwarden policy check --strict examples/policy
	$(GO) run ./cmd/sockwarden policy test examples/policy

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

race:
	$(GO) test -race -count=1 $(PKGS)

# A short, bounded run of each fuzz target (seed corpora run in `race`).
# The budgets are execution counts, not durations: with a duration, Go
# 1.26's fuzz coordinator can fail a clean run with a bare "context
# deadline exceeded" at the end of -fuzztime (golang/go#75804, fixed in
# Go 1.27). About 15 s each on 2 cores.
FUZZ_NETSTRING ?= 1000000x
FUZZ_CONN ?= 2000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecoder$$' -fuzztime $(FUZZ_NETSTRING) ./netstring
	$(GO) test -run '^$$' -fuzz '^FuzzConn$$' -fuzztime $(FUZZ_CONN) ./server

# Performance: the Go benchmarks of the hot pieces, then the load tool's
# standard set against a fresh server, with ratios to the bare spawn loop;
# with SOCKEXEC_BIN=/path/to/sockexec, the C sockexec side by side (and
# nginx rows where nginx, its Lua module and ab are installed).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 5 ./netstring ./policy ./audit ./server | tee bench-go.txt
	$(GO) test -run '^$$' -bench Spawn -benchtime 1s -count 3 ./sandbox | tee -a bench-go.txt
	$(GO) build -o bin/sockwarden ./cmd/sockwarden
	scripts/bench.sh bin/sockwarden

# Load and leak tests (cmd/sockwarden/load_test.go, skipped by `race`):
# 20,000 requests at concurrency 64, 2,000 held connections, a burst of
# 500 connections against -m 50; the server's fds, threads and memory
# before and after. About a minute; -v prints the figures.
load:
	SOCKWARDEN_LOAD=1 $(GO) test -count=1 -timeout 10m -run '^TestLoad' -v ./cmd/sockwarden

clean:
	rm -rf bin
