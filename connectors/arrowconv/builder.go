package arrowconv

import (
	"errors"
	"fmt"
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
	rb     *array.RecordBuilder
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
	b.rb = array.NewRecordBuilder(mem, schema)
	for i, f := range schema.Fields() {
		b.cols = append(b.cols, newColumn(f.Name, f.Nullable, f.Type, b.rb.Field(i)))
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
// a copy and a clearing each time.
func (b *Builder) NewRecord() arrow.RecordBatch {
	b.rows, b.bytes = 0, 0
	rec := b.rb.NewRecordBatch()
	n := int(rec.NumRows())
	b.rb.Reserve(n)
	for i, c := range b.cols {
		if c.binB == nil {
			continue
		}
		switch a := rec.Column(i).(type) {
		case *array.String:
			c.binB.ReserveData(len(a.ValueBytes()))
		case *array.Binary:
			c.binB.ReserveData(len(a.ValueBytes()))
		}
	}
	return rec
}

// Release releases the builders' memory.
func (b *Builder) Release() { b.rb.Release() }

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

// column converts values into one field's builder.
type column struct {
	name     string
	nullable bool
	kind     kind

	boolB *array.BooleanBuilder
	i16B  *array.Int16Builder
	i32B  *array.Int32Builder
	i64B  *array.Int64Builder
	f32B  *array.Float32Builder
	f64B  *array.Float64Builder
	decB  *array.Decimal128Builder
	binB  *array.BinaryBuilder // String and Binary
	dateB *array.Date32Builder
	timeB *array.Time64Builder
	tsB   *array.TimestampBuilder
	uuidB *extensions.UUIDBuilder
	listB *array.ListBuilder
	elem  *column
	prec  int32
	scale int32
	buf   []byte
}

func newColumn(name string, nullable bool, t arrow.DataType, ab array.Builder) *column {
	c := &column{name: name, nullable: nullable}
	switch t := t.(type) {
	case *arrow.BooleanType:
		c.kind, c.boolB = kBool, ab.(*array.BooleanBuilder)
	case *arrow.Int16Type:
		c.kind, c.i16B = kInt16, ab.(*array.Int16Builder)
	case *arrow.Int32Type:
		c.kind, c.i32B = kInt32, ab.(*array.Int32Builder)
	case *arrow.Int64Type:
		c.kind, c.i64B = kInt64, ab.(*array.Int64Builder)
	case *arrow.Float32Type:
		c.kind, c.f32B = kFloat32, ab.(*array.Float32Builder)
	case *arrow.Float64Type:
		c.kind, c.f64B = kFloat64, ab.(*array.Float64Builder)
	case *arrow.Decimal128Type:
		c.kind, c.decB, c.prec, c.scale = kDecimal, ab.(*array.Decimal128Builder), t.Precision, t.Scale
	case *arrow.StringType:
		c.kind, c.binB = kString, ab.(*array.StringBuilder).BinaryBuilder
	case *arrow.BinaryType:
		c.kind, c.binB = kBinary, ab.(*array.BinaryBuilder)
	case *arrow.Date32Type:
		c.kind, c.dateB = kDate, ab.(*array.Date32Builder)
	case *arrow.Time64Type:
		c.kind, c.timeB = kTime, ab.(*array.Time64Builder)
	case *arrow.TimestampType:
		c.kind, c.tsB = kTimestamp, ab.(*array.TimestampBuilder)
	case *extensions.UUIDType:
		c.kind, c.uuidB = kUUID, ab.(*extensions.UUIDBuilder)
	case *arrow.ListType:
		c.kind, c.listB = kList, ab.(*array.ListBuilder)
		ef := t.ElemField()
		c.elem = newColumn(ef.Name, ef.Nullable, ef.Type, c.listB.ValueBuilder())
	}
	return c
}

var errNotNull = errors.New("NULL in a column that cannot hold NULL")

func (c *column) appendNull() error {
	if !c.nullable {
		return errNotNull
	}
	switch c.kind {
	case kBool:
		c.boolB.AppendNull()
	case kInt16:
		c.i16B.AppendNull()
	case kInt32:
		c.i32B.AppendNull()
	case kInt64:
		c.i64B.AppendNull()
	case kFloat32:
		c.f32B.AppendNull()
	case kFloat64:
		c.f64B.AppendNull()
	case kDecimal:
		c.decB.AppendNull()
	case kString, kBinary:
		c.binB.AppendNull()
	case kDate:
		c.dateB.AppendNull()
	case kTime:
		c.timeB.AppendNull()
	case kTimestamp:
		c.tsB.AppendNull()
	case kUUID:
		c.uuidB.AppendNull()
	case kList:
		c.listB.AppendNull()
	}
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
		c.boolB.Append(t)
	case kInt16:
		n, err := parseInt(v, 16)
		if err != nil {
			return err
		}
		c.i16B.Append(int16(n))
	case kInt32:
		n, err := parseInt(v, 32)
		if err != nil {
			return err
		}
		c.i32B.Append(int32(n))
	case kInt64:
		n, err := parseInt(v, 64)
		if err != nil {
			return err
		}
		c.i64B.Append(n)
	case kFloat32:
		f, err := parseFloat(v, 32)
		if err != nil {
			return err
		}
		c.f32B.Append(float32(f))
	case kFloat64:
		f, err := parseFloat(v, 64)
		if err != nil {
			return err
		}
		c.f64B.Append(f)
	case kDecimal:
		n, err := parseDecimal(v, c.prec, c.scale)
		if err != nil {
			return err
		}
		c.decB.Append(n)
	case kString:
		if !utf8.Valid(v) {
			return fmt.Errorf("%q is not valid UTF-8", clip(v))
		}
		c.binB.Append(v)
	case kBinary:
		var err error
		c.buf, err = appendBytea(c.buf[:0], v)
		if err != nil {
			return err
		}
		c.binB.Append(c.buf)
	case kDate:
		d, err := ParseDate(v)
		if err != nil {
			return err
		}
		c.dateB.Append(arrow.Date32(d))
	case kTime:
		t, err := parseTime(v)
		if err != nil {
			return err
		}
		c.timeB.Append(arrow.Time64(t))
	case kTimestamp:
		t, err := ParseTimestamp(v)
		if err != nil {
			return err
		}
		c.tsB.Append(arrow.Timestamp(t))
	case kUUID:
		u, err := parseUUID(v)
		if err != nil {
			return err
		}
		c.uuidB.AppendBytes(u)
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
	c.listB.Append(true)
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
	return nil
}
