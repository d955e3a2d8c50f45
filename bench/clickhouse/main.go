// Command clickhouse benchmarks full loads from PostgreSQL into ClickHouse
// against what a user would otherwise run, all in the same run on the same
// table:
//
//	(a) psql \copy (SELECT ...) TO STDOUT CSV | clickhouse-client --query
//	    "INSERT ... FORMAT CSV"                 the baseline
//	(b) Sluice PostgreSQL -> ClickHouse through an all-in-one cluster
//	(c) the same source and sink in this process, the plan's schema given
//	    to every task (typed columns), chunks loaded concurrently
//
// It creates (or, with --keep, reuses) a table of --rows rows of the
// harness's orders (7 columns, as the full-load benchmark's) in the schema
// --schema (sluice_bench_clickhouse) of the test database, and loads it
// into the ClickHouse database of the same name, created anew. The baseline's
// SELECT renders the values the way the sink stores them on a server
// without DateTime64 (timestamptz as Int64 microseconds, boolean as 0 or
// 1, NULL as \N), into a table of the same types. Each measurement runs
// --reps times interleaved; the best counts. Every output's row count is
// checked, and each Sluice run's checksum against the source's. Figures go
// to --out. The schema (unless --keep) and the ClickHouse database are
// dropped at the end, also on error or Ctrl-C; a run waits for another on
// the same schema and database to end. Run it with `make
// bench-clickhouse`; --smoke runs it at a small size with the same checks
// (`make bench-smoke`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// target is the ratio of issue 16 item 6: Sluice vs the piped baseline.
const target = 1.0

type config struct {
	smoke      bool
	schema     string
	rows       int64
	reps       int
	keep       bool
	out        string
	dsn        string
	url        string
	workers    int
	slots      int
	targetRows int64
	psql       string
}

// srcTable is the source table.
func (c config) srcTable() string { return c.schema + ".clickhouse_src" }

// chDB is the ClickHouse database the loads write into: named after the
// schema, so the lock on the schema covers it too.
func (c config) chDB() string { return c.schema }

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 20k rows, 1 rep, 4 tasks a load, schema sluice_bench_smoke_clickhouse, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_clickhouse", "the schema of the source table, which the benchmark creates (and drops unless --keep); the ClickHouse database of the same name is created and dropped")
	flag.Int64Var(&cfg.rows, "rows", 2_000_000, "rows in the source table")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each measurement; the best counts")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the source table for the next run (it is reused when its row count matches)")
	flag.StringVar(&cfg.out, "out", "bench/results/clickhouse.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to read ($SLUICE_TEST_PG)")
	flag.StringVar(&cfg.url, "url", chtest.URL(), "ClickHouse HTTP interface ($SLUICE_TEST_CLICKHOUSE)")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.targetRows, "target-rows", 250_000, "partitioning.target_rows")
	flag.StringVar(&cfg.psql, "psql", "", "psql binary of the baseline (default: from PATH, else /usr/lib/postgresql/15/bin/psql)")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "clickhouse", map[string]string{
			"schema": "sluice_bench_smoke_clickhouse", "rows": "20000", "reps": "1", "target-rows": "5000",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "clickhouse:", err)
			os.Exit(2)
		}
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "clickhouse: --schema:", err)
		os.Exit(2)
	}
	if cfg.rows < 1 || cfg.reps < 1 || cfg.workers < 1 || cfg.slots < 1 || cfg.targetRows < 1 {
		fmt.Fprintln(os.Stderr, "clickhouse: --rows, --reps, --workers, --slots and --target-rows must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "clickhouse:", err)
		os.Exit(1)
	}
}

type measurement struct {
	Label       string    `json:"label"`
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	RowsPerSec  float64   `json:"rows_per_sec"`
	ClientCPU   []float64 `json:"client_cpu_seconds"`
	Verified    string    `json:"verified"`
}

func (m *measurement) finish(rows int64) {
	m.BestSeconds = m.Seconds[measure.Best(m.Seconds)]
	m.RowsPerSec = measure.Round(float64(rows)/m.BestSeconds, 0)
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	ClickHouse   string                  `json:"clickhouse"`
	Rows         int64                   `json:"rows"`
	Reps         int                     `json:"reps"`
	Measurements map[string]*measurement `json:"measurements"`
	Ratios       map[string]float64      `json:"ratios"`
	Target       float64                 `json:"target_ratio"`
	Met          bool                    `json:"met"`
	TotalSeconds float64                 `json:"total_seconds"`
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	hdr := harness.NewHeader("clickhouse", cfg.smoke,
		"(a) psql \\copy of a SELECT rendering ClickHouse's values, piped into clickhouse-client FORMAT CSV; (b) Sluice through sluice dev's cluster "+
			"(workers x slots, target_rows chunks); (c) Sluice's source and sink in one process with the plan's schema on every task (typed columns), workers x slots chunks at a time. "+
			"Best of reps, interleaved; MergeTree merges after a load are not timed.")
	psql, err := harness.FindPSQL(cfg.psql)
	if err != nil {
		return err
	}
	cfg.psql = psql
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
	cl, err := clickhouse.NewClient(cfg.url, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	v, err := cl.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("ClickHouse at %s: %w (run `make services`)", cfg.url, err)
	}
	res := results{Header: hdr, ClickHouse: v.String(), Rows: cfg.rows, Reps: cfg.reps, Target: target,
		Measurements: map[string]*measurement{}, Ratios: map[string]float64{}}
	if !cfg.keep {
		defer drop(conn, cfg.schema)
	}
	if err := harness.Orders(ctx, conn, cfg.schema, "clickhouse_src", cfg.rows, stdout); err != nil {
		return err
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT "+harness.OrdersColumns+" FROM "+cfg.srcTable())
	if err != nil {
		return err
	}
	if want.Rows != cfg.rows {
		return fmt.Errorf("source has %d rows, want %d", want.Rows, cfg.rows)
	}
	chDB := cfg.chDB()
	if err := cl.Exec(ctx, "DROP DATABASE IF EXISTS "+chDB); err != nil {
		return err
	}
	if err := cl.Exec(ctx, "CREATE DATABASE "+chDB); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cl.Exec(dctx, "DROP DATABASE IF EXISTS "+chDB); err != nil {
			fmt.Fprintf(os.Stderr, "clickhouse: drop ClickHouse database %s: %v\n", chDB, err)
		}
	}()

	a := &measurement{Label: "psql \\copy | clickhouse-client FORMAT CSV"}
	b := &measurement{Label: "Sluice PG -> ClickHouse (cluster)"}
	c := &measurement{Label: "Sluice PG -> ClickHouse (typed, in process)"}
	res.Measurements["a_baseline"], res.Measurements["b_sluice_cluster"], res.Measurements["c_sluice_typed"] = a, b, c

	reg := connectors.NewRegistry()
	postgres.Register(reg)
	clickhouse.Register(reg)
	dir, err := os.MkdirTemp("", "sluice-bench-ch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err = devcluster.Run(ctx, devcluster.Config{DataDir: dir, Workers: cfg.workers, Slots: cfg.slots, Log: log, Tracer: noop.NewTracerProvider(), Registry: reg},
		func(ctx context.Context, cluster *devcluster.Cluster) error {
			y := fmt.Sprintf("name: bench-ch\npattern: full_load\nsource: {kind: postgres, dsn: %q, table: %s}\nsink: {kind: clickhouse, url: %q, table: %s.sluice, keep_versions: 1}\npartitioning: {target_rows: %d}\n",
				cfg.dsn, cfg.srcTable(), cfg.url, chDB, cfg.targetRows)
			spec, err := pipeline.Load([]byte(y), "bench-ch.yaml", reg, nil)
			if err != nil {
				return err
			}
			if _, err := cluster.Client.Apply(ctx, spec); err != nil {
				return err
			}
			for rep := range cfg.reps {
				fmt.Fprintf(stdout, "rep %d/%d\n", rep+1, cfg.reps)
				if err := timeIt(a, func() error { return baseline(ctx, cfg, cl) }); err != nil {
					return fmt.Errorf("baseline: %w", err)
				}
				if a.Verified, err = checkCount(ctx, cl, chDB+".base", cfg.rows); err != nil {
					return err
				}
				if err := timeIt(b, func() error { return clusterLoad(ctx, cluster, want) }); err != nil {
					return fmt.Errorf("sluice cluster: %w", err)
				}
				if b.Verified, err = checkCount(ctx, cl, chDB+".sluice", cfg.rows); err != nil {
					return err
				}
				b.Verified += ", run checksum = source checksum " + want.String()
				if err := timeIt(c, func() error { return typedLoad(ctx, cfg, rep, want) }); err != nil {
					return fmt.Errorf("sluice typed: %w", err)
				}
				if c.Verified, err = checkCount(ctx, cl, chDB+".typed", cfg.rows); err != nil {
					return err
				}
				c.Verified += ", run checksum = source checksum " + want.String()
			}
			return nil
		})
	if err != nil {
		return err
	}
	for _, m := range []*measurement{a, b, c} {
		m.finish(cfg.rows)
	}
	res.Ratios["b_vs_a"] = measure.Round(a.BestSeconds/b.BestSeconds, 2)
	res.Ratios["c_vs_a"] = measure.Round(a.BestSeconds/c.BestSeconds, 2)
	res.Met = res.Ratios["b_vs_a"] >= target
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	for _, k := range []string{"a_baseline", "b_sluice_cluster", "c_sluice_typed"} {
		m := res.Measurements[k]
		fmt.Fprintf(stdout, "%-48s best %6.2fs  %9s rows/s  runs %v\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), m.Seconds)
	}
	fmt.Fprintf(stdout, "ratios: cluster %.2fx, typed %.2fx of the baseline (target %.1fx)\n", res.Ratios["b_vs_a"], res.Ratios["c_vs_a"], target)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}

// drop drops the benchmark's schema with everything in it; a failure is
// reported.
func drop(conn *pgx.Conn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fmt.Fprintf(os.Stderr, "clickhouse: drop schema %s: %v\n", schema, err)
	}
}

func timeIt(m *measurement, fn func() error) error {
	cpu := measure.SelfCPU()
	start := time.Now()
	if err := fn(); err != nil {
		return err
	}
	m.Seconds = append(m.Seconds, measure.Round(time.Since(start).Seconds(), 3))
	m.ClientCPU = append(m.ClientCPU, measure.Round(measure.SelfCPU()-cpu, 2))
	time.Sleep(2 * time.Second) // let the server's merges of the load settle a little
	return nil
}

func checkCount(ctx context.Context, cl *clickhouse.Client, table string, rows int64) (string, error) {
	n, err := cl.Int(ctx, "SELECT count() FROM "+table)
	if err != nil {
		return "", err
	}
	if n != rows {
		return "", fmt.Errorf("%s holds %d rows, want %d", table, n, rows)
	}
	return fmt.Sprintf("%d rows", n), nil
}

// baseline pipes psql into clickhouse-client, into a fresh table of the
// types the sink uses on a server without DateTime64.
func baseline(ctx context.Context, cfg config, cl *clickhouse.Client) error {
	chDB := cfg.chDB()
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + chDB + ".base",
		"CREATE TABLE " + chDB + ".base (id Int64, customer String, amount Decimal(12, 2), created_at Int64, quantity Nullable(Int32), paid UInt8, status String) ENGINE = MergeTree ORDER BY id",
	} {
		if err := cl.Exec(ctx, q); err != nil {
			return err
		}
	}
	copySQL := `\copy (SELECT id, customer, amount, (extract(epoch FROM created_at) * 1000000)::bigint, quantity, paid::int, status FROM ` +
		cfg.srcTable() + `) TO STDOUT WITH (FORMAT csv, NULL '\N')`
	script := fmt.Sprintf("set -o pipefail; %q %q -X -q -c %q | clickhouse-client --query %q",
		cfg.psql, cfg.dsn, copySQL, "INSERT INTO "+chDB+".base FORMAT CSV")
	out, err := exec.CommandContext(ctx, "bash", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func clusterLoad(ctx context.Context, cluster *devcluster.Cluster, want connectors.Checksum) error {
	r, err := cluster.Client.Run(ctx, protocol.RunRequest{Pipeline: "bench-ch"})
	if err != nil {
		return err
	}
	st, err := cluster.Client.WaitRun(ctx, r.RunID, 20*time.Millisecond, nil)
	if err != nil {
		return err
	}
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	if st.Rows != want.Rows || st.Checksum != want.String() {
		return fmt.Errorf("run %s: %d rows checksum %s, source %d rows checksum %s", st.RunID, st.Rows, st.Checksum, want.Rows, want)
	}
	return nil
}

// typedLoad plans the source, loads its chunks workers x slots at a time
// through the sink with the plan's schema, and commits.
func typedLoad(ctx context.Context, cfg config, rep int, want connectors.Checksum) error {
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: cfg.dsn, Table: cfg.srcTable()})
	if err != nil {
		return err
	}
	defer src.Close()
	sink, err := clickhouse.NewSink(clickhouse.SinkConfig{URL: cfg.url, Table: cfg.chDB() + ".typed", KeepVersions: 1})
	if err != nil {
		return err
	}
	defer sink.Close()
	runID := "typed-" + strconv.Itoa(rep)
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: runID, Partitioning: connectors.Partitioning{TargetRows: cfg.targetRows}})
	if err != nil {
		return err
	}
	defer src.ReleaseRun(runID)
	if err := sink.CheckSchema(ctx, plan.Schema); err != nil {
		return err
	}
	outs := make([]connectors.TaskOutput, len(plan.Partitions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.workers * cfg.slots)
	for i, p := range plan.Partitions {
		g.Go(func() error {
			w, err := sink.OpenTask(gctx, connectors.TaskRef{RunID: runID, TaskID: p.Key, Attempt: 1, Schema: plan.Schema})
			if err != nil {
				return err
			}
			if err := src.Read(gctx, p, w.Write); err != nil {
				w.Abort(gctx)
				return err
			}
			outs[i], err = w.Close(gctx)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var sum connectors.Checksum
	for _, o := range outs {
		sum.Merge(o.Checksum)
	}
	if sum != want {
		return fmt.Errorf("typed run: %d rows checksum %s, source %d rows checksum %s", sum.Rows, sum, want.Rows, want)
	}
	_, err = sink.Commit(ctx, connectors.CommitRequest{RunID: runID, Version: int64(rep + 1), Tasks: outs, Schema: plan.Schema})
	return err
}
