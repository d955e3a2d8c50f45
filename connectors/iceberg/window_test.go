package iceberg

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// events has a delta column, updated_at.
var events = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "updated_at", Type: protocol.TypeTimestampTZ, NotNull: true},
}}

var t0 = time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)

// eventRows are CSV rows of ids lo..hi-1, one a minute from t0 + lo minutes.
func eventRows(lo, hi int) connectors.Batch {
	var raw []byte
	for i := lo; i < hi; i++ {
		raw = fmt.Appendf(raw, "%d,%s\n", i, t0.Add(time.Duration(i)*time.Minute).Format("2006-01-02 15:04:05-07"))
	}
	return connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: events.Names(), Rows: int64(hi - lo)}
}

func ids(t *testing.T, cfg Config) []int64 {
	t.Helper()
	tbl := load(t, cfg)
	if tbl.CurrentSnapshot() == nil {
		return nil
	}
	at := scanRecords(t, tbl, 0)
	var out []int64
	tr := array.NewTableReader(at, 1024)
	defer tr.Release()
	for tr.Next() {
		col := tr.RecordBatch().Column(0).(*array.Int64)
		out = append(out, col.Int64Values()...)
	}
	slices.Sort(out)
	return out
}

func span(lo, hi int) []int64 {
	var out []int64
	for i := lo; i < hi; i++ {
		out = append(out, int64(i))
	}
	return out
}

// Incremental windows by a delta column: each window's rows are
// appended; a window committed again (a re-run, with a late row in it)
// holds its rows exactly once, the other windows untouched.
func TestWindowsByDeltaColumn(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "events")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, events); err != nil {
		t.Fatal(err)
	}
	win := func(i int) *connectors.Window {
		return &connectors.Window{From: t0.Add(time.Duration(90*i) * time.Minute), To: t0.Add(time.Duration(90*(i+1)) * time.Minute)}
	}
	run := func(run string, i int, bs ...connectors.Batch) {
		t.Helper()
		out := write(t, s, run, "t1", 1, events, bs)
		req := connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: win(i), DeltaColumn: "updated_at", Tasks: []connectors.TaskOutput{out}, Schema: events}
		if _, err := s.Commit(ctx, req); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
		// A repeated commit changes nothing.
		if _, err := s.Commit(ctx, req); err != nil {
			t.Fatalf("repeated commit %s: %v", run, err)
		}
	}
	for i := range 3 {
		run(fmt.Sprintf("w%d", i), i, eventRows(90*i, 90*(i+1)))
	}
	if got := ids(t, cfg.Config); !slices.Equal(got, span(0, 270)) {
		t.Fatalf("after three windows: %d ids, want 0..269", len(got))
	}
	// Window 1 again, twice, with row 100 gone from the source: the
	// window's rows are replaced, once.
	for i := range 2 {
		run(fmt.Sprintf("w1-again-%d", i), 1, eventRows(90, 100), eventRows(101, 180))
		if got := ids(t, cfg.Config); !slices.Equal(got, append(span(0, 100), span(101, 270)...)) {
			t.Fatalf("after re-running window 1: %d ids (%v...)", len(got), got[:min(5, len(got))])
		}
	}
	// A window partly overlapping earlier files (a backfill of [45m, 135m)
	// of rows 45..134, row 100 back): rows outside it in those files stay.
	out := write(t, s, "bf", "t1", 1, events, []connectors.Batch{eventRows(45, 135)})
	req := connectors.CommitRequest{RunID: "bf", Mode: connectors.ModeAppend, DeltaColumn: "updated_at", Tasks: []connectors.TaskOutput{out},
		Window: &connectors.Window{From: t0.Add(45 * time.Minute), To: t0.Add(135 * time.Minute)}}
	if _, err := s.Commit(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, cfg.Config); !slices.Equal(got, span(0, 270)) {
		t.Fatalf("after a backfill window across two windows: %d ids", len(got))
	}
}

// Incremental windows without a delta column (partition-based sources):
// a window committed again replaces the files its earlier commit added.
func TestWindowsByPartition(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "parts")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, events); err != nil {
		t.Fatal(err)
	}
	hour := func(i int) *connectors.Window {
		return &connectors.Window{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour)}
	}
	commitWindow := func(run string, i int, b connectors.Batch) {
		t.Helper()
		out := write(t, s, run, "t1", 1, events, []connectors.Batch{b})
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: hour(i), Tasks: []connectors.TaskOutput{out}}); err != nil {
			t.Fatal(err)
		}
	}
	commitWindow("h0", 0, eventRows(0, 60))
	commitWindow("h1", 1, eventRows(60, 120))
	commitWindow("h0-again", 0, eventRows(0, 30))
	if got := ids(t, cfg.Config); !slices.Equal(got, append(span(0, 30), span(60, 120)...)) {
		t.Fatalf("after re-running hour 0 with 30 rows: %d ids", len(got))
	}
}
