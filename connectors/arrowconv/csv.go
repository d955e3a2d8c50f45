package arrowconv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/sluicehq/sluice/connectors"
)

// errRecord is a malformed CSV record; the caller adds its position.
var errRecord = errors.New("malformed CSV record")

// AppendCSV appends the CSV records of raw (RFC 4180, data rows only, as
// a connectors.Batch carries them) whose fields are the named columns, in
// order. An unquoted empty field is NULL and a quoted one ("") an empty
// string, as PostgreSQL's COPY writes them. Every column must be a field
// of the schema; a field missing from columns is NULL in every row. sum,
// when not nil, gets each record's bytes (without its line ending). It
// returns the rows appended; a bad record or value is a
// *connectors.RowError at position, rows numbered from firstRow.
func (b *Builder) AppendCSV(raw []byte, columns []string, position string, firstRow int64, sum *connectors.Checksum) (int64, error) {
	if err := b.csvCols.set(columns); err != nil {
		return 0, &connectors.RowError{Location: position, Row: firstRow, Err: err}
	}
	b.sum = sum
	rows, col, err := readCSV(raw, len(columns), &b.field, b)
	b.sum = nil
	b.rows += int(rows)
	b.bytes += int64(len(raw))
	if err != nil {
		return rows, csvError(position, firstRow+rows, col, b.csvCols, err)
	}
	return rows, nil
}

// field appends field i of a CSV record to its column.
func (b *Builder) csvField(i int, v []byte, null bool) error {
	c := b.cols[b.csvCols.mapping[i]]
	if null {
		return c.appendNull()
	}
	return c.appendText(v, &b.arrays)
}

// record ends a CSV record: NULL in the columns the batch lacks.
func (b *Builder) csvRecord(rec []byte) error {
	if !b.csvCols.complete() {
		for j, c := range b.cols {
			if !b.csvCols.present[j] {
				if err := c.appendNull(); err != nil {
					return &missingError{j, err}
				}
			}
		}
	}
	if b.sum != nil {
		b.sum.Add(rec)
	}
	return nil
}

// missingError is an error of a column a record does not carry.
type missingError struct {
	field int
	err   error
}

func (e *missingError) Error() string { return e.err.Error() }
func (e *missingError) Unwrap() error { return e.err }

// csvError makes the error of row at position: col is the index of the
// field at fault in the batch's columns (-1 for the record).
func csvError(position string, row int64, col int, m columnMap, err error) error {
	re := &connectors.RowError{Location: position, Row: row, Err: err}
	var me *missingError
	switch {
	case errors.As(err, &me):
		re.Field, re.Err = m.schema.Field(me.field).Name, me.err
	case col >= 0:
		re.Field = m.schema.Field(m.mapping[col]).Name
	}
	return re
}

// csvTarget takes the fields and records readCSV reads.
type csvTarget interface {
	// csvField takes field i of a record; v is valid until the next
	// call.
	csvField(i int, v []byte, null bool) error
	// csvRecord ends a record whose bytes (without line ending) are rec.
	csvRecord(rec []byte) error
}

// readCSV reads the records of raw, ncol fields each, into to. It
// returns the records read and, on error, the index of the field at fault
// (-1 for the record as a whole); escaped quotes are unescaped into
// scratch.
func readCSV(raw []byte, ncol int, scratch *[]byte, to csvTarget) (int64, int, error) {
	var rows int64
	p := 0
	for p < len(raw) {
		start := p
		for i := range ncol {
			var field []byte
			var null bool
			var err error
			field, null, p, err = readField(raw, p, scratch)
			if err == nil {
				last := i == ncol-1
				switch {
				case last && p < len(raw) && raw[p] != '\n' && raw[p] != '\r':
					err = fmt.Errorf("%w: more than %d fields", errRecord, ncol)
				case !last && (p >= len(raw) || raw[p] != ','):
					err = fmt.Errorf("%w: %d fields, want %d", errRecord, i+1, ncol)
				}
			}
			if err != nil {
				return rows, -1, err
			}
			if err := to.csvField(i, field, null); err != nil {
				return rows, i, err
			}
			if i < ncol-1 {
				p++
			}
		}
		end := p
		if p < len(raw) && raw[p] == '\r' {
			p++
		}
		if p < len(raw) && raw[p] == '\n' {
			p++
		}
		if err := to.csvRecord(raw[start:end]); err != nil {
			return rows, -1, err
		}
		rows++
	}
	return rows, -1, nil
}

// columnMap maps the columns of a batch to a schema's fields.
type columnMap struct {
	schema *arrow.Schema
	byName map[string]int
	// present marks the fields the batch's columns hold; mapping gives
	// the field of each column, for the columns of the last batch.
	present   []bool
	names     []string
	mapping   []int
	identical bool // the columns are the schema's fields, in order
}

func newColumnMap(schema *arrow.Schema) (columnMap, error) {
	m := columnMap{schema: schema, byName: make(map[string]int, schema.NumFields()), present: make([]bool, schema.NumFields())}
	for i, f := range schema.Fields() {
		if _, dup := m.byName[f.Name]; dup {
			return m, fmt.Errorf("field %q appears twice", f.Name)
		}
		m.byName[f.Name] = i
	}
	return m, nil
}

// set maps the columns of a batch (the mapping of the previous one
// kept when they are the same). Every column must be a field; a field
// missing from them must be nullable.
func (m *columnMap) set(columns []string) error {
	if m.mapping != nil && slices.Equal(columns, m.names) {
		return nil
	}
	if len(columns) == 0 {
		return errors.New("a CSV batch without column names")
	}
	m.mapping, m.names = nil, nil
	mapping := make([]int, len(columns))
	clear(m.present)
	identical := len(columns) == m.schema.NumFields()
	for i, name := range columns {
		j, ok := m.byName[name]
		if !ok {
			return fmt.Errorf("column %q is not in the target schema (%s)", name, fieldNames(m.schema))
		}
		if m.present[j] {
			return fmt.Errorf("column %q appears twice", name)
		}
		m.present[j] = true
		mapping[i] = j
		identical = identical && i == j
	}
	for j, f := range m.schema.Fields() {
		if !m.present[j] && !f.Nullable {
			return fmt.Errorf("column %q cannot hold NULL and is missing from the batch", f.Name)
		}
	}
	m.names, m.mapping, m.identical = slices.Clone(columns), mapping, identical
	return nil
}

// complete reports whether the batch's columns hold every field.
func (m *columnMap) complete() bool { return len(m.mapping) == len(m.present) }

// readField reads one CSV field at p and returns it (pointing into raw
// unless it holds escaped quotes, then into *scratch), whether it is NULL
// (unquoted and empty) and the offset after it.
func readField(raw []byte, p int, scratch *[]byte) ([]byte, bool, int, error) {
	if p < len(raw) && raw[p] == '"' {
		p++
		start := p
		q := bytes.IndexByte(raw[p:], '"')
		if q < 0 {
			return nil, false, p, fmt.Errorf("%w: a quoted field does not end", errRecord)
		}
		p += q + 1
		if p >= len(raw) || raw[p] != '"' {
			return raw[start : p-1], false, p, nil
		}
		// Escaped quotes: unescape into the scratch buffer.
		buf := append((*scratch)[:0], raw[start:p]...)
		p++
		for {
			q := bytes.IndexByte(raw[p:], '"')
			if q < 0 {
				*scratch = buf
				return nil, false, p, fmt.Errorf("%w: a quoted field does not end", errRecord)
			}
			buf = append(buf, raw[p:p+q]...)
			p += q + 1
			if p < len(raw) && raw[p] == '"' {
				buf = append(buf, '"')
				p++
				continue
			}
			*scratch = buf
			return buf, false, p, nil
		}
	}
	q := fieldEnd(raw, p)
	return raw[p:q], q == p, q, nil
}

// fieldEnd returns the offset of the first ',', '\n' or '\r' at or after
// p, or len(raw): eight bytes at a time, each tested for the three at
// once (a byte equal to one of them is a zero byte of the value XORed
// with it, which the carry of a subtraction finds).
func fieldEnd(raw []byte, p int) int {
	const (
		ones   = 0x0101010101010101
		highs  = 0x8080808080808080
		commas = ',' * ones
		lfs    = '\n' * ones
		crs    = '\r' * ones
	)
	for ; p+8 <= len(raw); p += 8 {
		v := binary.LittleEndian.Uint64(raw[p:])
		a, b, c := v^commas, v^lfs, v^crs
		if m := ((a-ones)&^a | (b-ones)&^b | (c-ones)&^c) & highs; m != 0 {
			return p + bits.TrailingZeros64(m)/8
		}
	}
	for p < len(raw) && raw[p] != ',' && raw[p] != '\n' && raw[p] != '\r' {
		p++
	}
	return p
}

// fieldNames lists a schema's field names for a message.
func fieldNames(s *arrow.Schema) string {
	names := make([]string, 0, s.NumFields())
	for _, f := range s.Fields() {
		names = append(names, f.Name)
	}
	if len(names) > 20 {
		names = append(names[:20], "...")
	}
	return strings.Join(names, ", ")
}
