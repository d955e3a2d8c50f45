package clickhouse

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
)

// A vacuum drops the tables of runs not in flight (a failed run whose
// task staged rows after its abort), never those of a run in flight, and
// leaves the kept versions: rollback still works after it.
func TestVacuumStagingTables(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s, err := NewSink(SinkConfig{URL: url, Table: db + ".vac", KeepVersions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for v, run := range []string{"run-1", "run-2"} {
		outs := writeRun(t, s, run, 0, 300, nil)
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Version: int64(v + 1), Tasks: outs}); err != nil {
			t.Fatal(err)
		}
	}
	writeRun(t, s, "failed-run", 0, 200, nil) // staged, never committed
	writeRun(t, s, "live-run", 0, 200, nil)
	staging := func() []string {
		t.Helper()
		names, err := s.tablesWithPrefix(ctx, "vac__")
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	before := staging()
	failed, live := s.stagePrefix("failed-run"), s.stagePrefix("live-run")
	if !slices.ContainsFunc(before, func(n string) bool { return strings.HasPrefix(n, failed) }) ||
		!slices.ContainsFunc(before, func(n string) bool { return strings.HasPrefix(n, live) }) {
		t.Fatalf("staging tables before: %v", before)
	}
	req := connectors.VacuumRequest{Now: time.Now(), DryRun: true, Settings: connectors.CompactSettings{}.WithDefaults(),
		Active: func(context.Context) ([]string, error) { return []string{"live-run"}, nil }}
	dry, err := s.Vacuum(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Removed) != 1 || dry.Removed[0].Files != 2 || dry.Removed[0].Bytes <= 0 || len(dry.Kept) != 2 ||
		!strings.Contains(dry.Removed[0].Path, failed) {
		t.Fatalf("dry run: %+v", dry)
	}
	if got := staging(); !slices.Equal(got, before) {
		t.Errorf("a dry run dropped tables: %v, before %v", got, before)
	}
	req.DryRun = false
	if _, err := s.Vacuum(ctx, req); err != nil {
		t.Fatal(err)
	}
	for _, n := range staging() {
		if !strings.HasPrefix(n, live) {
			t.Errorf("left after the vacuum: %s (only the live run's tables should stay)", n)
		}
	}
	if got := staging(); len(got) != 2 {
		t.Errorf("tables after the vacuum: %v, want the live run's 2", got)
	}
	if err := s.Expose(ctx, 1); err != nil {
		t.Fatalf("rollback after vacuum: %v", err)
	}
	if n := count(t, s, "SELECT count() FROM "+s.ident("vac")); n != 300 {
		t.Errorf("version 1 holds %d rows after the vacuum, want 300", n)
	}
}
