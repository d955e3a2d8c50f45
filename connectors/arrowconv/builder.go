package arrowconv

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/sluicehq/sluice/connectors"
)

// Builder converts rows in text (CSV records, JSON objects) into Arrow
// arrays of a schema, value by value, exactly: a value the column's type
// cannot hold (a number out of range, a decimal with more digits than the
// column's scale, a date that is not one, a NULL in a column that is not
// nullable) is refused with a *connectors.RowError naming the row and the
// column, never rounded or replaced. Rows accumulate until NewRecord takes
// them. A Builder is used by one goroutine. After an error it holds a
// partial row: release it.
type Builder struct {
	schema *arrow.Schema
	cols   []*column
	rows   int
	bytes  int64 // the text bytes appended since the last record, roughly

	// csvCols maps the columns of the last CSV batch to the schema (and
	// names the fields for JSON objects too).
	csvCols columnMap
	sum     *connectors.Checksum // of the CSV batch being appended

	// Scratch for one row.
	field  []byte // a CSV field or a JSON key with escapes
	str    []byte // a JSON string value with escapes
	arrays arrayScratch
	seen   []bool // the fields a JSON object holds
}

// NewBuilder returns a Builder of records of schema. It supports fields of
// the types Field produces (and Int16 or Int32 for any integer column):
// Boolean, Int16, Int32, Int64, Float32, Float64, Decimal128, String,
// Binary, Date32, Time64 (microseconds), Timestamp (microseconds, with or
// without a time zone), the arrow.uuid extension, and Lists of those; a
// field of another type is refused, naming it.
func NewBuilder(mem memory.Allocator, schema *arrow.Schema) (*Builder, error) {
	if err := checkSchema(schema); err != nil {
		return nil, err
	}
	cm, err := newColumnMap(schema)
	if err != nil {
		return nil, err
	}
	b := &Builder{schema: schema, csvCols: cm, seen: make([]bool, schema.NumFields())}
	for _, f := range schema.Fields() {
		b.cols = append(b.cols, newColumn(mem, f.Name, f.Nullable, f.Type))
	}
	return b, nil
}

// checkSchema refuses a schema with a field of a type the conversion does
// not support, naming it.
func checkSchema(schema *arrow.Schema) error {
	for _, f := range schema.Fields() {
		if err := checkType(f.Type, true); err != nil {
			return fmt.Errorf("field %q (%s): %w", f.Name, f.Type, err)
		}
	}
	return nil
}

func checkType(t arrow.DataType, top bool) error {
	switch t := t.(type) {
	case *arrow.BooleanType, *arrow.Int16Type, *arrow.Int32Type, *arrow.Int64Type,
		*arrow.Float32Type, *arrow.Float64Type, *arrow.Decimal128Type, *arrow.StringType,
		*arrow.BinaryType, *arrow.Date32Type, *extensions.UUIDType:
		return nil
	case *arrow.Time64Type:
		if t.Unit == arrow.Microsecond {
			return nil
		}
	case *arrow.TimestampType:
		if t.Unit == arrow.Microsecond {
			return nil
		}
	case *arrow.ListType:
		if top {
			return checkType(t.Elem(), false)
		}
		return errors.New("a list of lists is not supported")
	}
	return errors.New("no conversion from text to this type")
}

// Schema returns the schema of the records.
func (b *Builder) Schema() *arrow.Schema { return b.schema }

// Len returns the rows appended since the last NewRecord.
func (b *Builder) Len() int { return b.rows }

// TextBytes returns the size of the text appended since the last
// NewRecord, a measure of the memory the rows hold.
func (b *Builder) TextBytes() int64 { return b.bytes }

// NewRecord returns the rows appended so far as a record (the caller
// releases it) and starts a new one, its buffers reserved at this one's
// sizes: records of a task are alike, and buffers grown by doubling cost
// a copy each time.
func (b *Builder) NewRecord() arrow.RecordBatch {
	cols := make([]arrow.Array, len(b.cols))
	for i, c := range b.cols {
		d := c.finish()
		cols[i] = array.MakeFromData(d)
		d.Release()
	}
	rec := array.NewRecordBatch(b.schema, cols, int64(b.rows))
	for _, c := range cols {
		c.Release()
	}
	b.rows, b.bytes = 0, 0
	return rec
}

// Release releases the memory of the rows not taken by NewRecord.
func (b *Builder) Release() {
	for _, c := range b.cols {
		c.release()
	}
}

// kind says how a column converts a value.
type kind uint8

const (
	kBool kind = iota
	kInt16
	kInt32
	kInt64
	kFloat32
	kFloat64
	kDecimal
	kString
	kBinary
	kDate
	kTime
	kTimestamp
	kUUID
	kList
)

// column converts values into one field's buffers (a list's elements
// into those of elem).
type column struct {
	name     string
	nullable bool
	kind     kind
	dt       arrow.DataType
	st       store
	elem     *column
	prec     int32
	scale    int32
	buf      []byte
}

func newColumn(mem memory.Allocator, name string, nullable bool, t arrow.DataType) *column {
	c := &column{name: name, nullable: nullable, kind: kindOf(t), dt: t}
	c.st.mem = mem
	switch t := t.(type) {
	case *arrow.Decimal128Type:
		c.prec, c.scale = t.Precision, t.Scale
	case *arrow.ListType:
		ef := t.ElemField()
		c.elem = newColumn(mem, ef.Name, ef.Nullable, ef.Type)
	}
	switch c.kind {
	case kBool:
		c.st.width = 0
	case kInt16:
		c.st.width = 2
	case kInt32, kFloat32, kDate:
		c.st.width = 4
	case kInt64, kFloat64, kTime, kTimestamp:
		c.st.width = 8
	case kDecimal, kUUID:
		c.st.width = 16
	case kString, kBinary:
		c.st.width = widthBinary
	case kList:
		c.st.width = widthList
	}
	return c
}

// finish returns the column's values as array data (the caller releases
// it) and starts new buffers for the next record.
func (c *column) finish() arrow.ArrayData {
	var children []arrow.ArrayData
	if c.elem != nil {
		children = []arrow.ArrayData{c.elem.finish()}
		defer children[0].Release()
	}
	return c.st.finish(c.dt, children)
}

func (c *column) release() {
	c.st.release()
	if c.elem != nil {
		c.elem.release()
	}
}

var errNotNull = errors.New("NULL in a column that cannot hold NULL")

func (c *column) appendNull() error {
	if !c.nullable {
		return errNotNull
	}
	c.st.putNull()
	return nil
}

// appendText appends a scalar value in its text form. A list column takes
// a PostgreSQL array literal; s holds the scratch of the row.
func (c *column) appendText(v []byte, s *arrayScratch) error {
	switch c.kind {
	case kBool:
		t, err := parseBool(v)
		if err != nil {
			return err
		}
		c.st.putBit(t)
	case kInt16:
		n, err := parseInt(v, 16)
		if err != nil {
			return err
		}
		c.st.put16(uint16(n))
	case kInt32:
		n, err := parseInt(v, 32)
		if err != nil {
			return err
		}
		c.st.put32(uint32(n))
	case kInt64:
		n, err := parseInt(v, 64)
		if err != nil {
			return err
		}
		c.st.put64(uint64(n))
	case kFloat32:
		f, err := parseFloat(v, 32)
		if err != nil {
			return err
		}
		c.st.put32(math.Float32bits(float32(f)))
	case kFloat64:
		f, err := parseFloat(v, 64)
		if err != nil {
			return err
		}
		c.st.put64(math.Float64bits(f))
	case kDecimal:
		n, err := parseDecimal(v, c.prec, c.scale)
		if err != nil {
			return err
		}
		c.st.put128(n.LowBits(), uint64(n.HighBits()))
	case kString:
		if !utf8.Valid(v) {
			return fmt.Errorf("%q is not valid UTF-8", clip(v))
		}
		c.st.putBytes(v)
	case kBinary:
		var err error
		c.buf, err = appendBytea(c.buf[:0], v)
		if err != nil {
			return err
		}
		c.st.putBytes(c.buf)
	case kDate:
		d, err := ParseDate(v)
		if err != nil {
			return err
		}
		c.st.put32(uint32(d))
	case kTime:
		t, err := parseTime(v)
		if err != nil {
			return err
		}
		c.st.put64(uint64(t))
	case kTimestamp:
		t, err := ParseTimestamp(v)
		if err != nil {
			return err
		}
		c.st.put64(uint64(t))
	case kUUID:
		u, err := parseUUID(v)
		if err != nil {
			return err
		}
		c.st.putFixed(u[:])
	case kList:
		return c.appendArrayLiteral(v, s)
	}
	return nil
}

// arrayScratch is reused by the array literals of a row.
type arrayScratch struct {
	elems [][]byte
	nulls []bool
	buf   []byte
}

// appendArrayLiteral appends a PostgreSQL array literal as a list.
func (c *column) appendArrayLiteral(v []byte, s *arrayScratch) error {
	var err error
	s.elems, s.nulls, s.buf, err = SplitArray(v, s.elems[:0], s.nulls[:0], s.buf)
	if err != nil {
		return err
	}
	for i, el := range s.elems {
		if s.nulls[i] {
			err = c.elem.appendNull()
		} else {
			err = c.elem.appendText(el, nil)
		}
		if err != nil {
			return fmt.Errorf("element %d: %w", i+1, err)
		}
	}
	c.st.putList(c.elem.st.n)
	return nil
}
