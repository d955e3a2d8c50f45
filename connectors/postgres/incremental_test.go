package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// readWindow plans and reads one window of table and returns the rows.
func readWindow(t *testing.T, src *Source, run string, w connectors.Window, column string) (int64, []protocol.Partition) {
	t.Helper()
	ctx := context.Background()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: run, Window: &w, DeltaColumn: column, Partitioning: connectors.Partitioning{TargetRows: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.ReleaseRun(run)
	var rows int64
	for _, p := range plan.Partitions {
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error { rows += b.Rows; return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	return rows, plan.Partitions
}

// A window reads exactly the rows whose delta column lies in [from, to),
// for timestamptz, timestamp (UTC wall clock) and date columns, chunked
// by key inside the window; other column types are refused.
func TestSourceWindow(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	tbl := schema + ".ev"
	if _, err := conn.Exec(ctx, `CREATE TABLE `+tbl+` AS SELECT g AS id, '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute' AS tz,
		'2026-01-01 00:00:00'::timestamp + g * interval '1 minute' AS ts, '2026-01-01'::date + (g / 60) AS d, g::text AS txt
		FROM generate_series(0, 2999) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE `+tbl+` ADD PRIMARY KEY (id)`); err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(SourceConfig{DSN: dsn, Table: tbl})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := connectors.Window{From: t0.Add(time.Hour), To: t0.Add(2 * time.Hour)} // minutes 60..119
	for _, col := range []string{"tz", "ts"} {
		rows, parts := readWindow(t, src, "r-"+col, w, col)
		if rows != 60 || len(parts) < 3 {
			t.Errorf("%s: read %d rows in %d chunks, want 60 in several", col, rows, len(parts))
		}
		if !strings.HasPrefix(parts[0].Key, "id[") {
			t.Errorf("%s: chunk %q is not a key range", col, parts[0].Key)
		}
	}
	// A date column: days 2026-01-02 and 03 hold 60 rows each (g/60 = 1, 2).
	rows, _ := readWindow(t, src, "r-d", connectors.Window{From: t0.Add(24 * time.Hour), To: t0.Add(72 * time.Hour)}, "d")
	if rows != 120 {
		t.Errorf("date column: %d rows, want 120", rows)
	}
	for _, col := range []string{"txt", "nope"} {
		_, err := src.Plan(ctx, connectors.PlanRequest{RunID: "bad", Window: &w, DeltaColumn: col})
		if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "incremental.delta_column") {
			t.Errorf("delta column %s: err = %v, want a permanent error naming incremental.delta_column", col, err)
		}
	}
}

// The append commit creates a missing target, replaces a window's rows
// when the window is committed again, and does nothing when the same run
// commits twice. A full load's view is refused as a target.
func TestSinkAppendWindow(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	sink, err := NewSink(SinkConfig{DSN: dsn, Table: schema + ".ev"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := connectors.Window{From: t0, To: t0.Add(time.Hour)}
	load := func(run string, csv string, n int64) {
		t.Helper()
		tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: "t00000", Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.Write(ctx, connectors.Batch{Raw: []byte(csv), Format: connectors.FormatCSV, Columns: []string{"id", "at"}, Rows: n}); err != nil {
			t.Fatal(err)
		}
		out, err := tw.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := connectors.CommitRequest{RunID: run, Version: 1, Tasks: []connectors.TaskOutput{out}, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "at"}
		for range 2 { // a repeated commit changes nothing
			if _, err := sink.Commit(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func() int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".ev").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	load("r1", "1,2026-01-01 00:10:00+00\n2,2026-01-01 00:20:00+00\n", 2)
	// A row of another window, put there by hand, must survive re-runs.
	if _, err := conn.Exec(ctx, "INSERT INTO "+schema+".ev VALUES ('99', '2026-01-01 05:00:00+00')"); err != nil {
		t.Fatal(err)
	}
	load("r2", "1,2026-01-01 00:10:00+00\n2,2026-01-01 00:20:00+00\n3,2026-01-01 00:59:59+00\n", 3)
	if n := count(); n != 4 {
		t.Fatalf("target holds %d rows after a re-run of the window, want 3 + 1", n)
	}
	ws, err := Windows(ctx, dsn, schema+".ev")
	if err != nil || len(ws) != 2 || ws[1].Deleted != 2 || ws[1].Rows != 3 {
		t.Fatalf("windows %+v (%v)", ws, err)
	}
	// A full load's view is not a table to append to.
	if _, err := conn.Exec(ctx, "CREATE VIEW "+schema+".vw AS SELECT 1 AS id"); err != nil {
		t.Fatal(err)
	}
	vs, _ := NewSink(SinkConfig{DSN: dsn, Table: schema + ".vw"})
	_, err = vs.Commit(ctx, connectors.CommitRequest{RunID: "r9", Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "at"})
	if err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("append to a view: err = %v, want a permanent error", err)
	}
}
