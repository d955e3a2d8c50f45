// Command contract benchmarks what a data contract costs a load: the same
// full loads of the same PostgreSQL table through the same all-in-one
// cluster, with and without a contract that hashes 3 and masks 2 of the
// table's 7 columns, all in the same run:
//
//	(a) Sluice PostgreSQL -> CSV files, pattern full_load    baseline of (b)
//	(b) the same, pattern transform with the contract
//	(c) Sluice PostgreSQL -> PostgreSQL, pattern full_load   baseline of (d)
//	(c') the same, pattern passthrough                       baseline of (d)
//	(d) the same, pattern transform with the contract: a table
//	    passthrough with the contract applied, the target made from the
//	    source's definition (its primary key built) as (c')'s is
//
// The target is a cost of at most 25%: (b) and (d) load at least 0.75 of
// the rows per second of their baselines.
//
// It creates (or, with --keep, reuses) a table of --rows rows in the
// schema --schema (sluice_bench_contract) of the test database and writes
// into the schema <schema>_out; it runs the four loads --reps times
// interleaved and keeps the best time of each (the machine is shared). It
// verifies every output: the baselines hold the source's rows (count and
// checksum), the transforms the rows the contract makes of the source's,
// transformed again in this process and checksummed, and a hashed value
// of the PostgreSQL copy is the HMAC of the source's. It writes every
// figure to --out. Both schemas are dropped at the end (the source's kept
// with --keep). Run it with `make bench-contract`; --smoke runs it at a
// small size with the same checks (`make bench-smoke`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// minRatio is issue 14 item 6's target: a contract with 3 hashed and 2
// masked columns costs at most 25% of the rate without it.
const minRatio = 0.75

// keyVar names the environment variable of the contract's key; the
// benchmark sets it (to keyValue) when it is not set.
const (
	keyVar   = "SLUICE_BENCH_CONTRACT_KEY"
	keyValue = "sluice benchmark contract key, 32 bytes"
)

// contractYAML hashes three and masks two of the seven columns of the
// orders table (harness.OrdersColumns), as a spec's contract section.
const contractYAML = `contract:
  strict: true
  key: ${` + keyVar + `}
  columns:
    id: keep
    customer: {pii: name, action: hash}
    created_at: {action: hash}
    status: {action: hash}
    amount: {action: mask}
    quantity: {action: mask}
    paid: keep
`

type config struct {
	smoke      bool
	schema     string
	rows       int64
	reps       int
	keep       bool
	out        string
	dsn        string
	dir        string
	workers    int
	slots      int
	targetRows int64
	profile    string
}

// srcTable is the source table.
func (c config) srcTable() string { return c.schema + ".contract_src" }

// outSchema holds the PostgreSQL targets; it is dropped before and after
// each run, so that the versions of a new cluster never meet an earlier
// one's.
func (c config) outSchema() string { return c.schema + "_out" }

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 20k rows, 1 rep, 4 tasks a load, schema sluice_bench_smoke_contract, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_contract", "the schema of the source table, which the benchmark creates (and drops unless --keep); it writes into <schema>_out")
	flag.Int64Var(&cfg.rows, "rows", 2_000_000, "rows in the source table")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each measurement; the best counts")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the source table for the next run (it is reused when its row count matches)")
	flag.StringVar(&cfg.out, "out", "bench/results/contract.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to use ($SLUICE_TEST_PG)")
	flag.StringVar(&cfg.dir, "dir", "", "work directory for the CSV outputs and the cluster (default: a temporary one, removed)")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.targetRows, "target-rows", 250_000, "partitioning.target_rows of the pipelines")
	flag.StringVar(&cfg.profile, "cpuprofile", "", "profile the CPU of each load's last repetition (the whole cluster's, in this process) into FILE.<load>.pprof")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "contract", map[string]string{
			"schema": "sluice_bench_smoke_contract", "rows": "20000", "reps": "1", "target-rows": "5000",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "contract:", err)
			os.Exit(2)
		}
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "contract: --schema:", err)
		os.Exit(2)
	}
	if cfg.rows < 1 || cfg.reps < 1 || cfg.workers < 1 || cfg.slots < 1 || cfg.targetRows < 1 {
		fmt.Fprintln(os.Stderr, "contract: --rows, --reps, --workers, --slots and --target-rows must be at least 1")
		os.Exit(2)
	}
	if _, ok := os.LookupEnv(keyVar); !ok {
		os.Setenv(keyVar, keyValue) // the workers run in this process
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "contract:", err)
		os.Exit(1)
	}
}

// load is one of the four loads: its pipeline and what it measured.
type load struct {
	m        *measurement
	pipeline string
	spec     string // the pipeline's sink and, for a transform, contract
	// verify checks the committed output of the run st.
	verify func(ctx context.Context, st protocol.RunStatus) error
}

// run sets up the benchmark (the source table, the output schema, an
// all-in-one cluster), times the loads, and writes the results.
func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	hdr := harness.NewHeader("contract", cfg.smoke,
		fmt.Sprintf("shared, noisy machine: best of %d interleaved repetitions; trust the ratios more than the absolute figures", cfg.reps))
	conn, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to %s (run `make services`): %w", cfg.dsn, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&hdr.PostgreSQL); err != nil {
		return err
	}
	if err := harness.Lock(ctx, conn, cfg.schema, stdout); err != nil {
		return err
	}
	if !cfg.keep {
		defer drop(conn, cfg.schema)
	}
	if err := harness.Orders(ctx, conn, cfg.schema, "contract_src", cfg.rows, stdout); err != nil {
		return err
	}
	defer drop(conn, cfg.outSchema())
	for _, sql := range []string{"DROP SCHEMA IF EXISTS " + cfg.outSchema() + " CASCADE", "CREATE SCHEMA " + cfg.outSchema()} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("prepare %s: %w", cfg.outSchema(), err)
		}
	}

	spec, problems := contract.Parse([]byte(contractYAML[len("contract:\n"):]))
	if len(problems) > 0 {
		return fmt.Errorf("the benchmark's contract: %v", problems)
	}
	ct, err := contract.Compile(spec, os.LookupEnv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checksumming the source, and the source through the contract ... ")
	src, err := postgres.TableChecksum(ctx, conn, "SELECT "+harness.OrdersColumns+" FROM "+cfg.srcTable())
	if err != nil {
		return err
	}
	if src.Rows != cfg.rows {
		return fmt.Errorf("source has %d rows, want %d", src.Rows, cfg.rows)
	}
	want, err := transformedChecksum(ctx, cfg, ct)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d rows\n", src.Rows)

	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sluice-bench-contract-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	csvPlain, csvContract := filepath.Join(dir, "csv-full-load"), filepath.Join(dir, "csv-transform")
	pgPlain, pgPass, pgContract := cfg.outSchema()+".orders_full_load", cfg.outSchema()+".orders_passthrough", cfg.outSchema()+".orders_transform"
	loads := []load{
		{m: &measurement{Key: "full_load_pg_to_csv", Label: "(a) PG -> CSV files, full_load"}, pipeline: "bench-csv-full-load",
			spec:   fmt.Sprintf("pattern: full_load\nsink: {kind: files, path: %q, format: csv, keep_versions: 1}\n", csvPlain),
			verify: func(_ context.Context, st protocol.RunStatus) error { return verifyCSV(csvPlain, src, st) }},
		{m: &measurement{Key: "transform_pg_to_csv", Label: "(b) PG -> CSV files, transform (3 hashed, 2 masked)"}, pipeline: "bench-csv-transform",
			spec:   fmt.Sprintf("pattern: transform\nsink: {kind: files, path: %q, format: csv, keep_versions: 1}\n%s", csvContract, contractYAML),
			verify: func(_ context.Context, st protocol.RunStatus) error { return verifyCSV(csvContract, want, st) }},
		{m: &measurement{Key: "full_load_pg_to_pg", Label: "(c) PG -> PG, full_load"}, pipeline: "bench-pg-full-load",
			spec:   fmt.Sprintf("pattern: full_load\nsink: {kind: postgres, dsn: %q, table: %s, keep_versions: 1}\n", cfg.dsn, pgPlain),
			verify: func(ctx context.Context, st protocol.RunStatus) error { return verifyPG(ctx, conn, pgPlain, src, st) }},
		{m: &measurement{Key: "passthrough_pg_to_pg", Label: "(c') PG -> PG, passthrough"}, pipeline: "bench-pg-passthrough",
			spec:   fmt.Sprintf("pattern: passthrough\nsink: {kind: postgres, dsn: %q, table: %s, keep_versions: 1}\n", cfg.dsn, pgPass),
			verify: func(ctx context.Context, st protocol.RunStatus) error { return verifyPG(ctx, conn, pgPass, src, st) }},
		{m: &measurement{Key: "transform_pg_to_pg", Label: "(d) PG -> PG, transform (3 hashed, 2 masked)"}, pipeline: "bench-pg-transform",
			spec: fmt.Sprintf("pattern: transform\nsink: {kind: postgres, dsn: %q, table: %s, keep_versions: 1}\n%s", cfg.dsn, pgContract, contractYAML),
			verify: func(ctx context.Context, st protocol.RunStatus) error {
				if err := verifyPG(ctx, conn, pgContract, want, st); err != nil {
					return err
				}
				return verifyHash(ctx, conn, cfg.srcTable(), pgContract)
			}},
	}

	reg := connectors.NewRegistry()
	files.Register(reg)
	postgres.Register(reg)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return devcluster.Run(ctx, devcluster.Config{
		DataDir: filepath.Join(dir, "cluster"), Workers: cfg.workers, Slots: cfg.slots,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: reg,
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		for _, l := range loads {
			text := fmt.Sprintf("name: %s\nsource: {kind: postgres, dsn: %q, table: %s}\npartitioning: {target_rows: %d}\nretry: {max_attempts: 3, backoff: 1s}\n%s",
				l.pipeline, cfg.dsn, cfg.srcTable(), cfg.targetRows, l.spec)
			spec, err := pipeline.Load([]byte(text), "bench", reg, os.LookupEnv)
			if err != nil {
				return err
			}
			if _, err := c.Client.Apply(ctx, spec); err != nil {
				return fmt.Errorf("apply %s: %w", spec.Name, err)
			}
		}
		fmt.Fprintf(stdout, "cluster: embedded NATS, 1 coordinator, %d workers x %d slots; target_rows %d\n", cfg.workers, cfg.slots, cfg.targetRows)
		for rep := 1; rep <= cfg.reps; rep++ {
			fmt.Fprintf(stdout, "rep %d/%d:", rep, cfg.reps)
			for _, l := range loads {
				stop := func() {}
				if cfg.profile != "" && rep == cfg.reps {
					s, err := harness.StartCPUProfile(cfg.profile + "." + l.m.Key + ".pprof")
					if err != nil {
						return err
					}
					stop = s
				}
				secs, cpu, st, err := timeRun(ctx, c, l.pipeline)
				stop()
				if err != nil {
					return err
				}
				if err := l.verify(ctx, st); err != nil {
					return fmt.Errorf("%s: %w", l.pipeline, err)
				}
				l.m.add(secs, cpu, st.Tasks)
				fmt.Fprintf(stdout, " %s %.2fs", l.pipeline, secs)
			}
			fmt.Fprintln(stdout)
		}
		ms := make([]*measurement, len(loads))
		for i, l := range loads {
			ms[i] = l.m
		}
		return writeResults(cfg, stdout, hdr, ms, began)
	})
}

// timeRun runs a pipeline on the cluster and waits for its commit: the
// wall time, this process's CPU time (the whole cluster's) and
// PostgreSQL's.
func timeRun(ctx context.Context, c *devcluster.Cluster, name string) (float64, [2]float64, protocol.RunStatus, error) {
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	res, err := c.Client.Run(ctx, protocol.RunRequest{Pipeline: name})
	if err != nil {
		return 0, [2]float64{}, protocol.RunStatus{}, fmt.Errorf("run %s: %w", name, err)
	}
	st, err := c.Client.WaitRun(ctx, res.RunID, 20*time.Millisecond, nil)
	secs := time.Since(start).Seconds()
	cpu := [2]float64{measure.SelfCPU() - cpu0, measure.ServerCPU() - srv0}
	switch {
	case err != nil:
		return 0, cpu, st, err
	case st.State != protocol.RunCommitted:
		return 0, cpu, st, fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return secs, cpu, st, nil
}

// drop drops a schema the benchmark created, with everything in it; a
// failure is reported.
func drop(conn *pgx.Conn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fmt.Fprintf(os.Stderr, "contract: drop schema %s: %v\n", schema, err)
	}
}
