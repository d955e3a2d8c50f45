package iceberg

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// readAll plans a run and reads every partition, returning the rows'
// count, the plan's watermark and its number of partitions.
func readAll(t *testing.T, src *Source, watermark string) (rows int64, wm string, parts int) {
	t.Helper()
	ctx := context.Background()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Watermark: watermark})
	if err != nil {
		t.Fatalf("Plan after %q: %v", watermark, err)
	}
	for _, p := range plan.Partitions {
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error {
			rows += b.Record.NumRows()
			return nil
		})
		if err != nil {
			t.Fatalf("Read %s: %v", p.Key, err)
		}
	}
	return rows, plan.Watermark, len(plan.Partitions)
}

// The source reads a table's appended files by snapshot range: a first
// run the whole table, each later run the files appended since the
// snapshot the previous one reached, and nothing when nothing was.
func TestSourceAppended(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "appended")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, events); err != nil {
		t.Fatal(err)
	}
	hour := func(run string, i int) {
		t.Helper()
		out := write(t, s, run, "t1", 1, events, []connectors.Batch{eventRows(60*i, 60*(i+1))})
		w := &connectors.Window{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour)}
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: w, Tasks: []connectors.TaskOutput{out}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		hour("h"+strconv.Itoa(i), i)
	}
	src, err := NewSource(SourceConfig{Config: cfg.Config, Read: ReadAppended})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"id", "updated_at"}; plan.Schema == nil || strings.Join(plan.Schema.Names(), ",") != strings.Join(want, ",") ||
		plan.Schema.Columns[1].Type != protocol.TypeTimestampTZ || !plan.Schema.Columns[0].NotNull {
		t.Errorf("plan schema %+v", plan.Schema)
	}
	rows, wm, _ := readAll(t, src, "")
	if rows != 180 || wm != strconv.FormatInt(load(t, cfg.Config).CurrentSnapshot().SnapshotID, 10) {
		t.Fatalf("first run read %d rows, watermark %s; want 180, the current snapshot", rows, wm)
	}
	hour("h3", 3)
	hour("h4", 4)
	rows, wm2, parts := readAll(t, src, wm)
	if rows != 120 || parts != 1 || wm2 == wm {
		t.Fatalf("second run read %d rows in %d partitions, watermark %s; want the 120 appended, a new watermark", rows, parts, wm2)
	}
	if rows, wm3, parts := readAll(t, src, wm2); rows != 0 || parts != 0 || wm3 != wm2 {
		t.Fatalf("third run read %d rows in %d partitions, watermark %s; want none, %s", rows, parts, wm3, wm2)
	}
	// The whole table, with read: snapshot.
	whole, err := NewSource(SourceConfig{Config: cfg.Config})
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Close()
	if rows, _, _ := readAll(t, whole, wm2); rows != 300 {
		t.Fatalf("read: snapshot read %d rows, want 300", rows)
	}
	// A watermark that is no snapshot of the table is refused.
	if _, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Watermark: "12345"}); err == nil || !connectors.IsPermanent(err) {
		t.Errorf("Plan after a snapshot not in the table: %v, want a permanent error", err)
	}
}
