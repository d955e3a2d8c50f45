// Command lake benchmarks full loads from PostgreSQL into Apache Iceberg
// tables against what a user would otherwise run, all in the same run on
// the same table:
//
//	(a) psql \copy (SELECT ...) TO file CSV        the baseline of (b), (c)
//	(b) Sluice PostgreSQL -> Iceberg, local disk   through an all-in-one
//	    cluster: typed Parquet (zstd), SQLite catalog
//	(c) Sluice PostgreSQL -> Iceberg on S3         the same into a bucket of
//	    the S3 server `make services` starts (versitygw)
//	(d) the sink's S3 upload of (c)'s Parquet bytes, as one object
//	(e) a bare multipart upload of the same bytes with the same SDK client
//	    settings, 8 MiB parts four at a time    the baseline of (d)
//
// It creates (or, with --keep, reuses) a table of --rows rows and 7 mixed
// columns in the schema --schema (sluice_bench_lake), runs each
// measurement --reps times interleaved and keeps the best. It checks every
// Sluice load: the run's row count and checksum equal the source's, and
// on the first repetition the table read back by iceberg-go at its
// snapshot, every value rendered as PostgreSQL's CSV, checksums like the
// source. Figures go to --out. Run it with `make bench-lake`; --smoke runs
// it at a small size with the same checks (`make bench-smoke`).
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
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/connectors/iceberg/s3test"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
)

// columns are the source table's columns.
const columns = harness.OrdersColumns

// Targets of issue 12 item 6.
const (
	targetLocal  = 0.8 // Sluice PG -> Iceberg on local disk vs psql \copy to CSV
	targetUpload = 0.8 // the sink's S3 upload vs a bare multipart upload
)

type config struct {
	smoke      bool
	schema     string
	rows       int64
	reps       int
	keep       bool
	out        string
	dsn        string
	s3         string
	workers    int
	slots      int
	targetRows int64
	psql       string
	cpuProfile string
}

func (c config) srcTable() string { return c.schema + ".lake_src" }

// bucket is the benchmark's bucket, made from its schema's name.
func (c config) bucket() string {
	b := []byte(c.schema)
	for i, ch := range b {
		if ch == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 20k rows, 1 rep, 4 tasks a load, schema sluice_bench_smoke_lake, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_lake", "the schema of the source table, which the benchmark creates (and drops unless --keep); also names its bucket")
	flag.Int64Var(&cfg.rows, "rows", 2_000_000, "rows in the source table")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each measurement; the best counts")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the source table for the next run (it is reused when its row count matches)")
	flag.StringVar(&cfg.out, "out", "bench/results/lake.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to use ($SLUICE_TEST_PG)")
	flag.StringVar(&cfg.s3, "s3", s3test.Endpoint(), "the S3 server ($SLUICE_TEST_S3); credentials from the AWS environment, else the test server's")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.targetRows, "target-rows", 250_000, "partitioning.target_rows of the Sluice pipelines")
	flag.StringVar(&cfg.psql, "psql", "", "psql binary (default: from PATH, else /usr/lib/postgresql/15/bin/psql)")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "after the timed runs, profile one more run of the local load into FILE (not timed)")
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "lake", map[string]string{
			"schema": "sluice_bench_smoke_lake", "rows": "20000", "reps": "1", "target-rows": "5000",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "lake:", err)
			os.Exit(2)
		}
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "lake: --schema:", err)
		os.Exit(2)
	}
	if cfg.rows < 1 || cfg.reps < 1 || cfg.workers < 1 || cfg.slots < 1 || cfg.targetRows < 1 {
		fmt.Fprintln(os.Stderr, "lake: --rows, --reps, --workers, --slots and --target-rows must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lake:", err)
		os.Exit(1)
	}
}

// bench holds what the measurements share.
type bench struct {
	cfg    config
	stdout io.Writer
	conn   *pgx.Conn
	psql   string
	src    connectors.Checksum
	dir    string
	ms     map[string]*measurement
	// local and s3 are the Iceberg tables of (b) and (c).
	local, s3 iceberg.Config
	// csvBytes is the size of the source as CSV, from (a); parquetBytes
	// the size of (c)'s data files.
	csvBytes, parquetBytes int64
	checked                map[string]bool
}

// run sets up the benchmark (the source table, a bucket, an all-in-one
// cluster), runs the measurements and writes the results.
func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	hdr := harness.NewHeader("lake", cfg.smoke,
		fmt.Sprintf("shared, noisy machine: best of %d interleaved repetitions; trust the ratios more than the absolute figures", cfg.reps))
	psql, err := harness.FindPSQL(cfg.psql)
	if err != nil {
		return err
	}
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		os.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
		os.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	}
	if os.Getenv("AWS_REGION") == "" {
		os.Setenv("AWS_REGION", s3test.Region)
	}
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
	b := &bench{cfg: cfg, stdout: stdout, conn: conn, psql: psql, checked: map[string]bool{}}
	if !cfg.keep {
		defer b.drop(cfg.schema)
	}
	if err := b.ensureSource(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checksumming the source ... ")
	if b.src, err = postgres.TableChecksum(ctx, conn, "SELECT "+columns+" FROM "+cfg.srcTable()); err != nil {
		return err
	}
	if b.src.Rows != cfg.rows {
		return fmt.Errorf("source has %d rows, want %d", b.src.Rows, cfg.rows)
	}
	fmt.Fprintf(stdout, "%d rows\n", b.src.Rows)
	if err := b.newBucket(ctx); err != nil {
		return err
	}
	defer b.removeBucket()

	if b.dir, err = os.MkdirTemp("", "sluice-bench-lake-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	b.local = iceberg.Config{Table: "bench.lake", Warehouse: filepath.Join(b.dir, "warehouse")}
	b.s3 = iceberg.Config{Table: "bench.lake", Warehouse: "s3://" + cfg.bucket() + "/warehouse",
		Catalog: "sqlite:" + filepath.Join(b.dir, "s3-catalog.db"), S3: iceberg.S3Config{Endpoint: cfg.s3}}
	b.ms = map[string]*measurement{
		"psql_copy_to_csv":     {Label: `(a) psql \copy (select ...) to file csv`},
		"sluice_iceberg_local": {Label: "(b) Sluice PG -> Iceberg, local disk (typed Parquet, zstd; SQLite catalog)"},
		"sluice_iceberg_s3":    {Label: "(c) Sluice PG -> Iceberg on S3 (versitygw; SQLite catalog)"},
		"sink_s3_upload":       {Label: "(d) the sink's S3 upload of (c)'s Parquet bytes, one object"},
		"bare_s3_upload":       {Label: "(e) bare multipart upload of the same bytes, same SDK client settings, 8 MiB parts, 4 at a time"},
	}

	reg := connectors.NewRegistry()
	postgres.Register(reg)
	iceberg.Register(reg)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return devcluster.Run(ctx, devcluster.Config{
		DataDir: filepath.Join(b.dir, "cluster"), Workers: cfg.workers, Slots: cfg.slots,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: reg,
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		common := fmt.Sprintf("pattern: full_load\nsource: {kind: postgres, dsn: %q, table: %s}\npartitioning: {target_rows: %d}\nretry: {max_attempts: 3, backoff: 1s}\n",
			cfg.dsn, cfg.srcTable(), cfg.targetRows)
		for _, text := range []string{
			"name: bench-lake-local\n" + common + fmt.Sprintf("sink: {kind: iceberg, table: %s, warehouse: %q, keep_versions: 1}\n", b.local.Table, b.local.Warehouse),
			"name: bench-lake-s3\n" + common + fmt.Sprintf("sink: {kind: iceberg, table: %s, warehouse: %q, catalog: %q, s3: {endpoint: %q}, keep_versions: 1}\n",
				b.s3.Table, b.s3.Warehouse, b.s3.Catalog, cfg.s3),
		} {
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
			for _, step := range []func(context.Context, *devcluster.Cluster) error{b.psqlCopy, b.sluiceLocal, b.sluiceS3, b.uploads} {
				if err := step(ctx, c); err != nil {
					return err
				}
			}
			fmt.Fprintln(stdout)
		}
		if err := b.writeResults(hdr, began); err != nil {
			return err
		}
		if cfg.cpuProfile != "" {
			return b.profile(ctx, c)
		}
		return nil
	})
}

// drop drops a schema the benchmark created, with everything in it.
func (b *bench) drop(schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fmt.Fprintf(os.Stderr, "lake: drop schema %s: %v\n", schema, err)
	}
}
