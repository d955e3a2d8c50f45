package contract

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// arrowRows applies a dataset's contract to Arrow records.
type arrowRows struct {
	r   *rules
	k   *keys
	mem memory.Allocator
	// compiled for the last input schema
	in  *arrow.Schema
	p   *plan
	out *arrow.Schema
	// scratch
	text, val []byte
}

func newArrowRows(r *rules, k *keys) *arrowRows {
	return &arrowRows{r: r, k: k, mem: memory.DefaultAllocator}
}

// compile prepares the plan and the output schema for records of s.
func (t *arrowRows) compile(s *arrow.Schema) error {
	if t.in != nil && t.in.Equal(s) {
		return nil
	}
	names := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		names[i] = f.Name
	}
	p, err := planFor(t.r, t.k, names)
	if err != nil {
		return err
	}
	fields := make([]arrow.Field, len(p.out))
	for j, oc := range p.out {
		f := s.Field(oc.in)
		switch {
		case oc.fn.keep():
		case oc.fn.text():
			f = arrow.Field{Name: f.Name, Type: arrow.BinaryTypes.String, Nullable: true}
		case oc.fn.col.Action == Truncate && oc.fn.col.To != "" && !timeType(f.Type):
			return fmt.Errorf("truncate of column %q: to %s takes a date or timestamp, and the column is %s", f.Name, oc.fn.col.To, f.Type)
		default:
			f = arrow.Field{Name: f.Name, Type: f.Type, Nullable: true}
		}
		fields[j] = f
	}
	t.in, t.p, t.out = s, p, arrow.NewSchema(fields, nil)
	return nil
}

func timeType(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.TIMESTAMP, arrow.DATE32, arrow.DATE64:
		return true
	}
	return false
}

// transform returns rec with the contract applied, a new record the
// caller releases; rec stays the caller's. A bad value is an error with
// its 1-based row in rec and its column.
func (t *arrowRows) transform(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	if err := t.compile(rec.Schema()); err != nil {
		return nil, err
	}
	if len(t.p.conds) > 0 {
		filtered, err := t.filter(rec)
		if err != nil {
			return nil, err
		}
		defer filtered.Release()
		rec = filtered
	}
	n := int(rec.NumRows())
	cols := make([]arrow.Array, 0, len(t.p.out))
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for _, oc := range t.p.out {
		in := rec.Column(oc.in)
		var out arrow.Array
		var err error
		switch {
		case oc.fn.keep():
			in.Retain()
			out = in
		case oc.fn.col.Action == Null:
			out = array.MakeArrayOfNull(t.mem, in.DataType(), n)
		case oc.fn.text():
			out, err = t.strings(in, oc.fn)
		case oc.fn.col.To != "":
			out, err = t.truncateTime(in, oc.fn)
		default:
			out, err = t.viaText(in, oc.fn)
		}
		if err != nil {
			return nil, err
		}
		cols = append(cols, out)
	}
	return array.NewRecordBatch(t.out, cols, int64(n)), nil
}

// filter returns the rows of rec that meet the filter, as a new record.
func (t *arrowRows) filter(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	n := int(rec.NumRows())
	keep := make([]bool, n)
	for i := range n {
		keep[i] = t.p.keepRow(func(c int) ([]byte, bool) {
			col := rec.Column(c)
			if col.IsNull(i) {
				return nil, true
			}
			t.text = appendArrowText(t.text[:0], col, i)
			return t.text, false
		})
	}
	var parts []arrow.RecordBatch
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	for i := 0; i < n; {
		if !keep[i] {
			i++
			continue
		}
		j := i
		for j < n && keep[j] {
			j++
		}
		parts = append(parts, rec.NewSlice(int64(i), int64(j)))
		i = j
	}
	cols := make([]arrow.Array, rec.NumCols())
	rows := int64(0)
	for _, p := range parts {
		rows += p.NumRows()
	}
	for c := range cols {
		arrs := make([]arrow.Array, len(parts))
		for k, p := range parts {
			arrs[k] = p.Column(c)
		}
		if len(arrs) == 0 {
			cols[c] = array.MakeArrayOfNull(t.mem, rec.Schema().Field(c).Type, 0)
			continue
		}
		out, err := array.Concatenate(arrs, t.mem)
		if err != nil {
			for _, a := range cols[:c] {
				a.Release()
			}
			return nil, fmt.Errorf("filter rows: %w", err)
		}
		cols[c] = out
	}
	out := array.NewRecordBatch(rec.Schema(), cols, rows)
	for _, c := range cols {
		c.Release()
	}
	return out, nil
}

// strings builds the text column of a hash, mask or tokenize.
func (t *arrowRows) strings(in arrow.Array, fn *colFn) (arrow.Array, error) {
	b := array.NewStringBuilder(t.mem)
	defer b.Release()
	b.Reserve(in.Len())
	for i := range in.Len() {
		if in.IsNull(i) {
			b.AppendNull()
			continue
		}
		t.text = appendArrowText(t.text[:0], in, i)
		var err error
		if t.val, err = fn.fn(t.val[:0], t.text); err != nil {
			return nil, &rowError{row: int64(i + 1), column: fn.name, err: valueError(fn, err)}
		}
		b.BinaryBuilder.Append(t.val)
	}
	return b.NewArray(), nil
}

// viaText builds a column of in's type from the text fn makes of each
// value's text: truncate of numbers and of text.
func (t *arrowRows) viaText(in arrow.Array, fn *colFn) (arrow.Array, error) {
	b := array.NewBuilder(t.mem, in.DataType())
	defer b.Release()
	for i := range in.Len() {
		if in.IsNull(i) {
			b.AppendNull()
			continue
		}
		t.text = appendArrowText(t.text[:0], in, i)
		var err error
		if t.val, err = fn.fn(t.val[:0], t.text); err == nil {
			err = b.AppendValueFromString(string(t.val))
		}
		if err != nil {
			return nil, &rowError{row: int64(i + 1), column: fn.name, err: valueError(fn, errors.New("not a value of the column's type once truncated"))}
		}
	}
	return b.NewArray(), nil
}

// truncateTime builds the truncated column of a date or timestamp.
func (t *arrowRows) truncateTime(in arrow.Array, fn *colFn) (arrow.Array, error) {
	unit := fn.col.To
	trunc := func(tm time.Time) time.Time {
		y, m, d := tm.Date()
		switch unit {
		case "year":
			return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
		case "month":
			return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		case "day":
			return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		case "hour":
			return tm.Truncate(time.Hour)
		}
		return tm.Truncate(time.Minute)
	}
	b := array.NewBuilder(t.mem, in.DataType())
	defer b.Release()
	for i := range in.Len() {
		if in.IsNull(i) {
			b.AppendNull()
			continue
		}
		switch a := in.(type) {
		case *array.Timestamp:
			u := a.DataType().(*arrow.TimestampType).Unit
			tm := trunc(a.Value(i).ToTime(u))
			v, err := arrow.TimestampFromTime(tm, u)
			if err != nil {
				return nil, &rowError{row: int64(i + 1), column: fn.name, err: valueError(fn, errNotTime)}
			}
			b.(*array.TimestampBuilder).Append(v)
		case *array.Date32:
			b.(*array.Date32Builder).Append(arrow.Date32FromTime(trunc(a.Value(i).ToTime())))
		case *array.Date64:
			b.(*array.Date64Builder).Append(arrow.Date64FromTime(trunc(a.Value(i).ToTime())))
		default:
			return nil, &rowError{row: int64(i + 1), column: fn.name, err: valueError(fn, errNotTime)}
		}
	}
	return b.NewArray(), nil
}

// appendArrowText appends the text of value i of a, in PostgreSQL's text
// forms where the types meet (so that a hash of a value read from a lake
// equals the hash of the same value read from PostgreSQL): t and f,
// dates as 2006-01-02, timestamps as 2006-01-02 15:04:05.999999 (+00 for
// an instant), bytes as \x and hex.
func appendArrowText(dst []byte, a arrow.Array, i int) []byte {
	switch a := a.(type) {
	case *array.String:
		return append(dst, a.Value(i)...)
	case *array.LargeString:
		return append(dst, a.Value(i)...)
	case *array.Binary:
		return hex.AppendEncode(append(dst, `\x`...), a.Value(i))
	case *array.LargeBinary:
		return hex.AppendEncode(append(dst, `\x`...), a.Value(i))
	case *array.Boolean:
		if a.Value(i) {
			return append(dst, 't')
		}
		return append(dst, 'f')
	case *array.Date32:
		return a.Value(i).ToTime().AppendFormat(dst, "2006-01-02")
	case *array.Date64:
		return a.Value(i).ToTime().AppendFormat(dst, "2006-01-02")
	case *array.Timestamp:
		tt := a.DataType().(*arrow.TimestampType)
		dst = a.Value(i).ToTime(tt.Unit).UTC().AppendFormat(dst, "2006-01-02 15:04:05.999999")
		if tt.TimeZone != "" {
			dst = append(dst, "+00"...)
		}
		return dst
	}
	return append(dst, a.ValueStr(i)...)
}
