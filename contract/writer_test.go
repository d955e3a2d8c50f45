package contract

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/sluicehq/sluice/connectors"
)

// captured is a TaskWriter that keeps what it is given.
type captured struct {
	batches []connectors.Batch
	texts   []string // Raw, or each Arrow record's rows rendered
}

func (c *captured) Write(_ context.Context, b connectors.Batch) error {
	c.batches = append(c.batches, b)
	if b.Record != nil {
		var sb strings.Builder
		for i := range int(b.Record.NumRows()) {
			for j := range int(b.Record.NumCols()) {
				if j > 0 {
					sb.WriteByte('|')
				}
				col := b.Record.Column(j)
				if col.IsNull(i) {
					sb.WriteString("NULL")
				} else {
					sb.Write(appendArrowText(nil, col, i))
				}
			}
			sb.WriteByte('\n')
		}
		c.texts = append(c.texts, sb.String())
		return nil
	}
	c.texts = append(c.texts, string(b.Raw))
	return nil
}
func (c *captured) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{}, nil
}
func (c *captured) Abort(context.Context) error { return nil }

const people = `strict: true
key: ${TEST_CONTRACT_KEY}
columns:
  id: keep
  email: {pii: email, action: hash}
  phone: {pii: phone, action: mask}
  name: {pii: name, action: drop}
  born: {pii: birth_date, action: truncate, to: month}
  salary: {action: truncate, bucket: 1000}
  card: {pii: card, action: tokenize}
  notes: {action: "null"}
  country: keep
filter:
  - {column: country, in: [DE, FR]}
`

func compileYAML(t testing.TB, y string) *Contract {
	t.Helper()
	s, ps := Parse([]byte(y))
	if len(ps) > 0 {
		t.Fatalf("parse: %v", ps)
	}
	c, err := Compile(s, func(k string) (string, bool) {
		if k == "TEST_CONTRACT_KEY" {
			return string(testKey), true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWriterCSV(t *testing.T) {
	c := compileYAML(t, people)
	var got captured
	w, err := c.Writer(&got)
	if err != nil {
		t.Fatal(err)
	}
	raw := "1,alice@example.com,+1 555 010 0199,Alice,1984-07-19,123456.78,4111-1111-1111-1111,\"secret, \"\"very\"\"\",DE\n" +
		"2,bob@example.com,,Bob,,,,,US\n" +
		"3,,\"\",\"Carol \"\"C\"\"\",2001-02-03,-5,AB1234567,,FR\r\n"
	err = w.Write(context.Background(), connectors.Batch{Raw: []byte(raw), Format: connectors.FormatCSV,
		Columns: []string{"id", "email", "phone", "name", "born", "salary", "card", "notes", "country"}, Rows: 3, Position: "t.csv:1"})
	if err != nil {
		t.Fatal(err)
	}
	b := got.batches[0]
	var sum connectors.Checksum
	for _, rec := range strings.SplitAfter(string(b.Raw), "\n") {
		if rec != "" {
			sum.Add([]byte(strings.TrimSuffix(rec, "\n")))
		}
	}
	if strings.Join(b.Columns, ",") != "id,email,phone,born,salary,card,notes,country" || b.Rows != 2 || b.Checksum == nil || *b.Checksum != sum {
		t.Fatalf("batch columns %v rows %d checksum %v, want the records' %v", b.Columns, b.Rows, b.Checksum, sum)
	}
	card1, _ := TokenizeValue(testKey, "4111-1111-1111-1111")
	card3, _ := TokenizeValue(testKey, "AB1234567")
	want := "1," + HashValue(testKey, "alice@example.com") + ",+* *** *** 0199,1984-07-01,123000," + card1 + ",,DE\n" +
		"3,,\"\",2001-02-01,-1000," + card3 + ",,FR\n"
	if string(b.Raw) != want {
		t.Fatalf("CSV\n got %q\nwant %q", b.Raw, want)
	}
	for _, pii := range []string{"alice@example.com", "Alice", "Carol", "secret", "1984-07-19", "4111-1111-1111-1111", "bob"} {
		if strings.Contains(string(b.Raw), pii) {
			t.Fatalf("the output holds %q", pii)
		}
	}
}

func TestWriterJSONL(t *testing.T) {
	c := compileYAML(t, people)
	var got captured
	w, _ := c.Writer(&got)
	raw := `{"id":1,"email":"alice@example.com","phone":"+1 555 010 0199","name":"Alice","born":"1984-07-19","salary":123456.78,"card":"4111-1111-1111-1111","notes":{"a":[1,"}"]},"country":"DE"}
{"id": 2, "email": "bob@example.com", "country": "US"}

{"country":"FR","email":null,"salary":"-5","id":3,"name":"Carol \"C\"","card":"AB1234567","born":"2001-02-03T04:05:06Z"}
`
	if err := w.Write(context.Background(), connectors.Batch{Raw: []byte(raw), Format: connectors.FormatJSONL, Rows: 3, Position: "t.jsonl:1"}); err != nil {
		t.Fatal(err)
	}
	card1, _ := TokenizeValue(testKey, "4111-1111-1111-1111")
	card3, _ := TokenizeValue(testKey, "AB1234567")
	want := `{"id":1,"email":"` + HashValue(testKey, "alice@example.com") + `","phone":"+* *** *** 0199","born":"1984-07-01","salary":123000,"card":"` + card1 + `","notes":null,"country":"DE"}
{"country":"FR","email":null,"salary":"-1000","id":3,"card":"` + card3 + `","born":"2001-02-01T00:00:00Z"}
`
	if b := got.batches[0]; string(b.Raw) != want || b.Rows != 2 {
		t.Fatalf("JSONL (%d rows)\n got %s\nwant %s", b.Rows, b.Raw, want)
	}
}

func TestWriterArrow(t *testing.T) {
	c := compileYAML(t, people)
	var got captured
	w, _ := c.Writer(&got)
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "email", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "born", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "salary", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "notes", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "country", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"alice@example.com", "bob@example.com", ""}, []bool{true, true, false})
	b.Field(2).(*array.StringBuilder).AppendValues([]string{"Alice", "Bob", "Carol"}, nil)
	b.Field(3).(*array.Date32Builder).AppendValues([]arrow.Date32{arrow.Date32(5313), 0, arrow.Date32(11356)}, []bool{true, false, true})
	b.Field(4).(*array.Int64Builder).AppendValues([]int64{123456, 0, -5}, nil)
	b.Field(5).(*array.StringBuilder).AppendValues([]string{"secret", "", "x"}, nil)
	b.Field(6).(*array.StringBuilder).AppendValues([]string{"DE", "US", "FR"}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := w.Write(context.Background(), connectors.Batch{Record: rec, Format: connectors.FormatArrow, Rows: 3, Position: "t.parquet"}); err != nil {
		t.Fatal(err)
	}
	out := got.batches[0]
	want := "1|" + HashValue(testKey, "alice@example.com") + "|1984-07-01|123000|NULL|DE\n3|NULL|2001-02-01|-1000|NULL|FR\n"
	if got.texts[0] != want {
		t.Fatalf("Arrow rows\n got %q\nwant %q", got.texts[0], want)
	}
	var names []string
	for _, f := range out.Record.Schema().Fields() {
		names = append(names, f.Name+":"+f.Type.String())
	}
	if strings.Join(names, ",") != "id:int64,email:utf8,born:date32,salary:int64,notes:utf8,country:utf8" {
		t.Fatalf("schema %v", names)
	}
}

func TestWriterStrictNamesTheColumnNotTheValue(t *testing.T) {
	c := compileYAML(t, people)
	var got captured
	w, _ := c.Writer(&got)
	err := w.Write(context.Background(), connectors.Batch{Raw: []byte("1,DE,123-45-6789\n"), Format: connectors.FormatCSV,
		Columns: []string{"id", "country", "ssn"}, Rows: 1, Position: "t.csv:1"})
	if !IsUnclassified(err) || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), `"ssn"`) || strings.Contains(err.Error(), "123-45-6789") {
		t.Fatalf("err = %v", err)
	}
	err = w.Write(context.Background(), connectors.Batch{Raw: []byte(`{"id":1,"ssn":"123-45-6789"}` + "\n"), Format: connectors.FormatJSONL, Rows: 1, Position: "t.jsonl:1"})
	if !IsUnclassified(err) || strings.Contains(err.Error(), "123-45-6789") {
		t.Fatalf("err = %v", err)
	}
	if len(got.batches) != 0 {
		t.Fatalf("the sink got %d batches", len(got.batches))
	}
	// A bad value: named by row and column.
	err = w.Write(context.Background(), connectors.Batch{Raw: []byte("1,DE,not-a-date-1984\n"), Format: connectors.FormatCSV,
		Columns: []string{"id", "country", "born"}, Rows: 1, Position: "t.csv:7"})
	if !connectors.IsPermanent(err) || !strings.Contains(err.Error(), `row 1 of the batch, column "born": truncate:`) || strings.Contains(err.Error(), "not-a-date-1984") {
		t.Fatalf("err = %v", err)
	}
}

// TestWriterCSVBatchesInTurn: batches of different sizes written one
// after the other (the writer reuses its output's memory) each come out as
// a writer of their own makes them, with the checksum of their records.
func TestWriterCSVBatchesInTurn(t *testing.T) {
	c := compileYAML(t, "key: ${TEST_CONTRACT_KEY}\ncolumns:\n  id: keep\n  name: hash\n  status: hash\n")
	cols := []string{"id", "name", "status"}
	batch := func(first, n int) []byte {
		var b []byte
		for i := first; i < first+n; i++ {
			b = fmt.Appendf(b, "%d,\"name, %d\",%s\n", i, i, []string{"new", "paid"}[i%2])
		}
		return b
	}
	var got captured
	w, _ := c.Writer(&got)
	for k, n := range []int{50, 3, 400, 1, 0, 200} {
		raw := batch(k*1000, n)
		if err := w.Write(context.Background(), connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: cols, Rows: int64(n)}); err != nil {
			t.Fatal(err)
		}
		var alone captured
		w1, _ := c.Writer(&alone)
		if err := w1.Write(context.Background(), connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: cols, Rows: int64(n)}); err != nil {
			t.Fatal(err)
		}
		last := got.batches[len(got.batches)-1]
		if got.texts[len(got.texts)-1] != alone.texts[0] {
			t.Fatalf("batch %d of %d rows:\n got %q\nwant %q", k, n, got.texts[len(got.texts)-1], alone.texts[0])
		}
		var sum connectors.Checksum
		for line := range strings.Lines(alone.texts[0]) {
			sum.Add([]byte(strings.TrimSuffix(line, "\n")))
		}
		if last.Rows != int64(n) || *last.Checksum != sum {
			t.Fatalf("batch %d: %d rows, checksum %v; want %d, %v", k, last.Rows, *last.Checksum, n, sum)
		}
	}
}

func TestWriterPassesWhatItKeeps(t *testing.T) {
	c := compileYAML(t, "columns:\n  id: keep\n  name: keep\n")
	var got captured
	w, _ := c.Writer(&got)
	sum := &connectors.Checksum{Rows: 1}
	in := connectors.Batch{Raw: []byte("1,x\n"), Format: connectors.FormatCSV, Columns: []string{"id", "name"}, Rows: 1, Checksum: sum}
	if err := w.Write(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if got.batches[0].Checksum != sum || &got.batches[0].Raw[0] != &in.Raw[0] {
		t.Fatal("a batch the contract keeps as it is was rewritten")
	}
	// Not strict: a column the contract does not name is kept.
	if err := w.Write(context.Background(), connectors.Batch{Raw: []byte(`{"id":1,"other":2}` + "\n"), Format: connectors.FormatJSONL, Rows: 1}); err != nil {
		t.Fatal(err)
	}
	if got.texts[1] != `{"id":1,"other":2}`+"\n" {
		t.Fatalf("got %q", got.texts[1])
	}
}

// FuzzWriter feeds arbitrary bytes as CSV and JSONL batches: the contract
// never panics, and a batch it accepts is well formed: as many CSV fields
// per record as output columns, JSON objects per line.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("1,a@x.io,+1 555,Ann,1984-07-19,12.5,4111111111111111,n,DE\n"), false)
	f.Add([]byte(`{"id":1,"email":"a@x.io","born":"1984-07-19","country":"FR","salary":-3}`+"\n"), true)
	f.Add([]byte("\"x\"\"y\",\"\n\",,,,,,,\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, jsonl bool) {
		c := compileYAML(t, strings.Replace(people, "strict: true", "strict: false", 1))
		var got captured
		w, _ := c.Writer(&got)
		b := connectors.Batch{Raw: data, Format: connectors.FormatCSV, Rows: 1, Position: "fuzz",
			Columns: []string{"id", "email", "phone", "name", "born", "salary", "card", "notes", "country"}}
		if jsonl {
			b.Format, b.Columns = connectors.FormatJSONL, nil
		}
		if err := w.Write(context.Background(), b); err != nil {
			return
		}
		for _, out := range got.batches {
			if jsonl {
				for _, line := range strings.Split(strings.TrimSuffix(string(out.Raw), "\n"), "\n") {
					if line != "" && !json.Valid([]byte(line)) && json.Valid(data) {
						t.Fatalf("line %q of valid input is not JSON", line)
					}
				}
				continue
			}
			p, _ := planFor(c.dataset, c.keys, out.Columns)
			var fields []span
			for pos := 0; pos < len(out.Raw); {
				var err error
				if fields, pos, err = scanRecord(out.Raw, pos, len(p.in), fields[:0]); err != nil {
					t.Fatalf("output %q: %v", out.Raw, err)
				}
			}
		}
	})
}
