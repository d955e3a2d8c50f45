package postgres

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
)

// arrowCSV renders Arrow rows as CSV records in PostgreSQL's text input
// syntax, for COPY FROM STDIN (FORMAT csv). A null is an empty unquoted
// field; an empty string is "". Strings are written as they are, integers
// and floats in Go's shortest round-trip form, booleans as true/false,
// binary values as \x hex (bytea), dates as 2006-01-02, timestamps in
// RFC 3339 with nanoseconds (in UTC for zoned timestamps, without a zone
// otherwise), and every other type (decimals, lists, structs, maps) as the
// JSON text Arrow gives it, so that it loads into text, json or jsonb
// columns (lists of scalars print as JSON arrays, which PostgreSQL arrays
// do not accept: use text or jsonb columns for them).
type arrowCSV struct {
	buf bytes.Buffer
}

// encode renders every row of rec and adds each record line to sum.
func (e *arrowCSV) encode(rec arrow.RecordBatch, sum *connectors.Checksum) ([]byte, error) {
	e.buf.Reset()
	cols := rec.Columns()
	var scratch []byte
	for r := 0; r < int(rec.NumRows()); r++ {
		start := e.buf.Len()
		for c, col := range cols {
			if c > 0 {
				e.buf.WriteByte(',')
			}
			if col.IsNull(r) {
				continue
			}
			var err error
			scratch, err = appendValue(scratch[:0], col, r)
			if err != nil {
				return nil, fmt.Errorf("row %d, column %q: %w", r+1, rec.Schema().Field(c).Name, err)
			}
			writeCSVField(&e.buf, scratch)
		}
		sum.Add(e.buf.Bytes()[start:])
		e.buf.WriteByte('\n')
	}
	return e.buf.Bytes(), nil
}

// appendValue appends the text of row i of col.
func appendValue(dst []byte, col arrow.Array, i int) ([]byte, error) {
	switch a := col.(type) {
	case *array.String:
		return append(dst, a.Value(i)...), nil
	case *array.LargeString:
		return append(dst, a.Value(i)...), nil
	case *array.StringView:
		return append(dst, a.Value(i)...), nil
	case *array.Binary:
		return appendHex(dst, a.Value(i)), nil
	case *array.LargeBinary:
		return appendHex(dst, a.Value(i)), nil
	case *array.FixedSizeBinary:
		return appendHex(dst, a.Value(i)), nil
	case *array.Boolean:
		return strconv.AppendBool(dst, a.Value(i)), nil
	case *array.Int8:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10), nil
	case *array.Int16:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10), nil
	case *array.Int32:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10), nil
	case *array.Int64:
		return strconv.AppendInt(dst, a.Value(i), 10), nil
	case *array.Uint8:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10), nil
	case *array.Uint16:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10), nil
	case *array.Uint32:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10), nil
	case *array.Uint64:
		return strconv.AppendUint(dst, a.Value(i), 10), nil
	case *array.Float32:
		return strconv.AppendFloat(dst, float64(a.Value(i)), 'g', -1, 32), nil
	case *array.Float64:
		return strconv.AppendFloat(dst, a.Value(i), 'g', -1, 64), nil
	case *array.Date32:
		return a.Value(i).ToTime().AppendFormat(dst, time.DateOnly), nil
	case *array.Date64:
		return a.Value(i).ToTime().AppendFormat(dst, time.DateOnly), nil
	case *array.Timestamp:
		typ := a.DataType().(*arrow.TimestampType)
		t := a.Value(i).ToTime(typ.Unit)
		if typ.TimeZone == "" {
			return t.AppendFormat(dst, "2006-01-02T15:04:05.999999999"), nil
		}
		return t.UTC().AppendFormat(dst, time.RFC3339Nano), nil
	}
	v := col.GetOneForMarshal(i)
	if s, ok := v.(string); ok {
		return append(dst, s...), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func appendHex(dst, b []byte) []byte {
	dst = append(dst, `\x`...)
	return hex.AppendEncode(dst, b)
}

// writeCSVField writes one non-null field, quoted when PostgreSQL's CSV
// reader needs it: empty (else it reads NULL), holding a delimiter, quote
// or line break, or equal to the end-of-data marker `\.`.
func writeCSVField(buf *bytes.Buffer, f []byte) {
	if len(f) > 0 && bytes.IndexAny(f, ",\"\r\n") < 0 && !bytes.Equal(f, []byte(`\.`)) {
		buf.Write(f)
		return
	}
	buf.WriteByte('"')
	for {
		i := bytes.IndexByte(f, '"')
		if i < 0 {
			break
		}
		buf.Write(f[:i+1])
		buf.WriteByte('"')
		f = f[i+1:]
	}
	buf.Write(f)
	buf.WriteByte('"')
}
