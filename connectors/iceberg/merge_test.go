package iceberg

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// versioned rows: a key, a value, a delta column and a delete marker.
var versioned = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "v", Type: protocol.TypeString},
	{Name: "updated_at", Type: protocol.TypeTimestampTZ, NotNull: true},
	{Name: "gone", Type: protocol.TypeBool, NotNull: true},
}}

// srcRow is one row of the test's source table.
type srcRow struct {
	id   int64
	v    string
	at   time.Time
	gone bool
}

func (r srcRow) text() string { return fmt.Sprintf("%d|%s|%d|%t", r.id, r.v, r.at.UnixMicro(), r.gone) }

// csvRows renders rows as the source's COPY CSV.
func csvRows(rows []srcRow) connectors.Batch {
	var raw []byte
	for _, r := range rows {
		raw = fmt.Appendf(raw, "%d,%s,%s,%t\n", r.id, r.v, r.at.Format("2006-01-02 15:04:05.999999-07"), r.gone)
	}
	return connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: versioned.Names(), Rows: int64(len(rows))}
}

// tableRows reads the table's current rows as text, sorted, and their
// count and checksum.
func tableRows(t *testing.T, cfg Config) ([]string, connectors.Checksum) {
	t.Helper()
	at := scanRecords(t, load(t, cfg), 0)
	var out []string
	tr := array.NewTableReader(at, 1024)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		idx := func(n string) int { return rec.Schema().FieldIndices(n)[0] }
		id, v := rec.Column(idx("id")).(*array.Int64), rec.Column(idx("v")).(*array.String)
		ts, gone := rec.Column(idx("updated_at")).(*array.Timestamp), rec.Column(idx("gone")).(*array.Boolean)
		for r := range int(rec.NumRows()) {
			out = append(out, srcRow{id.Value(r), v.Value(r), time.UnixMicro(int64(ts.Value(r))).UTC(), gone.Value(r)}.text())
		}
	}
	return sumOf(out)
}

func sumOf(rows []string) ([]string, connectors.Checksum) {
	sort.Strings(rows)
	var sum connectors.Checksum
	for _, r := range rows {
		sum.Add([]byte(r))
	}
	return rows, sum
}

// Windows merged by key into an Iceberg table (copy-on-write), on local
// disk and on the S3 server: updated and new keys, deletes by the marker,
// two versions of a key in one window, a retried task, a window merged
// again, a late older version, and a failed commit. After each step the
// table holds the source's current rows by key, once each, as the test
// computes them from its source.
func TestMergeByKey(t *testing.T) {
	t.Run("local", func(t *testing.T) { testMergeByKey(t, localConfig(t, "merged")) })
	t.Run("s3", func(t *testing.T) {
		cfg, _ := s3Config(t, "merged")
		testMergeByKey(t, cfg)
	})
}

func testMergeByKey(t *testing.T, cfg SinkConfig) {
	ctx := context.Background()
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, versioned); err != nil {
		t.Fatal(err)
	}
	source := map[int64]srcRow{}
	hour := func(i int) *connectors.Window {
		return &connectors.Window{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour)}
	}
	merge := &connectors.Merge{Key: []string{"id"}, Deleted: "gone"}
	// windowRows are the source's rows of window i (as a run reads them),
	// plus extra rows (older versions a run may meet).
	windowRows := func(i int) []srcRow {
		w := hour(i)
		var out []srcRow
		for _, r := range source {
			if !r.at.Before(w.From) && r.at.Before(w.To) {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b srcRow) int { return int(a.id - b.id) })
		return out
	}
	commitRun := func(run string, i int, tasks ...[]srcRow) error {
		t.Helper()
		var outs []connectors.TaskOutput
		for n, rows := range tasks {
			outs = append(outs, write(t, s, run, fmt.Sprintf("t%d", n), 1, versioned, []connectors.Batch{csvRows(rows)}))
		}
		_, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: "p", Mode: connectors.ModeAppend, Window: hour(i),
			DeltaColumn: "updated_at", Merge: merge, Tasks: outs, Schema: versioned})
		return err
	}
	check := func(step string) {
		t.Helper()
		var want []string
		for _, r := range source {
			if !r.gone {
				want = append(want, r.text())
			}
		}
		want, wantSum := sumOf(want)
		got, sum := tableRows(t, cfg.Config)
		if sum != wantSum || !slices.Equal(got, want) {
			t.Fatalf("%s: the table holds %d rows (checksum %s), the source's current rows are %d (checksum %s); first rows %v, want %v",
				step, sum.Rows, sum, wantSum.Rows, wantSum, got[:min(3, len(got))], want[:min(3, len(want))])
		}
	}
	at := func(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Second) }
	// Hour 0: ids 0..299 inserted.
	for id := range int64(300) {
		source[id] = srcRow{id, fmt.Sprintf("a%d", id), at(0, int(id)), false}
	}
	rows := windowRows(0)
	// Three files: a merge rewrites some and keeps the last (ids 250..).
	if err := commitRun("h0", 0, rows[:150], rows[150:250], rows[250:]); err != nil {
		t.Fatal(err)
	}
	check("after hour 0")
	// Hour 1: ids 0..39 updated, 300..339 new, 100..109 deleted (the
	// marker), id 200 updated twice in the window (the run sees both
	// versions: a source that keeps history), id 50 deleted and
	// re-inserted.
	for id := range int64(40) {
		source[id] = srcRow{id, fmt.Sprintf("b%d", id), at(1, int(id)), false}
	}
	for id := int64(300); id < 340; id++ {
		source[id] = srcRow{id, fmt.Sprintf("n%d", id), at(1, int(id)), false}
	}
	for id := int64(100); id < 110; id++ {
		source[id] = srcRow{id, "", at(1, int(id)), true}
	}
	older := srcRow{200, "c-old", at(1, 500), false}
	source[200] = srcRow{200, "c-new", at(1, 600), false}
	source[50] = srcRow{50, "back", at(1, 700), false}
	rows = windowRows(1)
	// The retried task: its first attempt closed, then the task ran again;
	// the run takes the second attempt's output.
	write(t, s, "h1", "t0", 1, versioned, []connectors.Batch{csvRows(rows)})
	if err := commitRun("h1", 1, append(rows, older), []srcRow{{50, "gone", at(1, 650), true}}); err != nil {
		t.Fatal(err)
	}
	check("after hour 1")
	// The same window merged again (a re-run, a lookback): nothing changes.
	if err := commitRun("h1-again", 1, windowRows(1)); err != nil {
		t.Fatal(err)
	}
	check("after hour 1 again")
	// A late older version of id 0 (in hour 0) does not replace the newer.
	if err := commitRun("h0-late", 0, []srcRow{{0, "stale", at(0, 1), false}}); err != nil {
		t.Fatal(err)
	}
	check("after a late older version")
	// A commit repeated after it succeeded changes nothing more.
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "h1", Pipeline: "p", Mode: connectors.ModeAppend, Window: hour(1),
		DeltaColumn: "updated_at", Merge: merge, Schema: versioned}); err != nil {
		t.Fatal(err)
	}
	check("after a repeated commit")
	// A run whose commit fails (a staged file lost) leaves the table as it
	// was.
	before := load(t, cfg.Config).CurrentSnapshot().SnapshotID
	for id := range int64(20) {
		source[id+1000] = srcRow{id + 1000, "x", at(2, int(id)), false}
	}
	rows = windowRows(2)
	for id := range int64(20) {
		delete(source, id+1000)
	}
	out := write(t, s, "h2", "t0", 1, versioned, []connectors.Batch{csvRows(rows)})
	files, err := s.readTasks(ctx, load(t, cfg.Config), connectors.CommitRequest{RunID: "h2", Tasks: []connectors.TaskOutput{out}})
	if err != nil || len(files) == 0 {
		t.Fatalf("read the task's files: %v (%d)", err, len(files))
	}
	lose(t, cfg, files[0].FilePath())
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "h2", Pipeline: "p", Mode: connectors.ModeAppend, Window: hour(2),
		DeltaColumn: "updated_at", Merge: merge, Tasks: []connectors.TaskOutput{out}, Schema: versioned}); err == nil {
		t.Fatal("a commit whose staged file is gone succeeded")
	}
	if now := load(t, cfg.Config).CurrentSnapshot().SnapshotID; now != before {
		t.Fatalf("a failed commit moved the table from snapshot %d to %d", before, now)
	}
	check("after a failed commit")
}

// lose deletes a staged data file.
func lose(t *testing.T, cfg SinkConfig, path string) {
	t.Helper()
	if p, ok := localPath(path); ok {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		return
	}
	tbl := load(t, cfg.Config)
	fs, err := tbl.FS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := (store{fs: fs}).remove(context.Background(), []string{path}); err != nil {
		t.Fatal(err)
	}
}
