package files

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/objstore/s3test"
	"github.com/sluicehq/sluice/protocol"
)

// typedSource is a table as the postgres source describes it.
var typedSource = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "amount", Type: protocol.TypeDecimal, Precision: 38, Scale: 10},
	{Name: "price", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
	{Name: "big", Type: protocol.TypeDecimal, Native: "numeric"},
	{Name: "ratio", Type: protocol.TypeFloat64},
	{Name: "at", Type: protocol.TypeTimestampTZ},
	{Name: "local", Type: protocol.TypeTimestamp},
	{Name: "day", Type: protocol.TypeDate},
	{Name: "ok", Type: protocol.TypeBool},
	{Name: "raw", Type: protocol.TypeBytes},
	{Name: "doc", Type: protocol.TypeJSON, Native: "jsonb"},
	{Name: "js", Type: protocol.TypeJSON, Native: "json"},
	{Name: "tags", Type: protocol.TypeList, Elem: &protocol.Column{Name: "element", Type: protocol.TypeString}},
	{Name: "u", Type: protocol.TypeUUID},
	{Name: "note", Type: protocol.TypeString},
}}

// typedCSV holds rows of typedSource as PostgreSQL's COPY writes them in
// CSV.
var typedCSV = []string{
	`1,1234567890123456789012345678.0123456789,12.50,123456789012345678901234567890.5,NaN,2024-02-29 23:59:59.999999+00,2024-06-01 12:00:00,1999-12-31,t,\x00ff,"{""a"": [1, ""x""]}","{""k"":` + "\n" + ` 2}","{a,""b c"",NULL}",a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,"say ""hi"""`,
	`2,-0.0000000001,-3.00,7,-Infinity,1970-01-01 00:00:00+00,0044-03-15 12:00:00 BC,2024-01-01,f,\x,[],null,{},,""`,
	`3,,,,1.5e+300,,,,,,,,,,`,
}

// typedLines are the lines a typed JSONL output holds for typedCSV.
var typedLines = []string{
	`{"id":1,"amount":"1234567890123456789012345678.0123456789","price":12.50,"big":"123456789012345678901234567890.5","ratio":"NaN",` +
		`"at":"2024-02-29T23:59:59.999999Z","local":"2024-06-01T12:00:00","day":"1999-12-31","ok":true,"raw":"AP8=",` +
		`"doc":{"a": [1, "x"]},"js":{"k": 2},"tags":["a","b c",null],"u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","note":"say \"hi\""}`,
	`{"id":2,"amount":"-0.0000000001","price":-3.00,"big":"7","ratio":"-Infinity","at":"1970-01-01T00:00:00Z",` +
		`"local":"-0043-03-15T12:00:00","day":"2024-01-01","ok":false,"raw":"","doc":[],"js":null,"tags":[],"u":null,"note":""}`,
	`{"id":3,"amount":null,"price":null,"big":null,"ratio":1.5e+300,"at":null,"local":null,"day":null,"ok":null,"raw":null,` +
		`"doc":null,"js":null,"tags":null,"u":null,"note":null}`,
}

// typedBatches splits typedCSV into two batches, as the postgres source
// sends them (with their checksum).
func typedBatches() []connectors.Batch {
	var bs []connectors.Batch
	for _, rows := range [][]string{typedCSV[:2], typedCSV[2:]} {
		var sum connectors.Checksum
		for _, r := range rows {
			sum.Add([]byte(r))
		}
		bs = append(bs, connectors.Batch{Raw: []byte(strings.Join(rows, "\n") + "\n"), Format: connectors.FormatCSV,
			Columns: typedSource.Names(), Rows: int64(len(rows)), Position: "src", Checksum: &sum})
	}
	return bs
}

// loadTyped writes typedCSV as one task of a run with typedSource's
// schema into a dataset of format, commits it and returns the version's
// directory and the task's output.
func loadTyped(t *testing.T, format string) (string, connectors.TaskOutput) {
	t.Helper()
	return loadTypedAt(t, t.TempDir(), format)
}

// loadTypedAt is loadTyped into the dataset at root.
func loadTypedAt(t *testing.T, root, format string) (string, connectors.TaskOutput) {
	t.Helper()
	ctx := context.Background()
	s, err := NewSink(SinkConfig{Path: root, Format: format})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t", Attempt: 1, Schema: typedSource})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range typedBatches() {
		if err := w.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	out, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "r", Version: 1, Tasks: []connectors.TaskOutput{out}, Schema: typedSource}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cur, err := Current(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadChecksum(cur, format)
	if err != nil || got != out.Checksum || out.Rows != int64(len(typedCSV)) {
		t.Errorf("%s: the files' checksum %s rows %d (%v); the task's %s rows %d", format, got, got.Rows, err, out.Checksum, out.Rows)
	}
	return cur, out
}

// With the run's schema, a JSONL output holds typed values: numbers as
// numbers (decimals wider than 15 digits, and a bare numeric, as strings
// with every digit), NaN and infinities as strings, booleans as booleans,
// JSON documents nested, arrays as arrays, bytes in base64, times in RFC
// 3339; its checksum is of the lines written.
func TestTypedJSONL(t *testing.T) {
	cur, out := loadTyped(t, "jsonl")
	data, err := os.ReadFile(filepath.Join(cur, "part-t.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(typedLines, "\n") + "\n"; string(data) != want {
		t.Errorf("wrote\n%s\nwant\n%s", data, want)
	}
	var want connectors.Checksum
	for _, l := range typedLines {
		want.Add([]byte(l))
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("line %s: %v", l, err)
		}
	}
	if out.Checksum != want {
		t.Errorf("checksum %s, want the lines' %s", out.Checksum, want)
	}
}

// With the run's schema, a Parquet output has typed columns, and its
// checksum (of its rows rendered as JSON lines) is the typed JSONL
// output's.
func TestTypedParquet(t *testing.T) {
	cur, out := loadTyped(t, "parquet")
	_, jsonl := loadTyped(t, "jsonl")
	if out.Checksum != jsonl.Checksum {
		t.Errorf("parquet checksum %s, the JSONL output's %s", out.Checksum, jsonl.Checksum)
	}
	tbl := readParquetTable(t, filepath.Join(cur, "part-t.parquet"))
	defer tbl.Release()
	types := map[string]string{
		"id": "int64", "amount": "decimal(38, 10)", "price": "decimal(12, 2)", "big": "utf8", "ratio": "float64",
		"at": "timestamp[us, tz=UTC]", "local": "timestamp[us]", "day": "date32", "ok": "bool", "raw": "binary",
		"doc": "utf8", "js": "utf8", "tags": "list<element: utf8, nullable>", "u": "extension<arrow.uuid>", "note": "utf8",
	}
	for _, f := range tbl.Schema().Fields() {
		if got := f.Type.String(); got != types[f.Name] {
			t.Errorf("column %s is %s, want %s", f.Name, got, types[f.Name])
		}
		if json := arrowconv.IsJSONField(f); json != (f.Name == "doc" || f.Name == "js") {
			t.Errorf("column %s flagged as JSON: %t", f.Name, json)
		}
		if f.Name == "id" && f.Nullable {
			t.Errorf("column id (NOT NULL) is nullable")
		}
	}
	if tbl.NumRows() != 3 {
		t.Fatalf("%d rows, want 3", tbl.NumRows())
	}
	col := func(name string) arrow.Array { return tbl.Column(tbl.Schema().FieldIndices(name)[0]).Data().Chunk(0) }
	if v := col("amount").(*array.Decimal128).Value(0).ToString(10); v != "1234567890123456789012345678.0123456789" {
		t.Errorf("amount = %s", v)
	}
	if v := col("at").(*array.Timestamp).Value(0); v != 1709251199999999 {
		t.Errorf("at = %d µs", v)
	}
	if v := col("raw").(*array.Binary).Value(0); string(v) != "\x00\xff" {
		t.Errorf("raw = %q", v)
	}
	if v := col("js").(*array.String).Value(0); v != "{\"k\":\n 2}" {
		t.Errorf("js = %q, want the document's text", v)
	}
	if v := col("big").(*array.String).Value(0); v != "123456789012345678901234567890.5" {
		t.Errorf("big = %q, want every digit", v)
	}
}

// With the run's schema, a CSV output still holds the records as the
// source sent them.
func TestTypedCSVUnchanged(t *testing.T) {
	cur, out := loadTyped(t, "csv")
	data, err := os.ReadFile(filepath.Join(cur, "part-t.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(typedSource.Names(), ",") + "\n" + strings.Join(typedCSV, "\n") + "\n"; string(data) != want {
		t.Errorf("wrote\n%s\nwant\n%s", data, want)
	}
	var want connectors.Checksum
	for _, r := range typedCSV {
		want.Add([]byte(r))
	}
	if out.Checksum != want {
		t.Errorf("checksum %s, want the records' %s", out.Checksum, want)
	}
}

// A value its column cannot hold fails the task permanently, naming the
// row and the column, in JSONL and Parquet alike.
func TestTypedRefused(t *testing.T) {
	for _, format := range []string{"jsonl", "parquet"} {
		s, _ := NewSink(SinkConfig{Path: t.TempDir(), Format: format})
		ctx := context.Background()
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t", Attempt: 1, Schema: typedSource})
		if err != nil {
			t.Fatal(err)
		}
		b := connectors.Batch{Raw: []byte("1,,,,,,,,,,,,,,\n2,,1.234,,,,,,,,,,,,\n"), Format: connectors.FormatCSV,
			Columns: typedSource.Names(), Rows: 2, Position: "src:7"}
		err = w.Write(ctx, b)
		var re *connectors.RowError
		if !errors.As(err, &re) || re.Row != 2 || re.Field != "price" || re.Location != "src:7" || !connectors.IsPermanent(err) {
			t.Errorf("%s: Write = %v, want a permanent RowError at src:7 row 2, column price", format, err)
		}
		w.Abort(ctx)
	}
}

// On S3 the typed outputs are the same: the run's checksum is the
// local one's and what the objects hold.
func TestTypedS3(t *testing.T) {
	for _, format := range []string{"jsonl", "parquet"} {
		_, local := loadTyped(t, format)
		_, remote := loadTypedAt(t, s3test.Env(t).Join("typed-"+format).String(), format)
		if remote.Checksum != local.Checksum {
			t.Errorf("%s on S3: checksum %s, on local disk %s", format, remote.Checksum, local.Checksum)
		}
	}
}
