package arrowconv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// awkwardLines are the JSON lines of awkwardCSV's rows, value by value in
// the forms a typed JSON line holds.
var awkwardLines = []string{
	`{"id":1,"small":-32768,"amount":"-1234567890123456789012345678.0123456789","ratio":"NaN","real":"-Infinity",` +
		`"at":"2024-02-29T23:59:59.999999Z","local":"-0043-03-15T12:00:00","day":"1999-12-31","tod":"23:59:59.5","ok":true,` +
		`"raw":"AP8K","doc":{"a": [1, "x,y"]},"tags":["a","b c",null,""],"nums":[1.50,-2.00,null],` +
		`"u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","note":"multi\nline, \"quoted\""}`,
	`{"id":2,"small":null,"amount":null,"ratio":null,"real":null,"at":null,"local":null,"day":null,"tod":null,"ok":null,` +
		`"raw":null,"doc":null,"tags":null,"nums":null,"u":null,"note":""}`,
}

func newLines(t testing.TB, s *protocol.Schema) *Lines {
	t.Helper()
	as, err := Schema(s)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLines(as)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLinesForms(t *testing.T) {
	l := newLines(t, awkward)
	var sum connectors.Checksum
	out, n, err := l.AppendCSV([]byte("prefix\n"), []byte(awkwardCSV), awkward.Names(), "t.csv", 1, &sum)
	if err != nil || n != 2 {
		t.Fatalf("AppendCSV = %d, %v", n, err)
	}
	want := "prefix\n" + strings.Join(awkwardLines, "\n") + "\n"
	if string(out) != want {
		t.Errorf("lines\n%s\nwant\n%s", out, want)
	}
	var wantSum connectors.Checksum
	for _, line := range awkwardLines {
		if !json.Valid([]byte(line)) {
			t.Errorf("line is not valid JSON: %s", line)
		}
		wantSum.Add([]byte(line))
	}
	if sum != wantSum {
		t.Errorf("checksum %s rows %d, want the lines' %s rows %d", sum, sum.Rows, wantSum, wantSum.Rows)
	}
}

// renderRecord renders every row of rec as a line.
func renderRecord(rec arrow.RecordBatch) []string {
	r := NewRowRenderer(rec)
	var lines []string
	for i := range int(rec.NumRows()) {
		lines = append(lines, string(r.AppendRow(nil, i)))
	}
	return lines
}

// The line Lines writes for a record is the line RowRenderer renders for
// the row the Builder makes of it, and for that row written to Parquet
// and read back: a typed JSONL file and a typed Parquet file of the same
// rows have the same checksum.
func TestLinesMatchRenderer(t *testing.T) {
	for name, c := range map[string]struct {
		schema *protocol.Schema
		raw    []byte
	}{
		"awkward": {awkward, []byte(awkwardCSV)},
		"orders":  {orders, ordersCSV(1, 3000)},
		"values":  {awkward, randomAwkwardCSV(rand.New(rand.NewPCG(1, 2)), 2000)},
	} {
		t.Run(name, func(t *testing.T) {
			l := newLines(t, c.schema)
			out, _, err := l.AppendCSV(nil, c.raw, c.schema.Names(), "t", 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			as, _ := Schema(c.schema)
			b, err := NewBuilder(memory.NewGoAllocator(), as)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			if _, err := b.AppendCSV(c.raw, c.schema.Names(), "t", 1, nil); err != nil {
				t.Fatal(err)
			}
			rec := b.NewRecord()
			defer rec.Release()
			compareLines(t, "the Builder's record", renderRecord(rec), lines)
			compareLines(t, "the record read back from Parquet", renderRecord(parquetRoundTrip(t, rec)), lines)
		})
	}
}

func compareLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s renders %d lines, Lines wrote %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("row %d: %s renders\n%s\nLines wrote\n%s", i+1, what, got[i], want[i])
		}
	}
}

// parquetRoundTrip writes rec to a Parquet file (with its Arrow schema,
// as the files sink does) and reads it back.
func parquetRoundTrip(t *testing.T, rec arrow.RecordBatch) arrow.RecordBatch {
	t.Helper()
	var buf bytes.Buffer
	arrp := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	props, err := WriterProperties(rec.Schema(), rec, arrp, ParquetConfig{Codec: compress.Codecs.Zstd, Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := pqarrow.NewFileWriter(rec.Schema(), &buf, props, arrp)
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	pf, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: rec.NumRows() + 1}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rr.Release)
	if !rr.Next() {
		t.Fatalf("no record read back: %v", rr.Err())
	}
	return rr.RecordBatch()
}

// randomAwkwardCSV returns n rows of awkward's columns with values drawn
// from r, in PostgreSQL's CSV forms, some NULL.
func randomAwkwardCSV(r *rand.Rand, n int) []byte {
	var buf bytes.Buffer
	digits := func(k int) string {
		var s []byte
		for range k {
			s = append(s, byte('0'+r.IntN(10)))
		}
		return string(s)
	}
	floats := []string{"0", "-0", "1.5", "1e+100", "1.2345678901234568e+20", "5e-324", "NaN", "Infinity", "-Infinity", "0.1", "-3.4028235e+38", "1e-07"}
	for i := range n {
		var f []string
		f = append(f, digits(1+r.IntN(18)))
		f = append(f, []string{"-32768", "32767", "0", "-1"}[r.IntN(4)])
		f = append(f, "-"+digits(1+r.IntN(28))+"."+digits(r.IntN(11)))
		f = append(f, floats[r.IntN(len(floats))])
		f = append(f, []string{"3.4028235e+38", "1.5", "-0", "NaN", "1e-45"}[r.IntN(5)])
		us := r.Int64N(400_000*365*86400) - 200_000*365*86400
		ts := time.UnixMicro(us * 1000).UTC()
		f = append(f, ts.Format("2006-01-02 15:04:05.999999")+"+00")
		f = append(f, time.UnixMicro(r.Int64N(1e16)).UTC().Format("2006-01-02 15:04:05.999999"))
		f = append(f, time.Unix(r.Int64N(1e11)-5e10, 0).UTC().Format("2006-01-02"))
		f = append(f, time.UnixMicro(r.Int64N(86_400_000_000)).UTC().Format("15:04:05.999999"))
		f = append(f, []string{"t", "f"}[r.IntN(2)])
		f = append(f, `\x`+strings.Repeat("ab", r.IntN(4))+"0f")
		f = append(f, `"{""k"": [1, 2.5e3, ""\u00e9"", null], ""n"":`+"\r\n"+`{}}"`)
		f = append(f, `"{x,""y\""z"",NULL}"`)
		f = append(f, `"{`+digits(1+r.IntN(3))+"."+digits(2)+`,NULL}"`)
		f = append(f, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A1"+digits(1))
		f = append(f, `"tab	and ""quotes"", é"`)
		for j := range f {
			if j > 0 && r.IntN(10) == 0 {
				f[j] = ""
			}
		}
		buf.WriteString(strings.Join(f, ","))
		buf.WriteByte('\n')
		_ = i
	}
	return buf.Bytes()
}

// A batch whose columns come in another order, or without a nullable
// column, gives the lines of its rows in the schema's order, the missing
// column null.
func TestLinesColumnOrder(t *testing.T) {
	sc := &protocol.Schema{Columns: []protocol.Column{
		{Name: "a", Type: protocol.TypeInt32, NotNull: true},
		{Name: "b", Type: protocol.TypeString},
		{Name: "c", Type: protocol.TypeBool},
	}}
	l := newLines(t, sc)
	out, _, err := l.AppendCSV(nil, []byte("t,x,1\nf,,2\n"), []string{"c", "b", "a"}, "t", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = l.AppendCSV(out, []byte("3,\"y\"\n"), []string{"a", "b"}, "t", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":1,"b":"x","c":true}` + "\n" + `{"a":2,"b":null,"c":false}` + "\n" + `{"a":3,"b":"y","c":null}` + "\n"
	if string(out) != want {
		t.Errorf("lines\n%s\nwant\n%s", out, want)
	}
	if _, _, err := l.AppendCSV(nil, []byte("x\n"), []string{"b"}, "t", 1, nil); err == nil || !strings.Contains(err.Error(), `"a" cannot hold NULL`) {
		t.Errorf("a batch without the NOT NULL column: %v", err)
	}
}

// A value its column cannot hold is refused with its row and column, as
// the Builder refuses it.
func TestLinesErrors(t *testing.T) {
	for _, c := range []struct {
		raw, field string
		row        int64
	}{
		{"1,,12345678901234567890123456789.0123456789" + strings.Repeat(",", 13) + "\n", "amount", 1},
		{"1" + strings.Repeat(",", 15) + "\n2,,,,,,,,,,,,,,,\n,,,,,,,,,,,,,,,\n", "id", 3},
		{"1,40000" + strings.Repeat(",", 14) + "\n", "small", 1},
		{"1,,,,,infinity" + strings.Repeat(",", 10) + "\n", "at", 1},
		{"1,,,,,,,,,,,,{{1}}" + strings.Repeat(",", 3) + "\n", "tags", 1},
	} {
		l := newLines(t, awkward)
		_, _, err := l.AppendCSV(nil, []byte(c.raw), awkward.Names(), "f.csv", 1, nil)
		var re *connectors.RowError
		if !errors.As(err, &re) || re.Row != c.row || re.Field != c.field || re.Location != "f.csv" {
			t.Errorf("AppendCSV(%q) = %v, want a RowError at row %d, column %s", c.raw, err, c.row, c.field)
		}
		b := newAwkward(t)
		_, berr := b.AppendCSV([]byte(c.raw), awkward.Names(), "f.csv", 1, nil)
		var bre *connectors.RowError
		if !errors.As(berr, &bre) || bre.Row != re.Row || bre.Field != re.Field {
			t.Errorf("the Builder refuses %q with %v, Lines with %v", c.raw, berr, err)
		}
	}
}

func TestAppendDecimal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		digits := []byte{'-'}
		for range 1 + r.IntN(38) {
			digits = append(digits, byte('0'+r.IntN(10)))
		}
		v, _ := new(big.Int).SetString(string(digits[r.IntN(2):]), 10)
		n := decimal128.FromBigInt(v)
		scale := int32(r.IntN(12))
		if got, want := string(AppendDecimal(nil, n, scale)), n.ToString(scale); got != want {
			t.Fatalf("AppendDecimal(%s, %d) = %s, want %s", v, scale, got, want)
		}
	}
	for _, c := range []struct {
		n           int64
		prec, scale int32
		want        string
	}{
		{1250, 15, 2, "12.50"}, {-5, 5, 2, "-0.05"}, {7, 3, 0, "7"}, {0, 4, 2, "0.00"},
		{1250, 16, 2, `"12.50"`}, {-1, 38, 10, `"-0.0000000001"`},
	} {
		if got := string(appendJSONDecimal(nil, decimal128.FromI64(c.n), c.prec, c.scale)); got != c.want {
			t.Errorf("decimal(%d,%d) %d = %s, want %s", c.prec, c.scale, c.n, got, c.want)
		}
	}
}

// Timestamps and dates are written as time.Format writes them, over the
// whole range of 64-bit microseconds.
func TestAppendTimestamp(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 50000 {
		us := r.Int64N(2*253402300800000000) - 253402300800000000 // years -8000 to 10000
		if i%3 == 0 {
			us = r.Int64N(1<<62) - 1<<61
		}
		if i%5 == 0 {
			us -= us % 1_000_000
		}
		tm := time.UnixMicro(us).UTC()
		if got, want := string(appendTimestamp(nil, us, true)), tm.Format(time.RFC3339Nano); got != want {
			t.Fatalf("appendTimestamp(%d) = %s, want %s", us, got, want)
		}
		if got, want := string(appendTimestamp(nil, us, false)), tm.Format("2006-01-02T15:04:05.999999999"); got != want {
			t.Fatalf("appendTimestamp(%d, no zone) = %s, want %s", us, got, want)
		}
		days := int64(int32(r.Uint32()))
		if got, want := string(appendDate(nil, days)), time.Unix(days*86400, 0).UTC().Format(time.DateOnly); got != want {
			t.Fatalf("appendDate(%d) = %s, want %s", days, got, want)
		}
	}
}

func TestAppendJSONFloat(t *testing.T) {
	for _, c := range []struct {
		f    float64
		bits int
		want string
	}{
		{math.NaN(), 64, `"NaN"`}, {math.Inf(1), 64, `"Infinity"`}, {math.Inf(-1), 32, `"-Infinity"`},
		{1.5, 64, "1.5"}, {1e21, 64, "1e+21"}, {1e-7, 64, "1e-7"}, {123456789012345680000, 64, "123456789012345680000"},
		{float64(float32(0.1)), 32, "0.1"}, {math.Copysign(0, -1), 64, "-0"},
	} {
		if got := string(AppendJSONFloat(nil, c.f, c.bits)); got != c.want {
			t.Errorf("AppendJSONFloat(%v, %d) = %s, want %s", c.f, c.bits, got, c.want)
		}
	}
}

// BenchmarkLines converts rows shaped like bench/fullload's table into
// JSON lines.
func BenchmarkLines(b *testing.B) {
	const rows = 10000
	raw := ordersCSV(1, rows)
	l := newLines(b, orders)
	var dst []byte
	var sum connectors.Checksum
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		var err error
		if dst, _, err = l.AppendCSV(dst[:0], raw, orders.Names(), "bench", 1, &sum); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
