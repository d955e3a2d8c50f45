package arrowconv

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/extensions"

	"github.com/sluicehq/sluice/connectors"
)

// Lines converts CSV records (as Builder.AppendCSV reads them) straight
// into JSON lines of a schema's fields: one object a record, its members
// the schema's fields in order, each value checked and converted as the
// Builder converts it (a value the field's type cannot hold is refused
// the same way) and written in its JSON form (see RowRenderer): the line
// of a record is exactly the line RowRenderer renders for the row the
// Builder makes of it, without building the row. A Lines is used by one
// goroutine.
type Lines struct {
	cols    []*lineColumn
	keys    [][]byte // `{"name":` and `,"name":`
	csvCols columnMap
	// The line being built, and where it started in it.
	dst   []byte
	start int
	sum   *connectors.Checksum
	// vals holds each field's value of a record whose columns are not the
	// schema's in order, until the record ends.
	vals   [][]byte
	field  []byte
	arrays arrayScratch
}

// lineColumn converts one field's values.
type lineColumn struct {
	name        string
	nullable    bool
	kind        kind
	bits        int // of an integer or a float
	prec, scale int32
	utc         bool // a timestamp with a time zone
	json        bool // a string field of JSON documents
	elem        *lineColumn
	buf         []byte
}

// NewLines returns a converter of records into JSON lines of schema's
// fields, which must be of the types NewBuilder takes.
func NewLines(schema *arrow.Schema) (*Lines, error) {
	if err := checkSchema(schema); err != nil {
		return nil, err
	}
	cm, err := newColumnMap(schema)
	if err != nil {
		return nil, err
	}
	l := &Lines{csvCols: cm, keys: objectKeys(schema), vals: make([][]byte, schema.NumFields())}
	for _, f := range schema.Fields() {
		l.cols = append(l.cols, newLineColumn(f))
	}
	return l, nil
}

func newLineColumn(f arrow.Field) *lineColumn {
	c := &lineColumn{name: f.Name, nullable: f.Nullable, kind: kindOf(f.Type), json: IsJSONField(f)}
	switch c.kind {
	case kInt16:
		c.bits = 16
	case kInt32, kFloat32:
		c.bits = 32
	case kInt64, kFloat64:
		c.bits = 64
	}
	switch t := f.Type.(type) {
	case *arrow.Decimal128Type:
		c.prec, c.scale = t.Precision, t.Scale
	case *arrow.TimestampType:
		c.utc = t.TimeZone != ""
	case *arrow.ListType:
		c.elem = newLineColumn(t.ElemField())
	}
	return c
}

// kindOf returns the kind of a field of type t (one checkType accepts).
func kindOf(t arrow.DataType) kind {
	switch t.(type) {
	case *arrow.BooleanType:
		return kBool
	case *arrow.Int16Type:
		return kInt16
	case *arrow.Int32Type:
		return kInt32
	case *arrow.Int64Type:
		return kInt64
	case *arrow.Float32Type:
		return kFloat32
	case *arrow.Float64Type:
		return kFloat64
	case *arrow.Decimal128Type:
		return kDecimal
	case *arrow.StringType:
		return kString
	case *arrow.BinaryType:
		return kBinary
	case *arrow.Date32Type:
		return kDate
	case *arrow.Time64Type:
		return kTime
	case *arrow.TimestampType:
		return kTimestamp
	case *extensions.UUIDType:
		return kUUID
	case *arrow.ListType:
		return kList
	}
	panic(fmt.Sprintf("arrowconv: no kind for %s", t))
}

// AppendCSV appends to dst the JSON line of each CSV record of raw, each
// line ending in '\n', and adds each line (without its '\n') to sum when
// not nil. The records' fields are the named columns, in order (see
// Builder.AppendCSV); a field missing from columns is null in every
// line. It returns dst and the lines appended; a bad record or value is
// a *connectors.RowError at position, rows numbered from firstRow, and
// dst then holds the lines before it (and part of the bad one).
func (l *Lines) AppendCSV(dst, raw []byte, columns []string, position string, firstRow int64, sum *connectors.Checksum) ([]byte, int64, error) {
	if err := l.csvCols.set(columns); err != nil {
		return dst, 0, &connectors.RowError{Location: position, Row: firstRow, Err: err}
	}
	if need := len(raw) + len(raw)/2; cap(dst)-len(dst) < need {
		// A JSON line is about half as long again as its CSV record.
		dst = append(make([]byte, 0, len(dst)+need), dst...)
	}
	l.dst, l.start, l.sum = dst, len(dst), sum
	rows, col, err := readCSV(raw, len(columns), &l.field, l)
	dst, l.dst, l.sum = l.dst, nil, nil
	if err != nil {
		return dst, rows, csvError(position, firstRow+rows, col, l.csvCols, err)
	}
	return dst, rows, nil
}

// csvField converts field i of a record: into the line when the columns
// are the schema's in order, else into the field's value until the
// record ends.
func (l *Lines) csvField(i int, v []byte, null bool) error {
	j := l.csvCols.mapping[i]
	c := l.cols[j]
	var err error
	if l.csvCols.identical {
		l.dst = append(l.dst, l.keys[j]...)
		l.dst, err = c.append(l.dst, v, null, &l.arrays)
		return err
	}
	l.vals[j], err = c.append(l.vals[j][:0], v, null, &l.arrays)
	return err
}

// csvRecord ends a record's line.
func (l *Lines) csvRecord([]byte) error {
	if !l.csvCols.identical {
		for j, c := range l.cols {
			l.dst = append(l.dst, l.keys[j]...)
			if l.csvCols.present[j] {
				l.dst = append(l.dst, l.vals[j]...)
				continue
			}
			if !c.nullable {
				return &missingError{j, errNotNull}
			}
			l.dst = append(l.dst, "null"...)
		}
	}
	if len(l.keys) == 0 {
		l.dst = append(l.dst, '{')
	}
	l.dst = append(l.dst, '}')
	if l.sum != nil {
		l.sum.Add(l.dst[l.start:])
	}
	l.dst = append(l.dst, '\n')
	l.start = len(l.dst)
	return nil
}

// append appends the JSON form of one value in its text form (NULL when
// null).
func (c *lineColumn) append(dst, v []byte, null bool, s *arrayScratch) ([]byte, error) {
	if null {
		if !c.nullable {
			return dst, errNotNull
		}
		return append(dst, "null"...), nil
	}
	switch c.kind {
	case kBool:
		t, err := parseBool(v)
		if err != nil {
			return dst, err
		}
		if t {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case kInt16, kInt32, kInt64:
		n, err := parseInt(v, c.bits)
		if err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, n, 10), nil
	case kFloat32:
		f, err := parseFloat(v, 32)
		if err != nil {
			return dst, err
		}
		return AppendJSONFloat(dst, float64(float32(f)), 32), nil
	case kFloat64:
		f, err := parseFloat(v, 64)
		if err != nil {
			return dst, err
		}
		return AppendJSONFloat(dst, f, 64), nil
	case kDecimal:
		n, err := parseDecimal(v, c.prec, c.scale)
		if err != nil {
			return dst, err
		}
		return appendJSONDecimal(dst, n, c.prec, c.scale), nil
	case kString:
		if !utf8.Valid(v) {
			return dst, fmt.Errorf("%q is not valid UTF-8", clip(v))
		}
		if c.json {
			return appendJSONDocument(dst, v), nil
		}
		return appendJSONBytes(dst, v), nil
	case kBinary:
		var err error
		if c.buf, err = appendBytea(c.buf[:0], v); err != nil {
			return dst, err
		}
		return appendJSONBase64(dst, c.buf), nil
	case kDate:
		d, err := ParseDate(v)
		if err != nil {
			return dst, err
		}
		return append(appendDate(append(dst, '"'), int64(d)), '"'), nil
	case kTime:
		t, err := parseTime(v)
		if err != nil {
			return dst, err
		}
		return append(appendClock(append(dst, '"'), t*1000), '"'), nil
	case kTimestamp:
		t, err := ParseTimestamp(v)
		if err != nil {
			return dst, err
		}
		return appendJSONTimestamp(dst, t, c.utc), nil
	case kUUID:
		u, err := parseUUID(v)
		if err != nil {
			return dst, err
		}
		return appendJSONUUID(dst, u[:]), nil
	case kList:
		var err error
		s.elems, s.nulls, s.buf, err = SplitArray(v, s.elems[:0], s.nulls[:0], s.buf)
		if err != nil {
			return dst, err
		}
		dst = append(dst, '[')
		for i, el := range s.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = c.elem.append(dst, el, s.nulls[i], nil); err != nil {
				return dst, fmt.Errorf("element %d: %w", i+1, err)
			}
		}
		return append(dst, ']'), nil
	}
	return dst, fmt.Errorf("no conversion to %s", c.kind)
}
