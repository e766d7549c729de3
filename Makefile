# Verdict: the two commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/verdict
PKGS    := ./...
# Pinned tools, installed with `go install` into ./bin.
NATS_SERVER_VERSION := v2.15.2
NATSCLI_VERSION     := v0.5.0

.PHONY: all build demo test test-race fuzz bench lint clean tools faults

all: build

build:
	$(GO) build -o $(BIN) ./cmd/verdict

## demo: run the end-to-end demo on an embedded JetStream server.
demo: build
	./$(BIN) demo

## test: vet, unit and integration tests (real in-process JetStream), race detector on the concurrent packages, short fuzzing.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -race -short -timeout 15m ./engine/... ./ingest/... ./actuator/... ./policy/... ./telemetry/...
	$(MAKE) fuzz FUZZTIME=10s

FUZZTIME ?= 30s
## fuzz: run every decoder's fuzz target for FUZZTIME each.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./telemetry

## bench: Go benchmarks of the hot paths.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./analyzer ./telemetry

## lint: vet, gofmt, and lint the example policies.
lint: build
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	./$(BIN) lint $(filter-out %.bad.yaml,$(wildcard testdata/policy/*.yaml))

## faults: the process-level fault-injection suite (docs/RELIABILITY.md): real nats-server, verdict serve killed >= 20 times, a server restart, duplicates, malformed input, a silent canary.
faults: build bin/nats-server
	$(GO) run ./faults/suite -verdict $(BIN) -nats-server bin/nats-server $(FAULTSFLAGS)

bin/nats-server:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

tools:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)

clean:
	rm -rf bin verdict-data
