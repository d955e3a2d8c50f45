package postgres

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
)

// The sink appends a run by position to the one table, once per run.
func TestConformanceAppend(t *testing.T) {
	dsn, schema, conn := testDB(t)
	conformance.TestAppend(t, confHarness(dsn, schema+".appended", conn))
}

// A run by position is recorded in sluice_windows without a window, with
// the position it reached; a bookkeeping table of an earlier release
// (lo and hi NOT NULL, no watermark) is brought to that shape.
func TestAppendRecordsPosition(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	exec(t, conn, "CREATE TABLE "+schema+`.sluice_windows (table_name text NOT NULL, run text NOT NULL, lo timestamptz NOT NULL,
		hi timestamptz NOT NULL, rows bigint NOT NULL, deleted bigint NOT NULL, checksum text NOT NULL DEFAULT '',
		committed timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, run))`)
	s, err := NewSink(SinkConfig{DSN: dsn, Table: schema + ".log"})
	if err != nil {
		t.Fatal(err)
	}
	out := stageCSV(t, s, "r1", "t00000", 1, "1,a\n2,b\n")
	req := connectors.CommitRequest{RunID: "r1", Pipeline: "p", Version: 1, Tasks: []connectors.TaskOutput{out}, Mode: connectors.ModeAppend, Watermark: "offset 42"}
	for range 2 {
		if _, err := s.Commit(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	var rows int64
	var wm string
	var lo *string
	if err := conn.QueryRow(ctx, "SELECT rows, watermark, lo::text FROM "+schema+".sluice_windows WHERE run = 'r1'").Scan(&rows, &wm, &lo); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || wm != "offset 42" || lo != nil {
		t.Fatalf("recorded rows %d, watermark %q, lo %v; want 2 rows at offset 42 without a window", rows, wm, lo)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".log").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the table holds %d rows (%v), want 2: appended once", n, err)
	}
}
