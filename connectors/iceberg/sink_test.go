package iceberg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// awkward is a table of every type the postgres source describes, as its
// catalog would.
var awkward = &protocol.Schema{System: "postgres", Key: []string{"id"}, Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true, Native: "bigint"},
	{Name: "small", Type: protocol.TypeInt16, Native: "smallint"},
	{Name: "amount", Type: protocol.TypeDecimal, Precision: 38, Scale: 10, Native: "numeric(38,10)"},
	{Name: "ratio", Type: protocol.TypeFloat64, Native: "double precision"},
	{Name: "at", Type: protocol.TypeTimestampTZ, Native: "timestamp with time zone"},
	{Name: "day", Type: protocol.TypeDate, Native: "date"},
	{Name: "ok", Type: protocol.TypeBool, Native: "boolean"},
	{Name: "raw", Type: protocol.TypeBytes, Native: "bytea"},
	{Name: "doc", Type: protocol.TypeJSON, Native: "jsonb"},
	{Name: "tags", Type: protocol.TypeList, Native: "text[]", Elem: &protocol.Column{Name: "element", Type: protocol.TypeString}},
	{Name: "u", Type: protocol.TypeUUID, Native: "uuid"},
}}

const awkwardCSV = `1,-32768,-1234567890123456789012345678.0123456789,NaN,2024-02-29 23:59:59.999999+00,1999-12-31,t,\x00ff0a,"{""a"": [1, ""x,y""]}","{a,""b c"",NULL,""""}",a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
2,,,-Infinity,1960-01-01 00:00:00+00,,f,,,{},
`

// A typed load: the table is created from the source's schema with the
// mapped Iceberg types, and every value reads back exactly.
func TestTypedLoad(t *testing.T) {
	cfg := localConfig(t, "typed")
	s := newSink(t, cfg)
	defer s.Close()
	ctx := context.Background()
	if err := s.CheckSchema(ctx, awkward); err != nil {
		t.Fatal(err)
	}
	out := write(t, s, "run-1", "t1", 1, awkward, []connectors.Batch{{Raw: []byte(awkwardCSV), Format: connectors.FormatCSV, Columns: awkward.Names(), Rows: 2}})
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: []connectors.TaskOutput{out}, Schema: awkward}); err != nil {
		t.Fatal(err)
	}
	tbl := load(t, cfg.Config)
	want := map[string]string{
		"id": "long", "small": "int", "amount": "decimal(38, 10)", "ratio": "double", "at": "timestamptz",
		"day": "date", "ok": "boolean", "raw": "binary", "doc": "string", "tags": "list<string>", "u": "uuid",
	}
	for _, f := range tbl.Schema().Fields() {
		if got := f.Type.String(); got != want[f.Name] {
			t.Errorf("column %s is %s, want %s", f.Name, got, want[f.Name])
		}
		if f.Required != (f.Name == "id") {
			t.Errorf("column %s required %t", f.Name, f.Required)
		}
	}
	at := scanRecords(t, tbl, 0)
	if at.NumRows() != 2 {
		t.Fatalf("%d rows, want 2", at.NumRows())
	}
	col := func(name string) arrow.Array {
		return at.Column(at.Schema().FieldIndices(name)[0]).Data().Chunk(0)
	}
	for name, want := range map[string]string{
		"amount": "-1234567890123456789012345678.0123456789", "day": "1999-12-31", "doc": `{"a": [1, "x,y"]}`,
		"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "tags": `["a","b c",null,""]`, "small": "-32768",
	} {
		if got := col(name).ValueStr(0); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	if f := col("ratio").(*array.Float64); !math.IsNaN(f.Value(0)) || !math.IsInf(f.Value(1), -1) {
		t.Errorf("ratio = %v, %v; want NaN, -Inf", f.Value(0), f.Value(1))
	}
	if ts := col("at").(*array.Timestamp); ts.Value(0) != 1709251199999999 || ts.Value(1) != arrow.Timestamp(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()) {
		t.Errorf("at = %d, %d", ts.Value(0), ts.Value(1))
	}
	if b := col("raw").(*array.Binary); string(b.Value(0)) != "\x00\xff\x0a" || !b.IsNull(1) {
		t.Errorf("raw = %q", b.Value(0))
	}
	if l := col("tags").(*array.List); l.IsNull(1) || l.ValueStr(1) != "[]" {
		t.Errorf("tags of row 2 = %s, want []", l.ValueStr(1))
	}
	sn := tbl.CurrentSnapshot()
	if sn.Summary.Operation != "append" || sn.Summary.Properties[propRun] != "run-1" || sn.Summary.Properties[propVersion] != "1" {
		t.Errorf("snapshot summary %s", sn.Summary)
	}
}

// What the mapping cannot hold is refused at plan time, naming the
// column; an existing table whose columns differ is refused naming the
// column, and a new column is added to it.
func TestSchemaChecks(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "checks")
	s := newSink(t, cfg)
	defer s.Close()
	bare := &protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64}, {Name: "total", Type: protocol.TypeDecimal, Native: "numeric"}}}
	if err := s.CheckSchema(ctx, bare); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), `column "total" (decimal, numeric)`) {
		t.Errorf("a bare numeric: %v, want a permanent error naming the column", err)
	}
	if tbl := load(t, cfg.Config); tbl != nil {
		t.Errorf("a refused schema created the table")
	}
	if err := s.CheckSchema(ctx, nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("no schema and no table: %v", err)
	}
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckSchema(ctx, nil); err != nil {
		t.Errorf("no schema, the table exists: %v", err)
	}
	changed := &protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeString, NotNull: true}, {Name: "v", Type: protocol.TypeString}}}
	if err := s.CheckSchema(ctx, changed); err == nil || !strings.Contains(err.Error(), `column "id" is string in the source (string) but long in test.checks`) {
		t.Errorf("a changed type: %v", err)
	}
	nullable := &protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64}, {Name: "v", Type: protocol.TypeString}}}
	if err := s.CheckSchema(ctx, nullable); err == nil || !strings.Contains(err.Error(), `column "id" is required in test.checks but the source may leave it NULL`) {
		t.Errorf("a required column the source may leave NULL: %v", err)
	}
	wider := &protocol.Schema{Columns: []protocol.Column{idv.Columns[0], idv.Columns[1], {Name: "note", Type: protocol.TypeString, NotNull: true}}}
	if err := s.CheckSchema(ctx, wider); err != nil {
		t.Fatalf("a new column: %v", err)
	}
	f, ok := load(t, cfg.Config).Schema().FindFieldByName("note")
	if !ok || f.Required || !f.Type.Equals(iceberg.PrimitiveTypes.String) {
		t.Errorf("column note after the check: %+v %t, want an optional string", f, ok)
	}
	out := write(t, s, "run-1", "t1", 1, wider, []connectors.Batch{{Raw: []byte("1,a,n\n"), Format: connectors.FormatCSV, Columns: wider.Names(), Rows: 1}})
	commit(t, s, "run-1", 1, out)
	// A source without the new column still loads (it is optional).
	out = write(t, s, "run-2", "t1", 1, idv, []connectors.Batch{{Raw: []byte("2,b\n"), Format: connectors.FormatCSV, Columns: idv.Names(), Rows: 1}})
	commit(t, s, "run-2", 2, out)
	if at := scanRecords(t, load(t, cfg.Config), 0); at.NumRows() != 1 {
		t.Errorf("%d rows after run-2, want 1", at.NumRows())
	}
	// A value that does not fit its column fails the task, naming the row
	// and the column.
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "run-3", TaskID: "t1", Attempt: 1, Schema: idv})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Write(ctx, connectors.Batch{Raw: []byte("1,a\nx,b\n"), Format: connectors.FormatCSV, Columns: idv.Names(), Rows: 2, Position: "chunk 7"})
	var re *connectors.RowError
	if !errors.As(err, &re) || re.Row != 2 || re.Field != "id" || re.Location != "chunk 7" || !connectors.IsPermanent(err) {
		t.Errorf("a bad value: %v, want a permanent RowError at row 2, field id", err)
	}
	w.Abort(ctx)
}

// Retried and abandoned attempts: only the attempt the commit takes is in
// the table, and the commit leaves no other file of the run behind.
func TestAttemptsAndTidy(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "attempts")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	bs := idvBatches(4)
	// Attempt 1 writes and is abandoned (a killed worker): never closed.
	w1, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "run-1", TaskID: "t1", Attempt: 1, Schema: idv})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if err := w1.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	w1.(*taskWriter).flush(ctx)
	w1.(*taskWriter).closeFile() // its file is complete on disk, but no manifest names it
	out := write(t, s, "run-1", "t1", 2, idv, bs)
	dir := runDir(load(t, cfg.Config), "run-1")
	before := listFiles(t, dir)
	if len(before) != 3 { // two data files and the task manifest
		t.Fatalf("files before the commit: %v", before)
	}
	commit(t, s, "run-1", 1, out)
	after := listFiles(t, dir)
	tbl := load(t, cfg.Config)
	files, err := liveFiles(ctx, tbl, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || len(after) != 1 || normPath(files[0].FilePath()) != after[0] || !strings.Contains(after[0], "t1-a2-") {
		t.Fatalf("after the commit: the table has %v, the run's directory %v; want attempt 2's file alone in both", files, after)
	}
	if got := csvChecksum(t, scanRecords(t, tbl, 0)); got != out.Checksum {
		t.Errorf("table rows %d checksum %s, the task's %d %s", got.Rows, got, out.Checksum.Rows, out.Checksum)
	}
	// A failed run's files all go; a committed run's stay when it is
	// aborted later.
	write(t, s, "run-2", "t1", 1, idv, bs)
	if err := s.Abort(ctx, "run-2"); err != nil {
		t.Fatal(err)
	}
	if left := listFiles(t, runDir(tbl, "run-2")); len(left) != 0 {
		t.Errorf("after aborting run-2: %v", left)
	}
	if err := s.Abort(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	if left := listFiles(t, dir); !slices.Equal(left, after) {
		t.Errorf("aborting the committed run-1 left %v, want %v", left, after)
	}
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(normPath(dir), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Two runs committing at once on one table: one loses the race, reloads
// and commits on top; the table ends with the later run's rows, both
// snapshots in its history.
func TestConcurrentCommits(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "race")
	a, b := newSink(t, cfg), newSink(t, cfg)
	defer a.Close()
	defer b.Close()
	if err := a.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	bs := idvBatches(4)
	outA := write(t, a, "run-a", "t1", 1, idv, bs[:2])
	outB := write(t, b, "run-b", "t1", 1, idv, bs[2:])
	for round := 0; a.retries.Load()+b.retries.Load() == 0; round++ {
		if round == 20 {
			t.Fatal("20 rounds of concurrent commits, none retried")
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		runA, runB := "run-a"+string(rune('0'+round)), "run-b"+string(rune('0'+round))
		outA.Location, outB.Location = "", ""
		oa := write(t, a, runA, "t1", 1, idv, bs[:2])
		ob := write(t, b, runB, "t1", 1, idv, bs[2:])
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, errs[0] = a.Commit(ctx, connectors.CommitRequest{RunID: runA, Version: int64(2*round + 1), Tasks: []connectors.TaskOutput{oa}})
		})
		wg.Go(func() {
			<-start
			_, errs[1] = b.Commit(ctx, connectors.CommitRequest{RunID: runB, Version: int64(2*round + 2), Tasks: []connectors.TaskOutput{ob}})
		})
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("concurrent commits: %v / %v", errs[0], errs[1])
		}
		tbl := load(t, cfg.Config)
		if len(runSnapshots(tbl, runA)) != 1 || len(runSnapshots(tbl, runB)) != 1 {
			t.Fatalf("round %d: snapshots of %s and %s: %d, %d", round, runA, runB, len(runSnapshots(tbl, runA)), len(runSnapshots(tbl, runB)))
		}
		// The table holds exactly one run's rows: the one committed last.
		last := tbl.CurrentSnapshot().Summary.Properties[propRun]
		want := oa.Checksum
		if last == runB {
			want = ob.Checksum
		}
		if got := csvChecksum(t, scanRecords(t, tbl, 0)); got != want {
			t.Fatalf("round %d: the table has %d rows checksum %s, want %s's %d rows %s", round, got.Rows, got, last, want.Rows, want)
		}
	}
	t.Logf("retries: %d and %d", a.retries.Load(), b.retries.Load())
}

// A source that does not describe its columns (JSONL files) loads into a
// table created from the columns the sink's configuration declares.
func TestDeclaredColumns(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "declared")
	cfg.Columns = []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
		{Name: "tags", Type: protocol.TypeList, Elem: &protocol.Column{Name: "element", Type: protocol.TypeString}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, nil); err != nil {
		t.Fatal(err)
	}
	lines := "{\"id\":1,\"amount\":1234.5,\"tags\":[\"a\",null]}\n{\"id\":2}\n"
	out := write(t, s, "run-1", "t1", 1, nil, []connectors.Batch{{Raw: []byte(lines), Format: connectors.FormatJSONL, Rows: 2}})
	commit(t, s, "run-1", 1, out)
	at := scanRecords(t, load(t, cfg.Config), 0)
	if got := at.Column(1).Data().Chunk(0).(*array.Decimal128).Value(0).ToString(2); at.NumRows() != 2 || got != "1234.50" {
		t.Errorf("%d rows, amount %s; want 2 rows, 1234.50", at.NumRows(), got)
	}
	bad := cfg
	bad.Columns = []protocol.Column{{Name: "n", Type: protocol.TypeDecimal}}
	var fe *connectors.FieldError
	if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != "columns" {
		t.Errorf("a declared bare decimal: %v, want a FieldError on columns", err)
	}
}

// BenchmarkTaskWrite converts and writes rows shaped like the benchmark's
// orders table (bigint, text, numeric(12,2), timestamptz, integer,
// boolean, text) in CSV batches of about 1 MB, as the postgres source
// sends them, into one task's Parquet file on local disk.
func BenchmarkTaskWrite(b *testing.B) {
	orders := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "customer", Type: protocol.TypeString, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2, NotNull: true},
		{Name: "created_at", Type: protocol.TypeTimestampTZ, NotNull: true},
		{Name: "quantity", Type: protocol.TypeInt32},
		{Name: "paid", Type: protocol.TypeBool, NotNull: true},
		{Name: "status", Type: protocol.TypeString, NotNull: true},
	}}
	const rows = 250_000
	var batches []connectors.Batch
	var raw []byte
	n := 0
	statuses := []string{"new", "paid", "shipped", "returned", "cancelled"}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= rows; i++ {
		cust := fmt.Sprintf("customer %012x", i*7919)
		if i%10 == 0 {
			cust = `"Smith, ` + cust + `"`
		}
		qty := fmt.Sprint(i * 7 % 1000)
		if i%50 == 0 {
			qty = ""
		}
		at := base.Add(time.Duration(i) * 15123457 * time.Microsecond).Format("2006-01-02 15:04:05.999999-07")
		raw = fmt.Appendf(raw, "%d,%s,%d.%02d,%s,%s,%c,%s\n", i, cust, i%100000, i%97, at, qty, "ft"[i%3/2], statuses[i%5])
		n++
		if len(raw) >= 1<<20 || i == rows {
			batches = append(batches, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: orders.Names(), Rows: int64(n)})
			raw, n = nil, 0
		}
	}
	s := newSink(&testing.T{}, SinkConfig{Config: Config{Table: "bench.orders", Warehouse: b.TempDir()}})
	defer s.Close()
	ctx := context.Background()
	if err := s.CheckSchema(ctx, orders); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var size int64
	for i := 0; b.Loop(); i++ {
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "bench", TaskID: fmt.Sprint(i), Attempt: 1, Schema: orders})
		if err != nil {
			b.Fatal(err)
		}
		for _, bt := range batches {
			if err := w.Write(ctx, bt); err != nil {
				b.Fatal(err)
			}
		}
		out, err := w.Close(ctx)
		if err != nil {
			b.Fatal(err)
		}
		size = out.Bytes
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(size), "file-bytes")
}

// Full loads beyond keep_versions expire: their snapshots leave the
// table, and the data files only they referenced leave the disk.
func TestKeepVersions(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "keep")
	cfg.KeepVersions = 2
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 4; v++ {
		run := fmt.Sprintf("run-%d", v)
		commit(t, s, run, v, write(t, s, run, "t1", 1, idv, idvBatches(int(v))))
	}
	vs, err := s.Versions(ctx)
	if err != nil || len(vs) != 2 || vs[0].Version != 3 || vs[1].Version != 4 || !vs[1].Exposed {
		t.Fatalf("versions %+v %v, want 3 and 4, 4 exposed", vs, err)
	}
	tbl := load(t, cfg.Config)
	for v := 1; v <= 4; v++ {
		files := listFiles(t, runDir(tbl, fmt.Sprintf("run-%d", v)))
		if want := v >= 3; (len(files) == 1) != want {
			t.Errorf("run-%d's directory holds %v; want its file kept: %t", v, files, want)
		}
	}
}
