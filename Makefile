# Sluice: make test sets up what the tests need, then runs every test.
GO      ?= go
BIN     := $(CURDIR)/bin
TIMEOUT ?= 25m

.PHONY: test services unit vet build demo fuzz clean bench-fullload bench-cdc bench-clickhouse

# Tests that restart PostgreSQL run alone, after the others: a restart would
# break every package's tests running at that moment.
PG_RESTART_TESTS := TestCDCFaults
test: services vet
	$(GO) test -race -timeout $(TIMEOUT) -count=1 -skip '$(PG_RESTART_TESTS)' ./...
	SLUICE_TEST_PG_RESTART=1 $(GO) test -race -timeout 10m -count=1 -run '$(PG_RESTART_TESTS)' -v ./integration

# services installs and starts what the tests need, idempotently.
services:
	@scripts/services.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

unit:
	$(GO) test -short -count=1 ./protocol/... ./pipeline/... ./connectors/... ./coordinator/...

build:
	$(GO) build -o $(BIN)/sluice ./cmd/sluice

demo:
	$(GO) run ./cmd/sluice demo

# fuzz runs each fuzz target for a while (not part of make test).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeTask -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeTrigger -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzAppendJSON -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeChangeEvent -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/pgcdc -run '^$$' -fuzz FuzzDecodeChange -fuzztime $(FUZZTIME)

# bench-fullload times full loads of a 2M-row PostgreSQL table to CSV files and
# to PostgreSQL through an all-in-one cluster, beside psql \copy and a piped
# COPY measured in the same run; it writes bench/results/fullload.json.
# BENCH_FLAGS, e.g. "--keep --reps 2" (go run ./bench/fullload -h).
BENCH_FLAGS ?=
bench-fullload: services
	$(GO) run ./bench/fullload $(BENCH_FLAGS)

# bench-cdc times the CDC Reader decoding a 200k-change workload into
# JetStream beside a bare pglogrepl loop on the same WAL, and the latency
# from COMMIT to the stored event at 500 inserts/s; it writes
# bench/results/cdc.json. BENCH_FLAGS, e.g. "--reps 5 --duration 10s" (go run ./bench/cdc -h).
bench-cdc: services
	$(GO) run ./bench/cdc $(BENCH_FLAGS)

# bench-clickhouse times a full load of a 2M-row PostgreSQL table into
# ClickHouse through an all-in-one cluster beside psql \copy piped into
# clickhouse-client, measured in the same run; it writes
# bench/results/clickhouse.json. BENCH_FLAGS, e.g. "--reps 2" or "--smoke"
# (go run ./bench/clickhouse -h).
bench-clickhouse: services
	$(GO) run ./bench/clickhouse $(BENCH_FLAGS)

clean:
	rm -rf $(BIN) .sluice .sluice-demo
