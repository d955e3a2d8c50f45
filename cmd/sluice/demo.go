package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// demoSpec is the pipeline sluice demo runs by default.
const demoSpec = `# The pipeline sluice demo runs: a full load of a directory of JSONL files
# into a versioned dataset directory, 4 files per task.
name: demo-events
pattern: full_load
description: copy the generated events into a versioned dataset
source:
  kind: files
  path: in
  format: jsonl
sink:
  kind: files
  path: out
  format: jsonl
  keep_versions: 3
partitioning:
  max_files: 4
retry:
  max_attempts: 3
  backoff: 1s
`

// demoIcebergSpec is the pipeline sluice demo --sink iceberg runs: the same
// files into an Iceberg table of a local warehouse, its columns declared
// (JSONL files do not describe theirs), with the SQLite catalog.
const demoIcebergSpec = `# The pipeline sluice demo --sink iceberg runs: a full load of a directory of
# JSONL files into an Apache Iceberg table (typed Parquet, zstd) in a local
# warehouse with a SQLite catalog, 4 files per task.
name: demo-events
pattern: full_load
description: copy the generated events into an Iceberg table
source:
  kind: files
  path: in
  format: jsonl
sink:
  kind: iceberg
  table: demo.events
  warehouse: %s
  keep_versions: 3
  columns:
    - {name: id, type: int64, not_null: true}
    - {name: user, type: string}
    - {name: kind, type: string}
    - {name: amount, type: decimal, precision: 12, scale: 2}
    - {name: currency, type: string}
    - {name: country, type: string}
    - {name: tags, type: list, elem: {name: element, type: string}}
    - {name: note, type: string}
    - {name: at, type: timestamptz}
partitioning:
  max_files: 4
retry:
  max_attempts: 3
  backoff: 1s
`

// demoOptions are the flags of `sluice demo`.
type demoOptions struct {
	dir, sink                   string
	rows, files, workers, slots int
	lf                          logFlags
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "load a generated 240k-row dataset on an embedded cluster and verify it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dir, "dir", ".sluice-demo", "where the demo writes its data, state and traces (emptied first)")
	fs.StringVar(&o.sink, "sink", "files", "where the demo loads the events: files (a versioned JSONL dataset) or iceberg (an Iceberg table in a local warehouse)")
	fs.IntVar(&o.rows, "rows", 240_000, "rows to generate")
	fs.IntVar(&o.files, "files", 48, "files to spread them over")
	fs.IntVar(&o.workers, "workers", 2, "workers")
	fs.IntVar(&o.slots, "slots", 2, "tasks per worker at once")
	o.lf.register(fs)
	return cmd
}

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	lf := o.lf
	if o.rows < 1 || o.files < 1 || o.workers < 1 || o.slots < 1 {
		return errors.New("demo: --rows, --files, --workers and --slots must be at least 1")
	}
	if o.sink != "files" && o.sink != "iceberg" {
		return fmt.Errorf("demo: --sink %q: want files or iceberg", o.sink)
	}
	if lf.level == "info" {
		lf.level = "warn" // the demo prints its own story; logs only for trouble
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	root, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if pid, held := devcluster.LockHolder(filepath.Join(root, "cluster")); held {
		return fmt.Errorf("demo: another demo (pid %d) runs in %s: wait for it, or give --dir another directory", pid, root)
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("empty %s: %w", root, err)
	}
	in := filepath.Join(root, "in")
	fmt.Fprintf(stdout, "1/5 generating %d rows in %d JSONL files under %s\n", o.rows, o.files, in)
	genBytes, err := generateEvents(in, o.rows, o.files)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "    %s written\n", humanBytes(genBytes))
	specPath := filepath.Join(root, "demo.yaml")
	spec := demoSpec
	lake := filepath.Join(root, "lake")
	if o.sink == "iceberg" {
		spec = fmt.Sprintf(demoIcebergSpec, lake)
	}
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		return err
	}

	traceFile := filepath.Join(root, "traces.jsonl")
	tf, err := os.Create(traceFile)
	if err != nil {
		return err
	}
	defer tf.Close()
	tp, err := telemetry.Setup(ctx, telemetry.Config{Service: "sluice-demo", File: tf})
	if err != nil {
		return err
	}
	reg := newRegistryIn("sluice demo")
	log = slog.New(reg.LogHandler(log.Handler()))
	var final protocol.RunStatus
	err = devcluster.Run(ctx, devcluster.Config{
		DataDir: filepath.Join(root, "cluster"), Workers: o.workers, Slots: o.slots,
		Log: log, Tracer: tp, Registry: reg, Roles: true, Sign: true,
	}, func(ctx context.Context, l *devcluster.Cluster) error {
		fmt.Fprintf(stdout, "2/5 embedded cluster up: NATS %s, 1 Raft coordinator, %d workers x %d slots\n", l.NATSURL, o.workers, o.slots)
		specs, err := loadSpecs([]string{specPath}, reg, nil, stderr)
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := l.Client.Apply(actx, specs[0]); err != nil {
			return fmt.Errorf("apply demo pipeline: %w", err)
		}
		res, err := l.Client.Run(actx, protocol.RunRequest{Pipeline: specs[0].Name})
		if err != nil {
			return fmt.Errorf("start demo run: %w", err)
		}
		fmt.Fprintf(stdout, "3/5 run %s: full load split into %d bounded tasks (spec: %s)\n", res.RunID, res.Tasks, specPath)
		p := newProgress(stdout)
		final, err = l.Client.WaitRun(ctx, res.RunID, 200*time.Millisecond, p.update)
		p.done()
		return err
	})
	if serr := waitShutdown(ctx, 10*time.Second, tp.Shutdown); serr != nil {
		log.Warn("flush traces", "err", serr)
	}
	if err != nil {
		return err
	}
	if final.State != protocol.RunCommitted {
		return fmt.Errorf("demo run %s %s: %s", final.RunID, final.State, final.Error)
	}
	fmt.Fprintf(stdout, "4/5 committed dataset version %d: %d rows, %s\n", final.Version, final.Rows, humanBytes(final.Bytes))

	if o.sink == "iceberg" {
		return verifyIcebergDemo(ctx, stdout, in, lake, final, traceFile, specPath)
	}
	out := filepath.Join(root, "out")
	if err := verifyDemo(stdout, in, out, final); err != nil {
		return err
	}
	spans, _ := countSpans(traceFile, final.TraceID)
	cur, _ := files.Current(out)
	fmt.Fprintf(stdout, "\nWhere things are:\n  data:    %s (-> %s), earlier versions kept beside it\n  marker:  %s (written after the commit)\n  trace:   %s, %d spans in %s\n  spec:    %s\n",
		filepath.Join(out, "current"), filepath.Base(cur), final.Marker, final.TraceID, spans, traceFile, specPath)
	fmt.Fprintf(stdout, "\nNext: `make build`, then `bin/sluice dev` keeps a cluster running; in another shell, from the same directory,\n`bin/sluice apply -f %s`, `bin/sluice run demo-events --wait` and `bin/sluice status`.\n", specPath)
	return nil
}

// verifyDemo compares the committed dataset with the source: row count and
// order-independent checksum, recomputed from the files on disk.
func verifyDemo(stdout io.Writer, in, out string, st protocol.RunStatus) error {
	src, err := files.ReadChecksum(in, "jsonl")
	if err != nil {
		return fmt.Errorf("verify: checksum source: %w", err)
	}
	cur, err := files.Current(out)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	dst, err := files.ReadChecksum(cur, "jsonl")
	if err != nil {
		return fmt.Errorf("verify: checksum output: %w", err)
	}
	fmt.Fprintf(stdout, "5/5 verify: source %d rows checksum %s, output %d rows checksum %s, run reported %d rows checksum %s\n",
		src.Rows, src, dst.Rows, dst, st.Rows, st.Checksum)
	if src != dst || st.Rows != src.Rows || st.Checksum != src.String() {
		return errors.New("verify: the output does not match the source")
	}
	fmt.Fprintln(stdout, "    OK: every source row is in the output exactly once")
	return nil
}

// verifyIcebergDemo compares the Iceberg table with the source: the
// current snapshot's row count, and the run's checksum (of the rows the
// sink received) with the source files'.
func verifyIcebergDemo(ctx context.Context, stdout io.Writer, in, lake string, st protocol.RunStatus, traceFile, specPath string) error {
	src, err := files.ReadChecksum(in, "jsonl")
	if err != nil {
		return fmt.Errorf("verify: checksum source: %w", err)
	}
	cfg := iceberg.Config{Table: "demo.events", Warehouse: lake}
	sn, err := iceberg.CurrentSnapshot(ctx, cfg)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(stdout, "5/5 verify: source %d rows checksum %s; table snapshot %d holds %d rows in %d Parquet files; run reported %d rows checksum %s\n",
		src.Rows, src, sn.ID, sn.Rows, sn.Files, st.Rows, st.Checksum)
	if sn.Rows != src.Rows || sn.Run != st.RunID || st.Rows != src.Rows || st.Checksum != src.String() {
		return errors.New("verify: the table does not match the source")
	}
	fmt.Fprintln(stdout, "    OK: every source row is in the table exactly once")
	spans, _ := countSpans(traceFile, st.TraceID)
	fmt.Fprintf(stdout, "\nWhere things are:\n  table:   demo.events at %s (catalog %s)\n  trace:   %s, %d spans in %s\n  spec:    %s\n",
		sn.Location, filepath.Join(lake, "catalog.db"), st.TraceID, spans, traceFile, specPath)
	fmt.Fprintf(stdout, "\nRead it with DuckDB: INSTALL iceberg; LOAD iceberg; SELECT count(*) FROM iceberg_scan('%s');\n", sn.Metadata)
	return nil
}

func countSpans(path, traceID string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var span struct {
			SpanContext struct{ TraceID string } `json:"SpanContext"`
		}
		if err := dec.Decode(&span); err != nil {
			break
		}
		if span.SpanContext.TraceID == traceID {
			n++
		}
	}
	return n, nil
}

type event struct {
	ID       int64    `json:"id"`
	User     string   `json:"user"`
	Kind     string   `json:"kind"`
	Amount   float64  `json:"amount"`
	Currency string   `json:"currency"`
	Country  *string  `json:"country"`
	Tags     []string `json:"tags"`
	Note     string   `json:"note"`
	At       string   `json:"at"`
}

// generateEvents writes rows deterministic events over n files.
func generateEvents(dir string, rows, n int) (int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	r := rand.New(rand.NewPCG(42, 7))
	kinds := []string{"view", "click", "purchase", "refund", "signup"}
	currencies := []string{"EUR", "USD", "GBP", "JPY", "CHF"}
	countries := []string{"FR", "DE", "JP", "BR", "US", "NG", "IN"}
	notes := []string{"ok", "déjà vu", "naïve café", "日本語のメモ", "emoji 🚀", `quote "x"`, "tab\tsep", ""}
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var total int64
	id := int64(0)
	for f := range n {
		per := rows / n
		if f < rows%n {
			per++
		}
		var buf bytes.Buffer
		for range per {
			id++
			e := event{
				ID: id, User: fmt.Sprintf("u%05d", r.IntN(50000)), Kind: kinds[r.IntN(len(kinds))],
				Amount: float64(r.IntN(1_000_000)) / 100, Currency: currencies[r.IntN(len(currencies))],
				Note: notes[r.IntN(len(notes))], At: base.Add(time.Duration(id) * time.Second).Format(time.RFC3339),
			}
			if c := r.IntN(len(countries) + 1); c < len(countries) {
				e.Country = &countries[c]
			}
			for range r.IntN(3) {
				e.Tags = append(e.Tags, kinds[r.IntN(len(kinds))])
			}
			b, err := json.Marshal(e)
			if err != nil {
				return 0, err
			}
			buf.Write(b)
			buf.WriteByte('\n')
		}
		name := filepath.Join(dir, fmt.Sprintf("events-%04d.jsonl", f))
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			return 0, err
		}
		total += int64(buf.Len())
	}
	return total, nil
}
