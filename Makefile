# Sluice: make test sets up what the tests need, then runs every test.
GO      ?= go
BIN     := $(CURDIR)/bin
TIMEOUT ?= 25m

.PHONY: test services unit vet build demo fuzz clean

# Tests that restart PostgreSQL run alone, after the others: a restart would
# break every package's tests running at that moment.
PG_RESTART_TESTS := TestCDCFaults
test: services vet
	$(GO) test -race -timeout $(TIMEOUT) -count=1 -skip '$(PG_RESTART_TESTS)' ./...
	SLUICE_TEST_PG_RESTART=1 $(GO) test -race -timeout 10m -count=1 -run '$(PG_RESTART_TESTS)' -v ./integration
	@$(MAKE) --no-print-directory bench-smoke

# services installs and starts what the tests need, idempotently.
services:
	@scripts/services.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

unit:
	$(GO) test -short -count=1 ./protocol/... ./pipeline/... ./connectors/... ./coordinator/...

# build stamps the commit into the binary (sluice version) where the tree
# is a git checkout.
build:
	$(GO) build -buildvcs=auto -o $(BIN)/sluice ./cmd/sluice

demo:
	$(GO) run ./cmd/sluice demo

# fuzz runs each fuzz target for a while (not part of make test); every
# func Fuzz of the tree is listed (TestFuzzTargetsInMakefile checks).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeTask -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeTrigger -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline -run '^$$' -fuzz FuzzSplitDocuments -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline -run '^$$' -fuzz FuzzEvaluate -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzAppendJSON -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeChangeEvent -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/pgcdc -run '^$$' -fuzz FuzzDecodeChange -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/arrowconv -run '^$$' -fuzz FuzzAppend -fuzztime $(FUZZTIME)
	$(GO) test ./contract -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./contract -run '^$$' -fuzz FuzzWriter -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzParseTrigger -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeResult -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/files -run '^$$' -fuzz FuzzScanRange -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/postgres -run '^$$' -fuzz FuzzRecordSplitter -fuzztime $(FUZZTIME)
	$(GO) test ./connectors -run '^$$' -fuzz FuzzExpandEnv -fuzztime $(FUZZTIME)
	$(GO) test ./connectors/builtin -run '^$$' -fuzz FuzzValidate -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline -run '^$$' -fuzz FuzzResolvePaths -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/sluice -run '^$$' -fuzz FuzzHTTPAPI -fuzztime $(FUZZTIME)

# BENCHES lists the benchmarks, one a line: bench-<name> runs bench/<name>
# (go run ./bench/<name> -h lists its flags) at full size, beside its
# baselines, and writes bench/results/<name>.json. BENCH_FLAGS, e.g.
# "--reps 2" (make bench-fullload BENCH_FLAGS="--keep --only pg").
BENCHES += fullload # full loads of a 2M-row PostgreSQL table to CSV files and to PostgreSQL through an all-in-one cluster, beside psql \copy and a piped COPY
BENCHES += clickhouse # a full load of a 2M-row PostgreSQL table into ClickHouse through an all-in-one cluster beside psql \copy piped into clickhouse-client
BENCHES += incremental # a merge by key of 1M changed rows into a 10M-row PostgreSQL table through an all-in-one cluster beside a hand-written INSERT ... ON CONFLICT from a COPY-loaded staging table
BENCHES += lake     # a full load of a 2M-row PostgreSQL table into Iceberg tables (local disk and versitygw) through an all-in-one cluster beside psql \copy; the sink's S3 upload beside a bare multipart upload
BENCHES += cdc      # the CDC Reader decoding 200k changes into JetStream beside a bare pglogrepl loop on the same WAL; COMMIT-to-stored latency at 500 inserts/s
BENCHES += kafka    # a topic of 2M JSON records (kfake, 6 partitions) loaded into Parquet files beside a bare franz-go consume loop writing the same Parquet, and into another topic beside a bare consume-and-produce loop in one transaction
BENCHES += replicate # passthrough of a 2 GiB tree of 1,000 files beside cp -r, and of a 2M-row PostgreSQL table to PostgreSQL beside a piped COPY (FORMAT binary), through an all-in-one cluster
BENCHES += contract # full loads of a 2M-row PostgreSQL table to CSV files and to PostgreSQL through an all-in-one cluster, pattern transform with a contract of 3 hashed and 2 masked columns beside full_load without it
BENCHES += compact  # 1,000 small Parquet files (2M rows) of a files dataset compacted through an all-in-one cluster beside reading and writing the rows once; a reader before and after
BENCHES += replica  # a PostgreSQL replica kept by Sluice (reader, SLUICE_CDC, cdc_apply) beside native logical replication: 200k changes on 1 and 4 tables, backlog and live; commit-to-replica latency at 500 tx/s
BENCHES += scale    # no-op tasks dispatched and committed per second on 1 to 8 worker processes and in runs of 1,000 to 100,000 tasks beside JetStream's publish+consume of the same messages; I/O-bound tasks' speed-up on 1, 2, 4, 8 workers; a backfill of 100,000 windows (coordinator memory, Raft snapshot size)
BENCH_FLAGS ?=
BENCH_TARGETS := $(addprefix bench-,$(BENCHES))
.PHONY: $(BENCH_TARGETS) bench-smoke
$(BENCH_TARGETS): bench-%: services
	$(GO) run ./bench/$* $(BENCH_FLAGS)

# bench-smoke runs every benchmark once at a small size (--smoke: well under
# a minute each) with the checks of its output against its source that a
# full run makes, its results in a temporary directory (never
# bench/results), so that a broken benchmark fails make test.
BENCH_SMOKE_TIMEOUT ?= 5m
bench-smoke: services
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/sluice-bench-smoke.XXXXXX") && trap 'rm -rf "$$dir"' EXIT && \
	$(GO) build -o "$$dir/" $(addprefix ./bench/,$(BENCHES)) && \
	for b in $(BENCHES); do \
		echo "bench-smoke: $$b"; \
		timeout -k 30s $(BENCH_SMOKE_TIMEOUT) "$$dir/$$b" --smoke --out "$$dir/$$b.json" || \
			{ echo "bench-smoke: $$b failed"; exit 1; }; \
	done && echo "bench-smoke: $(strip $(BENCHES)) passed"

clean:
	rm -rf $(BIN) .sluice .sluice-demo
