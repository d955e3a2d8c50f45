package files

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// kind is the inferred kind of a column's values.
type kind int

const (
	kNull kind = iota
	kBool
	kInt
	kFloat
	kTime
	kString
	kJSON
)

func (k kind) String() string {
	return [...]string{"null", "bool", "int64", "float64", "timestamp", "string", "json"}[k]
}

// merge combines the kinds of two values of one column. Conflicts become
// JSON text for JSONL input and strings for CSV input.
func merge(a, b kind, conflict kind) kind {
	switch {
	case a == kNull:
		return b
	case b == kNull, a == b:
		return a
	case a == kInt && b == kFloat || a == kFloat && b == kInt:
		return kFloat
	case a == kTime && b == kString || a == kString && b == kTime:
		return kString
	}
	return conflict
}

var timestampType = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// parseTime parses a canonical RFC 3339 UTC timestamp of at most
// microsecond precision, written exactly as timeText writes it.
func parseTime(s string) (time.Time, bool) {
	if len(s) < 20 || s[len(s)-1] != 'Z' {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Nanosecond()%1000 != 0 || t.Year() < 1 || t.Year() > 9999 || timeText(t) != s {
		return time.Time{}, false
	}
	return t, true
}

// isIntLiteral reports whether a number literal is a plain integer.
func isIntLiteral(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isNumberText reports whether CSV text is a decimal number (not "NaN",
// "Inf" or hex, which strconv would take too).
func isNumberText(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	if c == '-' || c == '+' {
		if len(s) == 1 {
			return false
		}
		c = s[1]
	}
	if !(c >= '0' && c <= '9' || c == '.') {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '-', c == '+':
		default:
			return false
		}
	}
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func classifyJSON(raw []byte) kind {
	switch raw[0] {
	case 'n':
		return kNull
	case 't', 'f':
		return kBool
	case '{', '[':
		return kJSON
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if _, ok := parseTime(s); ok {
				return kTime
			}
		}
		return kString
	}
	if isIntLiteral(string(raw)) {
		if _, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return kInt
		}
	}
	return kFloat
}

func classifyText(s string) kind {
	switch {
	case s == "":
		return kNull
	case s == "true" || s == "false":
		return kBool
	case isIntLiteral(s):
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return kInt
		}
		return kFloat
	case isNumberText(s):
		return kFloat
	}
	if _, ok := parseTime(s); ok {
		return kTime
	}
	return kString
}

// rowDecoder turns JSONL or CSV bytes into Arrow records of a schema
// inferred from the first batch it sees.
type rowDecoder struct {
	format  connectors.Format
	columns []string // CSV columns of the first batch
	names   []string
	kinds   []kind
	index   map[string]int
	schema  *arrow.Schema
	mem     memory.Allocator
}

// newRowDecoder infers a schema from the first batch.
func newRowDecoder(b connectors.Batch) (*rowDecoder, error) {
	d := &rowDecoder{format: b.Format, index: map[string]int{}, mem: memory.DefaultAllocator}
	switch b.Format {
	case connectors.FormatJSONL:
		err := forEachLine(b.Raw, func(n int, line []byte) error {
			ms, err := parseObject(line)
			if err != nil {
				return &connectors.RowError{Location: b.Position, Row: int64(n), Err: err}
			}
			for _, m := range ms {
				i, ok := d.index[m.key]
				if !ok {
					i = len(d.names)
					d.index[m.key] = i
					d.names = append(d.names, m.key)
					d.kinds = append(d.kinds, kNull)
				}
				d.kinds[i] = merge(d.kinds[i], classifyJSON(m.val), kJSON)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	case connectors.FormatCSV:
		d.columns = slices.Clone(b.Columns)
		d.names = d.columns
		d.kinds = make([]kind, len(d.names))
		for i, n := range d.names {
			if _, dup := d.index[n]; dup {
				return nil, fmt.Errorf("csv column %q appears twice", n)
			}
			d.index[n] = i
		}
		err := forEachCSV(b, func(n int, rec []string) error {
			for i, s := range rec {
				d.kinds[i] = merge(d.kinds[i], classifyText(s), kString)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("cannot decode %s batches", b.Format)
	}
	fields := make([]arrow.Field, len(d.names))
	for i, n := range d.names {
		f := arrow.Field{Name: n, Nullable: true}
		switch d.kinds[i] {
		case kBool:
			f.Type = arrow.FixedWidthTypes.Boolean
		case kInt:
			f.Type = arrow.PrimitiveTypes.Int64
		case kFloat:
			f.Type = arrow.PrimitiveTypes.Float64
		case kTime:
			f.Type = timestampType
		case kJSON:
			f.Type = arrow.BinaryTypes.String
			f.Metadata = arrow.NewMetadata([]string{arrowconv.JSONMetadataKey}, []string{"true"})
		default:
			d.kinds[i] = kString
			f.Type = arrow.BinaryTypes.String
		}
		fields[i] = f
	}
	d.schema = arrow.NewSchema(fields, nil)
	return d, nil
}

// forEachLine calls fn with each non-empty line of JSONL bytes and its
// 1-based number within the batch.
func forEachLine(raw []byte, fn func(n int, line []byte) error) error {
	n := 0
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		var line []byte
		if i < 0 {
			line, raw = raw, nil
		} else {
			line, raw = raw[:i], raw[i+1:]
		}
		n++
		if line = normalizeLine(line); len(line) == 0 {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return nil
}

// forEachCSV calls fn with each record of a CSV batch and its 1-based
// number within the batch.
func forEachCSV(b connectors.Batch, fn func(n int, rec []string) error) error {
	r := csv.NewReader(bytes.NewReader(b.Raw))
	r.FieldsPerRecord = len(b.Columns)
	r.ReuseRecord = true
	for n := 1; ; n++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &connectors.RowError{Location: b.Position, Row: int64(n), Err: err}
		}
		if err := fn(n, rec); err != nil {
			return err
		}
	}
}

// decode builds one record from a batch; the caller releases it.
func (d *rowDecoder) decode(b connectors.Batch) (arrow.RecordBatch, error) {
	if b.Format != d.format {
		return nil, fmt.Errorf("batch at %s is %s, the task started with %s", b.Position, b.Format, d.format)
	}
	rb := array.NewRecordBuilder(d.mem, d.schema)
	defer rb.Release()
	set := make([]bool, len(d.names))
	var err error
	switch b.Format {
	case connectors.FormatJSONL:
		err = forEachLine(b.Raw, func(n int, line []byte) error {
			ms, err := parseObject(line)
			if err != nil {
				return &connectors.RowError{Location: b.Position, Row: int64(n), Err: err}
			}
			clear(set)
			for _, m := range ms {
				i, ok := d.index[m.key]
				if !ok {
					return &connectors.RowError{Location: b.Position, Row: int64(n), Field: m.key,
						Err: errors.New("field is not in the schema inferred from the task's first batch")}
				}
				set[i] = true
				if err := appendJSON(rb.Field(i), d.kinds[i], m.val); err != nil {
					return &connectors.RowError{Location: b.Position, Row: int64(n), Field: m.key, Err: err}
				}
			}
			for i, ok := range set {
				if !ok {
					rb.Field(i).AppendNull()
				}
			}
			return nil
		})
	case connectors.FormatCSV:
		if !slices.Equal(b.Columns, d.columns) {
			return nil, &connectors.RowError{Location: b.Position, Row: 1,
				Err: fmt.Errorf("columns %q differ from the task's first batch %q", b.Columns, d.columns)}
		}
		err = forEachCSV(b, func(n int, rec []string) error {
			for i, s := range rec {
				if err := appendText(rb.Field(i), d.kinds[i], s); err != nil {
					return &connectors.RowError{Location: b.Position, Row: int64(n), Field: d.names[i], Err: err}
				}
			}
			return nil
		})
	}
	if err != nil {
		return nil, err
	}
	return rb.NewRecordBatch(), nil
}

func mismatch(k kind, v string) error {
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return fmt.Errorf("value %s does not fit the column type %s inferred from the task's first batch", v, k)
}

// appendJSON appends one raw JSON value to a builder of kind k.
func appendJSON(b array.Builder, k kind, raw []byte) error {
	vk := classifyJSON(raw)
	if vk == kNull {
		b.AppendNull()
		return nil
	}
	switch k {
	case kBool:
		if vk == kBool {
			b.(*array.BooleanBuilder).Append(raw[0] == 't')
			return nil
		}
	case kInt:
		if vk == kInt {
			v, _ := strconv.ParseInt(string(raw), 10, 64)
			b.(*array.Int64Builder).Append(v)
			return nil
		}
	case kFloat:
		if vk == kInt || vk == kFloat {
			v, err := strconv.ParseFloat(string(raw), 64)
			if err != nil {
				return err
			}
			b.(*array.Float64Builder).Append(v)
			return nil
		}
	case kTime, kString:
		if vk == kTime || vk == kString && k == kString {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			if k == kString {
				b.(*array.StringBuilder).Append(s)
				return nil
			}
			t, _ := parseTime(s)
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(t.UnixMicro()))
			return nil
		}
	case kJSON:
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		b.(*array.StringBuilder).Append(buf.String())
		return nil
	}
	return mismatch(k, string(raw))
}

// appendText appends one CSV field to a builder of kind k.
func appendText(b array.Builder, k kind, s string) error {
	vk := classifyText(s)
	if vk == kNull {
		b.AppendNull()
		return nil
	}
	switch k {
	case kBool:
		if vk == kBool {
			b.(*array.BooleanBuilder).Append(s == "true")
			return nil
		}
	case kInt:
		if vk == kInt {
			v, _ := strconv.ParseInt(s, 10, 64)
			b.(*array.Int64Builder).Append(v)
			return nil
		}
	case kFloat:
		if vk == kInt || vk == kFloat {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return err
			}
			b.(*array.Float64Builder).Append(v)
			return nil
		}
	case kTime:
		if vk == kTime {
			t, _ := parseTime(s)
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(t.UnixMicro()))
			return nil
		}
	case kString, kJSON:
		b.(*array.StringBuilder).Append(s)
		return nil
	}
	return mismatch(k, strconv.Quote(s))
}
