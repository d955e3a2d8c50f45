package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
	"github.com/sluicehq/sluice/protocol"
)

func uploadsOf(t *testing.T, s *Sink, prefix string) []string {
	t.Helper()
	keys, err := s.s3.b.Uploads(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// s3Sink opens a sink on a fresh prefix of the test bucket.
func s3Sink(t *testing.T, cfg SinkConfig) *Sink {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = s3test.Env(t).Join("ds").String()
	}
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keysUnder lists the keys under rel (relative to the sink's root), as
// paths relative to it, sorted.
func keysUnder(t *testing.T, r *s3Root, rel string) []string {
	t.Helper()
	var out []string
	err := r.b.List(context.Background(), r.dir(rel), func(o objstore.Object) error {
		out = append(out, strings.TrimPrefix(o.Key, r.dir(rel)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkVersionS3 checks the dataset exposes version name holding want
// (through Current and ReadChecksum, as readers find it), with its
// marker; with final, that no staging object and no upload is left.
func checkVersionS3(t *testing.T, s *Sink, name string, want connectors.Checksum, final bool) {
	t.Helper()
	root := s.s3.url("")
	cur, err := Current(root)
	if err != nil || cur != s.s3.url(name) {
		t.Fatalf("Current = %q, %v; want %s", cur, err, s.s3.url(name))
	}
	got, err := ReadChecksum(cur, "jsonl")
	if err != nil || got != want {
		t.Errorf("exposed rows %d checksum %s (%v), want rows %d checksum %s", got.Rows, got, err, want.Rows, want)
	}
	m, err := s.s3.readMarker(context.Background(), name)
	if err != nil || m.Rows != want.Rows || m.Checksum != want.String() || len(m.Files) == 0 {
		t.Errorf("_SUCCESS = %+v, %v", m, err)
	}
	var data []string
	for _, k := range keysUnder(t, s.s3, name) {
		if k != SuccessFile {
			data = append(data, k)
		}
	}
	if !slices.Equal(data, m.Files) {
		t.Errorf("%s holds %q, its marker lists %q", name, data, m.Files)
	}
	if !final {
		return
	}
	if left := keysUnder(t, s.s3, "_staging"); len(left) != 0 {
		t.Errorf("staging left: %q", left)
	}
	if ups := uploadsOf(t, s, s.s3.dir("")); len(ups) != 0 {
		t.Errorf("uploads in progress left: %q", ups)
	}
}

// A commit on S3 interrupted at any step is completed by a commit
// repeated by a new sink; until its pointer is written, the previous
// version stays exposed.
func TestCommitCrashResumeS3(t *testing.T) {
	ctx := context.Background()
	loc := s3test.Env(t)
	crashes := map[string]crashFunc{
		"none": func(*testing.T, *Sink, connectors.CommitRequest) {},
		"copied in part, a stray object": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			obj, err := s.s3.b.Head(ctx, s.s3.key(req.Tasks[0].Location))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.s3.b.Copy(ctx, obj, s.s3.key("v000002/"+path.Base(req.Tasks[0].Location))); err != nil {
				t.Fatal(err)
			}
			if err := s.s3.b.Put(ctx, s.s3.key("v000002/part-stray.jsonl"), []byte("{\"stray\":1}\n")); err != nil {
				t.Fatal(err)
			}
		},
		"all copied, the staged outputs gone, no pointer": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if err := s.s3.fill(ctx, req.RunID, "v000002", wantOf(req)); err != nil {
				t.Fatal(err)
			}
			if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(req.RunID))); err != nil {
				t.Fatal(err)
			}
		},
		"pointer written, no marker": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if err := s.s3.fill(ctx, req.RunID, "v000002", wantOf(req)); err != nil {
				t.Fatal(err)
			}
			if err := s.s3.point(ctx, "", "v000002"); err != nil {
				t.Fatal(err)
			}
		},
		"committed, staging not removed": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if _, err := s.Commit(ctx, req); err != nil {
				t.Fatal(err)
			}
			if err := s.s3.b.Put(ctx, s.s3.key(stagingRel(req.RunID)+"/part-late.jsonl"), []byte("{}\n")); err != nil {
				t.Fatal(err)
			}
		},
	}
	testCrashResume(t, crashes, func(t *testing.T, name string) *Sink {
		return s3Sink(t, SinkConfig{Path: loc.Join(name).String()})
	}, checkVersionS3)
}

// A listed output missing from staging and from the version fails the
// commit permanently; the previous version stays exposed.
func TestCommitMissingOutputS3(t *testing.T) {
	ctx := context.Background()
	s := s3Sink(t, SinkConfig{})
	out1 := stage(t, s, "run-1", []connectors.Batch{jsonlBatch(`{"a":1}`)})
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: out1}); err != nil {
		t.Fatal(err)
	}
	outs := stage(t, s, "run-2", []connectors.Batch{jsonlBatch(`{"a":2}`)}, []connectors.Batch{jsonlBatch(`{"a":3}`)})
	if err := s.s3.b.Delete(ctx, s.s3.key(outs[1].Location)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-2", Version: 2, Tasks: outs})
	if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Commit with a missing output = %v, want a permanent error", err)
	}
	checkVersionS3(t, s, "v000001", rowsSum(jsonlBatch(`{"a":1}`)), false)
	if kept, err := s.Versions(ctx); err != nil || len(kept) != 1 {
		t.Errorf("Versions = %+v, %v; want version 1 only", kept, err)
	}
}

// bigBatch returns JSONL rows of about size bytes, tagged with tag.
func bigBatch(size int, tag string) connectors.Batch {
	var b bytes.Buffer
	rows := 0
	for b.Len() < size {
		fmt.Fprintf(&b, `{"id":%d,"tag":%q,"pad":"%s"}`+"\n", rows, tag, strings.Repeat("x", 200))
		rows++
	}
	return connectors.Batch{Raw: b.Bytes(), Format: connectors.FormatJSONL, Rows: int64(rows), Position: tag}
}

// A task's retried attempt replaces the object of the earlier one; an
// attempt that dies mid-upload (its parts uploaded, the upload neither
// completed nor aborted, as a killed worker leaves it) is never visible,
// and the commit aborts its upload.
func TestRetryAndDeadUploadS3(t *testing.T) {
	ctx := context.Background()
	s := s3Sink(t, SinkConfig{})
	write := func(attempt int, b connectors.Batch) connectors.TaskWriter {
		t.Helper()
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "run-1", TaskID: "t1", Attempt: attempt})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		return w
	}
	first := write(1, bigBatch(10<<20, "first"))
	out1, err := first.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second := write(2, bigBatch(9<<20, "second"))
	out2, err := second.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out1.Location != out2.Location || out1.Checksum == out2.Checksum {
		t.Fatalf("attempts gave %+v and %+v: want one location, two contents", out1, out2)
	}
	// The third attempt dies with a part uploaded.
	dead := write(3, bigBatch(17<<20, "dead"))
	deadline := time.Now().Add(30 * time.Second)
	for len(uploadsOf(t, s, s.s3.key(out1.Location))) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the dead attempt started no upload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dead.(*s3TaskWriter).obj.Interrupt() // its process is gone: nothing more is sent
	got, err := ReadChecksum(s.s3.url("_staging/run-1"), "jsonl")
	if err != nil || got != out2.Checksum {
		t.Fatalf("staging holds %v rows (%v), want the second attempt's %d", got.Rows, err, out2.Rows)
	}
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: []connectors.TaskOutput{out2}}); err != nil {
		t.Fatal(err)
	}
	checkVersionS3(t, s, "v000001", out2.Checksum, true)
}

// Pruning keeps the newest keep_versions and the exposed one.
func TestPruneS3(t *testing.T) {
	ctx := context.Background()
	s := s3Sink(t, SinkConfig{KeepVersions: 2})
	for v := int64(1); v <= 5; v++ {
		run := fmt.Sprintf("run-%d", v)
		outs := stage(t, s, run, []connectors.Batch{jsonlBatch(fmt.Sprintf(`{"v":%d}`, v))})
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Version: v, Tasks: outs}); err != nil {
			t.Fatal(err)
		}
	}
	versions := func() []int64 {
		dirs, err := s.s3.versionDirs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var vs []int64
		for _, d := range dirs {
			vs = append(vs, d.v)
		}
		return vs
	}
	if got := versions(); !slices.Equal(got, []int64{4, 5}) {
		t.Errorf("versions after 5 commits, keep 2: %v", got)
	}
	if err := s.Expose(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Expose(ctx, 1); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "not kept") {
		t.Errorf("Expose of a pruned version = %v", err)
	}
	outs := stage(t, s, "run-6", []connectors.Batch{jsonlBatch(`{"v":6}`)})
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-6", Version: 6, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	if got := versions(); !slices.Equal(got, []int64{5, 6}) {
		t.Errorf("versions after a rollback to 4 and a commit of 6, keep 2: %v", got)
	}
}

// Windows on S3: each window's runs under window=<from>_<to>/run=<run>/
// behind the window's current pointer; a re-run replaces the exposed run
// and removes the earlier one; a repeated commit changes nothing; a
// window covering smaller ones removes them; a partial overlap is refused
// before anything changes. A source over the dataset reads each window's
// exposed run only.
func TestSinkCommitWindowS3(t *testing.T) {
	ctx := context.Background()
	s := s3Sink(t, SinkConfig{})
	root := s.s3.url("")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	w01 := connectors.Window{From: h(0), To: h(1)}
	w12 := connectors.Window{From: h(1), To: h(2)}
	read := func(p string) connectors.Checksum {
		t.Helper()
		got, err := ReadChecksum(p, "jsonl")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	outs := stage(t, s, "r1", []connectors.Batch{jsonlBatch(`{"a":1}`, `{"a":2}`)})
	res, err := s.Commit(ctx, appendReq("r1", w01, outs))
	if err != nil {
		t.Fatal(err)
	}
	dir := root + "/window=20260101T000000Z_20260101T010000Z"
	if res.Location != dir || res.Marker != dir+"/run=r1/_SUCCESS" {
		t.Fatalf("commit result %+v", res)
	}
	if got, want := read(dir), rowsSum(jsonlBatch(`{"a":1}`, `{"a":2}`)); got != want {
		t.Fatalf("window holds %v, want %v", got, want)
	}
	outs2 := stage(t, s, "r2", []connectors.Batch{jsonlBatch(`{"a":3}`)})
	if _, err := s.Commit(ctx, appendReq("r2", w12, outs2)); err != nil {
		t.Fatal(err)
	}
	outs3 := stage(t, s, "r3", []connectors.Batch{jsonlBatch(`{"a":1}`, `{"a":2}`, `{"a":4}`)})
	for range 2 {
		if _, err := s.Commit(ctx, appendReq("r3", w01, outs3)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := read(dir), rowsSum(jsonlBatch(`{"a":1}`, `{"a":2}`, `{"a":4}`)); got != want {
		t.Fatalf("replaced window holds %v, want %v", got, want)
	}
	if got := keysUnder(t, s.s3, WindowDir(w01)); !slices.Equal(got, []string{"current", "run=r3/_SUCCESS", "run=r3/part-ta.jsonl"}) {
		t.Fatalf("window holds %q", got)
	}
	m, err := s.s3.readMarker(ctx, WindowDir(w01)+"/run=r3")
	if err != nil || m.Run != "r3" || m.Window == nil || *m.Window != w01 {
		t.Fatalf("marker %+v (%v)", m, err)
	}
	if all := read(root); all.Rows != 4 {
		t.Fatalf("the dataset reads as %d rows, want 4", all.Rows)
	}
	// A source over the dataset follows each window's pointer.
	src, err := NewSource(SourceConfig{Path: root})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := src.Plan(ctx, connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan = %+v, %v", plan, err)
	}

	outs4 := stage(t, s, "r4", []connectors.Batch{jsonlBatch(`{"a":9}`)})
	if _, err := s.Commit(ctx, appendReq("r4", connectors.Window{From: h(0).Add(30 * time.Minute), To: h(2)}, outs4)); err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("partial overlap: err = %v, want a permanent error", err)
	}
	if all := read(root); all.Rows != 4 {
		t.Fatalf("after a refused commit the dataset reads as %d rows, want 4", all.Rows)
	}
	if _, err := s.Commit(ctx, appendReq("r4", connectors.Window{From: h(0), To: h(3)}, outs4)); err != nil {
		t.Fatal(err)
	}
	if got := keysUnder(t, s.s3, ""); !slices.Equal(got, []string{"window=20260101T000000Z_20260101T030000Z/current",
		"window=20260101T000000Z_20260101T030000Z/run=r4/_SUCCESS", "window=20260101T000000Z_20260101T030000Z/run=r4/part-ta.jsonl"}) {
		t.Fatalf("dataset holds %q", got)
	}
}

// A source on S3: a path naming a current pointer reads the version it
// named when the run was planned; a path naming one object reads it; an
// object replaced after planning fails its read permanently; a removed
// one, retryably.
func TestSourceS3Paths(t *testing.T) {
	ctx := context.Background()
	loc := s3test.Env(t)
	b := s3test.Client(t)
	put := func(rel, data string) {
		t.Helper()
		if err := b.Put(ctx, loc.Join(rel).Key, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	put("ds/v000001/part-a.jsonl", "{\"v\":1}\n")
	put("ds/v000002/part-a.jsonl", "{\"v\":2}\n{\"v\":2}\n")
	put("ds/current", "v000001\n")
	rows := func(src *Source, p protocol.Partition) (int64, error) {
		var n int64
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error { n += b.Rows; return nil })
		return n, err
	}
	src, err := NewSource(SourceConfig{Path: loc.Join("ds/current").String()})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := src.Plan(ctx, connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan = %+v, %v", plan, err)
	}
	put("ds/current", "v000002\n")
	if n, err := rows(src, plan.Partitions[0]); err != nil || n != 1 {
		t.Errorf("Read after current moved: %d rows, %v; want the planned version's 1 row", n, err)
	}
	// The dataset's root reads the exposed version only.
	src, _ = NewSource(SourceConfig{Path: loc.Join("ds").String()})
	plan, err = src.Plan(ctx, connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan of the root = %+v, %v", plan, err)
	}
	if n, err := rows(src, plan.Partitions[0]); err != nil || n != 2 {
		t.Errorf("the dataset root reads %d rows, %v; want the exposed version's 2", n, err)
	}
	// Objects named current that are not pointers to a directory beside
	// them are files like any other.
	put("junk/current", "not a pointer\n")
	put("junk/sub/current", "nowhere\n")
	put("junk/a.jsonl", "{\"a\":1}\n")
	put("junk/sub/b.jsonl", "{\"b\":1}\n")
	src, _ = NewSource(SourceConfig{Path: loc.Join("junk").String()})
	plan, err = src.Plan(ctx, connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan of a tree with files named current = %+v, %v", plan, err)
	}
	if n, err := rows(src, plan.Partitions[0]); err != nil || n != 2 {
		t.Errorf("a tree with files named current reads %d rows, %v; want 2", n, err)
	}
	// One object; then it is replaced, then removed.
	put("one/a.jsonl", "{\"a\":1}\n")
	src, _ = NewSource(SourceConfig{Path: loc.Join("one/a.jsonl").String()})
	plan, err = src.Plan(ctx, connectors.PlanRequest{})
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan of one object = %+v, %v", plan, err)
	}
	if n, err := rows(src, plan.Partitions[0]); err != nil || n != 1 {
		t.Errorf("one object: %d rows, %v", n, err)
	}
	put("one/a.jsonl", "{\"a\":2}\n")
	if _, err := rows(src, plan.Partitions[0]); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "a.jsonl changed since the run was planned") {
		t.Errorf("Read of a replaced object = %v, want a permanent error naming it", err)
	}
	if err := b.Delete(ctx, loc.Join("one/a.jsonl").Key); err != nil {
		t.Fatal(err)
	}
	if _, err := rows(src, plan.Partitions[0]); err == nil || connectors.IsPermanent(err) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a removed object = %v, want a retryable not-exist error", err)
	}
}

// Readiness of a time partition on S3: _SUCCESS, or the next partition's
// objects.
func TestSourceReadinessS3(t *testing.T) {
	ctx := context.Background()
	loc := s3test.Env(t)
	b := s3test.Client(t)
	w2 := hourWindow(25, 2)
	req := connectors.PlanRequest{RunID: "r", Window: &w2}
	ready := func(convention string) bool {
		t.Helper()
		src, err := NewSource(SourceConfig{Path: loc.String(), Format: "jsonl", Layout: "date={date}/hour={hour}", Ready: convention})
		if err != nil {
			t.Fatal(err)
		}
		ok, what, err := src.Ready(ctx, req)
		if err != nil || what != loc.String()+"/date=2026-11-25/hour=02" {
			t.Fatalf("Ready = %v, %q, %v", ok, what, err)
		}
		return ok
	}
	put := func(rel string) {
		if err := b.Put(ctx, loc.Join(rel).Key, []byte("{\"x\":1}\n")); err != nil {
			t.Fatal(err)
		}
	}
	put("date=2026-11-25/hour=02/part-0.jsonl")
	if ready("") || ready(ReadyNextPartition) {
		t.Fatal("ready with neither a marker nor a next partition")
	}
	put("date=2026-11-25/hour=03/part-0.jsonl")
	if ready("") || !ready(ReadyNextPartition) {
		t.Fatal("the next partition makes it ready by that convention only")
	}
	put("date=2026-11-25/hour=02/" + SuccessFile)
	if !ready("") {
		t.Fatal("not ready with its _SUCCESS")
	}
	src, _ := NewSource(SourceConfig{Path: loc.String(), Format: "jsonl", Layout: "date={date}/hour={hour}"})
	plan, err := src.Plan(ctx, req)
	if err != nil || len(plan.Partitions) != 1 {
		t.Fatalf("Plan of the partition = %+v, %v", plan, err)
	}
	missing := hourWindow(25, 9)
	if plan, err := src.Plan(ctx, connectors.PlanRequest{Window: &missing}); err != nil || len(plan.Partitions) != 0 {
		t.Fatalf("Plan of a missing partition = %+v, %v; want no task", plan, err)
	}
}
