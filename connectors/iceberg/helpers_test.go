package iceberg

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/iceberg/s3test"
	"github.com/sluicehq/sluice/protocol"
)

// localConfig is a table in a warehouse of the test's own, on local disk,
// with the default SQLite catalog.
func localConfig(t *testing.T, name string) SinkConfig {
	t.Helper()
	return SinkConfig{Config: Config{Table: "test." + name, Warehouse: t.TempDir()}}
}

// s3Config is a table in a bucket of the test's own on the test S3 server,
// with a SQLite catalog on local disk.
func s3Config(t *testing.T, name string) (SinkConfig, string) {
	t.Helper()
	endpoint, bucket := s3test.Bucket(t)
	return SinkConfig{Config: Config{
		Table: "test." + name, Warehouse: "s3://" + bucket + "/wh",
		Catalog: "sqlite:" + filepath.Join(t.TempDir(), "catalog.db"),
		S3:      S3Config{Endpoint: endpoint},
	}}, bucket
}

func newSink(t *testing.T, cfg SinkConfig) *Sink {
	t.Helper()
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// idv is the schema of the conformance rows: id, and a text v.
var idv = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "v", Type: protocol.TypeString},
}}

// idvBatches are CSV batches of (id, v) in PostgreSQL's COPY form:
// multi-line and quoted text, NULL, the empty string.
func idvBatches(n int) []connectors.Batch {
	var bs []connectors.Batch
	for i := range n {
		raw := fmt.Appendf(nil, "%d,\"multi\nline, %d\"\n%d,\n%d,\"\"\n", 3*i, i, 3*i+1, 3*i+2)
		bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "v"}, Rows: 3})
	}
	return bs
}

// load opens the table with the configuration's catalog.
func load(t *testing.T, cfg Config) *table.Table {
	t.Helper()
	l, err := openLake(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	tbl, err := l.load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// scanRecords reads the table's current snapshot (or snapshot id, when
// not 0) whole, with iceberg-go's own scan.
func scanRecords(t *testing.T, tbl *table.Table, id int64) arrow.Table {
	t.Helper()
	var opts []table.ScanOption
	if id != 0 {
		opts = append(opts, table.WithSnapshotID(id))
	}
	scan := tbl.Scan(opts...)
	defer scan.Close()
	at, err := scan.ToArrowTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(at.Release)
	return at
}

// csvChecksum renders every row of at as PostgreSQL's COPY would write
// it in CSV (NULL empty, "" for the empty string, quotes where needed)
// and sums their hashes: the checksum the sink computes from the rows it
// received, so comparable with a run's.
func csvChecksum(t *testing.T, at arrow.Table) connectors.Checksum {
	t.Helper()
	var sum connectors.Checksum
	tr := array.NewTableReader(at, 1024)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		for r := 0; r < int(rec.NumRows()); r++ {
			var line []byte
			for c := 0; c < int(rec.NumCols()); c++ {
				if c > 0 {
					line = append(line, ',')
				}
				col := rec.Column(c)
				if col.IsNull(r) {
					continue
				}
				line = append(line, pgCSVField(col.ValueStr(r))...)
			}
			sum.Add(line)
		}
	}
	return sum
}

func pgCSVField(v string) string {
	if v == "" || strings.ContainsAny(v, ",\"\n\r") {
		return `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
	}
	return v
}

// readCommitted is the conformance suite's ReadCommitted of a table.
func readCommitted(cfg Config) func(t *testing.T, s connectors.Sink) (connectors.Checksum, error) {
	return func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
		tbl := load(t, cfg)
		if tbl == nil || tbl.CurrentSnapshot() == nil {
			return connectors.Checksum{}, fmt.Errorf("table %s has no snapshot", cfg.Table)
		}
		return csvChecksum(t, scanRecords(t, tbl, 0)), nil
	}
}

// write writes one task attempt of batches and closes it.
func write(t *testing.T, s *Sink, run, task string, attempt int, sc *protocol.Schema, bs []connectors.Batch) connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: task, Attempt: attempt, Pipeline: "p", Schema: sc})
	if err != nil {
		t.Fatalf("OpenTask %s/%s: %v", run, task, err)
	}
	for _, b := range bs {
		if err := w.Write(ctx, b); err != nil {
			t.Fatalf("Write %s/%s: %v", run, task, err)
		}
	}
	out, err := w.Close(ctx)
	if err != nil {
		t.Fatalf("Close %s/%s: %v", run, task, err)
	}
	return out
}

// commit commits a full load of outs as version v.
func commit(t *testing.T, s *Sink, run string, v int64, outs ...connectors.TaskOutput) {
	t.Helper()
	if _, err := s.Commit(context.Background(), connectors.CommitRequest{RunID: run, Pipeline: "p", Version: v, Tasks: outs, Schema: idv}); err != nil {
		t.Fatalf("Commit %s: %v", run, err)
	}
}

// idvWant is the rows of idvBatches(n), batch by batch, from the values
// the test writes: a text with a newline and a comma, a NULL, an empty
// text.
func idvWant(n int) []conformance.Table {
	var ts []conformance.Table
	for i := range n {
		ts = append(ts, conformance.Table{Columns: []string{"id", "v"}, Rows: [][]string{
			{fmt.Sprint(3 * i), fmt.Sprintf("multi\nline, %d", i)}, {fmt.Sprint(3*i + 1), conformance.Null}, {fmt.Sprint(3*i + 2), ""}}})
	}
	return ts
}

// readTable reads every row of the table's current snapshot with
// iceberg-go's own scan, or fails when the table has none.
func readTable(cfg Config) func(t *testing.T) (conformance.Table, error) {
	return func(t *testing.T) (conformance.Table, error) {
		tbl := load(t, cfg)
		if tbl == nil || tbl.CurrentSnapshot() == nil {
			return conformance.Table{}, fmt.Errorf("table %s has no snapshot", cfg.Table)
		}
		tr := array.NewTableReader(scanRecords(t, tbl, 0), 1024)
		defer tr.Release()
		var ts []conformance.Table
		for tr.Next() {
			ts = append(ts, conformance.RecordRows(tr.RecordBatch()))
		}
		return conformance.Concat(ts...), nil
	}
}
