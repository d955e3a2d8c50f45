package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// sluiceCSV times (b), a run of the pipeline bench-pg-csv, and checks the
// committed CSV files against the source.
func (b *bench) sluiceCSV(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pg-csv", nil)
	if err != nil {
		return err
	}
	if err := verifyCSV(b.csvOut, b.src, st); err != nil {
		return err
	}
	m := b.ms["sluice_pg_to_csv"]
	m.Add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count and checksum of the committed CSV files (files.ReadChecksum) equal the source's"
	fmt.Fprintf(b.stdout, ", sluice csv %.2fs", secs)
	return nil
}

// sluiceJSONL times (e), a run of the pipeline bench-pg-jsonl, and checks
// the committed JSONL files: as many rows as the source, with the run's
// checksum (of the lines written).
func (b *bench) sluiceJSONL(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pg-jsonl", nil)
	if err != nil {
		return err
	}
	if err := verifyJSONL(b.jsonlOut, b.src, st); err != nil {
		return err
	}
	if !b.jsonlChecked {
		// Once: every value read back and compared with the source's.
		if err := readBackJSONL(b.jsonlOut, b.src); err != nil {
			return err
		}
		b.jsonlChecked = true
	}
	m := b.ms["sluice_pg_to_jsonl"]
	m.Add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count of the committed JSONL files equals the source's; their checksum (files.ReadChecksum) is the run's; " +
		"(first repetition) every line decoded with encoding/json, its typed values rendered as PostgreSQL's CSV, checksums like the source"
	fmt.Fprintf(b.stdout, ", sluice jsonl %.2fs", secs)
	return nil
}

// sluicePG times (d), a run of the pipeline bench-pg-pg, and checks the
// sink's view against the source.
func (b *bench) sluicePG(ctx context.Context, c *devcluster.Cluster) error {
	secs, cpu, st, err := timeRun(ctx, c, "bench-pg-pg", nil)
	if err != nil {
		return err
	}
	if err := verifyPG(ctx, b.conn, b.cfg.copyTable(), b.src, st); err != nil {
		return err
	}
	m := b.ms["sluice_pg_to_pg"]
	m.Add(secs, cpu)
	m.Tasks = st.Tasks
	m.Verified = "row count and checksum of the view (postgres.TableChecksum) equal the source's"
	fmt.Fprintf(b.stdout, ", sluice pg %.2fs", secs)
	return nil
}

// timeRun runs a pipeline on the cluster and waits for its commit. With
// profile set, it records a CPU profile of the run into it.
func timeRun(ctx context.Context, c *devcluster.Cluster, name string, profile io.Writer) (float64, measure.Use, protocol.RunStatus, error) {
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return 0, measure.Use{}, protocol.RunStatus{}, err
		}
		defer pprof.StopCPUProfile()
	}
	return harness.TimeRun(ctx, c.Client, name)
}

// verifyCSV compares the committed CSV dataset with the source.
func verifyCSV(root string, src connectors.Checksum, st protocol.RunStatus) error {
	cur, err := files.Current(root)
	if err != nil {
		return err
	}
	if want := filepath.Join(root, fmt.Sprintf("v%06d", st.Version)); cur != want {
		return fmt.Errorf("verify CSV: current is %s, run %s committed %s", cur, st.RunID, want)
	}
	got, err := files.ReadChecksum(cur, "csv")
	if err != nil {
		return err
	}
	if got != src || st.Rows != src.Rows {
		return fmt.Errorf("verify CSV: %s holds %d rows %s (run reported %d), source %d rows %s", cur, got.Rows, got, st.Rows, src.Rows, src)
	}
	return nil
}

// verifyJSONL checks the committed JSONL dataset: the source's row count,
// and the checksum the run reported, recomputed from the files.
func verifyJSONL(root string, src connectors.Checksum, st protocol.RunStatus) error {
	cur, err := files.Current(root)
	if err != nil {
		return err
	}
	if want := filepath.Join(root, fmt.Sprintf("v%06d", st.Version)); cur != want {
		return fmt.Errorf("verify JSONL: current is %s, run %s committed %s", cur, st.RunID, want)
	}
	got, err := files.ReadChecksum(cur, "jsonl")
	if err != nil {
		return err
	}
	if got.Rows != src.Rows || st.Rows != src.Rows || got.String() != st.Checksum {
		return fmt.Errorf("verify JSONL: %s holds %d rows %s; run %s reported %d rows %s; source %d rows", cur, got.Rows, got, st.RunID, st.Rows, st.Checksum, src.Rows)
	}
	return nil
}

// readBackJSONL decodes every line of the committed JSONL files and
// renders its values as PostgreSQL's COPY writes the source's in CSV (the
// typed forms: numbers, booleans, RFC 3339 timestamps), so that their
// checksum must be the source's.
func readBackJSONL(root string, src connectors.Checksum) error {
	cur, err := files.Current(root)
	if err != nil {
		return err
	}
	paths, err := filepath.Glob(filepath.Join(cur, "part-*.jsonl"))
	if err != nil {
		return err
	}
	names := strings.Split(columns, ", ")
	var sum connectors.Checksum
	var line []byte
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<20))
		dec.UseNumber()
		for {
			var row map[string]any
			if err := dec.Decode(&row); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				f.Close()
				return fmt.Errorf("read back %s: %w", p, err)
			}
			line = line[:0]
			for i, name := range names {
				if i > 0 {
					line = append(line, ',')
				}
				if line, err = appendCSVValue(line, row[name]); err != nil {
					f.Close()
					return fmt.Errorf("read back %s: column %s: %w", p, name, err)
				}
			}
			sum.Add(line)
		}
		f.Close()
	}
	if sum != src {
		return fmt.Errorf("verify JSONL: its values read back give %d rows %s; the source has %d rows %s", sum.Rows, sum, src.Rows, src)
	}
	return nil
}

// appendCSVValue appends a typed JSON value of the orders table as
// PostgreSQL writes it in CSV: numbers as they are, booleans t or f,
// timestamps in a UTC session's form, text quoted when needed, NULL
// empty.
func appendCSVValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return dst, nil
	case json.Number:
		return append(dst, v...), nil
	case bool:
		if v {
			return append(dst, 't'), nil
		}
		return append(dst, 'f'), nil
	case string:
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && strings.HasSuffix(v, "Z") {
			return t.UTC().AppendFormat(dst, harness.PGTimestampTZ), nil
		}
		return harness.AppendPGCSV(dst, v), nil
	}
	return dst, fmt.Errorf("unexpected JSON value %v", v)
}

// verifyPG compares the view of the PostgreSQL sink with the source.
func verifyPG(ctx context.Context, conn *pgx.Conn, copyTable string, src connectors.Checksum, st protocol.RunStatus) error {
	got, err := postgres.TableChecksum(ctx, conn, "SELECT "+columns+" FROM "+copyTable)
	if err != nil {
		return err
	}
	if got != src || st.Rows != src.Rows {
		return fmt.Errorf("verify PG: %s holds %d rows %s (run reported %d), source %d rows %s", copyTable, got.Rows, got, st.Rows, src.Rows, src)
	}
	return nil
}
