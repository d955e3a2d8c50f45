package files

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
)

// planArrivals plans a run by arrival of pipeline "land" from watermark
// wm and returns the files its partitions read, in order, and the
// watermark it reaches.
func planArrivals(t *testing.T, src *Source, wm string) ([]string, string) {
	t.Helper()
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{RunID: "r", Pipeline: "land", ByPosition: true, Watermark: wm})
	if err != nil {
		t.Fatalf("Plan from %q: %v", wm, err)
	}
	var got []string
	for _, p := range plan.Partitions {
		var spec partSpec
		if err := json.Unmarshal(p.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		for _, f := range spec.Files {
			got = append(got, f.Path)
		}
	}
	return got, plan.Watermark
}

// touch sets the modification time of dir/rel to minute m of a fixed day.
func touch(t *testing.T, dir, rel string, m int) {
	t.Helper()
	at := time.Date(2026, 11, 25, 10, m, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, rel), at, at); err != nil {
		t.Fatal(err)
	}
}

// A run by arrival loads the files new or changed since its watermark,
// oldest first, each once per change; the watermark names a manifest kept
// beside the data; a failed run's plan, repeated from the same
// watermark, plans the same files to the same watermark; only the
// manifests of the committed position and of the newest plan stay.
func TestPlanByArrival(t *testing.T) {
	dir := t.TempDir()
	src, err := NewSource(SourceConfig{Path: dir, Format: "jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "b.jsonl", jsonlRows(0, 3))
	writeFile(t, dir, "sub/a.jsonl", jsonlRows(3, 2))
	writeFile(t, dir, ".incoming.jsonl", jsonlRows(5, 1)) // still being written: hidden
	touch(t, dir, "b.jsonl", 1)
	touch(t, dir, "sub/a.jsonl", 2)

	got, wm1 := planArrivals(t, src, "")
	if !slices.Equal(got, []string{"b.jsonl", "sub/a.jsonl"}) || !strings.HasPrefix(wm1, "files:2@") {
		t.Fatalf("first run: %v to %q; want both files, oldest first, to a manifest of 2", got, wm1)
	}
	mdir := filepath.Join(dir, "_sluice", "manifests", "land")
	if ms := dirNames(t, mdir); len(ms) != 1 {
		t.Fatalf("manifests %v, want the one the watermark names", ms)
	}
	if got, wm := planArrivals(t, src, wm1); len(got) != 0 || wm != wm1 {
		t.Fatalf("nothing new: %v to %q; want no file, the same watermark", got, wm)
	}

	// c arrives, b is rewritten (a change), a file arrives with an older
	// modification time than anything loaded (moved in): all three are
	// loaded, oldest first.
	writeFile(t, dir, "c.jsonl", jsonlRows(10, 1))
	writeFile(t, dir, "b.jsonl", jsonlRows(0, 4))
	writeFile(t, dir, "old.jsonl", jsonlRows(20, 1))
	touch(t, dir, "c.jsonl", 5)
	touch(t, dir, "b.jsonl", 6)
	touch(t, dir, "old.jsonl", 0)
	got, wm2 := planArrivals(t, src, wm1)
	if want := []string{"old.jsonl", "c.jsonl", "b.jsonl"}; !slices.Equal(got, want) || !strings.HasPrefix(wm2, "files:4@") {
		t.Fatalf("second run: %v to %q; want %v to a manifest of 4", got, wm2, want)
	}
	// The run failed: planned again from wm1, it reads the same.
	if again, wm := planArrivals(t, src, wm1); !slices.Equal(again, got) || wm != wm2 {
		t.Fatalf("the run planned again: %v to %q; want %v to %q", again, wm, got, wm2)
	}
	if ms := dirNames(t, mdir); len(ms) != 2 {
		t.Fatalf("manifests %v, want the committed one and the new plan's", ms)
	}
	// Committed: the next run from wm2 finds nothing; a deleted file
	// leaves the manifest (its position shrinks), the older manifest is
	// removed.
	if err := os.Remove(filepath.Join(dir, "c.jsonl")); err != nil {
		t.Fatal(err)
	}
	got, wm3 := planArrivals(t, src, wm2)
	if len(got) != 0 || !strings.HasPrefix(wm3, "files:3@") {
		t.Fatalf("after a delete: %v to %q; want no file, a manifest of 3", got, wm3)
	}
	if ms := dirNames(t, mdir); len(ms) != 2 {
		t.Fatalf("manifests %v, want wm2's and wm3's", ms)
	}
	// c comes back as it was: new again.
	writeFile(t, dir, "c.jsonl", jsonlRows(10, 1))
	if got, _ := planArrivals(t, src, wm3); !slices.Equal(got, []string{"c.jsonl"}) {
		t.Fatalf("a file that came back: %v", got)
	}

	// A run is bounded: the oldest files first, the rest next time.
	src.filesPerRun = 1
	writeFile(t, dir, "d.jsonl", jsonlRows(30, 1))
	touch(t, dir, "d.jsonl", 9)
	first, wm4 := planArrivals(t, src, wm3)
	second, _ := planArrivals(t, src, wm4)
	if len(first) != 1 || len(second) != 1 || first[0] == second[0] {
		t.Fatalf("bounded runs: %v then %v; want c and d, one per run", first, second)
	}

	// A watermark whose manifest is gone, or that is not a manifest, is
	// refused for good.
	for _, wm := range []string{"files:3@0123456789abcdef", "2026-01-01T00:00:00Z"} {
		_, err := src.Plan(context.Background(), connectors.PlanRequest{RunID: "r", Pipeline: "land", ByPosition: true, Watermark: wm})
		if err == nil || !connectors.IsPermanent(err) {
			t.Errorf("Plan from %q: %v, want a permanent error", wm, err)
		}
	}
	// A full load reads every file, whatever the watermark.
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{RunID: "r", Pipeline: "land", Watermark: wm2})
	if err != nil || plan.Watermark != "" {
		t.Fatalf("full load: %+v, %v", plan, err)
	}
}

func TestByModifiedRefusesLayout(t *testing.T) {
	if err := checkByModified(json.RawMessage(`{"path":"/in","layout":"date={date}"}`)); err == nil {
		t.Fatal("a source laid out by time was accepted by arrival")
	}
	if err := checkByModified(json.RawMessage(`{"path":"/in","manifest_dir":"/state"}`)); err != nil {
		t.Fatalf("a landing directory: %v", err)
	}
}

// On S3 (versitygw) a run by arrival keeps its manifests under the
// source's prefix and tells a rewritten object by its ETag, even within
// the second of its modification time and at the same size.
func TestPlanByArrivalOnS3(t *testing.T) {
	loc := s3test.Env(t)
	b := s3test.Client(t)
	ctx := context.Background()
	put := func(rel, data string) {
		t.Helper()
		if err := b.Put(ctx, loc.Join(rel).Key, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	put("land/a.jsonl", jsonlRows(0, 2))
	put("land/sub/b.jsonl", jsonlRows(2, 3))
	put("land/_incoming.jsonl", jsonlRows(5, 1)) // hidden
	src, err := NewSource(SourceConfig{Path: loc.Join("land").String(), Format: "jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, wm1 := planArrivals(t, src, "")
	slices.Sort(got)
	if !slices.Equal(got, []string{"a.jsonl", "sub/b.jsonl"}) || !strings.HasPrefix(wm1, "files:2@") {
		t.Fatalf("first run: %v to %q; want both objects to a manifest of 2", got, wm1)
	}
	manifests := func() []string {
		t.Helper()
		var keys []string
		prefix := loc.Join("land/_sluice/manifests/land").Key + "/"
		if err := b.List(ctx, prefix, func(o objstore.Object) error { keys = append(keys, strings.TrimPrefix(o.Key, prefix)); return nil }); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if ms := manifests(); len(ms) != 1 || !strings.Contains(wm1, strings.TrimSuffix(strings.TrimPrefix(ms[0], manifestPrefix), manifestExt)) {
		t.Fatalf("manifests %v, want the one %s names", ms, wm1)
	}
	if got, wm := planArrivals(t, src, wm1); len(got) != 0 || wm != wm1 {
		t.Fatalf("nothing new: %v to %q", got, wm)
	}
	// a rewritten at once with other rows of the same size; c arrives.
	put("land/a.jsonl", strings.Replace(jsonlRows(0, 2), "name", "nime", 1))
	put("land/c.jsonl", jsonlRows(7, 1))
	got, wm2 := planArrivals(t, src, wm1)
	slices.Sort(got)
	if !slices.Equal(got, []string{"a.jsonl", "c.jsonl"}) || !strings.HasPrefix(wm2, "files:3@") {
		t.Fatalf("second run: %v to %q; want the rewritten a and the new c to a manifest of 3", got, wm2)
	}
	if ms := manifests(); len(ms) != 2 {
		t.Fatalf("manifests %v, want the committed one and the new plan's", ms)
	}
	if got, wm := planArrivals(t, src, wm2); len(got) != 0 || wm != wm2 {
		t.Fatalf("after the second run: %v to %q", got, wm)
	}

	// Manifests on S3 stay in the source's bucket.
	other, err := NewSource(SourceConfig{Path: loc.Join("land").String(), Format: "jsonl", ManifestDir: "s3://another-bucket/state"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Plan(ctx, connectors.PlanRequest{RunID: "r", Pipeline: "land", ByPosition: true}); err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("manifest_dir in another bucket: %v, want a permanent error", err)
	}
}

// A dataset a compaction rewrote is refused by a run by arrival, which
// would load the rewrite's files, holding the rows of files it loaded
// before, as new: before the compaction its windows' files are planned
// once each, after it the plan fails permanently naming the manifest.
func TestPlanByArrivalRefusesCompacted(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, false, SinkConfig{})
	for h := range 2 {
		w := connectors.Window{From: time.Date(2026, 1, 1, h, 0, 0, 0, time.UTC), To: time.Date(2026, 1, 1, h+1, 0, 0, 0, time.UTC)}
		run := fmt.Sprint("w-", h)
		outs, _ := stageTasks(t, s, run, 3, func(i int) string { return jsonlRows(h*100+i*5, 5) })
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, Tasks: outs}); err != nil {
			t.Fatal(err)
		}
	}
	src, err := NewSource(SourceConfig{Path: s.base(), Format: "jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	got, wm := planArrivals(t, src, "")
	if len(got) != 6 {
		t.Fatalf("before the compaction: planned %v, want the 6 files of the 2 windows", got)
	}
	compactNow(t, s, "c-1", connectors.CompactSettings{}, time.Now())
	_, err = src.Plan(ctx, connectors.PlanRequest{RunID: "r2", Pipeline: "land", ByPosition: true, Watermark: wm})
	if !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "a compaction rewrites") || !strings.Contains(err.Error(), "_compacted/manifest.json") {
		t.Fatalf("plan by arrival after the compaction: %v; want a permanent refusal naming the manifest", err)
	}
}
