package postgres

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// A vacuum drops the staging tables of runs not in flight (a failed run
// whose late task staged rows after its abort), never those of a run in
// flight, and leaves the versions; rollback still works.
func TestVacuumStagingTables(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	src := schema + ".src"
	createAllTypes(t, conn, src, 2_000, true)
	source := newSource(t, map[string]any{"dsn": dsn, "table": src})
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".dst", "keep_versions": 3})
	for v, run := range []string{"run-1", "run-2"} {
		outs := load(t, source, sink, run, 1000)
		if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: run, Version: int64(v + 1), Tasks: outs}); err != nil {
			t.Fatal(err)
		}
	}
	load(t, source, sink, "failed-run", 1000) // staged, never committed
	load(t, source, sink, "live-run", 1000)
	staging := func() []string {
		t.Helper()
		var names []string
		rows, err := conn.Query(ctx, "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE relkind = 'r' AND n.nspname = $1 AND relname LIKE 'dst\\_\\_stg\\_%' ORDER BY 1", schema)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		return names
	}
	before := staging()
	if len(before) != 4 {
		t.Fatalf("staging tables before: %v", before)
	}
	req := connectors.VacuumRequest{Now: time.Now(), DryRun: true, Settings: connectors.CompactSettings{}.WithDefaults(),
		Active: func(context.Context) ([]string, error) { return []string{"live-run"}, nil }}
	dry, err := sink.Vacuum(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Removed) != 1 || dry.Removed[0].Files != 2 || dry.Removed[0].Bytes <= 0 || len(dry.Kept) != 2 {
		t.Fatalf("dry run: %+v", dry)
	}
	if got := staging(); !slices.Equal(got, before) {
		t.Errorf("a dry run dropped %v", got)
	}
	req.DryRun = false
	if _, err := sink.Vacuum(ctx, req); err != nil {
		t.Fatal(err)
	}
	live, _ := sink.staging("live-run")
	if got := staging(); len(got) != 2 || !slices.Contains(got, live[len(live)-1]) {
		t.Errorf("staging tables after: %v, want the live run's two", got)
	}
	if err := sink.Expose(ctx, 1); err != nil {
		t.Errorf("rollback after vacuum: %v", err)
	}
}
