package files

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// timeText formats a timestamp the canonical way.
func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// emptyRecord returns a record of schema sc with no rows.
func emptyRecord(sc *arrow.Schema, mem memory.Allocator) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	return b.NewRecordBatch()
}

// csvText returns the CSV field text of row i of a column: strings as they
// are, nulls empty, numbers, times and bytes in their JSON forms without
// quotes (a decimal at its scale, NaN and the infinities as words), and
// anything else its JSON text.
func csvText(render arrowconv.ValueRenderer, col arrow.Array, i int, scratch []byte) (string, []byte) {
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
	case *array.Decimal128:
		scratch = arrowconv.AppendDecimal(scratch[:0], a.Value(i), a.DataType().(*arrow.Decimal128Type).Scale)
		return string(scratch), scratch
	}
	scratch = render(scratch[:0], i)
	if len(scratch) >= 2 && scratch[0] == '"' {
		// A string form (a time, bytes, NaN): its text, unescaped.
		var s string
		if err := json.Unmarshal(scratch, &s); err == nil {
			return s, scratch
		}
	}
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
