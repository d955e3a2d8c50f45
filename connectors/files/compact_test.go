package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// linesSum is the checksum of JSONL lines as the test wrote them.
func linesSum(text string) connectors.Checksum {
	var c connectors.Checksum
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if l != "" {
			c.Add([]byte(l))
		}
	}
	return c
}

// stageTasks stages n tasks of run, task i holding the JSONL rows
// rows(i), and returns their outputs and the checksum of every row.
func stageTasks(t *testing.T, s *Sink, run string, n int, rows func(i int) string) ([]connectors.TaskOutput, connectors.Checksum) {
	t.Helper()
	ctx := context.Background()
	var outs []connectors.TaskOutput
	var want connectors.Checksum
	for i := range n {
		text := rows(i)
		want.Merge(linesSum(text))
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%05d", i), Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, connectors.Batch{Raw: []byte(text), Format: connectors.FormatJSONL, Rows: int64(strings.Count(text, "\n"))}); err != nil {
			t.Fatal(err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	return outs, want
}

// compactNow runs a compaction of s as the cluster does: plan, one
// rewrite task per group, commit.
func compactNow(t *testing.T, s *Sink, run string, settings connectors.CompactSettings, now time.Time) (connectors.CompactPlan, connectors.CompactResult) {
	t.Helper()
	ctx := context.Background()
	settings = settings.WithDefaults()
	plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: run, Settings: settings, Now: now})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	var groups []connectors.CompactedGroup
	for i, g := range plan.Groups {
		out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%05d", i), Attempt: 1}, g)
		if err != nil {
			t.Fatalf("rewrite %s: %v", g.Key, err)
		}
		groups = append(groups, connectors.CompactedGroup{Group: g, Output: out})
	}
	res, err := s.CommitCompaction(ctx, connectors.CompactCommit{RunID: run, Groups: groups, Settings: settings})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return plan, res
}

// dataNames lists the data files of a directory (local or s3://).
func dataNames(t *testing.T, s *Sink, rel string) []string {
	t.Helper()
	files, _, err := s.tree().list(context.Background(), rel)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range dataFiles(files) {
		out = append(out, path.Base(f.Path))
	}
	return out
}

// hourKeyOrder reads the data files of a change log's hour in name
// order, lines as written, as a reader of the hour meets its events, and
// fails the test unless each key's events follow their commit positions
// (commit LSN, then index). It returns how many events it checked against
// their key's previous one.
func hourKeyOrder(t *testing.T, s *Sink, hour string) int {
	t.Helper()
	ctx := context.Background()
	files, _, err := s.tree().list(ctx, hour)
	if err != nil {
		t.Fatal(err)
	}
	data := dataFiles(files)
	slices.SortFunc(data, func(a, b fileRef) int { return strings.Compare(a.Path, b.Path) })
	type pos struct {
		lsn        uint64
		text, file string
		index      int
	}
	last := map[string]pos{}
	pairs, bad := 0, 0
	for _, f := range data {
		b, err := s.tree().read(ctx, f.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			var e connectors.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("%s: %v", f.Path, err)
			}
			lsn, err := protocol.ParseLSN(e.CommitLSN)
			if err != nil {
				t.Fatalf("%s: event %d: %v", f.Path, e.Seq, err)
			}
			k := e.After["id"].Text
			p := pos{lsn, e.CommitLSN, path.Base(f.Path), e.Index}
			if prev, ok := last[k]; ok {
				pairs++
				if p.lsn < prev.lsn || p.lsn == prev.lsn && p.index <= prev.index {
					if bad++; bad <= 5 {
						t.Errorf("%s: key %s: the event at %s/%d (in %s) comes after the key's event at %s/%d (in %s)", hour, k, e.CommitLSN, e.Index, p.file, prev.text, prev.index, prev.file)
					}
				}
			}
			last[k] = p
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d events read after a later event of their key; files in name order: %v", hour, bad, pairs, dataNames(t, s, hour))
	}
	return pairs
}

// newSink opens a sink on a fresh local directory, or, with s3, a fresh
// prefix of the test bucket.
func newSink(t *testing.T, s3 bool, cfg SinkConfig) *Sink {
	t.Helper()
	if s3 {
		return s3Sink(t, cfg)
	}
	if cfg.Path == "" {
		cfg.Path = t.TempDir()
	}
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCompactVersionReadersSeeEveryRowOnce(t *testing.T) { testCompactVersion(t, false) }
func TestCompactVersionReadersSeeEveryRowOnceS3(t *testing.T) {
	testCompactVersion(t, true)
}

// testCompactVersion compacts a version of 500 small files into a few
// while readers read the exposed version over and over, each computing
// the count and checksum of what it read: every read must be every row
// the test wrote, exactly once.
func testCompactVersion(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	files := 500
	if s3 && testing.Short() {
		files = 100
	}
	outs, want := stageTasks(t, s, "load-1", files, func(i int) string { return jsonlRows(i*20, 20) })
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "load-1", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, o := range outs {
		total += o.Bytes
	}
	target := total / 3
	var reads, after atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cur, err := Current(s.base())
				if err != nil {
					errs <- err
					return
				}
				got, err := ReadChecksum(cur, "jsonl")
				if err != nil {
					errs <- fmt.Errorf("read %s: %w", cur, err)
					return
				}
				if got != want {
					errs <- fmt.Errorf("a reader of %s saw %d rows, checksum %s; want %d rows, checksum %s", cur, got.Rows, got, want.Rows, want)
					return
				}
				reads.Add(1)
				if strings.Contains(path.Base(cur), "_") {
					after.Add(1)
				}
			}
		})
	}
	plan, res := compactNow(t, s, "compact-1", connectors.CompactSettings{TargetFileBytes: target}, time.Now())
	for after.Load() == 0 && len(errs) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(plan.Groups) < 2 || len(plan.Groups) > 4 {
		t.Errorf("%d groups for %d files of %d bytes, target %d", len(plan.Groups), files, total, target)
	}
	if res.Partitions != 1 || res.FilesBefore != int64(files) || res.FilesAfter != int64(len(plan.Groups)) || len(res.Skipped) > 0 {
		t.Errorf("result %+v", res)
	}
	name := compactedName(1, "compact-1")
	if got := dataNames(t, s, name); len(got) != len(plan.Groups) {
		t.Errorf("%s holds %v", name, got)
	}
	vs, err := s.Versions(ctx)
	if err != nil || len(vs) != 1 || !vs[0].Exposed || vs[0].Rows != want.Rows || !strings.HasSuffix(vs[0].Location, name) {
		t.Errorf("versions %+v, %v", vs, err)
	}
	// A commit repeated after a crash changes nothing more.
	if _, err := s.CommitCompaction(ctx, connectors.CompactCommit{RunID: "compact-1", Settings: connectors.CompactSettings{}.WithDefaults()}); err != nil {
		t.Fatal(err)
	}
	// Nothing left to compact.
	if plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: "compact-2", Settings: connectors.CompactSettings{TargetFileBytes: target}.WithDefaults(), Now: time.Now()}); err != nil || len(plan.Groups) != 0 {
		t.Errorf("plan after compaction: %d groups, %v", len(plan.Groups), err)
	}
	t.Logf("%d reads, %d of the rewrite", reads.Load(), after.Load())
}

func TestCompactChangeLogHours(t *testing.T)   { testCompactChangeLog(t, false) }
func TestCompactChangeLogHoursS3(t *testing.T) { testCompactChangeLog(t, true) }

// testCompactChangeLog compacts the closed hour of a change log written
// in many small batches, leaves the open hour alone, and takes in late
// events for the closed hour. The events are changes of 40 keys, each at
// a commit position the test gives it: read in order (parts by name, lines
// as written), each key's events follow those positions before and after
// each compaction, also once a late event for a key is written beside the
// compacted hour.
func testCompactChangeLog(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	a, err := NewApplier(ApplierConfig{Path: s.cfg.Path, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	seq := uint64(0)
	var want connectors.Checksum
	apply := func(at time.Time, n int) {
		t.Helper()
		var evs []connectors.Event
		for range n {
			seq++
			evs = append(evs, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: "update", Schema: "public", Table: "t", Key: []string{"id"},
				After: protocol.Row{"id": protocol.Text(fmt.Sprint(seq % 40)), "n": protocol.Text(fmt.Sprint(seq))}, CommitTime: at,
				CommitLSN: fmt.Sprintf("0/%X", seq*0x100)}})
		}
		if err := a.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	// order checks the closed hour as a reader lists it (locally; on S3
	// readers follow the hour's pointer, and a late event reaches it with
	// the next compaction).
	order := func(step string) {
		t.Helper()
		if !s3 {
			if pairs := hourKeyOrder(t, s, "public.t/date=2026-11-25/hour=07"); pairs == 0 {
				t.Errorf("%s: no key has two events in the hour", step)
			}
		}
	}
	batches := 60
	for i := range batches {
		apply(h0.Add(time.Duration(i)*time.Second), 3)
	}
	apply(h0.Add(time.Hour+time.Minute), 2) // the next hour, still open
	if err := a.CloseHours(ctx, h0.Add(time.Hour+2*time.Minute), true); err != nil {
		t.Fatal(err)
	}
	closed := "public.t/date=2026-11-25/hour=07"
	open := "public.t/date=2026-11-25/hour=08"
	hourSum := func(rel string) connectors.Checksum {
		t.Helper()
		got, err := ReadChecksum(joinPath(s.base(), rel), "jsonl")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want = hourSum(closed)
	if want.Rows != int64(batches*3) {
		t.Fatalf("closed hour holds %d rows before compaction", want.Rows)
	}
	openBefore := dataNames(t, s, open)
	plan, res := compactNow(t, s, "c-1", connectors.CompactSettings{}, time.Now())
	if len(plan.Groups) != 1 || plan.Files[0] != batches || res.Partitions != 1 {
		t.Fatalf("plan %d groups %v, result %+v", len(plan.Groups), plan.Files, res)
	}
	if got := hourSum(closed); got != want {
		t.Errorf("closed hour after compaction: %d rows, checksum %s; want %d, %s", got.Rows, got, want.Rows, want)
	}
	order("after the compaction")
	if got := dataNames(t, s, open); !slices.Equal(got, openBefore) {
		t.Errorf("the open hour changed: %v, was %v", got, openBefore)
	}
	// A late event for the closed hour, then the next compaction: read
	// with the rest.
	apply(h0.Add(30*time.Minute), 1) // key 23, whose earlier events are in the compacted file
	want.Rows++
	order("after a late event")
	plan, _ = compactNow(t, s, "c-2", connectors.CompactSettings{}, time.Now())
	got := hourSum(closed)
	if got.Rows != want.Rows {
		t.Errorf("closed hour after a late event and a compaction: %d rows, want %d (plan %v)", got.Rows, want.Rows, plan.Files)
	}
	order("after the late event's compaction")
	if !s3 {
		// The replaced directories stay, hidden, until a vacuum.
		entries, _ := os.ReadDir(filepath.Join(s.root, "public.t", "date=2026-11-25"))
		var hiddenDirs []string
		for _, e := range entries {
			if hidden(e.Name()) {
				hiddenDirs = append(hiddenDirs, e.Name())
			}
		}
		if len(hiddenDirs) != 2 {
			t.Errorf("hidden directories beside the hours: %v", hiddenDirs)
		}
	}
	rep, err := s.Vacuum(ctx, connectors.VacuumRequest{Settings: connectors.CompactSettings{Retention: time.Hour}.WithDefaults(), Now: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) == 0 {
		t.Errorf("vacuum removed nothing")
	}
	if got := hourSum(closed); got.Rows != want.Rows {
		t.Errorf("closed hour after vacuum: %d rows, want %d", got.Rows, want.Rows)
	}
	if got := hourSum(open); got.Rows != 2 {
		t.Errorf("open hour after vacuum: %d rows", got.Rows)
	}
}

// TestCompactChangeLogHourOrder: a closed hour whose small parts lie
// before and after a part too large to rewrite is compacted into groups
// that do not span the large part, each named where its first part was:
// the hour read in name order holds each key's events in commit order.
func TestCompactChangeLogHourOrder(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, false, SinkConfig{})
	a, err := NewApplier(ApplierConfig{Path: s.cfg.Path, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	seq := uint64(0)
	apply := func(n int) {
		t.Helper()
		var evs []connectors.Event
		for range n {
			seq++
			evs = append(evs, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: "update", Schema: "public", Table: "t", Key: []string{"id"},
				After: protocol.Row{"id": protocol.Text(fmt.Sprint(seq % 7)), "n": protocol.Text(fmt.Sprint(seq))}, CommitTime: h0.Add(time.Duration(seq) * time.Second),
				CommitLSN: fmt.Sprintf("0/%X", seq*0x100)}})
		}
		if err := a.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if i == 4 {
			apply(100) // the large part
		}
		apply(3)
	}
	if err := a.CloseHours(ctx, h0.Add(2*time.Hour), true); err != nil {
		t.Fatal(err)
	}
	hour := "public.t/date=2026-11-25/hour=07"
	before := dataNames(t, s, hour)
	var small, large int64
	files, _, err := s.tree().list(ctx, hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range dataFiles(files) {
		if path.Base(f.Path) == before[4] {
			large = f.Size
		} else {
			small += f.Size
		}
	}
	// One group would hold every small part; the large part is at least
	// half the target, so it stays.
	target := max(small+1, large*2-1)
	plan, _ := compactNow(t, s, "c-1", connectors.CompactSettings{TargetFileBytes: target}, time.Now())
	if !slices.Equal(plan.Files, []int{4, 16}) {
		t.Errorf("groups of %v parts, want 4 and 16 (the runs beside the large part %s)", plan.Files, before[4])
	}
	after := dataNames(t, s, hour)
	if len(after) != 3 || after[1] != before[4] {
		t.Errorf("after compaction the hour holds %v, want the large part %s between two rewrites", after, before[4])
	}
	if pairs := hourKeyOrder(t, s, hour); pairs == 0 {
		t.Error("no key has two events in the hour")
	}
}

func TestCompactWindowThenRerun(t *testing.T)   { testCompactWindowThenRerun(t, false) }
func TestCompactWindowThenRerunS3(t *testing.T) { testCompactWindowThenRerun(t, true) }

// testCompactWindowThenRerun compacts a window, then loads it again:
// readers (who follow the switch manifest) read the window's new rows,
// not the rewrite the manifest names.
func testCompactWindowThenRerun(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	w := connectors.Window{From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)}
	outs, want := stageTasks(t, s, "w-1", 40, func(i int) string { return jsonlRows(i*5, 5) })
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "w-1", Mode: connectors.ModeAppend, Window: &w, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	_, res := compactNow(t, s, "c-1", connectors.CompactSettings{}, time.Now())
	if res.Partitions != 1 || res.FilesAfter != 1 {
		t.Fatalf("result %+v", res)
	}
	dir := joinPath(s.base(), WindowDir(w))
	if got, err := ReadChecksum(dir, "jsonl"); err != nil || got != want {
		t.Fatalf("window after compaction: %d rows, %v", got.Rows, err)
	}
	if got, err := ReadChecksum(s.base(), "jsonl"); err != nil || got != want {
		t.Fatalf("dataset after compaction: %d rows, %v", got.Rows, err)
	}
	mdir := WindowDir(w)
	if s3 {
		mdir += "/" + runDirPrefix + "c-1"
	}
	m, err := s.tree().marker(ctx, mdir)
	if err != nil || m.Run != "w-1" || m.Compacted == nil || m.Compacted.Run != "c-1" || m.Rows != want.Rows {
		t.Errorf("marker %+v, %v", m, err)
	}
	// The window loaded again replaces the rewrite, rows not doubled.
	outs, want = stageTasks(t, s, "w-2", 3, func(i int) string { return jsonlRows(1000+i*7, 7) })
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "w-2", Mode: connectors.ModeAppend, Window: &w, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadChecksum(dir, "jsonl"); err != nil || got != want {
		t.Errorf("window re-run after compaction: %d rows, want %d (%v)", got.Rows, want.Rows, err)
	}
	if got, err := ReadChecksum(s.base(), "jsonl"); err != nil || got != want {
		t.Errorf("dataset after the window's re-run: %d rows, want %d (%v)", got.Rows, want.Rows, err)
	}
}

func TestVacuumKeepsRollbackWindow(t *testing.T)   { testVacuum(t, false) }
func TestVacuumKeepsRollbackWindowS3(t *testing.T) { testVacuum(t, true) }

// testVacuum commits four versions (keep_versions 3), compacts the
// exposed one, leaves the staging of a failed run and of a run in flight,
// and vacuums: the failed run's staging, the version beyond
// keep_versions and (once past the retention) the directory the rewrite
// replaced go; every kept version can still be rolled back to, holding
// its rows.
func testVacuum(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{KeepVersions: 4})
	wants := map[int64]connectors.Checksum{}
	for v := int64(1); v <= 4; v++ {
		run := fmt.Sprintf("load-%d", v)
		outs, want := stageTasks(t, s, run, 6, func(i int) string { return jsonlRows(int(v)*1000+i*4, 4) })
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Version: v, Tasks: outs}); err != nil {
			t.Fatal(err)
		}
		wants[v] = want
	}
	s.cfg.KeepVersions = 3 // the vacuum keeps 3; version 1 goes
	compactNow(t, s, "compact-1", connectors.CompactSettings{}, time.Now())
	stageTasks(t, s, "failed-run", 1, func(int) string { return jsonlRows(0, 1) })
	stageTasks(t, s, "live-run", 1, func(int) string { return jsonlRows(0, 1) })
	active := func(context.Context) ([]string, error) { return []string{"live-run"}, nil }
	vacuum := func(now time.Time, dry bool) connectors.VacuumReport {
		t.Helper()
		rep, err := s.Vacuum(ctx, connectors.VacuumRequest{Settings: connectors.CompactSettings{Retention: time.Hour}.WithDefaults(),
			Now: now, DryRun: dry, Active: active})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	paths := func(rep connectors.VacuumReport) []string {
		var out []string
		for _, it := range rep.Removed {
			rel := strings.TrimPrefix(strings.TrimPrefix(it.Path, s.base()), "/")
			out = append(out, rel)
			if it.Bytes <= 0 || it.Files <= 0 {
				t.Errorf("%s: %d files, %d bytes", it.Path, it.Files, it.Bytes)
			}
		}
		return out
	}
	soon := paths(vacuum(time.Now(), true))
	if want := []string{"_staging/failed-run", "v000001"}; !slices.Equal(soon, want) {
		t.Errorf("dry run within the retention: %v, want %v", soon, want)
	}
	rep := vacuum(time.Now().Add(2*time.Hour), false)
	if got, want := paths(rep), []string{"_staging/failed-run", "v000001", "v000004"}; !slices.Equal(got, want) {
		t.Errorf("vacuum past the retention removed %v, want %v", got, want)
	}
	if len(rep.Kept) != 3 || rep.Kept[2].Version != 4 || !rep.Kept[2].Exposed {
		t.Errorf("kept %+v", rep.Kept)
	}
	if got := dataNames(t, s, "_staging/live-run"); len(got) != 1 {
		t.Errorf("the staging of the run in flight: %v", got)
	}
	if got := paths(vacuum(time.Now().Add(2*time.Hour), true)); len(got) != 0 {
		t.Errorf("a second vacuum would remove %v", got)
	}
	// Rollback after the vacuum: every kept version, with its rows.
	for _, v := range []int64{2, 3, 4} {
		if err := s.Expose(ctx, v); err != nil {
			t.Fatalf("expose %d after vacuum: %v", v, err)
		}
		cur, err := Current(s.base())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ReadChecksum(cur, "jsonl"); err != nil || got != wants[v] {
			t.Errorf("version %d after vacuum (%s): %d rows, %v", v, cur, got.Rows, err)
		}
	}
	if err := s.Expose(ctx, 1); err == nil || !connectors.IsPermanent(err) {
		t.Errorf("expose the vacuumed version 1: %v", err)
	}
}

// TestCompactRewriteKilledAttempt: a rewrite attempt abandoned mid-file
// (a worker killed) leaves only what the retry wrote in the rewrite.
func TestCompactRewriteKilledAttempt(t *testing.T) { testCompactKilled(t, false) }
func TestCompactRewriteKilledAttemptS3(t *testing.T) {
	testCompactKilled(t, true)
}

func testCompactKilled(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	outs, want := stageTasks(t, s, "load-1", 30, func(i int) string { return jsonlRows(i*10, 10) })
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "load-1", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	settings := connectors.CompactSettings{}.WithDefaults()
	plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: "c-1", Settings: settings, Now: time.Now()})
	if err != nil || len(plan.Groups) != 1 {
		t.Fatalf("plan: %d groups, %v", len(plan.Groups), err)
	}
	// Attempt 1 dies mid-file: its output never closes.
	dead, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "c-1", TaskID: "t00000-0", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Write(ctx, jsonlBatch(`{"id":-1}`)); err != nil {
		t.Fatal(err)
	}
	out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: "c-1", TaskID: "t00000", Attempt: 2}, plan.Groups[0])
	if err != nil {
		t.Fatal(err)
	}
	if out.Checksum != want {
		t.Errorf("rewrite: %d rows, checksum %s; want %d, %s", out.Rows, out.Checksum, want.Rows, want)
	}
	if _, err := s.CommitCompaction(ctx, connectors.CompactCommit{RunID: "c-1", Settings: settings,
		Groups: []connectors.CompactedGroup{{Group: plan.Groups[0], Output: out}}}); err != nil {
		t.Fatal(err)
	}
	cur, err := Current(s.base())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ReadChecksum(cur, "jsonl"); err != nil || got != want {
		t.Errorf("compacted version: %d rows, checksum %s (%v); want %d, %s", got.Rows, got, err, want.Rows, want)
	}
	if s3 {
		if ups := uploadsOf(t, s, s.s3.dir("")); len(ups) != 0 {
			t.Errorf("uploads left: %v", ups)
		}
	} else if _, err := os.Stat(stagingDir(s.root, "c-1")); !os.IsNotExist(err) {
		t.Errorf("staging left: %v", err)
	}
	dead.Abort(ctx)
}

// TestCompactParquetSchemas compacts Parquet files of two schemas (tasks
// that inferred different types) into one file per schema.
func TestCompactParquetSchemas(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, false, SinkConfig{Format: "parquet"})
	outs, _ := stageTasks(t, s, "load-1", 8, func(i int) string {
		if i >= 4 {
			return fmt.Sprintf(`{"id":%d,"v":"s%d"}`+"\n", i, i) // v a string in these tasks
		}
		return fmt.Sprintf(`{"id":%d,"v":%d}`+"\n", i, i)
	})
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "load-1", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	want, err := ReadChecksum(filepath.Join(s.root, "v000001"), "parquet")
	if err != nil || want.Rows != 8 {
		t.Fatalf("%d rows, %v", want.Rows, err)
	}
	_, res := compactNow(t, s, "c-1", connectors.CompactSettings{}, time.Now())
	if res.FilesBefore != 8 || res.FilesAfter != 2 {
		t.Errorf("result %+v", res)
	}
	cur, _ := Current(s.base())
	if got, err := ReadChecksum(cur, "parquet"); err != nil || got != want {
		t.Errorf("compacted: %d rows, %v", got.Rows, err)
	}
}

// A dataset of runs appended without a window (runs by position): a
// vacuum removes a commit's build of a run that is not in flight and keeps
// one of a run in flight; the runs' directories are never removed, and a
// compaction leaves them as they are.
func TestVacuumAppendedRuns(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, false, SinkConfig{})
	outs, want := stageTasks(t, s, "pos-1", 3, func(i int) string { return jsonlRows(i*4, 4) })
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "pos-1", Mode: connectors.ModeAppend, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	for _, run := range []string{"pos-2", "pos-3"} {
		if err := os.MkdirAll(filepath.Join(s.root, "."+RunDir(run)+".building"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	active := func(context.Context) ([]string, error) { return []string{"pos-3"}, nil }
	rep, err := s.Vacuum(ctx, connectors.VacuumRequest{Settings: connectors.CompactSettings{}.WithDefaults(), Now: time.Now(), Active: active})
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, it := range rep.Removed {
		removed = append(removed, filepath.Base(it.Path))
	}
	if want := []string{".run=pos-2.building"}; !slices.Equal(removed, want) {
		t.Errorf("vacuum removed %v, want %v", removed, want)
	}
	if _, err := os.Stat(filepath.Join(s.root, ".run=pos-3.building")); err != nil {
		t.Errorf("the build of the run in flight: %v", err)
	}
	plan, _ := compactNow(t, s, "compact-1", connectors.CompactSettings{}, time.Now())
	if len(plan.Groups) != 0 {
		t.Errorf("a compaction planned %d groups in appended runs", len(plan.Groups))
	}
	if got, err := ReadChecksum(filepath.Join(s.root, RunDir("pos-1")), "jsonl"); err != nil || got != want {
		t.Errorf("the appended run after vacuum and compaction: %d rows %v, want %d", got.Rows, err, want.Rows)
	}
}

func TestCompactRunAllPartitions(t *testing.T)   { testCompactRunAll(t, false) }
func TestCompactRunAllPartitionsS3(t *testing.T) { testCompactRunAll(t, true) }

// testCompactRunAll compacts three closed hours of a change log in one
// run: a commit that fails while building the last hour's rewrite swaps
// none of them in; a commit that stops after swapping the first (a crash
// in the swaps) is finished by the commit repeated, which swaps in the
// others; each hour then holds its rows once, in one file.
func testCompactRunAll(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := newSink(t, s3, SinkConfig{})
	a, err := NewApplier(ApplierConfig{Path: s.cfg.Path, CloseAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	seq := uint64(0)
	for h := range 3 {
		for i := range 10 {
			var evs []connectors.Event
			for range 3 {
				seq++
				evs = append(evs, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: "insert", Schema: "public", Table: "t",
					After: protocol.Row{"id": protocol.Text(fmt.Sprint(seq))}, CommitTime: h0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Second)}})
			}
			if err := a.Apply(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.CloseHours(ctx, h0.Add(4*time.Hour), true); err != nil {
		t.Fatal(err)
	}
	hours := []string{"public.t/date=2026-11-25/hour=07", "public.t/date=2026-11-25/hour=08", "public.t/date=2026-11-25/hour=09"}
	sums := map[string]connectors.Checksum{}
	names := map[string][]string{}
	for _, h := range hours {
		sum, err := ReadChecksum(joinPath(s.base(), h), "jsonl")
		if err != nil || sum.Rows != 30 {
			t.Fatalf("%s holds %d rows (%v) before compaction, want 30", h, sum.Rows, err)
		}
		sums[h], names[h] = sum, dataNames(t, s, h)
	}
	// compacted reports which hours hold their rewrite (one file), and
	// checks every hour holds its rows once.
	compacted := func(step string) []bool {
		t.Helper()
		var out []bool
		for _, h := range hours {
			sum, err := ReadChecksum(joinPath(s.base(), h), "jsonl")
			if err != nil || sum != sums[h] {
				t.Fatalf("%s: %s holds %d rows, checksum %s (%v); want %d, %s", step, h, sum.Rows, sum, err, sums[h].Rows, sums[h])
			}
			dir := h
			if s3 {
				// The old files stay until a vacuum; readers follow the
				// hour's pointer.
				ptr, err := s.s3.pointer(ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				if ptr != "" {
					dir = h + "/" + ptr
				}
			}
			got := dataNames(t, s, dir)
			switch {
			case len(got) == 1:
				out = append(out, true)
			case slices.Equal(got, names[h]):
				out = append(out, false)
			default:
				t.Fatalf("%s: %s holds %v, neither its files nor one rewrite", step, h, got)
			}
		}
		return out
	}
	settings := connectors.CompactSettings{}.WithDefaults()
	plan, err := s.PlanCompaction(ctx, connectors.CompactRequest{RunID: "c-1", Settings: settings, Now: time.Now()})
	if err != nil || len(plan.Groups) != 3 {
		t.Fatalf("plan: %d groups, %v; want one per hour", len(plan.Groups), err)
	}
	var groups []connectors.CompactedGroup
	for i, g := range plan.Groups {
		out, err := s.Rewrite(ctx, connectors.TaskRef{RunID: "c-1", TaskID: fmt.Sprintf("t%05d", i), Attempt: 1}, g)
		if err != nil {
			t.Fatalf("rewrite %s: %v", g.Key, err)
		}
		groups = append(groups, connectors.CompactedGroup{Group: g, Output: out})
	}
	commit := func() error {
		_, err := s.CommitCompaction(ctx, connectors.CompactCommit{RunID: "c-1", Groups: groups, Settings: settings})
		return err
	}
	// The last hour's output is lost: nothing is swapped in.
	good := groups[2].Output
	groups[2].Output.Location += ".lost"
	if err := commit(); err == nil {
		t.Fatal("a commit whose last output is missing succeeded")
	}
	if got := compacted("after a commit that failed building"); slices.Contains(got, true) {
		t.Fatalf("a commit that failed building its last rewrite swapped in %v", got)
	}
	groups[2].Output = good
	// A crash after the first swap: the commit repeated swaps the rest.
	crash := errors.New("crash")
	s.beforeSwap = func(unit string) error {
		if unit != hours[0] {
			return crash
		}
		return nil
	}
	if err := commit(); !errors.Is(err, crash) {
		t.Fatalf("commit: %v, want the crash", err)
	}
	if got := compacted("after a crash in the swaps"); !slices.Equal(got, []bool{true, false, false}) {
		t.Fatalf("after a crash after the first swap the hours' rewrites are in: %v", got)
	}
	s.beforeSwap = nil
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	if got := compacted("after the commit repeated"); !slices.Equal(got, []bool{true, true, true}) {
		t.Fatalf("after the commit repeated the hours' rewrites are in: %v", got)
	}
}
