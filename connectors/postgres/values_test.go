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

// A capped window of integer values is ended where the column's values
// end: after the greatest one, never below the watermark, after
// max_rows_per_run rows from the watermark with the rows of one value
// together; an explicit window is read as it is; a time column is refused
// for a window of values and an integer column for a window of time.
func TestSourceValueWindows(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	tbl := schema + ".seq"
	// ids 1..1000; versions: ten rows share each version v = id / 10.
	pgtest.Exec(t, conn, `CREATE TABLE `+tbl+` AS SELECT g AS id, (g / 10)::bigint AS version, (g * 7)::numeric(20,0) AS big,
		now() AS at FROM generate_series(1, 1000) g`)
	pgtest.Exec(t, conn, `ALTER TABLE `+tbl+` ADD PRIMARY KEY (id)`)
	src, err := NewSource(SourceConfig{DSN: dsn, Table: tbl, Snapshot: SnapshotNone})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	plan := func(col string, w connectors.Window, trim *connectors.Trim) (connectors.Plan, int64, error) {
		t.Helper()
		p, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Window: &w, DeltaColumn: col, Trim: trim, Partitioning: connectors.Partitioning{TargetRows: 100}})
		if err != nil {
			return p, 0, err
		}
		var rows int64
		for _, part := range p.Partitions {
			if err := src.Read(ctx, part, func(_ context.Context, b connectors.Batch) error { rows += b.Rows; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		return p, rows, nil
	}
	tests := []struct {
		name     string
		col      string
		w        connectors.Window
		trim     *connectors.Trim
		want     connectors.Window
		wantRows int64
	}{
		{"ended after the greatest value", "id", protocol.ValueWindow(900, 2000), &connectors.Trim{From: 900}, protocol.ValueWindow(900, 1001), 101},
		{"within the cap", "id", protocol.ValueWindow(0, 300), &connectors.Trim{From: 0}, protocol.ValueWindow(0, 300), 299},
		{"nothing new: ended at the watermark", "id", protocol.ValueWindow(2000, 3000), &connectors.Trim{From: 2000}, protocol.ValueWindow(2000, 2000), 0},
		{"lookback below the watermark, nothing new", "id", protocol.ValueWindow(950, 3000), &connectors.Trim{From: 1200}, protocol.ValueWindow(950, 1200), 51},
		{"max rows from the watermark", "id", protocol.ValueWindow(100, 5000), &connectors.Trim{From: 200, MaxRows: 50}, protocol.ValueWindow(100, 250), 150},
		{"max rows keep a value's rows together", "version", protocol.ValueWindow(10, 500), &connectors.Trim{From: 10, MaxRows: 15}, protocol.ValueWindow(10, 11), 10},
		{"max rows on a value's last row", "version", protocol.ValueWindow(10, 500), &connectors.Trim{From: 10, MaxRows: 20}, protocol.ValueWindow(10, 12), 20},
		{"more rows of one value than max rows", "version", protocol.ValueWindow(10, 500), &connectors.Trim{From: 10, MaxRows: 5}, protocol.ValueWindow(10, 11), 10},
		{"numeric without scale", "big", protocol.ValueWindow(0, 71), &connectors.Trim{From: 0}, protocol.ValueWindow(0, 71), 10},
		{"explicit window", "id", protocol.ValueWindow(10, 20), nil, connectors.Window{}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rows, err := plan(tt.col, tt.w, tt.trim)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.trim == nil && p.Window != nil:
				t.Errorf("an explicit window came back as %v", p.Window)
			case tt.trim != nil && (p.Window == nil || *p.Window != tt.want):
				t.Errorf("window %v, want %v", p.Window, tt.want)
			}
			if rows != tt.wantRows {
				t.Errorf("read %d rows, want %d", rows, tt.wantRows)
			}
		})
	}
	if _, _, err := plan("at", protocol.ValueWindow(0, 10), &connectors.Trim{}); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "wants smallint, integer, bigint") {
		t.Errorf("a time column for a window of values: %v", err)
	}
	if _, _, err := plan("id", connectors.Window{From: time.Unix(0, 0), To: time.Unix(3600, 0)}, nil); err == nil || !strings.Contains(err.Error(), "give incremental.window as a number of values") {
		t.Errorf("an integer column for a time window: %v", err)
	}
}

// A window of values committed again replaces its rows (by an integer
// column, or one loaded as text), and is recorded as a range of values.
func TestSinkValueWindow(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	for _, typed := range []bool{true, false} {
		table := schema + ".typed"
		if !typed {
			table = schema + ".text"
		} else {
			pgtest.Exec(t, conn, "CREATE TABLE "+table+" (k bigint, v text)")
		}
		sink, err := NewSink(SinkConfig{DSN: dsn, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		commit := func(run, csv string, w connectors.Window) {
			t.Helper()
			out := stageCSV(t, sink, run, "t00000", 1, csv)
			if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: run, Version: 1, Tasks: []connectors.TaskOutput{out},
				Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "k"}); err != nil {
				t.Fatal(err)
			}
		}
		commit("r1", "1,a\n2,b\n10,c\n", protocol.ValueWindow(0, 100))
		commit("r2", "100,d\n", protocol.ValueWindow(100, 200))
		commit("r3", "2,B\n11,e\n", protocol.ValueWindow(0, 100))
		if got, want := pgtest.Rows(t, conn, table, []string{"k", "v"}), []string{"100|d", "11|e", "2|B"}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("typed %v: rows %v, want %v", typed, got, want)
		}
		ws, err := Windows(ctx, dsn, table)
		if err != nil || len(ws) != 3 || !ws[2].Values || ws[2].Lo != 0 || ws[2].Hi != 100 || ws[2].Deleted != 3 {
			t.Fatalf("typed %v: windows %+v (%v)", typed, ws, err)
		}
	}
}
