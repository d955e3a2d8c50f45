package conformance

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/sluicehq/sluice/connectors"
)

// Null is the text of a null (or absent) value in a Table.
const Null = "\x00null"

// Table is rows as a test knows them: column names and, for each row,
// its values in the order of Columns, each as text (Null for a null).
// A test builds the Table of its input itself, from the values it
// generated, and reads a target back into one with its own code (the
// decoders below, a SELECT): never through the connector under test.
//
// The text of a value: a string as it is; an integer in decimal; a
// float in the shortest form that reads back to it at its own width
// (strconv.FormatFloat with 'g', -1 and 32 or 64); a bool true or false;
// a time in RFC 3339 with nanoseconds, in UTC; a decimal at its scale;
// bytes in standard base64; a JSON number as its literal; a JSON object
// or array as its JSON text from json.Marshal (compact, keys sorted).
type Table struct {
	Columns []string
	Rows    [][]string
}

// Len returns the number of rows.
func (t Table) Len() int { return len(t.Rows) }

// Concat returns the rows of ts one after the other, under the union of
// their columns (in the order they first appear); a row is Null in the
// columns its table lacks.
func Concat(ts ...Table) Table {
	var out Table
	for _, t := range ts {
		idx := make([]int, len(t.Columns))
		for j, c := range t.Columns {
			if idx[j] = slices.Index(out.Columns, c); idx[j] < 0 {
				idx[j] = len(out.Columns)
				out.Columns = append(out.Columns, c)
			}
		}
		for _, r := range t.Rows {
			row := make([]string, len(out.Columns))
			for j := range row {
				row[j] = Null
			}
			for j, v := range r {
				if j < len(idx) {
					row[idx[j]] = v
				}
			}
			out.Rows = append(out.Rows, row)
		}
	}
	for i, r := range out.Rows {
		for len(r) < len(out.Columns) {
			r = append(r, Null)
		}
		out.Rows[i] = r
	}
	return out
}

// Project returns t with only the columns named, in that order (Null
// where t has no such column).
func (t Table) Project(columns ...string) Table {
	out := Table{Columns: columns}
	for _, r := range t.Rows {
		row := make([]string, len(columns))
		for j, c := range columns {
			row[j] = Null
			if k := slices.Index(t.Columns, c); k >= 0 {
				row[j] = value(r, k)
			}
		}
		out.Rows = append(out.Rows, row)
	}
	return out
}

// Map returns t with every value replaced by f(column, value): how a
// test says what a target's format keeps of a value (CSV keeps no null,
// for one).
func (t Table) Map(f func(column, value string) string) Table {
	out := Table{Columns: t.Columns, Rows: make([][]string, len(t.Rows))}
	for i, r := range t.Rows {
		out.Rows[i] = make([]string, len(r))
		for j, v := range r {
			out.Rows[i][j] = f(t.Columns[j], v)
		}
	}
	return out
}

// Compare returns nil when got holds the rows of want, whatever their
// order, and otherwise says how it differs: the columns (by name, in any
// order), the number of rows, then column by column the values (as a
// multiset), then whole rows (values moved between rows).
func Compare(got, want Table) error {
	if len(got.Rows) == 0 && len(want.Rows) == 0 {
		return nil
	}
	if len(got.Rows) != len(want.Rows) {
		return fmt.Errorf("%d rows, want %d", len(got.Rows), len(want.Rows))
	}
	idx := make([]int, len(want.Columns))
	for j, c := range want.Columns {
		idx[j] = slices.Index(got.Columns, c)
		if idx[j] < 0 {
			return fmt.Errorf("no column %q among %q", c, got.Columns)
		}
	}
	if len(got.Columns) != len(want.Columns) {
		return fmt.Errorf("columns %q, want %q", got.Columns, want.Columns)
	}
	// Column by column.
	var errs []error
	for j, c := range want.Columns {
		g, w := make([]string, len(got.Rows)), make([]string, len(want.Rows))
		for i := range got.Rows {
			g[i], w[i] = value(got.Rows[i], idx[j]), value(want.Rows[i], j)
		}
		slices.Sort(g)
		slices.Sort(w)
		if d := diff(g, w); d != "" {
			errs = append(errs, fmt.Errorf("column %q: %s", c, d))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Whole rows.
	g, w := make([]string, len(got.Rows)), make([]string, len(want.Rows))
	for i := range got.Rows {
		var gb, wb strings.Builder
		for j := range want.Columns {
			gb.WriteString(strconv.Quote(value(got.Rows[i], idx[j])) + " ")
			wb.WriteString(strconv.Quote(value(want.Rows[i], j)) + " ")
		}
		g[i], w[i] = gb.String(), wb.String()
	}
	slices.Sort(g)
	slices.Sort(w)
	if d := diff(g, w); d != "" {
		return fmt.Errorf("every column holds the right values, but not in the right rows: %s", d)
	}
	return nil
}

func value(row []string, j int) string {
	if j < len(row) {
		return row[j]
	}
	return Null
}

// diff describes how two sorted lists differ: how many values of each
// are missing from the other, with a few of them.
func diff(got, want []string) string {
	var extra, missing []string
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || (i < len(got) && got[i] < want[j]):
			extra = append(extra, got[i])
			i++
		case i == len(got) || want[j] < got[i]:
			missing = append(missing, want[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(extra) == 0 && len(missing) == 0 {
		return ""
	}
	show := func(vs []string) string {
		q := make([]string, 0, 3)
		for _, v := range vs[:min(3, len(vs))] {
			q = append(q, strconv.Quote(v))
		}
		return strings.Join(q, ", ")
	}
	return fmt.Sprintf("%d values not expected (%s), %d expected values missing (%s)", len(extra), show(extra), len(missing), show(missing))
}

// BatchRows decodes the rows of a batch with the suite's own code: an
// Arrow record by RecordRows, JSONL by JSONLRows, CSV by CSVRows under
// the batch's Columns.
func BatchRows(b connectors.Batch) (Table, error) {
	switch {
	case b.Record != nil:
		return RecordRows(b.Record), nil
	case b.Format == connectors.FormatJSONL:
		return JSONLRows(b.Raw)
	case b.Format == connectors.FormatCSV:
		t, err := CSVRows(b.Raw, false)
		t.Columns = b.Columns
		return t, err
	}
	return Table{}, fmt.Errorf("raw batch of format %q", b.Format)
}

// JSONLRows decodes JSON lines, each an object: the columns are the keys
// in the order they first appear, a key a line lacks is Null there.
// Blank lines are skipped.
func JSONLRows(data []byte) (Table, error) {
	var t Table
	col := map[string]int{}
	for n, line := range bytes.Split(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var obj map[string]json.RawMessage
		if err := dec.Decode(&obj); err != nil {
			return t, fmt.Errorf("line %d: %w", n+1, err)
		}
		// Keys in document order.
		keys, err := objectKeys(line)
		if err != nil {
			return t, fmt.Errorf("line %d: %w", n+1, err)
		}
		row := make([]string, len(t.Columns))
		for i := range row {
			row[i] = Null
		}
		for _, k := range keys {
			j, ok := col[k]
			if !ok {
				j = len(t.Columns)
				col[k] = j
				t.Columns = append(t.Columns, k)
				row = append(row, Null)
			}
			if row[j], err = jsonText(obj[k]); err != nil {
				return t, fmt.Errorf("line %d, key %q: %w", n+1, k, err)
			}
		}
		t.Rows = append(t.Rows, row)
	}
	for i := range t.Rows {
		for len(t.Rows[i]) < len(t.Columns) {
			t.Rows[i] = append(t.Rows[i], Null)
		}
	}
	return t, nil
}

// objectKeys returns the keys of a JSON object in document order.
func objectKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("key %v is not a string", tok)
		}
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// jsonText is the Table text of one JSON value.
func jsonText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Null, nil
	}
	switch raw[0] {
	case 'n':
		return Null, nil
	case '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case '{', '[':
		// Keys sorted, numbers as their literals.
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", err
		}
		b, err := json.Marshal(v)
		return string(b), err
	}
	return string(raw), nil // a number's literal, true, false
}

// CSVRows decodes CSV records (RFC 4180; CRLF or LF line ends; a
// leading byte order mark dropped), the first the header when header is
// set. An unquoted empty field is Null and a quoted one "", as
// PostgreSQL's COPY CSV writes them.
func CSVRows(data []byte, header bool) (Table, error) {
	var t Table
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var rec []string
	var field []byte
	quoted, inQuotes, started := false, false, false
	end := func() {
		if !quoted && len(field) == 0 {
			rec = append(rec, Null)
		} else {
			rec = append(rec, string(field))
		}
		field, quoted = field[:0], false
	}
	endRecord := func() {
		end()
		if header && t.Columns == nil {
			t.Columns = rec
		} else {
			t.Rows = append(t.Rows, rec)
		}
		rec, started = nil, false
	}
	for i := 0; i < len(data); i++ {
		ch := data[i]
		switch {
		case inQuotes && ch == '"' && i+1 < len(data) && data[i+1] == '"':
			field = append(field, '"')
			i++
		case inQuotes && ch == '"':
			inQuotes = false
		case inQuotes:
			field = append(field, ch)
		case ch == '"' && len(field) == 0 && !quoted:
			inQuotes, quoted, started = true, true, true
		case ch == ',':
			end()
			started = true
		case ch == '\r' && i+1 < len(data) && data[i+1] == '\n':
		case ch == '\n':
			endRecord()
		default:
			field = append(field, ch)
			started = true
		}
	}
	if inQuotes {
		return t, errors.New("CSV ends inside a quoted field")
	}
	if started || len(rec) > 0 {
		endRecord()
	}
	if header && t.Columns != nil {
		for i, c := range t.Columns {
			if c == Null {
				t.Columns[i] = ""
			}
		}
	}
	return t, nil
}

// ParquetRows reads a Parquet file with the Arrow Parquet reader and
// decodes its rows by RecordRows.
func ParquetRows(data []byte) (Table, error) {
	pf, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		return Table{}, fmt.Errorf("open parquet: %w", err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.NewGoAllocator())
	if err != nil {
		return Table{}, fmt.Errorf("open parquet: %w", err)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	if err != nil {
		return Table{}, fmt.Errorf("read parquet: %w", err)
	}
	defer rr.Release()
	var t Table
	for rr.Next() {
		t = Concat(t, RecordRows(rr.RecordBatch()))
	}
	if err := rr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return t, fmt.Errorf("read parquet: %w", err)
	}
	if t.Columns == nil {
		for _, f := range rr.Schema().Fields() {
			t.Columns = append(t.Columns, f.Name)
		}
	}
	return t, nil
}

// RecordRows decodes the rows of an Arrow record in the Table's text
// forms.
func RecordRows(rec arrow.RecordBatch) Table {
	var t Table
	for _, f := range rec.Schema().Fields() {
		t.Columns = append(t.Columns, f.Name)
	}
	for i := 0; i < int(rec.NumRows()); i++ {
		row := make([]string, rec.NumCols())
		for j := range row {
			row[j] = arrowText(rec.Column(j), i)
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// arrowText is the Table text of row i of an Arrow column.
func arrowText(col arrow.Array, i int) string {
	if col.IsNull(i) {
		return Null
	}
	switch a := col.(type) {
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Binary:
		return base64.StdEncoding.EncodeToString(a.Value(i))
	case *array.Boolean:
		return strconv.FormatBool(a.Value(i))
	case *array.Int8:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int16:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int32:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int64:
		return strconv.FormatInt(a.Value(i), 10)
	case *array.Uint64:
		return strconv.FormatUint(a.Value(i), 10)
	case *array.Float32:
		return strconv.FormatFloat(float64(a.Value(i)), 'g', -1, 32)
	case *array.Float64:
		return strconv.FormatFloat(a.Value(i), 'g', -1, 64)
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return a.Value(i).ToTime(unit).UTC().Format(time.RFC3339Nano)
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly)
	}
	return col.ValueStr(i)
}
