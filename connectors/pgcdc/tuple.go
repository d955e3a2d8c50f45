package pgcdc

import (
	"encoding/binary"
	"fmt"

	"github.com/sluicehq/sluice/protocol"
)

// change is an Insert, Update or Delete message of pgoutput protocol
// version 1 decoded in place: its tuples alias the message's bytes.
type change struct {
	op       byte // 'I', 'U' or 'D'
	relation uint32
	// oldKind is 0 (no old tuple), 'K' (the replica identity columns, the
	// others NULL) or 'O' (the whole old row).
	oldKind byte
	// old is the old row of an update or delete, new the new row of an
	// insert or update; either is the zero rawTuple when the message has
	// none.
	old, new rawTuple
}

// rawTuple is a TupleData that decodeChange checked: n columns, each a kind
// byte ('n' NULL, 'u' unchanged TOAST or 't' text), a text column followed
// by an Int32 length and that many bytes, back to back in data. The zero
// rawTuple is no tuple.
type rawTuple struct {
	n    int
	data []byte
}

// decodeChange decodes data, a pgoutput message, when it is an Insert, an
// Update or a Delete of protocol version 1: ok is true when its first byte
// is 'I', 'U' or 'D', and err then says whether it is well formed. Any
// other message, left to pglogrepl.Parse, gives ok false and no error, and
// so does an empty one (on which Parse panics). It allocates nothing but
// an error.
//
// It never panics: every length and count is checked against data. It is
// stricter than pglogrepl.Parse, rejecting what PostgreSQL does not send
// under the Reader's options: a binary value (the Reader asks for text), a
// column kind other than 'n', 'u', 't' and 'b', an Update whose old tuple
// is not followed by 'N', and bytes after the last tuple. It accepts an
// Insert into a table without columns, which Parse rejects. An error names
// the message, the part and column being read and the byte offset in data.
func decodeChange(data []byte) (c change, ok bool, err error) {
	d := decoder{data: data}
	switch {
	case len(data) == 0:
		return c, false, nil
	case data[0] == 'I':
		d.name = "insert message"
	case data[0] == 'U':
		d.name = "update message"
	case data[0] == 'D':
		d.name = "delete message"
	default:
		return c, false, nil
	}
	c.op = data[0]
	d.off = 1
	b, err := d.take("relation id", 4)
	if err != nil {
		return change{}, true, err
	}
	c.relation = binary.BigEndian.Uint32(b)
	kind, err := d.byte("tuple type")
	if err != nil {
		return change{}, true, err
	}
	switch c.op {
	case 'U':
		if kind == 'K' || kind == 'O' {
			c.oldKind = kind
			if c.old, err = d.tuple("old tuple"); err != nil {
				return change{}, true, err
			}
			if kind, err = d.byte("new tuple type"); err != nil {
				return change{}, true, err
			}
			if kind != 'N' {
				return change{}, true, d.errorf(d.off-1, "new tuple type %q, want 'N'", kind)
			}
		} else if kind != 'N' {
			return change{}, true, d.errorf(d.off-1, "tuple type %q, want 'K', 'O' or 'N'", kind)
		}
		c.new, err = d.tuple("new tuple")
	case 'I':
		if kind != 'N' {
			return change{}, true, d.errorf(d.off-1, "tuple type %q, want 'N'", kind)
		}
		c.new, err = d.tuple("new tuple")
	case 'D':
		if kind != 'K' && kind != 'O' {
			return change{}, true, d.errorf(d.off-1, "tuple type %q, want 'K' or 'O'", kind)
		}
		c.oldKind = kind
		c.old, err = d.tuple("old tuple")
	}
	if err != nil {
		return change{}, true, err
	}
	if d.off != len(data) {
		return change{}, true, d.errorf(d.off, "%d bytes after the last tuple", len(data)-d.off)
	}
	return c, true, nil
}

// appendCells appends the cells of t's columns to dst, a row of
// protocol.ChangeEvent.AppendJSONCells, as many as the relation has
// (len(identity)) or t holds, whichever is fewer. A column is CellNull,
// CellUnchanged or CellText, its Text aliasing t's data; keyOnly leaves
// absent the columns that identity does not flag (an old tuple of kind 'K'
// sends NULL for them). The zero rawTuple appends nothing: no row. It
// allocates only when dst lacks the capacity.
func appendCells(dst []protocol.Cell, t rawTuple, identity []bool, keyOnly bool) []protocol.Cell {
	b := t.data
	for i := range min(t.n, len(identity)) {
		var cell protocol.Cell
		kind := b[0]
		b = b[1:]
		switch kind {
		case 'n':
			cell.Kind = protocol.CellNull
		case 'u':
			cell.Kind = protocol.CellUnchanged
		default: // 't': decodeChange let no other kind through
			n := int(binary.BigEndian.Uint32(b)) + 4
			cell = protocol.Cell{Kind: protocol.CellText, Text: b[4:n:n]}
			b = b[n:]
		}
		if keyOnly && !identity[i] {
			cell = protocol.Cell{}
		}
		dst = append(dst, cell)
	}
	return dst
}

// decoder reads data, a change message named name, from off on. part and
// col (1-based, 0 for none) of ncols say what it reads, for errors.
type decoder struct {
	data       []byte
	off        int
	name       string
	part       string
	col, ncols int
}

// take returns the next n bytes, or an error naming field when fewer are
// left.
func (d *decoder) take(field string, n uint64) ([]byte, error) {
	left := len(d.data) - d.off
	if n > uint64(left) {
		unit := "bytes"
		if n == 1 {
			unit = "byte"
		}
		return nil, d.errorf(d.off, "%s needs %d %s, %d left", field, n, unit, left)
	}
	b := d.data[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// byte returns the next byte, or an error naming field when none is left.
func (d *decoder) byte(field string) (byte, error) {
	b, err := d.take(field, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// tuple reads a TupleData, part of the message: an Int16 column count,
// then the columns.
func (d *decoder) tuple(part string) (rawTuple, error) {
	d.part = part
	b, err := d.take("column count", 2)
	if err != nil {
		return rawTuple{}, err
	}
	d.ncols = int(binary.BigEndian.Uint16(b))
	start := d.off
	for d.col = 1; d.col <= d.ncols; d.col++ {
		kind, err := d.byte("kind")
		if err != nil {
			return rawTuple{}, err
		}
		switch kind {
		case 'n', 'u':
		case 't':
			b, err := d.take("length", 4)
			if err != nil {
				return rawTuple{}, err
			}
			if _, err := d.take("value", uint64(binary.BigEndian.Uint32(b))); err != nil {
				return rawTuple{}, err
			}
		case 'b':
			return rawTuple{}, d.errorf(d.off-1, "binary value, but the reader asks for text")
		default:
			return rawTuple{}, d.errorf(d.off-1, "kind %q, want 'n', 'u' or 't'", kind)
		}
	}
	d.part, d.col = "", 0
	return rawTuple{n: d.ncols, data: d.data[start:d.off:d.off]}, nil
}

// errorf returns an error naming the message, the part and column being
// read, and byte offset at: "update message: new tuple column 3 of 6:
// value needs 120 bytes, 23 left (byte 57 of 80)".
func (d *decoder) errorf(at int, format string, args ...any) error {
	where := d.name
	if d.part != "" {
		where += ": " + d.part
		if d.col > 0 {
			where += fmt.Sprintf(" column %d of %d", d.col, d.ncols)
		}
	}
	return fmt.Errorf("%s: %s (byte %d of %d)", where, fmt.Sprintf(format, args...), at, len(d.data))
}
