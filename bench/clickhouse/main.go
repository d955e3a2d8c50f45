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
// The baseline's SELECT renders the values the way the sink stores them on
// a server without DateTime64 (timestamptz as Int64 microseconds, boolean
// as 0 or 1, NULL as \N), into a table of the same types. Each
// measurement runs --reps times interleaved; the best counts. Every
// output's row count is checked, and each Sluice run's checksum against the
// source's. Figures go to --out. Run it with `make bench-clickhouse`;
// --smoke loads 20,000 rows once, for a quick check.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/jackc/pgx/v5"

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

const (
	srcSchema = "sluice_bench"
	srcTable  = srcSchema + ".clickhouse_src"
	chDB      = "sluice_bench"
	// target is the ratio of issue 16 item 6: Sluice vs the piped baseline.
	target = 1.0
)

type config struct {
	rows       int64
	reps       int
	smoke      bool
	out        string
	dsn        string
	url        string
	workers    int
	slots      int
	targetRows int64
}

func main() {
	var cfg config
	flag.Int64Var(&cfg.rows, "rows", 2_000_000, "rows in the source table")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each measurement; the best counts")
	flag.BoolVar(&cfg.smoke, "smoke", false, "a quick check: 20,000 rows, one repetition, results not written unless --out is given")
	flag.StringVar(&cfg.out, "out", "", "where to write the results (default bench/results/clickhouse.json; none with --smoke)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to read ($SLUICE_TEST_PG)")
	flag.StringVar(&cfg.url, "url", chtest.URL(), "ClickHouse HTTP interface ($SLUICE_TEST_CLICKHOUSE)")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.targetRows, "target-rows", 250_000, "partitioning.target_rows")
	flag.Parse()
	if cfg.smoke {
		cfg.rows, cfg.reps = 20_000, 1
	} else if cfg.out == "" {
		cfg.out = "bench/results/clickhouse.json"
	}
	if err := run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench clickhouse:", err)
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
	m.BestSeconds = m.Seconds[0]
	for _, s := range m.Seconds {
		m.BestSeconds = min(m.BestSeconds, s)
	}
	m.RowsPerSec = measure.Round(float64(rows)/m.BestSeconds, 0)
}

type results struct {
	Benchmark    string                  `json:"benchmark"`
	Date         time.Time               `json:"date"`
	GoVersion    string                  `json:"go_version"`
	NumCPU       int                     `json:"num_cpu"`
	ClickHouse   string                  `json:"clickhouse"`
	PostgreSQL   string                  `json:"postgresql"`
	LoadAverage  [2]string               `json:"load_average_before_after"`
	Rows         int64                   `json:"rows"`
	Reps         int                     `json:"reps"`
	Note         string                  `json:"note"`
	Measurements map[string]*measurement `json:"measurements"`
	Ratios       map[string]float64      `json:"ratios"`
	Target       float64                 `json:"target_ratio"`
	Met          bool                    `json:"met"`
}

func run(ctx context.Context, cfg config) error {
	conn, err := pgx.Connect(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	cl, err := clickhouse.NewClient(cfg.url, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	res := results{Benchmark: "PostgreSQL -> ClickHouse full load", Date: time.Now().UTC(), GoVersion: runtime.Version(),
		NumCPU: runtime.NumCPU(), Rows: cfg.rows, Reps: cfg.reps, Target: target, Measurements: map[string]*measurement{}, Ratios: map[string]float64{},
		Note: "(a) psql \\copy of a SELECT rendering ClickHouse's values, piped into clickhouse-client FORMAT CSV; (b) Sluice through sluice dev's cluster " +
			"(workers x slots, 250k-row chunks); (c) Sluice's source and sink in one process with the plan's schema on every task (typed columns), chunks 4 at a time. " +
			"Best of reps, interleaved; MergeTree merges after a load are not timed."}
	res.LoadAverage[0] = measure.LoadAverage()
	v, err := cl.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("ClickHouse at %s: %w (run `make services`)", cfg.url, err)
	}
	res.ClickHouse = v.String()
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&res.PostgreSQL); err != nil {
		return err
	}
	if err := ensureSource(ctx, conn, cfg.rows); err != nil {
		return err
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+srcTable)
	if err != nil {
		return err
	}
	if err := cl.Exec(ctx, "DROP DATABASE IF EXISTS "+chDB); err != nil {
		return err
	}
	if err := cl.Exec(ctx, "CREATE DATABASE "+chDB); err != nil {
		return err
	}
	defer cl.Exec(context.Background(), "DROP DATABASE IF EXISTS "+chDB)

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
				cfg.dsn, srcTable, cfg.url, chDB, cfg.targetRows)
			spec, err := pipeline.Load([]byte(y), "bench-ch.yaml", reg, nil)
			if err != nil {
				return err
			}
			if _, err := cluster.Client.Apply(ctx, spec); err != nil {
				return err
			}
			for rep := range cfg.reps {
				fmt.Printf("rep %d/%d\n", rep+1, cfg.reps)
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
	res.LoadAverage[1] = measure.LoadAverage()
	for _, k := range []string{"a_baseline", "b_sluice_cluster", "c_sluice_typed"} {
		m := res.Measurements[k]
		fmt.Printf("%-48s best %6.2fs  %9s rows/s  runs %v\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), m.Seconds)
	}
	fmt.Printf("ratios: cluster %.2fx, typed %.2fx of the baseline (target %.1fx)\n", res.Ratios["b_vs_a"], res.Ratios["c_vs_a"], target)
	if cfg.out == "" {
		return nil
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(cfg.out, append(out, '\n'), 0o644)
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
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + chDB + ".base",
		"CREATE TABLE " + chDB + ".base (id Int64, customer String, amount Decimal(12, 2), created_at Int64, quantity Nullable(Int32), paid UInt8, status String) ENGINE = MergeTree ORDER BY id",
	} {
		if err := cl.Exec(ctx, q); err != nil {
			return err
		}
	}
	copySQL := `\copy (SELECT id, customer, amount, (extract(epoch FROM created_at) * 1000000)::bigint, quantity, paid::int, status FROM ` +
		srcTable + `) TO STDOUT WITH (FORMAT csv, NULL '\N')`
	script := fmt.Sprintf("set -o pipefail; psql %q -X -q -c %q | clickhouse-client --query %q",
		cfg.dsn, copySQL, "INSERT INTO "+chDB+".base FORMAT CSV")
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

// typedLoad plans the source, loads its chunks 4 at a time through the
// sink with the plan's schema, and commits.
func typedLoad(ctx context.Context, cfg config, rep int, want connectors.Checksum) error {
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: cfg.dsn, Table: srcTable})
	if err != nil {
		return err
	}
	defer src.Close()
	sink, err := clickhouse.NewSink(clickhouse.SinkConfig{URL: cfg.url, Table: chDB + ".typed", KeepVersions: 1})
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

// ensureSource creates the source table unless it exists with the wanted
// row count: the 7 columns of the full-load benchmark.
func ensureSource(ctx context.Context, conn *pgx.Conn, rows int64) error {
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+srcSchema); err != nil {
		return err
	}
	var n int64 = -1
	if err := conn.QueryRow(ctx, "SELECT CASE WHEN to_regclass($1) IS NULL THEN -1 ELSE (SELECT count(*) FROM "+srcTable+") END", srcTable).Scan(&n); err != nil {
		// The subquery fails when the table is missing on some servers.
		n = -1
	}
	if n == rows {
		fmt.Printf("source: reusing %s (%d rows)\n", srcTable, n)
		return nil
	}
	fmt.Printf("source: creating %s with %d rows\n", srcTable, rows)
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + srcTable,
		`CREATE TABLE ` + srcTable + ` (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL, quantity integer, paid boolean NOT NULL, status text NOT NULL)`,
		`INSERT INTO ` + srcTable + ` SELECT i,
			CASE WHEN i % 10 = 0 THEN 'Smith, ' ELSE '' END || 'customer ' || substr(md5(i::text), 1, 12),
			round((i % 100000) * 1.37 + (i % 97) / 100.0, 2),
			timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
			CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 7) % 1000 END,
			i % 3 = 0,
			(ARRAY['new', 'paid', 'shipped', 'returned', 'cancelled'])[1 + i % 5]
		FROM generate_series(1, ` + strconv.FormatInt(rows, 10) + `) AS i`,
		"VACUUM (FREEZE, ANALYZE) " + srcTable,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	return nil
}
