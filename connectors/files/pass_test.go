package files_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/files/filestest"
	"github.com/sluicehq/sluice/protocol"
)

// treeSum is the checksum of a tree's file names and bytes, every file
// (hidden ones too), computed by filestest and not by Sluice.
func treeSum(t testing.TB, dir string) string {
	t.Helper()
	sum, err := filestest.SumTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return sum.String()
}

// sameTree fails the test unless the trees out and src hold the same
// names and bytes.
func sameTree(t testing.TB, when, out, src string) {
	t.Helper()
	if got, want := treeSum(t, out), treeSum(t, src); got != want {
		t.Errorf("%s: target %s, source %s", when, got, want)
	}
}

// makeTree writes a tree with nested directories, a Delta log, hidden
// files and directories, an empty file and an executable one, and, when
// big > 0, a sparse file of big bytes with data at a few offsets.
func makeTree(t testing.TB, dir string, big int64) {
	t.Helper()
	for rel, content := range map[string]string{
		"events/date=2026-01-01/part-0.parquet":      "PAR1 not really",
		"events/date=2026-01-02/part-0.parquet":      strings.Repeat("x", 3000),
		"table/_delta_log/00000000000000000000.json": `{"commitInfo":{}}` + "\n",
		"table/_delta_log/00000000000000000001.json": `{"add":{"path":"part-0.parquet"}}` + "\n",
		"table/part-0.parquet":                       "bytes\r\nwith CRLF\x00 and NUL",
		".hidden":                                    "dot file",
		".config/settings":                           "a=1",
		"_SUCCESS":                                   "",
		"a/b/c/d/e/deep.txt":                         "deep",
		"with space/ünïcode name.txt":                "names as they are",
	} {
		files.WriteFile(t, dir, rel, content)
	}
	if err := os.Chmod(files.WriteFile(t, dir, "bin/run.sh", "#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if big > 0 {
		f, err := os.Create(filepath.Join(dir, "big", "blob.bin"))
		if errors.Is(err, fs.ErrNotExist) {
			os.MkdirAll(filepath.Join(dir, "big"), 0o755)
			f, err = os.Create(filepath.Join(dir, "big", "blob.bin"))
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(big); err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 64<<20 - 3, 64 << 20, big / 2, big - 11} {
			label := []byte(fmt.Sprintf("at %-8d", off))[:11]
			if _, err := f.WriteAt(label[:min(11, big-off)], off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
}

func passSource(t *testing.T, cfg files.SourceConfig) connectors.Source {
	t.Helper()
	src, err := files.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func passSink(t *testing.T, cfg files.SinkConfig) connectors.Sink {
	t.Helper()
	sink, err := files.NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sink
}

// changeTree rewrites, adds and removes a file of a tree made by makeTree.
func changeTree(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "table/part-0.parquet")
	files.WriteFile(t, dir, "table/part-0.parquet", "rewritten")
	later := time.Now().Add(time.Minute)
	os.Chtimes(p, later, later)
	files.WriteFile(t, dir, "table/_delta_log/00000000000000000002.json", `{"remove":{}}`)
	if err := os.Remove(filepath.Join(dir, "a/b/c/d/e/deep.txt")); err != nil {
		t.Fatal(err)
	}
}

// The passthrough conformance suite on a local tree, mirrored.
func TestPassthroughConformance(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	passConformance(t, out, func(t testing.TB) string { return treeSum(t, out) })
}

// passConformance runs the passthrough conformance suite from a local
// tree into out, mirrored, the target summed by outSum.
func passConformance(t *testing.T, out string, outSum func(testing.TB) string) {
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 0)
	conformance.TestUnits(t, conformance.UnitsHarness{
		Source:       func(t *testing.T) connectors.Source { return passSource(t, files.SourceConfig{Path: src}) },
		Sink:         func(t *testing.T) connectors.Sink { return passSink(t, files.SinkConfig{Path: out, Mirror: true}) },
		Partitioning: connectors.Partitioning{MaxFiles: 3},
		Equal: func(t *testing.T) error {
			if got, want := outSum(t), treeSum(t, src); got != want {
				return fmt.Errorf("target %s, source %s", got, want)
			}
			return nil
		},
		Change: func(t *testing.T) { changeTree(t, src) },
	})
}

// A tree with nested directories, a Delta log, hidden files and a file
// split into ranges is copied byte for byte, names, modes and
// modification times kept; nothing of the run stays staged; a second run
// copies nothing; a third copies a rewritten file and, mirrored, removes
// one the source lost and the directories it leaves empty.
func TestPassthroughTree(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	const big = 3*64<<20 + 12345 // four ranges of 64 MiB at most
	makeTree(t, src, big)
	source := passSource(t, files.SourceConfig{Path: src})
	sink := passSink(t, files.SinkConfig{Path: out, Mirror: true})
	part := connectors.Partitioning{TargetBytes: 64 << 20}

	r, err := conformance.RunUnits(ctx, source, sink, "run-1", nil, part)
	if err != nil {
		t.Fatal(err)
	}
	ranges := 0
	for _, p := range r.Plan.Partitions {
		if strings.HasPrefix(p.Key, "big/blob.bin@") {
			ranges++
		}
	}
	if ranges != 4 {
		t.Errorf("the big file is split into %d ranges, want 4 (%d partitions)", ranges, len(r.Plan.Partitions))
	}
	if got, want := treeSum(t, out), treeSum(t, src); got != want {
		t.Fatalf("target %s, source %s", got, want)
	}
	for _, rel := range []string{"bin/run.sh", "big/blob.bin", ".hidden"} {
		a, _ := os.Stat(filepath.Join(src, rel))
		b, err := os.Stat(filepath.Join(out, rel))
		if err != nil || a.Mode() != b.Mode() || !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s: source %v %v, target %v %v (%v)", rel, a.Mode(), a.ModTime(), b.Mode(), b.ModTime(), err)
		}
	}
	state := filepath.Join(dir, ".out.sluice")
	if es, _ := os.ReadDir(filepath.Join(state, "staging")); len(es) != 0 {
		t.Errorf("staging holds %d entries after the commit", len(es))
	}
	if _, err := os.Stat(filepath.Join(state, "manifests", "run-1.jsonl")); err != nil || r.Watermark != "manifest:run-1" {
		t.Errorf("manifest of run-1: %v (watermark %q)", err, r.Watermark)
	}

	r2, err := conformance.RunUnits(ctx, source, sink, "run-2", &r, part)
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Plan.Partitions) != 0 {
		t.Errorf("a run with nothing changed planned %d partitions: %v", len(r2.Plan.Partitions), r2.Plan.Partitions[0].Key)
	}

	changeTree(t, src)
	r3, err := conformance.RunUnits(ctx, source, sink, "run-3", &r2, part)
	if err != nil {
		t.Fatal(err)
	}
	var units int64
	for _, o := range r3.Outputs {
		units += o.Rows
	}
	if units != 3 { // one rewritten, one new, one removed
		t.Errorf("run-3 wrote %d units, want 3", units)
	}
	sameTree(t, "after run-3", out, src)
	if _, err := os.Stat(filepath.Join(out, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the directories the removed file left empty are still there: %v", err)
	}
	if names, _ := os.ReadDir(filepath.Join(state, "manifests")); len(names) != 2 {
		t.Errorf("%d manifests kept, want 2 (the last and the one before)", len(names))
	}
}

// Without mirror, what the source lost stays in the target; excluded
// files are neither copied nor removed.
func TestPassthroughExcludeNoMirror(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	makeTree(t, src, 0)
	files.WriteFile(t, src, "tmp/x.tmp", "scratch")
	files.WriteFile(t, src, "logs/2026/a.log", "log")
	files.WriteFile(t, out, "keep.tmp", "the target's own")
	source := passSource(t, files.SourceConfig{Path: src, Exclude: []string{"*.tmp", "/logs/2026", ".config"}})
	sink := passSink(t, files.SinkConfig{Path: out})
	r, err := conformance.RunUnits(ctx, source, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{"tmp/x.tmp": false, "logs/2026/a.log": false, ".config/settings": false,
		"keep.tmp": true, ".hidden": true, "table/_delta_log/00000000000000000000.json": true} {
		if _, err := os.Stat(filepath.Join(out, rel)); (err == nil) != want {
			t.Errorf("%s in the target: %v, want %v", rel, err == nil, want)
		}
	}
	os.Remove(filepath.Join(src, ".hidden"))
	if _, err := conformance.RunUnits(ctx, source, sink, "run-2", &r, connectors.Partitioning{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, ".hidden")); err != nil {
		t.Errorf("without mirror, a file the source lost was removed: %v", err)
	}
}

// countingSource counts the bytes its units' bodies give.
type countingSource struct {
	connectors.Source
	n *int64
}

func (c countingSource) ReadUnits(ctx context.Context, p protocol.Partition, emit connectors.EmitUnit) error {
	return c.Source.(connectors.UnitSource).ReadUnits(ctx, p, func(ctx context.Context, u connectors.Unit) error {
		if u.Body != nil {
			u.Body = &countReader{r: u.Body, n: c.n}
		}
		return emit(ctx, u)
	})
}

func (c countingSource) PlanUnits(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	return c.Source.(connectors.UnitSource).PlanUnits(ctx, req)
}

type countReader struct {
	r io.Reader
	n *int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// A task killed half way (its attempt fails after some files) is retried:
// the retry takes the whole files the first attempt staged without
// reading them again, and the commit puts every file in place once.
func TestPassthroughRetryReusesStaged(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	for i := range 10 {
		files.WriteFile(t, src, fmt.Sprintf("f%02d", i), strings.Repeat(fmt.Sprint(i), 1000))
	}
	var read int64
	source := countingSource{Source: passSource(t, files.SourceConfig{Path: src}), n: &read}
	sink := passSink(t, files.SinkConfig{Path: out})
	r, err := conformance.PlanUnits(ctx, source, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Plan.Partitions) != 1 {
		t.Fatalf("%d partitions, want 1", len(r.Plan.Partitions))
	}
	uw, err := sink.(connectors.UnitSink).OpenUnits(ctx, connectors.TaskRef{RunID: "run-1", TaskID: "t00000", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	errKilled := errors.New("killed")
	err = source.ReadUnits(ctx, r.Plan.Partitions[0], func(ctx context.Context, u connectors.Unit) error {
		if written == 6 {
			return errKilled
		}
		written++
		return uw.WriteUnit(ctx, u)
	})
	if !errors.Is(err, errKilled) {
		t.Fatalf("first attempt: %v", err)
	}
	if read != 6000 {
		t.Fatalf("the first attempt read %d bytes, want 6000", read)
	}
	out1, err := conformance.WriteTask(ctx, source, sink, r, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if read != 10000 {
		t.Errorf("after the retry %d bytes were read from the source, want 10000: the retry read again what the first attempt staged", read)
	}
	r.Outputs = []connectors.TaskOutput{out1}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "after the commit", out, src)
}

// A file that changes after the run was planned is left as the target has
// it; the next run copies it.
func TestPassthroughChangedFileWaitsForNextRun(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	files.WriteFile(t, src, "a", "one")
	files.WriteFile(t, src, "b", "two")
	source := passSource(t, files.SourceConfig{Path: src})
	sink := passSink(t, files.SinkConfig{Path: out})
	r, err := conformance.PlanUnits(ctx, source, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	files.WriteFile(t, src, "b", "two, longer")
	if err := r.WriteTasks(ctx, source, sink); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b, changed after planning, is in the target: %v", err)
	}
	if _, err := conformance.RunUnits(ctx, source, sink, "run-2", &r, connectors.Partitioning{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "after run-2", out, src)
}

// A file rewritten or removed in the target behind the sink's back is
// copied again by the next run.
func TestPassthroughTargetChangedBehindItsBack(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "out")
	makeTree(t, src, 0)
	source := passSource(t, files.SourceConfig{Path: src})
	sink := passSink(t, files.SinkConfig{Path: out})
	r, err := conformance.RunUnits(ctx, source, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	files.WriteFile(t, out, ".hidden", "tampered")
	os.Remove(filepath.Join(out, "_SUCCESS"))
	r2, err := conformance.RunUnits(ctx, source, sink, "run-2", &r, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r2.Outputs); n != 1 || r2.Outputs[0].Rows != 2 {
		t.Errorf("run-2 wrote %+v, want one task of 2 files", r2.Outputs)
	}
	sameTree(t, "after run-2", out, src)
}

// The validators of the passthrough roles refuse what a passthrough does
// not use, and the load roles refuse the passthrough's fields.
func TestPassthroughValidators(t *testing.T) {
	for _, c := range []struct {
		name  string
		check func(json.RawMessage) error
		cfg   string
		field string
	}{
		{"source format", files.ValidatePassthroughSource, `{"path":"/in","format":"jsonl"}`, "format"},
		{"source glob", files.ValidatePassthroughSource, `{"path":"/in","glob":"*.csv"}`, "glob"},
		{"source bad exclude", files.ValidatePassthroughSource, `{"path":"/in","exclude":["[x"]}`, "exclude[0]"},
		{"sink format", files.ValidatePassthroughSink, `{"path":"/out","format":"csv"}`, "format"},
		{"sink keep_versions", files.ValidatePassthroughSink, `{"path":"/out","keep_versions":2}`, "keep_versions"},
		{"sink at a bucket's root", files.ValidatePassthroughSink, `{"path":"s3://bucket"}`, "state_dir"},
		{"sink state inside the target", files.ValidatePassthroughSink, `{"path":"/out","state_dir":"/out/.state"}`, "state_dir"},
		{"sink state in another bucket", files.ValidatePassthroughSink, `{"path":"s3://a-bucket/x","state_dir":"s3://other/y"}`, "state_dir"},
		{"load source exclude", files.ValidateSource, `{"path":"/in","exclude":["*.tmp"]}`, "exclude"},
		{"load sink mirror", files.ValidateSink, `{"path":"/out","mirror":true}`, "mirror"},
	} {
		err := c.check(json.RawMessage(c.cfg))
		var fe *connectors.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: %v, want an error on %s", c.name, err, c.field)
		}
	}
	for _, ok := range []string{`{"path":"/in","exclude":["*.tmp","/logs/2026"]}`} {
		if err := files.ValidatePassthroughSource(json.RawMessage(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if err := files.ValidatePassthroughSink(json.RawMessage(`{"path":"s3://bucket/x","mirror":true}`)); err != nil {
		t.Errorf("an s3 sink with mirror: %v", err)
	}
}
