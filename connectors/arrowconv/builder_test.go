package arrowconv

import (
	"encoding/csv"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// awkward is a schema with a column of every type, as the postgres source
// describes a table.
var awkward = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "small", Type: protocol.TypeInt16},
	{Name: "amount", Type: protocol.TypeDecimal, Precision: 38, Scale: 10, Native: "numeric(38,10)"},
	{Name: "ratio", Type: protocol.TypeFloat64},
	{Name: "real", Type: protocol.TypeFloat32},
	{Name: "at", Type: protocol.TypeTimestampTZ},
	{Name: "local", Type: protocol.TypeTimestamp},
	{Name: "day", Type: protocol.TypeDate},
	{Name: "tod", Type: protocol.TypeTime},
	{Name: "ok", Type: protocol.TypeBool},
	{Name: "raw", Type: protocol.TypeBytes},
	{Name: "doc", Type: protocol.TypeJSON, Native: "jsonb"},
	{Name: "tags", Type: protocol.TypeList, Elem: &protocol.Column{Name: "element", Type: protocol.TypeString}},
	{Name: "nums", Type: protocol.TypeList, Elem: &protocol.Column{Name: "element", Type: protocol.TypeDecimal, Precision: 5, Scale: 2}},
	{Name: "u", Type: protocol.TypeUUID},
	{Name: "note", Type: protocol.TypeString},
}}

func newAwkward(t testing.TB) *Builder {
	t.Helper()
	as, err := Schema(awkward)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBuilder(memory.NewGoAllocator(), as)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	return b
}

// awkwardCSV holds two rows in PostgreSQL's COPY CSV form: every value,
// then every nullable column NULL (and an empty string).
const awkwardCSV = `1,-32768,-1234567890123456789012345678.0123456789,NaN,-Infinity,2024-02-29 23:59:59.999999+00,0044-03-15 12:00:00 BC,1999-12-31,23:59:59.5,t,\x00ff0a,"{""a"": [1, ""x,y""]}","{a,""b c"",NULL,""""}","{1.50,-2,NULL}",a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,"multi
line, ""quoted"""
2,,,,,,,,,,,,,,,""
`

func TestAppendCSV(t *testing.T) {
	b := newAwkward(t)
	var sum connectors.Checksum
	n, err := b.AppendCSV([]byte(awkwardCSV), awkward.Names(), "t.csv", 1, &sum)
	if err != nil || n != 2 {
		t.Fatalf("AppendCSV = %d, %v", n, err)
	}
	var want connectors.Checksum
	for _, rec := range []string{strings.SplitN(awkwardCSV, "\n2,", 2)[0], `2,,,,,,,,,,,,,,,""`} {
		want.Add([]byte(rec))
	}
	if sum != want {
		t.Errorf("checksum %s rows %d, want %s rows %d (the records' bytes)", sum, sum.Rows, want, want.Rows)
	}
	rec := b.NewRecord()
	defer rec.Release()
	checkAwkward(t, rec)
	if b.Len() != 0 {
		t.Errorf("Len after NewRecord = %d", b.Len())
	}
}

// checkAwkward checks the record of awkwardCSV's rows, however they came.
func checkAwkward(t *testing.T, rec arrow.RecordBatch) {
	t.Helper()
	if rec.NumRows() != 2 {
		t.Fatalf("%d rows, want 2", rec.NumRows())
	}
	col := func(name string) arrow.Array {
		i := rec.Schema().FieldIndices(name)
		return rec.Column(i[0])
	}
	str := func(name string) string { return col(name).ValueStr(0) }
	for name, want := range map[string]string{
		"id": "1", "small": "-32768", "amount": "-1234567890123456789012345678.0123456789",
		"day": "1999-12-31", "tod": "23:59:59.500000", "ok": "true", "doc": `{"a": [1, "x,y"]}`,
		"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "note": "multi\nline, \"quoted\"",
	} {
		if got := str(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if f := col("ratio").(*array.Float64).Value(0); !math.IsNaN(f) {
		t.Errorf("ratio = %v, want NaN", f)
	}
	if f := col("real").(*array.Float32).Value(0); !math.IsInf(float64(f), -1) {
		t.Errorf("real = %v, want -Inf", f)
	}
	if ts := col("at").(*array.Timestamp).Value(0); ts != 1709251199999999 {
		t.Errorf("at = %d µs, want 1709251199999999 (2024-02-29 23:59:59.999999 UTC)", ts)
	}
	if typ := col("at").DataType().(*arrow.TimestampType); typ.TimeZone != "UTC" || typ.Unit != arrow.Microsecond {
		t.Errorf("at is %s, want timestamp[us, tz=UTC]", typ)
	}
	if ts, want := col("local").(*array.Timestamp).Value(0), time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC).UnixMicro(); int64(ts) != want {
		t.Errorf("local = %d µs, want %d (44 BC)", ts, want)
	}
	if raw := col("raw").(*array.Binary).Value(0); string(raw) != "\x00\xff\x0a" {
		t.Errorf("raw = %q", raw)
	}
	tags := col("tags").(*array.List)
	if got := tags.ValueStr(0); got != `["a","b c",null,""]` {
		t.Errorf("tags = %s", got)
	}
	nums := col("nums").(*array.List)
	if vals := nums.ListValues().(*array.Decimal128); nums.Len() != 2 || vals.Len() != 3 ||
		vals.Value(0).ToString(2) != "1.50" || vals.Value(1).ToString(2) != "-2.00" || !vals.IsNull(2) {
		t.Errorf("nums = %s, want [1.50 -2.00 NULL]", nums.ValueStr(0))
	}
	if _, ok := col("u").DataType().(*extensions.UUIDType); !ok {
		t.Errorf("u is %s, want the uuid extension", col("u").DataType())
	}
	for i, f := range rec.Schema().Fields() {
		c := rec.Column(i)
		if v, ok := c.(interface{ ValidateFull() error }); ok {
			if err := v.ValidateFull(); err != nil {
				t.Errorf("column %s is not a valid array: %v", f.Name, err)
			}
		}
		switch {
		case f.Name == "id":
			if c.IsNull(1) || c.ValueStr(1) != "2" {
				t.Errorf("row 2: id = %s", c.ValueStr(1))
			}
		case f.Name == "note":
			if c.IsNull(1) || c.ValueStr(1) != "" {
				t.Errorf("row 2: note is NULL or %q, want the empty string", c.ValueStr(1))
			}
		case !c.IsNull(1):
			t.Errorf("row 2: %s = %s, want NULL", f.Name, c.ValueStr(1))
		}
	}
}

func TestAppendJSONL(t *testing.T) {
	b := newAwkward(t)
	lines := `{"id": 1, "small": -32768, "amount": -1234567890123456789012345678.0123456789, "ratio": "NaN", "real": "-Infinity", "at": "2024-02-29T23:59:59.999999Z", "local": "0044-03-15 12:00:00 BC", "day": "1999-12-31", "tod": "23:59:59.500000", "ok": true, "raw": "\\x00ff0a", "doc": {"a": [1, "x,y"]}, "tags": ["a", "b c", null, ""], "nums": [1.5, "-2", null], "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "note": "multi\nline, \"quoted\""}
{"id":2,"note":""}
`
	var sum connectors.Checksum
	n, err := b.AppendJSONL([]byte(lines), "t.jsonl", 1, &sum)
	if err != nil || n != 2 || sum.Rows != 2 {
		t.Fatalf("AppendJSONL = %d, %v (checksum rows %d)", n, err, sum.Rows)
	}
	rec := b.NewRecord()
	defer rec.Release()
	// The JSON document keeps its text as written.
	i := rec.Schema().FieldIndices("doc")[0]
	if got := rec.Column(i).ValueStr(0); got != `{"a": [1, "x,y"]}` {
		t.Errorf("doc = %q", got)
	}
	checkAwkward(t, rec)
}

func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct {
		csv, jsonl string
		field      string
		msg        string
	}{
		{csv: "1,40000", jsonl: `{"id":1,"small":40000}`, field: "small", msg: "out of range"},
		{csv: "1,,1.23456789012", jsonl: `{"id":1,"amount":1.23456789012}`, field: "amount", msg: "more than 10 digits after the point"},
		{csv: "1,,NaN", jsonl: `{"id":1,"amount":"NaN"}`, field: "amount", msg: "cannot be held by a decimal"},
		{csv: ",", jsonl: `{"id":null}`, field: "id", msg: "cannot hold NULL"},
		{csv: "1,,,,,infinity", jsonl: `{"id":1,"at":"infinity"}`, field: "at", msg: "cannot be held"},
		{csv: "1,,,,,,,2023-02-29", jsonl: `{"id":1,"day":"2023-02-29"}`, field: "day", msg: "not a date"},
		{csv: "1,,,,,,,,,yes", jsonl: `{"id":1,"ok":"yes"}`, field: "ok", msg: "not a boolean"},
		{csv: "1,,,,,,,,,,00ff", jsonl: `{"id":1,"raw":"00ff"}`, field: "raw", msg: "hex form"},
		{csv: `1,,,,,,,,,,,,"{{a},{b}}"`, jsonl: `{"id":1,"tags":[["a"]]}`, field: "tags", msg: "dimension"},
		{csv: `1,,,,,,,,,,,,,"{1.555}"`, jsonl: `{"id":1,"nums":[1.555]}`, field: "nums", msg: "element 1"},
		{csv: "1,,,,,,,,,,,,,,not-a-uuid", jsonl: `{"id":1,"u":"not-a-uuid"}`, field: "u", msg: "not a UUID"},
		{csv: "1,,,,,,,,,,,,,,,\"\xff\"", jsonl: "{\"id\":1,\"note\":\"\xff\"}", field: "note", msg: "UTF-8"},
	} {
		fields, err := csv.NewReader(strings.NewReader(tc.csv)).Read()
		if err != nil {
			t.Fatal(err)
		}
		k := len(fields)
		cols := awkward.Names()[:k]
		for _, format := range []string{"csv", "jsonl"} {
			b := newAwkward(t)
			var err error
			if format == "csv" {
				first := "9" + strings.Repeat(",", k-1) + "\n"
				_, err = b.AppendCSV([]byte(first+tc.csv+"\n"), cols, "in.csv", 1, nil)
			} else {
				_, err = b.AppendJSONL([]byte("{\"id\":9}\n"+tc.jsonl+"\n"), "in.jsonl", 1, nil)
			}
			var re *connectors.RowError
			if !errors.As(err, &re) || re.Row != 2 || re.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s %q: error %v, want a RowError at row 2, field %q, saying %q", format, tc.csv, err, tc.field, tc.msg)
			}
		}
	}
}

func TestMalformedInput(t *testing.T) {
	b := newAwkward(t)
	for _, raw := range []string{"1,2,3\n", "\"1\n", "1,,,,,,,,,,,,,,,,,\n"} {
		if _, err := b.AppendCSV([]byte(raw), []string{"id", "small"}, "x", 1, nil); err == nil {
			t.Errorf("AppendCSV(%q) succeeded", raw)
		}
	}
	for _, raw := range []string{`{"id":1,"nope":2}`, `{"id":1`, `[1]`, `{"id":1,"id":2}`, `{"id":1} x`, `{"id":"1"`} {
		b := newAwkward(t)
		if _, err := b.AppendJSONL([]byte(raw+"\n"), "x", 1, nil); err == nil {
			t.Errorf("AppendJSONL(%q) succeeded", raw)
		}
	}
	b = newAwkward(t)
	if _, err := b.AppendCSV([]byte("1\n"), []string{"nope"}, "x", 1, nil); err == nil || !strings.Contains(err.Error(), `column "nope" is not in the target schema`) {
		t.Errorf("an unknown column: %v", err)
	}
	if _, err := b.AppendCSV([]byte("1\n"), []string{"small"}, "x", 1, nil); err == nil || !strings.Contains(err.Error(), `"id" cannot hold NULL and is missing`) {
		t.Errorf("a missing NOT NULL column: %v", err)
	}
}

func TestSchemaRefuses(t *testing.T) {
	for _, c := range []protocol.Column{
		{Name: "n", Type: protocol.TypeDecimal, Native: "numeric"},
		{Name: "n", Type: protocol.TypeDecimal, Precision: 40, Scale: 2},
		{Name: "n", Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeInt32}}},
	} {
		if _, err := Field(c); err == nil || !strings.Contains(err.Error(), `column "n"`) {
			t.Errorf("Field(%s) = %v, want an error naming the column", c, err)
		}
	}
}

// FuzzAppend feeds arbitrary bytes to both parsers: they may refuse them
// but never panic, and what they accept makes a valid record.
func FuzzAppend(f *testing.F) {
	f.Add([]byte(awkwardCSV))
	f.Add([]byte(`{"id":1,"tags":["a",null],"doc":{"x":[1,{"y":"\u00e9\ud83d\ude00"}]},"amount":1e-3}` + "\n"))
	f.Add([]byte("1,2,3\n\"a\"\"b\",,\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, jsonl := range []bool{false, true} {
			b := newAwkward(t)
			var n int64
			var err error
			var lines []byte
			var lerr error
			if jsonl {
				n, err = b.AppendJSONL(raw, "fuzz", 1, nil)
			} else {
				n, err = b.AppendCSV(raw, awkward.Names(), "fuzz", 1, nil)
				// Lines converts exactly what the Builder converts.
				lines, _, lerr = newLines(t, awkward).AppendCSV(nil, raw, awkward.Names(), "fuzz", 1, nil)
				var re, lre *connectors.RowError
				if (err == nil) != (lerr == nil) || err != nil && (!errors.As(err, &re) || !errors.As(lerr, &lre) || re.Row != lre.Row || re.Field != lre.Field) {
					t.Fatalf("the Builder: %v; Lines: %v", err, lerr)
				}
			}
			if err != nil {
				continue
			}
			rec := b.NewRecord()
			if rec.NumRows() != n {
				t.Errorf("record of %d rows, appended %d", rec.NumRows(), n)
			}
			if !jsonl {
				want := strings.Join(renderRecord(rec), "\n")
				if n > 0 {
					want += "\n"
				}
				if string(lines) != want {
					t.Errorf("Lines wrote\n%s\nthe record renders\n%s", lines, want)
				}
			}
			rec.Release()
		}
	})
}

// BenchmarkAppendCSV converts rows shaped like bench/fullload's table:
// bigint, text, numeric(12,2), timestamptz, integer, boolean, text.
func BenchmarkAppendCSV(b *testing.B) {
	sc := orders
	const rows = 10000
	raw := ordersCSV(1, rows)
	as, err := Schema(sc)
	if err != nil {
		b.Fatal(err)
	}
	bl, err := NewBuilder(memory.NewGoAllocator(), as)
	if err != nil {
		b.Fatal(err)
	}
	defer bl.Release()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := bl.AppendCSV(raw, sc.Names(), "bench", 1, nil); err != nil {
			b.Fatal(err)
		}
		bl.NewRecord().Release()
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
