package arrowconv

import (
	"bytes"
	"errors"
	"fmt"
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
	if err := b.mapColumns(columns); err != nil {
		return 0, &connectors.RowError{Location: position, Row: firstRow, Err: err}
	}
	ncol := len(b.mapping)
	var rows int64
	p := 0
	for p < len(raw) {
		start := p
		row := firstRow + rows
		for i := range ncol {
			var field []byte
			var null bool
			var err error
			field, null, p, err = b.readField(raw, p)
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
				return rows, &connectors.RowError{Location: position, Row: row, Err: err}
			}
			c := b.cols[b.mapping[i]]
			if null {
				err = c.appendNull()
			} else {
				err = c.appendText(field, &b.arrays)
			}
			if err != nil {
				return rows, &connectors.RowError{Location: position, Row: row, Field: c.name, Err: err}
			}
			if i < ncol-1 {
				p++
			}
		}
		if len(b.mapping) < len(b.cols) {
			if c, err := b.fillMissing(); err != nil {
				return rows, &connectors.RowError{Location: position, Row: row, Field: c.name, Err: err}
			}
		}
		end := p
		if p < len(raw) && raw[p] == '\r' {
			p++
		}
		if p < len(raw) && raw[p] == '\n' {
			p++
		}
		if sum != nil {
			sum.Add(raw[start:end])
		}
		rows++
	}
	b.rows += int(rows)
	b.bytes += int64(len(raw))
	return rows, nil
}

// mapColumns maps the columns of a batch to the schema's fields; the
// fields absent from the batch are marked as not present.
func (b *Builder) mapColumns(columns []string) error {
	if slices.Equal(columns, b.lastNames) && b.mapping != nil {
		return nil
	}
	if len(columns) == 0 {
		return errors.New("a CSV batch without column names")
	}
	mapping := make([]int, len(columns))
	clear(b.present)
	for i, name := range columns {
		j, ok := b.byName[name]
		if !ok {
			return fmt.Errorf("column %q is not in the target schema (%s)", name, fieldNames(b.schema))
		}
		if b.present[j] {
			return fmt.Errorf("column %q appears twice", name)
		}
		b.present[j] = true
		mapping[i] = j
	}
	for j, c := range b.cols {
		if !b.present[j] && !c.nullable {
			return fmt.Errorf("column %q cannot hold NULL and is missing from the batch", c.name)
		}
	}
	b.lastNames, b.mapping = slices.Clone(columns), mapping
	return nil
}

// fillMissing appends NULL to the fields a row does not carry; it
// returns the column that cannot hold NULL.
func (b *Builder) fillMissing() (*column, error) {
	for j, c := range b.cols {
		if !b.present[j] {
			if err := c.appendNull(); err != nil {
				return c, err
			}
		}
	}
	return nil, nil
}

// readField reads one CSV field at p and returns it (pointing into raw
// unless it holds escaped quotes), whether it is NULL (unquoted and
// empty) and the offset after it.
func (b *Builder) readField(raw []byte, p int) ([]byte, bool, int, error) {
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
		b.field = append(b.field[:0], raw[start:p]...)
		p++
		for {
			q := bytes.IndexByte(raw[p:], '"')
			if q < 0 {
				return nil, false, p, fmt.Errorf("%w: a quoted field does not end", errRecord)
			}
			b.field = append(b.field, raw[p:p+q]...)
			p += q + 1
			if p < len(raw) && raw[p] == '"' {
				b.field = append(b.field, '"')
				p++
				continue
			}
			return b.field, false, p, nil
		}
	}
	q := p
	for q < len(raw) && raw[q] != ',' && raw[q] != '\n' && raw[q] != '\r' {
		q++
	}
	return raw[p:q], q == p, q, nil
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
