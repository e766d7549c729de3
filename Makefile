# Verdict: the two commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/verdict
PKGS    := ./...
# Pinned tools, installed with `go install` into ./bin.
NATS_SERVER_VERSION := v2.15.2
NATSCLI_VERSION     := v0.5.0

.PHONY: all build demo test test-race fuzz bench lint clean tools faults simulate pgo

all: build

# The commit `verdict bench` reports as its revision, "-dirty" with changes
# to tracked files: this machine's go env sets GOFLAGS=-buildvcs=false, so
# the binary carries no VCS stamp of its own. Empty without git. Expanded
# only by build (=, not :=), so other targets do not run git.
REVISION = $(shell r=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null && echo $$r || echo $$r-dirty; })

build:
	$(GO) build -ldflags '-X github.com/verdict-dev/verdict/bench.stampedRevision=$(REVISION)' -o $(BIN) ./cmd/verdict

## demo: run the end-to-end demo on an embedded JetStream server.
demo: build
	./$(BIN) demo

## test: vet, unit and integration tests (real in-process JetStream), race detector on the concurrent packages, short fuzzing.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -race -short -timeout 15m ./engine/... ./ingest/... ./actuator/... ./policy/... ./telemetry/...
	$(MAKE) fuzz FUZZTIME=50000x

# FUZZTIME is a count of inputs (Nx), not a duration: on Go 1.26 a duration
# budget can end in a spurious "context deadline exceeded" failure with no
# failing input (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 200000x
## fuzz: run every decoder's fuzz target (policies, telemetry against encoding/json and against the decoder before session 4, its number and time parsers, analyzer and engine checkpoints, route entries) for FUZZTIME inputs each (200000x; about 3 minutes in all).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./telemetry
	$(GO) test -run '^$$' -fuzz '^FuzzSimpleFloat$$' -fuzztime $(FUZZTIME) ./telemetry
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeReference$$' -fuzztime $(FUZZTIME) ./telemetry
	$(GO) test -run '^$$' -fuzz '^FuzzParseTime$$' -fuzztime $(FUZZTIME) ./telemetry
	$(GO) test -run '^$$' -fuzz '^FuzzParseNumber$$' -fuzztime $(FUZZTIME) ./telemetry
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshalBinary$$' -fuzztime $(FUZZTIME) ./analyzer
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshalState$$' -fuzztime $(FUZZTIME) ./engine
	$(GO) test -run '^$$' -fuzz '^FuzzParseRoute$$' -fuzztime $(FUZZTIME) ./router

BENCH_PORT ?= 14222
BENCH_MSGS ?= 200000
BENCH_SIZE ?= 196B
NATS_BENCH  = bin/nats -s nats://127.0.0.1:$(BENCH_PORT)
## bench: hot-path Go benchmarks (analyzer Observe and Check must be 0 allocs/op), `verdict bench --json` (two to three minutes), and natscli's `nats bench js consume` on a plain nats-server with the engine's stream and consumer settings, for an outside reference. docs/PERFORMANCE.md explains the figures.
bench: build bin/nats bin/nats-server
	$(GO) test -run '^$$' -bench 'Observe|Decide|Check|Decode' -benchmem ./analyzer ./telemetry | \
		awk '{print} /^Benchmark(Observe|Check)-/ {seen++; if ($$(NF-1) != 0) bad=1} \
			END {if (seen != 2 || bad) {print "FAIL: BenchmarkObserve or BenchmarkCheck missing or allocating"; exit 1}}'
	./$(BIN) bench --json
	@set -e; dir=$$(mktemp -d); \
	bin/nats-server -js -a 127.0.0.1 -p $(BENCH_PORT) -sd $$dir >$$dir/server.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; rm -rf $$dir' EXIT; \
	for i in 1 2 3 4 5 6 7 8 9 10; do $(NATS_BENCH) account info >/dev/null 2>&1 && break; sleep 0.5; done; \
	echo "nats bench js: plain nats-server $(NATS_SERVER_VERSION), stream VERDICT_EVENTS and consumers as the engine's, $(BENCH_MSGS) messages of $(BENCH_SIZE)"; \
	$(NATS_BENCH) stream add VERDICT_EVENTS --subjects 'verdict.events.>' --storage file --replicas 1 \
		--max-age 24h --dupe-window 2m --max-msg-size 1048576 --retention limits --discard old --defaults >/dev/null; \
	for a in all explicit; do \
		$(NATS_BENCH) consumer add VERDICT_EVENTS bench-$$a --pull --deliver all --ack $$a --max-pending 20000 \
			--wait 30s --max-deliver=-1 --filter 'verdict.events.>' --replay instant --defaults >/dev/null; \
	done; \
	$(NATS_BENCH) bench js pub async verdict.events.bench --stream VERDICT_EVENTS --size $(BENCH_SIZE) \
		--msgs $(BENCH_MSGS) --batch 1000 --no-progress 2>&1 | grep -i 'stats\|error'; \
	for a in all explicit; do \
		$(NATS_BENCH) bench js consume --stream VERDICT_EVENTS --consumer bench-$$a --acks $$a --batch 1000 \
			--size $(BENCH_SIZE) --msgs $(BENCH_MSGS) --no-progress 2>&1 | grep -i 'stats\|error' | sed "s/^/acks=$$a: /"; \
	done

bin/nats:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)

## simulate: every `verdict simulate` scenario under testdata/sim/policy.yaml, REPS each (1000; seed SEED, 1), as tables with run times: the figures in docs/STATISTICS.md (about 10 minutes on 2 cores).
REPS ?= 1000
SEED ?= 1
simulate: build
	@set -e; for s in $$(./$(BIN) simulate --list); do \
		start=$$(date +%s); \
		./$(BIN) simulate --policy testdata/sim/policy.yaml --scenario $$s --reps $(REPS) --seed $(SEED); \
		echo "($$s: $$(( $$(date +%s) - start )) s)"; echo; \
	done

## pgo: rewrite cmd/verdict/default.pgo, the CPU profile `go build` optimises the binary with (profile-guided optimisation; about 10% less CPU): `verdict simulate` on aa and srm, and `verdict bench`'s single-event ingest with 1 and 10,000 rollouts. Rerun after changing a hot path; a stale profile only optimises less.
PGO_DIR := bin/pgo
pgo: build
	@mkdir -p $(PGO_DIR)
	./$(BIN) simulate --policy testdata/sim/policy.yaml --scenario aa --reps 100 --seed 1 --json --cpuprofile $(PGO_DIR)/aa >/dev/null
	./$(BIN) simulate --policy testdata/sim/policy.yaml --scenario srm --reps 100 --seed 1 --json --cpuprofile $(PGO_DIR)/srm >/dev/null
	./$(BIN) bench --only ingest --rollouts 1,10000 --events 400000 --reps 1 --cpuprofile $(PGO_DIR)/bench >/dev/null
	$(GO) tool pprof -proto $(PGO_DIR)/aa $(PGO_DIR)/srm $(PGO_DIR)/bench.1 $(PGO_DIR)/bench.10000 > $(PGO_DIR)/merged.pgo
	mv $(PGO_DIR)/merged.pgo cmd/verdict/default.pgo

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
