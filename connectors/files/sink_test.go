package files

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// stage writes one task per batch list for run and returns the outputs.
func stage(t *testing.T, s *Sink, run string, tasks ...[]connectors.Batch) []connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	var outs []connectors.TaskOutput
	for i, bs := range tasks {
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: "t" + string(rune('a'+i)), Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if err := w.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	return outs
}

func jsonlBatch(lines ...string) connectors.Batch {
	return connectors.Batch{Raw: []byte(strings.Join(lines, "\n") + "\n"), Format: connectors.FormatJSONL, Rows: int64(len(lines)), Position: "test"}
}

// rowsSum is the checksum of the rows of JSONL batches, computed from the
// batches themselves (each line hashed), not from what a sink reported:
// the expected value of a dataset they were written to.
func rowsSum(batches ...connectors.Batch) connectors.Checksum {
	var c connectors.Checksum
	for _, b := range batches {
		for line := range strings.SplitSeq(strings.TrimSuffix(string(b.Raw), "\n"), "\n") {
			c.Add([]byte(line))
		}
	}
	return c
}

func sumOf(outs []connectors.TaskOutput) connectors.Checksum {
	var c connectors.Checksum
	for _, o := range outs {
		c.Merge(o.Checksum)
	}
	return c
}

// checkVersion checks root exposes version name holding want, with a
// marker, and that no staging or building directory is left.
func checkVersion(t *testing.T, root, name string, want connectors.Checksum, final bool) {
	t.Helper()
	cur, err := Current(root)
	if err != nil || filepath.Base(cur) != name {
		t.Fatalf("Current = %q, %v; want %s", cur, err, name)
	}
	got, err := ReadChecksum(cur, "jsonl")
	if err != nil || got != want {
		t.Errorf("exposed rows %d checksum %s (%v), want rows %d checksum %s", got.Rows, got, err, want.Rows, want)
	}
	var m marker
	data, err := os.ReadFile(filepath.Join(cur, "_SUCCESS"))
	if err != nil || json.Unmarshal(data, &m) != nil || m.Rows != want.Rows || m.Checksum != want.String() {
		t.Errorf("_SUCCESS = %s, %v", data, err)
	}
	if !final {
		return
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".building") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(root, "_staging", m.Run)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging of %s still there: %v", m.Run, err)
	}
}

// crashFunc leaves a dataset as a commit of req (version 2, after
// version 1) interrupted at some step would.
type crashFunc func(t *testing.T, s *Sink, req connectors.CommitRequest)

// testCrashResume commits version 1, stages version 2 and crashes its
// commit with each of crashes; until the commit resumes, version 1 stays
// exposed (unless the crash's name mentions the marker or staging: the
// pointer was swapped); then a new sink, as a new leader would open,
// repeats the commit twice, each time completing it. open opens a sink
// on the dataset named name; check is checkVersion or checkVersionS3.
func testCrashResume(t *testing.T, crashes map[string]crashFunc, open func(t *testing.T, name string) *Sink,
	check func(t *testing.T, s *Sink, name string, want connectors.Checksum, final bool)) {
	ctx := context.Background()
	batches := [][]connectors.Batch{
		{jsonlBatch(`{"a":1}`, `{"a":2}`)},
		{jsonlBatch(`{"b":1}`)},
		{jsonlBatch(`{"c":1}`, `{"c":2}`, `{"c":3}`)},
	}
	for name, crash := range crashes {
		t.Run(name, func(t *testing.T) {
			dataset := strings.ReplaceAll(name, " ", "-")
			s := open(t, dataset)
			out1 := stage(t, s, "run-1", batches[0])
			if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: out1}); err != nil {
				t.Fatal(err)
			}
			outs := stage(t, s, "run-2", batches...)
			req := connectors.CommitRequest{RunID: "run-2", Version: 2, Tasks: outs}
			crash(t, s, req)
			if name != "none" && !strings.Contains(name, "marker") && !strings.Contains(name, "staging") {
				check(t, s, "v000001", rowsSum(batches[0]...), false)
			}
			s2 := open(t, dataset)
			for range 2 {
				res, err := s2.Commit(ctx, req)
				if err != nil {
					t.Fatalf("Commit: %v", err)
				}
				if loc := s2.location("v000002"); res.Location != loc || res.Marker != joinPath(loc, SuccessFile) {
					t.Errorf("Commit = %+v, want location %s", res, loc)
				}
				check(t, s2, "v000002", rowsSum(slices.Concat(batches...)...), true)
			}
		})
	}
}

// location returns where the directory name of the dataset is: a local
// path or an s3:// URL.
func (s *Sink) location(name string) string {
	if s.s3 != nil {
		return s.s3.url(name)
	}
	return filepath.Join(s.root, name)
}

func TestCommitCrashResume(t *testing.T) {
	ctx := context.Background()
	// Each crash leaves the dataset as a commit interrupted at some step
	// would, for version 2 after version 1 was committed.
	crashes := map[string]crashFunc{
		"none": func(*testing.T, *Sink, connectors.CommitRequest) {},
		"building half filled": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			b := filepath.Join(s.root, ".v000002.building")
			os.MkdirAll(b, 0o755)
			if err := os.Rename(filepath.Join(s.root, req.Tasks[0].Location), filepath.Join(b, filepath.Base(req.Tasks[0].Location))); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(b, "part-stray.jsonl"), []byte("{\"stray\":1}\n"), 0o644)
		},
		"building complete": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			b := filepath.Join(s.root, ".v000002.building")
			os.MkdirAll(b, 0o755)
			for _, o := range req.Tasks {
				os.Rename(filepath.Join(s.root, o.Location), filepath.Join(b, filepath.Base(o.Location)))
			}
		},
		"version dir present, current not swapped": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if err := s.build(ctx, "v000002", wantOf(req)); err != nil {
				t.Fatal(err)
			}
		},
		"current swapped, no marker": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if err := s.build(ctx, "v000002", wantOf(req)); err != nil {
				t.Fatal(err)
			}
			if err := s.swapCurrent("v000002"); err != nil {
				t.Fatal(err)
			}
		},
		"stale temp symlink": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			os.Symlink("v000001", filepath.Join(s.root, ".current.v000002.tmp"))
		},
		"committed, staging not removed": func(t *testing.T, s *Sink, req connectors.CommitRequest) {
			if _, err := s.Commit(ctx, req); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(stagingDir(s.root, req.RunID), 0o755)
		},
	}
	base := t.TempDir()
	testCrashResume(t, crashes, func(t *testing.T, name string) *Sink {
		s, err := NewSink(SinkConfig{Path: filepath.Join(base, name)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T, s *Sink, name string, want connectors.Checksum, final bool) {
		checkVersion(t, s.root, name, want, final)
	})
}

func wantOf(req connectors.CommitRequest) map[string]string {
	m := map[string]string{}
	for _, o := range req.Tasks {
		m[filepath.Base(o.Location)] = o.Location
	}
	return m
}

func TestCommitMissingOutput(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := NewSink(SinkConfig{Path: root})
	out1 := stage(t, s, "run-1", []connectors.Batch{jsonlBatch(`{"a":1}`)})
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: out1}); err != nil {
		t.Fatal(err)
	}
	outs := stage(t, s, "run-2", []connectors.Batch{jsonlBatch(`{"a":2}`)}, []connectors.Batch{jsonlBatch(`{"a":3}`)})
	os.Remove(filepath.Join(root, outs[1].Location))
	_, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-2", Version: 2, Tasks: outs})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Commit with a missing output = %v, want an error", err)
	}
	if _, err := os.Stat(filepath.Join(root, "v000002")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a partial version was published: %v", err)
	}
	checkVersion(t, root, "v000001", rowsSum(jsonlBatch(`{"a":1}`)), false)

	bad := slices.Clone(outs[:1])
	bad[0].Location = "_staging/run-1/../../etc/part-x.jsonl"
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-2", Version: 3, Tasks: bad}); err == nil {
		t.Errorf("Commit of an output outside the run's staging succeeded")
	}
}

// A run planned again (a new attempt, with new task IDs) commits only the
// outputs its request lists: what a late attempt of the earlier attempt's
// task staged after the run's staging was aborted is not in the version,
// and the commit removes it with the staging directory.
func TestCommitTakesOnlyListedTasks(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := NewSink(SinkConfig{Path: root})
	write := func(task, line string) connectors.TaskOutput {
		t.Helper()
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "run", TaskID: task, Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, jsonlBatch(line)); err != nil {
			t.Fatal(err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	write("t00000", `{"old":0}`)
	if err := s.Abort(ctx, "run"); err != nil {
		t.Fatal(err)
	}
	outs := []connectors.TaskOutput{write("a2-t00000", `{"new":0}`), write("a2-t00001", `{"new":1}`)}
	write("t00001", `{"late":1}`)
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	checkVersion(t, root, "v000001", rowsSum(jsonlBatch(`{"new":0}`, `{"new":1}`)), true)
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := NewSink(SinkConfig{Path: root, KeepVersions: 2})
	for v := int64(1); v <= 5; v++ {
		run := "run-" + string(rune('0'+v))
		outs := stage(t, s, run, []connectors.Batch{jsonlBatch(`{"v":1}`)})
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Version: v, Tasks: outs}); err != nil {
			t.Fatal(err)
		}
	}
	if got := versionsIn(t, root); !slices.Equal(got, []string{"v000004", "v000005"}) {
		t.Errorf("versions after 5 commits, keep 2: %v", got)
	}
	// After a rollback, the current version stays even when it is old.
	os.MkdirAll(filepath.Join(root, "v000001"), 0o755)
	if err := s.swapCurrent("v000001"); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "v000006"), 0o755)
	if err := s.prune("v000001"); err != nil {
		t.Fatal(err)
	}
	if got := versionsIn(t, root); !slices.Equal(got, []string{"v000001", "v000005", "v000006"}) {
		t.Errorf("versions after prune with an old current: %v", got)
	}
}

func versionsIn(t *testing.T, root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, e := range entries {
		if _, ok := parseVersion(e.Name()); ok {
			vs = append(vs, e.Name())
		}
	}
	return vs
}

// TestJSONLToParquetChecksum copies JSONL through the source and a Parquet
// sink and compares the checksums of both sides.
func TestJSONLToParquetChecksum(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, dir, "in/a.jsonl", jsonlRows(0, 300))
	writeFile(t, dir, "in/b/c.jsonl", jsonlRows(300, 77))
	src := SmallBatches(t, SourceConfig{Path: filepath.Join(dir, "in")})
	sink, _ := NewSink(SinkConfig{Path: filepath.Join(dir, "out"), Format: "parquet"})
	plan, err := src.Plan(ctx, connectors.PlanRequest{Partitioning: connectors.Partitioning{TargetBytes: 20 << 10}})
	if err != nil || len(plan.Partitions) < 3 {
		t.Fatalf("Plan = %d partitions, %v", len(plan.Partitions), err)
	}
	var outs []connectors.TaskOutput
	for i, p := range plan.Partitions {
		w, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Read(ctx, p, func(ctx context.Context, b connectors.Batch) error { return w.Write(ctx, b) }); err != nil {
			t.Fatal(err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	want, err := ReadChecksum(filepath.Join(dir, "in"), "jsonl")
	if err != nil || want.Rows != 377 {
		t.Fatalf("source checksum %v rows %d, %v", want, want.Rows, err)
	}
	cur, _ := Current(filepath.Join(dir, "out"))
	got, err := ReadChecksum(cur, "parquet")
	if err != nil || got != want || sumOf(outs) != want || want != rowsSum(connectors.Batch{Raw: []byte(jsonlRows(0, 300) + jsonlRows(300, 77))}) {
		t.Errorf("parquet checksum %s rows %d (tasks %s, %v), want %s rows %d", got, got.Rows, sumOf(outs), err, want, want.Rows)
	}

	// The inferred schema.
	tbl := readParquetTable(t, filepath.Join(cur, "part-ta.parquet"))
	defer tbl.Release()
	sc := tbl.Schema()
	var types []string
	for _, fd := range sc.Fields() {
		s := fd.Name + ":" + fd.Type.String()
		if arrowconv.IsJSONField(fd) {
			s += "(json)"
		}
		types = append(types, s)
	}
	want2 := []string{"id:int64", "score:float64", "name:utf8", "ok:bool", "at:timestamp[us, tz=UTC]", "tags:utf8(json)", "neg:int64"}
	if !slices.Equal(types, want2) {
		t.Errorf("inferred schema %v, want %v", types, want2)
	}
}

func TestConversions(t *testing.T) {
	rec := testRecord(0, 2)
	csvIn := connectors.Batch{Raw: []byte("1,\"a,b\"\n2,\n"), Format: connectors.FormatCSV, Columns: []string{"id", "s"}, Rows: 2}
	cases := []struct {
		name, format string
		in           []connectors.Batch
		want         string
	}{
		{"csv to jsonl", "jsonl", []connectors.Batch{csvIn}, "{\"id\":\"1\",\"s\":\"a,b\"}\n{\"id\":\"2\",\"s\":\"\"}\n"},
		{"jsonl to csv", "csv", []connectors.Batch{jsonlBatch(`{"a":1,"b":"x,y","c":null,"d":{"e":[1]}}`, `{"b":"z","a":2.5}`)},
			"a,b,c,d\n1,\"x,y\",,\"{\"\"e\"\":[1]}\"\n2.5,z,,\n"},
		{"arrow to jsonl", "jsonl", []connectors.Batch{{Record: rec, Format: connectors.FormatArrow, Rows: 2}},
			"{\"id\":0,\"score\":0,\"name\":\"n,0\\n\\\"x\\\"\",\"ok\":true,\"at\":\"1970-01-01T00:00:00Z\"}\n" +
				"{\"id\":1,\"score\":null,\"name\":\"n,1\\n\\\"x\\\"\",\"ok\":false,\"at\":\"1970-01-01T00:00:01.000123Z\"}\n"},
		{"arrow to csv", "csv", []connectors.Batch{{Record: rec, Format: connectors.FormatArrow, Rows: 2}},
			"id,score,name,ok,at\n0,0,\"n,0\n\"\"x\"\"\",true,1970-01-01T00:00:00Z\n1,,\"n,1\n\"\"x\"\"\",false,1970-01-01T00:00:01.000123Z\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			s, _ := NewSink(SinkConfig{Path: root, Format: c.format})
			outs := stage(t, s, "r", c.in)
			data, err := os.ReadFile(filepath.Join(root, outs[0].Location))
			if err != nil || string(data) != c.want {
				t.Errorf("wrote %q (%v), want %q", data, err, c.want)
			}
			if _, err := s.Commit(context.Background(), connectors.CommitRequest{RunID: "r", Version: 1, Tasks: outs}); err != nil {
				t.Fatal(err)
			}
			cur, _ := Current(root)
			if got, err := ReadChecksum(cur, c.format); err != nil || got != outs[0].Checksum {
				t.Errorf("ReadChecksum = %s rows %d (%v), task checksum %s rows %d", got, got.Rows, err, outs[0].Checksum, outs[0].Rows)
			}
		})
	}
	rec.Release()
}

func TestParquetInferenceErrors(t *testing.T) {
	ctx := context.Background()
	cases := map[string][]connectors.Batch{
		"later value of another type": {jsonlBatch(`{"a":1}`), jsonlBatch(`{"a":"x"}`)},
		"unknown key later":           {jsonlBatch(`{"a":1}`), jsonlBatch(`{"a":1,"b":2}`)},
		"csv int then text":           {{Raw: []byte("1\n"), Format: connectors.FormatCSV, Columns: []string{"a"}, Rows: 1}, {Raw: []byte("x\n"), Format: connectors.FormatCSV, Columns: []string{"a"}, Rows: 1}},
	}
	for name, bs := range cases {
		t.Run(name, func(t *testing.T) {
			s, _ := NewSink(SinkConfig{Path: t.TempDir(), Format: "parquet"})
			w, _ := s.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t"})
			defer w.Abort(ctx)
			if err := w.Write(ctx, bs[0]); err != nil {
				t.Fatal(err)
			}
			err := w.Write(ctx, bs[1])
			var re *connectors.RowError
			if !errors.As(err, &re) || !connectors.IsPermanent(err) {
				t.Errorf("Write = %v, want a RowError", err)
			}
		})
	}
	// Mixed kinds in the first batch keep their JSON text.
	root := t.TempDir()
	s, _ := NewSink(SinkConfig{Path: root, Format: "parquet"})
	in := jsonlBatch(`{"m":1,"t":"2024-01-01T00:00:00Z"}`, `{"m":"one","t":"later"}`, `{"m":[1,{"x":null}],"t":null}`, `{"m":true}`)
	outs := stage(t, s, "r", []connectors.Batch{in})
	var want connectors.Checksum
	for _, l := range []string{`{"m":1,"t":"2024-01-01T00:00:00Z"}`, `{"m":"one","t":"later"}`, `{"m":[1,{"x":null}],"t":null}`, `{"m":true,"t":null}`} {
		want.Add([]byte(l))
	}
	if outs[0].Checksum != want {
		t.Errorf("checksum of mixed kinds %s, want %s", outs[0].Checksum, want)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		raw, field string
		sink       bool
	}{
		{`{"path":"/x"}`, "", false},
		{`{"path":"/x","format":"csv","glob":"*.csv"}`, "", false},
		{`{}`, "path", false},
		{`{"path":"/x","format":"xml"}`, "format", false},
		{`{"path":"/x","glob":"[a"}`, "glob", false},
		{`{"path":"/x","extra":1}`, "extra", false},
		{`{"path":3}`, "path", false},
		{`{"path":"/x","keep_versions":5}`, "", true},
		{`{"path":"/x","keep_versions":-1}`, "keep_versions", true},
		{`{"path":"/x","keep_versions":"3"}`, "keep_versions", true},
		{`{"path":"/x","glob":"*"}`, "glob", true},
		{`{"format":"parquet"}`, "path", true},
		{`{"path":"file:///x"}`, "", false},
		{`{"path":"file://host/x"}`, "path", false},
		{`{"path":"s3://bucket/x/y"}`, "", false},
		{`{"path":"s3://bucket"}`, "", true},
		{`{"path":"s3://B/x"}`, "path", true},
		{`{"path":"s3://bucket/a/../b"}`, "path", false},
		{`{"path":"s3://bucket/x","s3":{"endpoint":"http://127.0.0.1:7070","region":"eu-west-1","path_style":true}}`, "", true},
		{`{"path":"s3://bucket/x","s3":{"endpoint":"ftp://x"}}`, "s3", true},
		{`{"path":"s3://bucket/x","s3":{"secret_access_key":"x"}}`, "s3.secret_access_key", false},
		{`{"path":"s3://bucket/x","s3":{"path_style":"yes"}}`, "s3.path_style", true},
		{`{"path":"/x","s3":{"region":"eu-west-1"}}`, "s3", true},
	}
	for _, c := range cases {
		v := ValidateSource
		if c.sink {
			v = ValidateSink
		}
		err := v(json.RawMessage(c.raw))
		var fe *connectors.FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v, want no error", c.raw, err)
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%s: %v, want a FieldError on %q", c.raw, err, c.field)
		}
	}
	reg := connectors.NewRegistry()
	Register(reg)
	if !reg.HasSource(Kind) || !reg.HasSink(Kind) {
		t.Fatal("files not registered as source and sink")
	}
	none := func(string) (string, bool) { return "", false }
	if err := reg.Validate(Kind, connectors.RoleSink, json.RawMessage(`{"path":"/x","keep_versions":2}`), none); err != nil {
		t.Errorf("registry Validate of a sink config: %v", err)
	}
	if err := reg.Validate(Kind, connectors.RoleSource, json.RawMessage(`{"path":"/x","keep_versions":2}`), none); err == nil {
		t.Errorf("registry Validate accepted a sink field in a source config")
	}
	if err := reg.Validate(Kind, connectors.RoleSink, json.RawMessage(`{"path":"/x","format":"csv"}`), none); err != nil {
		t.Errorf("registry Validate of a sink config without keep_versions: %v", err)
	}
	if err := reg.Validate(Kind, connectors.RoleSource, json.RawMessage(`{"path":"/x","bogus":2}`), none); err == nil {
		t.Errorf("registry Validate accepted an unknown field")
	}
	if _, err := reg.OpenSink(context.Background(), Kind, json.RawMessage(`{"path":"`+t.TempDir()+`","format":"csv"}`)); err != nil {
		t.Errorf("OpenSink: %v", err)
	}
	if _, err := reg.OpenSource(context.Background(), Kind, json.RawMessage(`{"path":"/x","format":"nope"}`)); !connectors.IsPermanent(err) {
		t.Errorf("OpenSource with a bad format = %v, want a FieldError", err)
	}
}

var _ arrow.RecordBatch
