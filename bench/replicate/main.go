// Command replicate benchmarks Sluice's Passthrough Replicator against the
// tools a user would otherwise run, all in the same run on the same data:
//
//	(a) cp -r of a tree of --files files, --gib GiB        baseline of (b)
//	(b) Sluice files passthrough of the same tree          through an
//	    all-in-one cluster: every file staged, fsynced, read back and
//	    compared, then renamed into place at the commit
//	(c) COPY (FORMAT binary) TO STDOUT | COPY FROM STDIN,
//	    piped between two connections in Go                baseline of (d)
//	(d) Sluice PostgreSQL -> PostgreSQL passthrough         through the same
//	    cluster: COPY binary chunks on one snapshot, in parallel, into a
//	    version of the target made from the source's catalog, its primary
//	    key built after the rows, exposed by the view
//
// (a') and (c') are the baselines finished as (b) and (d) are: cp -r then
// sync -f of the target's file system (Sluice fsyncs every file), and the
// piped COPY then the source's primary key built (Sluice's target has it).
// A passthrough takes no data contract (it moves bytes undecoded); the
// cost of one on a load is bench/contract's.
//
// Before each of (a), (a') and (b) it syncs and drops the page cache (as
// root; --drop-caches), so that each reads the source tree from the disk;
// where it cannot, each reads it from the page cache, and the results say
// which.
//
// It writes a tree of random bytes in nested directories (with a Delta log,
// hidden files and _SUCCESS) into a work directory and creates (or, with
// --keep, reuses) a table of --rows rows and 7 mixed columns in the schema
// --schema (sluice_bench_replicate), writing into <schema>_out. It runs
// each measurement --reps times interleaved and keeps the best (the
// machine is shared), verifies every output (trees by a checksum of every
// name and byte, tables by row count and checksum), prints the rates and
// each ratio to its baseline, and writes every figure to --out. Run it with
// `make bench-replicate`; --smoke runs it at a small size with the same
// checks (`make bench-smoke`).
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
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/files/filestest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
)

// columns are the source table's columns.
const columns = harness.OrdersColumns

// Targets of issue 14 item 6.
const (
	targetFiles = 0.8 // Sluice files passthrough vs cp -r
	targetPG    = 1.0 // Sluice PG -> PG passthrough vs piped COPY binary
)

type config struct {
	smoke       bool
	schema      string
	rows        int64
	files       int
	gib         float64
	reps        int
	keep        bool
	out         string
	dsn         string
	dir         string
	workers     int
	slots       int
	targetRows  int64
	targetBytes int64
	only        string
	dropCaches  bool
	profile     string
}

// srcTable is the source table.
func (c config) srcTable() string { return c.schema + ".replicate_src" }

// outSchema holds everything the benchmark writes into PostgreSQL; it is
// dropped before and after each run.
func (c config) outSchema() string { return c.schema + "_out" }

// pipeTable is the target of the piped COPY, (c).
func (c config) pipeTable() string { return c.outSchema() + ".replicate_pipe" }

// copyTable is the view of the Sluice passthrough, (d).
func (c config) copyTable() string { return c.outSchema() + ".replicate_copy" }

func main() {
	var cfg config
	flag.BoolVar(&cfg.smoke, "smoke", false, "a small run (make bench-smoke): 40 files of 16 MiB in all, 20k rows, 1 rep, schema sluice_bench_smoke_replicate, results in a temporary file; flags given override it")
	flag.StringVar(&cfg.schema, "schema", "sluice_bench_replicate", "the schema of the source table, which the benchmark creates (and drops unless --keep); it writes into <schema>_out")
	flag.Int64Var(&cfg.rows, "rows", 2_000_000, "rows in the source table")
	flag.IntVar(&cfg.files, "files", 1000, "files in the source tree")
	flag.Float64Var(&cfg.gib, "gib", 2, "GiB in the source tree")
	flag.IntVar(&cfg.reps, "reps", 2, "repetitions of each measurement; the best counts")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the source table for the next run (it is reused when its row count matches)")
	flag.StringVar(&cfg.out, "out", "bench/results/replicate.json", "where to write the results (JSON)")
	flag.StringVar(&cfg.dsn, "dsn", pgtest.DSN(), "PostgreSQL to use ($SLUICE_TEST_PG)")
	flag.StringVar(&cfg.dir, "dir", "", "work directory for the trees (default: a temporary one, removed); the source tree, a copy and the cluster's data at once")
	flag.IntVar(&cfg.workers, "workers", 2, "Sluice workers")
	flag.IntVar(&cfg.slots, "slots", 2, "task slots per worker")
	flag.Int64Var(&cfg.targetRows, "target-rows", 250_000, "partitioning.target_rows of the table passthrough")
	flag.Int64Var(&cfg.targetBytes, "target-bytes", 128<<20, "partitioning.target_bytes of the files passthrough")
	flag.BoolVar(&cfg.dropCaches, "drop-caches", true, "before each files measurement, sync and drop the page cache (/proc/sys/vm/drop_caches, as root) so that cp -r, cp -r + sync and Sluice all read the source tree from the disk; where it cannot, all read it from the page cache")
	flag.StringVar(&cfg.profile, "cpuprofile", "", "profile the CPU of the last repetition of each Sluice passthrough (the whole cluster's, in this process) into FILE.<measurement>.pprof")
	flag.StringVar(&cfg.only, "only", "", `"files" or "pg": time only that passthrough and its baselines`)
	flag.Parse()
	if cfg.smoke {
		err := harness.Smoke(flag.CommandLine, "replicate", map[string]string{
			"schema": "sluice_bench_smoke_replicate", "rows": "20000", "files": "40", "gib": "0.015625", "reps": "1",
			"target-rows": "5000", "target-bytes": "4194304",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "replicate:", err)
			os.Exit(2)
		}
	}
	if err := harness.CheckSchema(cfg.schema); err != nil {
		fmt.Fprintln(os.Stderr, "replicate: --schema:", err)
		os.Exit(2)
	}
	if cfg.only != "" && cfg.only != "files" && cfg.only != "pg" {
		fmt.Fprintln(os.Stderr, `replicate: --only must be "files" or "pg"`)
		os.Exit(2)
	}
	if cfg.rows < 1 || cfg.files < 1 || cfg.gib <= 0 || cfg.reps < 1 || cfg.workers < 1 || cfg.slots < 1 || cfg.targetRows < 1 || cfg.targetBytes < 1 {
		fmt.Fprintln(os.Stderr, "replicate: --rows, --files, --gib, --reps, --workers, --slots, --target-rows and --target-bytes must be above 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "replicate:", err)
		os.Exit(1)
	}
}

// bench holds what the measurements share.
type bench struct {
	cfg    config
	stdout io.Writer
	conn   *pgx.Conn // setup, the pipe's target, verification and cleanup
	dir    string    // the work directory
	// srcTree is the source tree, treeSum its checksum.
	srcTree string
	treeSum filestest.TreeSum
	// src is the source table's checksum.
	src connectors.Checksum
	ms  map[string]*measurement
	// pageCache says what the files measurements found in the page
	// cache (see coldCache).
	pageCache string
}

// coldCache drops the page cache before a files measurement, after a sync
// (not timed), so that each reads the source tree from the disk; where it
// cannot (not root, --drop-caches=false), every files measurement reads
// the tree from the page cache, where writing it left it.
func (b *bench) coldCache() {
	if !b.cfg.dropCaches {
		if b.pageCache == "" {
			b.pageCache = "not dropped (--drop-caches=false): every files measurement read the source tree from the page cache"
		}
		return
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		b.cfg.dropCaches = false
		b.pageCache = fmt.Sprintf("not dropped (%v): every files measurement read the source tree from the page cache", err)
		return
	}
	b.pageCache = "synced and dropped (/proc/sys/vm/drop_caches) before each files measurement: each read the source tree from the disk"
}

// run sets up the benchmark (the source tree and table, the output schema,
// an all-in-one cluster), runs the measurements cfg asks for, and writes
// the results.
func run(ctx context.Context, cfg config, stdout io.Writer) error {
	began := time.Now()
	hdr := harness.NewHeader("replicate", cfg.smoke,
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
	b := &bench{cfg: cfg, stdout: stdout, conn: conn}
	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sluice-bench-replicate-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if b.dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if cfg.only != "pg" {
		b.srcTree = filepath.Join(b.dir, "src")
		if b.treeSum, err = writeTree(b.srcTree, cfg.files, int64(cfg.gib*(1<<30)), stdout); err != nil {
			return err
		}
	}
	if cfg.only != "files" {
		if !cfg.keep {
			defer b.drop(cfg.schema)
		}
		if err := harness.Orders(ctx, conn, cfg.schema, "replicate_src", cfg.rows, stdout); err != nil {
			return err
		}
		defer b.drop(cfg.outSchema())
		if err := b.resetOut(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "checksumming the source table ... ")
		if b.src, err = postgres.TableChecksum(ctx, conn, "SELECT "+columns+" FROM "+cfg.srcTable()); err != nil {
			return err
		}
		if b.src.Rows != cfg.rows {
			return fmt.Errorf("source has %d rows, want %d", b.src.Rows, cfg.rows)
		}
		fmt.Fprintf(stdout, "%d rows\n", b.src.Rows)
	}

	b.ms = map[string]*measurement{
		"cp_r":               {Key: "cp_r", Label: "(a) cp -r"},
		"cp_r_sync":          {Key: "cp_r_sync", Label: "(a') cp -r, then sync -f"},
		"sluice_files":       {Key: "sluice_files", Label: "(b) Sluice files passthrough"},
		"piped_copy_binary":  {Key: "piped_copy_binary", Label: "(c) COPY binary TO STDOUT | FROM STDIN (Go, 2 conns)"},
		"piped_copy_then_pk": {Key: "piped_copy_then_pk", Label: "(c') the same, then the primary key"},
		"sluice_pg_to_pg":    {Key: "sluice_pg_to_pg", Label: "(d) Sluice PG -> PG passthrough"},
	}

	reg := connectors.NewRegistry()
	files.Register(reg)
	postgres.Register(reg)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return devcluster.Run(ctx, devcluster.Config{
		DataDir: filepath.Join(b.dir, "cluster"), Workers: cfg.workers, Slots: cfg.slots,
		Log: log, Tracer: noop.NewTracerProvider(), Registry: reg,
	}, func(ctx context.Context, c *devcluster.Cluster) error {
		apply := func(text string) error {
			spec, err := pipeline.Load([]byte(text), "bench", reg, os.LookupEnv)
			if err != nil {
				return err
			}
			if _, err := c.Client.Apply(ctx, spec); err != nil {
				return fmt.Errorf("apply %s: %w", spec.Name, err)
			}
			return nil
		}
		if cfg.only != "files" {
			err := apply(fmt.Sprintf("name: bench-pass-pg\npattern: passthrough\nsource: {kind: postgres, dsn: %q, table: %s}\n"+
				"sink: {kind: postgres, dsn: %q, table: %s, keep_versions: 1}\npartitioning: {target_rows: %d}\nretry: {max_attempts: 3, backoff: 1s}\n",
				cfg.dsn, cfg.srcTable(), cfg.dsn, cfg.copyTable(), cfg.targetRows))
			if err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "cluster: embedded NATS, 1 coordinator, %d workers x %d slots; target_bytes %d, target_rows %d\n",
			cfg.workers, cfg.slots, cfg.targetBytes, cfg.targetRows)
		for rep := 1; rep <= cfg.reps; rep++ {
			fmt.Fprintf(stdout, "rep %d/%d:", rep, cfg.reps)
			if cfg.only != "pg" {
				if err := b.copyTree(ctx); err != nil {
					return err
				}
				if err := b.sluiceFiles(ctx, c, rep, apply); err != nil {
					return err
				}
			}
			if cfg.only != "files" {
				if err := b.pipedCopy(ctx); err != nil {
					return err
				}
				if err := b.sluicePG(ctx, c); err != nil {
					return err
				}
			}
			fmt.Fprintln(stdout)
		}
		return writeResults(cfg, stdout, hdr, b.ms, b.treeSum, b.pageCache, began)
	})
}

// resetOut drops and recreates the output schema.
func (b *bench) resetOut(ctx context.Context) error {
	for _, sql := range []string{
		"DROP SCHEMA IF EXISTS " + b.cfg.outSchema() + " CASCADE",
		"CREATE SCHEMA " + b.cfg.outSchema(),
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return err
		}
	}
	return nil
}

// drop drops a schema with everything in it, on its own deadline (the
// run's context may be done).
func (b *bench) drop(schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fmt.Fprintf(b.stdout, "drop %s: %v\n", schema, err)
	}
}
