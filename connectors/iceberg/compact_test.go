package iceberg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// compactNow plans, rewrites and commits a compaction of s's table as the
// cluster does; commit, when not nil, commits in its place.
func compactNow(t *testing.T, s *Sink, run string, settings connectors.CompactSettings) (connectors.CompactPlan, connectors.CompactCommit) {
	t.Helper()
	ctx := context.Background()
	settings = settings.WithDefaults()
	plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: run, Settings: settings, Now: time.Now()})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	req := connectors.CompactCommit{RunID: run, Pipeline: "c", Settings: settings}
	for i, g := range plan.Groups {
		out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%05d", i), Attempt: 1}, g)
		if err != nil {
			t.Fatalf("rewrite %s: %v", g.Key, err)
		}
		req.Groups = append(req.Groups, connectors.CompactedGroup{Group: g, Output: out})
	}
	return plan, req
}

// dataFileCount is the number of data files of the current snapshot.
func dataFileCount(t *testing.T, cfg Config) int {
	t.Helper()
	tbl := load(t, cfg)
	files, err := liveFiles(context.Background(), tbl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// A full load of 30 small files compacted into one: the same rows, one
// replace snapshot that keeps the version, a repeated commit changing
// nothing, rollback to the version exposing the compacted files; then a
// second version, and rollback to the first after it.
func TestCompactTable(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "compact")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	var outs []connectors.TaskOutput
	var want connectors.Checksum
	for i, b := range idvBatches(30) {
		o := write(t, s, "load-1", fmt.Sprintf("t%02d", i), 1, idv, []connectors.Batch{b})
		want.Merge(o.Checksum)
		outs = append(outs, o)
	}
	commit(t, s, "load-1", 1, outs...)
	if n := dataFileCount(t, cfg.Config); n != 30 {
		t.Fatalf("%d files before", n)
	}
	plan, req := compactNow(t, s, "compact-1", connectors.CompactSettings{})
	if len(plan.Groups) != 1 || plan.Files[0] != 30 {
		t.Fatalf("plan %v", plan.Files)
	}
	res, err := s.CommitCompaction(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesBefore != 30 || res.FilesAfter != 1 || len(res.Skipped) > 0 {
		t.Errorf("result %+v", res)
	}
	tbl := load(t, cfg.Config)
	if got := csvChecksum(t, scanRecords(t, tbl, 0)); got != want {
		t.Errorf("after compaction: %d rows checksum %s, want %d %s", got.Rows, got, want.Rows, want)
	}
	sn := tbl.CurrentSnapshot()
	if p := sn.Summary.Properties; p[propMode] != modeCompact || p[propVersion] != "1" || sn.Summary.Operation != "replace" {
		t.Errorf("compaction snapshot: %s %v", sn.Summary.Operation, p)
	}
	if n := dataFileCount(t, cfg.Config); n != 1 {
		t.Errorf("%d files after", n)
	}
	if _, err := s.CommitCompaction(ctx, req); err != nil || load(t, cfg.Config).CurrentSnapshot().SnapshotID != sn.SnapshotID {
		t.Errorf("a repeated commit: %v", err)
	}
	vs, err := s.Versions(ctx)
	if err != nil || len(vs) != 1 || !vs[0].Exposed || vs[0].Run != "load-1" || vs[0].Rows != want.Rows ||
		vs[0].Location != fmt.Sprintf("%s@%d", cfg.Table, sn.SnapshotID) {
		t.Fatalf("versions %+v, %v", vs, err)
	}
	outs2 := []connectors.TaskOutput{write(t, s, "load-2", "t1", 1, idv, idvBatches(2))}
	commit(t, s, "load-2", 2, outs2...)
	if err := s.Expose(ctx, 1); err != nil {
		t.Fatal(err)
	}
	tbl = load(t, cfg.Config)
	if tbl.CurrentSnapshot().SnapshotID != sn.SnapshotID || csvChecksum(t, scanRecords(t, tbl, 0)) != want {
		t.Errorf("rollback to version 1 exposes snapshot %d, want the compaction's %d", tbl.CurrentSnapshot().SnapshotID, sn.SnapshotID)
	}
}

// appendWindow commits window n of an incremental table by its delta
// column (ids 10n..10n+9, in two files): an append.
func appendWindow(t *testing.T, s *Sink, n int) {
	t.Helper()
	run := fmt.Sprintf("append-%d", n)
	outs := []connectors.TaskOutput{
		write(t, s, run, "t1", 1, events, []connectors.Batch{eventRows(10*n, 10*n+5)}),
		write(t, s, run, "t2", 1, events, []connectors.Batch{eventRows(10*n+5, 10*n+10)}),
	}
	w := connectors.Window{From: t0.Add(time.Duration(10*n) * time.Minute), To: t0.Add(time.Duration(10*n+10) * time.Minute)}
	if _, err := s.Commit(context.Background(), connectors.CommitRequest{RunID: run, Pipeline: "p", Mode: connectors.ModeAppend,
		Window: &w, DeltaColumn: "updated_at", Tasks: outs, Schema: events}); err != nil {
		t.Fatalf("append %d: %v", n, err)
	}
}

// A compaction whose commit loses the race against an append commits on
// top of it: the appended rows stay, none is doubled. Then a window
// compacted with others is loaded again: its rows once, the others kept.
func TestCompactRacesAppends(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "race")
	s, writer := newSink(t, cfg), newSink(t, cfg)
	defer s.Close()
	defer writer.Close()
	if err := s.CheckSchema(ctx, events); err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 3 {
		appendWindow(t, writer, n)
		n++
	}
	for round := range 3 {
		for range 2 {
			appendWindow(t, writer, n)
			n++
		}
		_, req := compactNow(t, s, fmt.Sprintf("compact-%d", round), connectors.CompactSettings{})
		if len(req.Groups) != 1 {
			t.Fatalf("round %d: %d groups", round, len(req.Groups))
		}
		// Another writer appends between the compaction's load of the
		// table and its commit: the commit loses the race.
		var raced []int64
		k := n
		s.beforeRewrite = func() {
			appendWindow(t, writer, k)
			raced = append(raced, load(t, cfg.Config).CurrentSnapshot().SnapshotID)
			s.beforeRewrite = nil
		}
		n++
		if _, err := s.CommitCompaction(ctx, req); err != nil {
			t.Fatal(err)
		}
		if got := ids(t, cfg.Config); !slices.Equal(got, span(0, 10*n)) {
			t.Fatalf("round %d: the table holds %d ids, want 0..%d once each", round, len(got), 10*n-1)
		}
		snaps := runSnapshots(load(t, cfg.Config), req.RunID)
		if len(snaps) != 1 || len(raced) != 1 || snaps[0].ParentSnapshotID == nil || *snaps[0].ParentSnapshotID != raced[0] {
			t.Fatalf("round %d: the compaction's snapshots %+v do not follow the append's %v", round, snaps, raced)
		}
	}
	// Window 1 again, its row 12 gone from the source.
	out := write(t, s, "again", "t1", 1, events, []connectors.Batch{eventRows(10, 12), eventRows(13, 20)})
	w := connectors.Window{From: t0.Add(10 * time.Minute), To: t0.Add(20 * time.Minute)}
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "again", Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "updated_at",
		Tasks: []connectors.TaskOutput{out}, Schema: events}); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, cfg.Config); !slices.Equal(got, append(span(0, 12), span(13, 10*n)...)) {
		t.Errorf("after window 1 again: %d ids", len(got))
	}
}

// A window compacted and then loaded again: the re-run replaces the
// compacted files of the window, rows not doubled; other windows' rows
// stay.
func TestCompactWindowRerun(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "rerun")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	win := func(h int) *connectors.Window {
		w := connectors.Window{From: from.Add(time.Duration(h) * time.Hour), To: from.Add(time.Duration(h+1) * time.Hour)}
		return &w
	}
	load1 := func(run string, h int, tasks int) connectors.Checksum {
		var outs []connectors.TaskOutput
		var sum connectors.Checksum
		for i, b := range idvBatches(tasks) {
			o := write(t, s, run, fmt.Sprintf("t%d", i), 1, idv, []connectors.Batch{b})
			outs = append(outs, o)
			sum.Merge(o.Checksum)
		}
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: "p", Mode: connectors.ModeAppend, Window: win(h), Tasks: outs, Schema: idv}); err != nil {
			t.Fatal(err)
		}
		return sum
	}
	a := load1("w0-a", 0, 5)
	b := load1("w1-a", 1, 5)
	_, req := compactNow(t, s, "compact-1", connectors.CompactSettings{})
	if len(req.Groups) != 2 {
		t.Fatalf("%d groups: one per window expected", len(req.Groups))
	}
	if _, err := s.CommitCompaction(ctx, req); err != nil {
		t.Fatal(err)
	}
	a2 := load1("w0-b", 0, 2) // window 0 again
	want := a2
	want.Merge(b)
	if got := csvChecksum(t, scanRecords(t, load(t, cfg.Config), 0)); got != want {
		t.Errorf("after the re-run of a compacted window: %d rows %s, want %d %s (the first load had %d)", got.Rows, got, want.Rows, want, a.Rows)
	}
}

// A vacuum expires the snapshots older than the retention outside the
// rollback window (the version a compaction superseded among them) and
// deletes orphan files, never those of a run in flight; rollback to every
// kept version works afterwards.
func TestVacuumTable(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "vacuum")
	cfg.KeepVersions = 4
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	wants := map[int64]connectors.Checksum{}
	for v := int64(1); v <= 4; v++ {
		var outs []connectors.TaskOutput
		var sum connectors.Checksum
		for i, b := range idvBatches(3) {
			o := write(t, s, fmt.Sprintf("load-%d", v), fmt.Sprintf("t%d", i), 1, idv, []connectors.Batch{b})
			outs = append(outs, o)
			sum.Merge(o.Checksum)
		}
		commit(t, s, fmt.Sprintf("load-%d", v), v, outs...)
		wants[v] = sum
	}
	_, req := compactNow(t, s, "compact-1", connectors.CompactSettings{})
	if _, err := s.CommitCompaction(ctx, req); err != nil {
		t.Fatal(err)
	}
	tbl := load(t, cfg.Config)
	dataDir := strings.TrimPrefix(tbl.Location(), "file://") + "/data"
	old := time.Now().Add(-48 * time.Hour)
	for _, run := range []string{"dead", "live"} {
		p := filepath.Join(dataDir, "sluice-"+run, "x.parquet")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("orphan"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	settings := connectors.CompactSettings{Retention: time.Hour, KeepVersions: 3, OrphanAge: time.Hour}.WithDefaults()
	vacuum := func(dry bool) connectors.VacuumReport {
		t.Helper()
		rep, err := s.Vacuum(ctx, connectors.VacuumRequest{Settings: settings, Now: time.Now().Add(2 * time.Hour), DryRun: dry,
			Active: func(context.Context) ([]string, error) { return []string{"live"}, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	dry := vacuum(true)
	var snaps, orphans int
	for _, it := range dry.Removed {
		switch {
		case strings.Contains(it.Path, " snapshot "):
			snaps++
		case strings.HasSuffix(it.Path, "sluice-dead") && it.Files == 1:
			orphans++
		default:
			t.Errorf("vacuum would remove %+v", it)
		}
	}
	// Version 1's snapshot, and version 4 as loaded (its compaction is
	// version 4 now).
	if snaps != 2 || orphans != 1 || len(dry.Kept) != 3 {
		t.Errorf("dry run: %d snapshots, %d orphan directories, kept %+v", snaps, orphans, dry.Kept)
	}
	rep := vacuum(false)
	if len(rep.Removed) != len(dry.Removed) {
		t.Errorf("vacuum removed %d items, the dry run listed %d", len(rep.Removed), len(dry.Removed))
	}
	if _, err := os.Stat(filepath.Join(dataDir, "sluice-live", "x.parquet")); err != nil {
		t.Errorf("the file of the run in flight: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "sluice-dead", "x.parquet")); !os.IsNotExist(err) {
		t.Errorf("the orphan: %v", err)
	}
	for _, v := range []int64{2, 3, 4} {
		if err := s.Expose(ctx, v); err != nil {
			t.Fatalf("rollback to %d after vacuum: %v", v, err)
		}
		if got := csvChecksum(t, scanRecords(t, load(t, cfg.Config), 0)); got != wants[v] {
			t.Errorf("version %d after vacuum: %d rows, want %d", v, got.Rows, wants[v].Rows)
		}
	}
	if err := s.Expose(ctx, 1); err == nil || !connectors.IsPermanent(err) {
		t.Errorf("rollback to the expired version 1: %v", err)
	}
	if again := vacuum(true); len(again.Removed) != 0 {
		t.Errorf("a second vacuum would remove %+v", again.Removed)
	}
}
