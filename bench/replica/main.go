// Command replica benchmarks a PostgreSQL replica kept by Sluice (the
// pgcdc Reader into SLUICE_CDC on an embedded NATS server, applied by the
// cdc_apply runner to typed tables by the PostgreSQL applier) beside
// PostgreSQL's own logical replication (a publication and a subscription
// between two databases of the same server), in the same run, on the same
// workload:
//
//   - backlog: the workload (--changes inserts, updates and deletes in
//     transactions of --tx-rows rows, spread over --tables tables, one
//     table a transaction) is committed first; then the replication starts
//     (the subscription enabled; the Reader and the runner started), timed
//     until the replica holds the workload's last transaction of every
//     table;
//   - live: the replication runs first, then the workload, timed from its
//     first commit until the replica caught up; the time from its last
//     commit to then is reported too;
//   - latency: single-row INSERT transactions at --rate per second for
//     --duration, each row's time from its COMMIT's return to its first
//     sight on the replica (polled every 2 ms), as percentiles.
//
// On more than one table Sluice runs twice: as by default (a batch in one
// transaction) and with parallel: tables (each table on a connection of
// its own), the row "sluice-parallel".
//
// Each measurement has tables of its own (recreated in the schema --schema
// of the source database and of the target database --target-db, which the
// run creates), its own slot and its own publication; the subscription is
// created on a slot made first (a subscription cannot create its slot in
// its own cluster: create_slot = false). Native and Sluice run one after
// the other, never at once. After every throughput measurement each replica
// table is checked against its source (count and checksum of every column).
// Figures go to --out (bench/results/replica.json); --smoke runs it at a
// small size with the same checks (make bench-smoke).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

type config struct {
	smoke    bool
	dsn      string
	targetDB string
	schema   string
	changes  int64
	txRows   int64
	tables   []int
	rate     int
	duration time.Duration
	timeout  time.Duration
	out      string
	only     string
	profile  string
	reps     int
}

func main() {
	var cfg config
	tables := "1,4"
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 8k changes, 2 s of latency, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "the source database ($SLUICE_TEST_PG); its role must be a superuser (CREATE SUBSCRIPTION)")
	flag.StringVar(&cfg.targetDB, "target-db", "sluice_bench_replica", "the target database, on the same server, created when missing")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_replica", "the schema of the tables, in both databases; created and dropped")
	flag.Int64Var(&cfg.changes, "changes", 200_000, "changes of the throughput workload: 60% inserts, 25% updates, 15% deletes")
	flag.Int64Var(&cfg.txRows, "tx-rows", 100, "rows per transaction of the throughput workload")
	flag.StringVar(&tables, "tables", tables, "table counts of the throughput workloads, comma-separated")
	flag.IntVar(&cfg.rate, "rate", 500, "latency: single-row INSERT transactions per second")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "latency: how long to insert")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "bound of each measurement")
	flag.StringVar(&cfg.out, "out", "bench/results/replica.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.only, "only", "", "run only native, sluice (both Sluice rows) or sluice-parallel")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each throughput measurement, native and Sluice interleaved; the best counts")
	flag.StringVar(&cfg.profile, "cpuprofile", "", "write a CPU profile of this process over the whole run to FILE")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "replica", map[string]string{
			"schema": "sluice_bench_smoke_replica", "target-db": "sluice_bench_smoke_replica",
			"changes": "8000", "rate": "200", "duration": "2s", "timeout": "3m", "reps": "1",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "replica:", err)
			os.Exit(2)
		}
	}
	var err error
	if cfg.tables, err = parseInts(tables); err != nil || len(cfg.tables) == 0 {
		fmt.Fprintln(os.Stderr, "replica: --tables: want table counts such as 1,4")
		os.Exit(2)
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "replica: --schema:", err)
		os.Exit(2)
	}
	if err := harness.CheckSchema(cfg.targetDB); err != nil {
		fmt.Fprintln(os.Stderr, "replica: --target-db:", err)
		os.Exit(2)
	}
	if cfg.changes < 100 || cfg.txRows < 1 || cfg.rate < 1 || cfg.reps < 1 || cfg.duration <= 0 || cfg.only != "" && cfg.only != "native" && cfg.only != "sluice" && cfg.only != "sluice-parallel" {
		fmt.Fprintln(os.Stderr, "replica: --changes must be at least 100, --tx-rows, --reps, --rate and --duration positive, --only native, sluice or sluice-parallel")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscanf(f, "%d", &n); err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("%q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
