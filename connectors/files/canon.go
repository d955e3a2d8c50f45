package files

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
)

// jsonMetaKey flags a string field whose values are JSON texts.
const jsonMetaKey = "sluice.json"

// isJSONField reports whether f holds JSON texts in a string column.
func isJSONField(f arrow.Field) bool {
	v, ok := f.Metadata.GetValue(jsonMetaKey)
	return ok && v == "true"
}

// appendJSONString appends s as a JSON string, escaping only '"', '\\' and
// control characters; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONFloat appends f the way encoding/json writes it; NaN and
// infinities, which JSON cannot hold, become null.
func appendJSONFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// timeText formats a timestamp the canonical way.
func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// valueRenderer appends the canonical JSON of row i of one column.
type valueRenderer func(dst []byte, i int) []byte

// newValueRenderer returns the canonical JSON renderer of a column.
func newValueRenderer(f arrow.Field, col arrow.Array) valueRenderer {
	withNull := func(r valueRenderer) valueRenderer {
		return func(dst []byte, i int) []byte {
			if col.IsNull(i) {
				return append(dst, "null"...)
			}
			return r(dst, i)
		}
	}
	switch a := col.(type) {
	case *array.Null:
		return func(dst []byte, _ int) []byte { return append(dst, "null"...) }
	case *array.Boolean:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendBool(dst, a.Value(i)) })
	case *array.Int8:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int16:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int32:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int64:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, a.Value(i), 10) })
	case *array.Uint8:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint16:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint32:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint64:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, a.Value(i), 10) })
	case *array.Float16:
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONFloat(dst, float64(float16.Num(a.Value(i)).Float32()), 32)
		})
	case *array.Float32:
		return withNull(func(dst []byte, i int) []byte { return appendJSONFloat(dst, float64(a.Value(i)), 32) })
	case *array.Float64:
		return withNull(func(dst []byte, i int) []byte { return appendJSONFloat(dst, a.Value(i), 64) })
	case *array.String:
		return withNull(stringRenderer(f, a.Value))
	case *array.LargeString:
		return withNull(stringRenderer(f, a.Value))
	case *array.StringView:
		return withNull(stringRenderer(f, a.Value))
	case *array.Binary:
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONString(dst, base64.StdEncoding.EncodeToString(a.Value(i)))
		})
	case *array.LargeBinary:
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONString(dst, base64.StdEncoding.EncodeToString(a.Value(i)))
		})
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONString(dst, timeText(a.Value(i).ToTime(unit)))
		})
	case *array.Date32:
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONString(dst, a.Value(i).ToTime().Format(time.DateOnly))
		})
	case *array.Date64:
		return withNull(func(dst []byte, i int) []byte {
			return appendJSONString(dst, a.Value(i).ToTime().Format(time.DateOnly))
		})
	}
	// Anything else (decimals, nested types, times, durations): the value's
	// own JSON form, which is deterministic if not minimal.
	return withNull(func(dst []byte, i int) []byte {
		b, err := json.Marshal(col.GetOneForMarshal(i))
		if err != nil {
			return appendJSONString(dst, col.ValueStr(i))
		}
		return append(dst, b...)
	})
}

func stringRenderer(f arrow.Field, value func(int) string) valueRenderer {
	if isJSONField(f) {
		return func(dst []byte, i int) []byte {
			s := value(i)
			if json.Valid([]byte(s)) {
				return append(dst, s...)
			}
			return appendJSONString(dst, s)
		}
	}
	return func(dst []byte, i int) []byte { return appendJSONString(dst, value(i)) }
}

// rowRenderer renders the rows of one record as canonical JSONL lines.
type rowRenderer struct {
	keys [][]byte // `"name":` for each column, the first without ','
	cols []valueRenderer
}

func newRowRenderer(rec arrow.RecordBatch) *rowRenderer {
	sc := rec.Schema()
	r := &rowRenderer{}
	for i, f := range sc.Fields() {
		var k []byte
		if i > 0 {
			k = append(k, ',')
		}
		k = appendJSONString(k, f.Name)
		k = append(k, ':')
		r.keys = append(r.keys, k)
		r.cols = append(r.cols, newValueRenderer(f, rec.Column(i)))
	}
	return r
}

// appendRow appends row i as one JSON object, without a newline.
func (r *rowRenderer) appendRow(dst []byte, i int) []byte {
	dst = append(dst, '{')
	for c, k := range r.keys {
		dst = append(dst, k...)
		dst = r.cols[c](dst, i)
	}
	return append(dst, '}')
}

// csvText returns the CSV field text of row i of a column: strings as they
// are, nulls empty, anything else its canonical JSON text without quotes
// for string-like values.
func csvText(render valueRenderer, col arrow.Array, i int, scratch []byte) (string, []byte) {
	if col.IsNull(i) {
		return "", scratch
	}
	switch a := col.(type) {
	case *array.String:
		return a.Value(i), scratch
	case *array.LargeString:
		return a.Value(i), scratch
	case *array.StringView:
		return a.Value(i), scratch
	case *array.Timestamp:
		return timeText(a.Value(i).ToTime(a.DataType().(*arrow.TimestampType).Unit)), scratch
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly), scratch
	case *array.Date64:
		return a.Value(i).ToTime().Format(time.DateOnly), scratch
	case *array.Binary:
		return base64.StdEncoding.EncodeToString(a.Value(i)), scratch
	case *array.LargeBinary:
		return base64.StdEncoding.EncodeToString(a.Value(i)), scratch
	}
	scratch = render(scratch[:0], i)
	return string(scratch), scratch
}

// member is one key and raw value of a JSON object, in document order.
type member struct {
	key string
	val json.RawMessage
}

// parseObject parses one JSON object keeping its key order. Duplicate keys
// are an error.
func parseObject(line []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("not a JSON object")
	}
	var ms []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("bad object key %v", tok)
		}
		if seen[key] {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		ms = append(ms, member{key: key, val: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("data after the JSON object")
	}
	return ms, nil
}

// validJSONObject reports whether line is one JSON object.
func validJSONObject(line []byte) bool {
	return len(line) > 0 && line[0] == '{' && json.Valid(line)
}

// normalizeLine strips the line ending and surrounding blanks of a JSONL
// line; an empty result is a blank line.
func normalizeLine(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return bytes.TrimSpace(line)
}

// forEachCSVRecord calls fn with each record of canonical CSV bytes, without
// its line ending. Records end at a newline outside double quotes.
func forEachCSVRecord(data []byte, fn func(rec []byte) error) error {
	start := 0
	quoted := false
	for i, c := range data {
		switch c {
		case '"':
			quoted = !quoted
		case '\n':
			if quoted {
				continue
			}
			if err := fn(bytes.TrimSuffix(data[start:i], []byte{'\r'})); err != nil {
				return err
			}
			start = i + 1
		}
	}
	if start < len(data) {
		return fn(bytes.TrimSuffix(data[start:], []byte{'\r'}))
	}
	return nil
}
