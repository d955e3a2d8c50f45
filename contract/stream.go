package contract

import (
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

// StreamTable is the contract of one table of a change stream, compiled
// for the columns its change events carry, in table order (a relation of
// the source, as a CDC reader decodes it into protocol.Cell rows). A CDC
// reader makes one per relation and applies it to every change before it
// encodes the event: what it returns is what may be published. It is used
// by one goroutine.
type StreamTable struct {
	r    *rules
	p    *plan
	key  []int // the key columns' input places
	keyN []string
	// outputs, reused by each Change: cells of the rows, the transformed
	// values they point into.
	before, after []protocol.Cell
	buf           []byte
}

// StreamTable compiles the contract of table ("schema.table") for change
// events of the columns cols with the key columns key. A strict contract
// refuses a column it does not classify (a column added mid-stream
// included), and every contract a key column whose action would merge
// distinct keys (drop, mask, null, truncate): errors naming the table and
// the column.
func (c *Contract) StreamTable(table string, cols, key []string) (*StreamTable, error) {
	r := c.table(table)
	p, err := planFor(r, c.keys, cols)
	if err != nil {
		return nil, err
	}
	t := &StreamTable{r: r, p: p, keyN: slices.Clone(key)}
	for _, k := range key {
		if col, ok := r.cols[k]; ok && !col.injective() {
			return nil, fmt.Errorf("key column %q of %s is %s by the contract: a change stream applies rows by their key, which must stay distinct: keep, hash or tokenize it", k, r.what, actionPast(col.Action))
		}
		t.key = append(t.key, slices.Index(cols, k))
	}
	return t, nil
}

// Same reports that the table's events pass unchanged: the contract keeps
// every column and filters nothing.
func (t *StreamTable) Same() bool { return t.p.same }

// Columns returns the columns the table's events carry once transformed,
// in table order: the dropped ones left out.
func (t *StreamTable) Columns() []string { return t.p.names }

// Relation returns the description of the table as its transformed
// events carry it (see Spec.Schema); nil is nil.
func (t *StreamTable) Relation(s *protocol.Schema) (*protocol.Schema, error) {
	if s == nil || t.p.same {
		return s, nil
	}
	return t.r.schema(s, true)
}

// Change applies the contract to one change of the table: before and
// after are its rows as cells of the input columns (absent cells, as the
// source sends them, stay absent). It returns the change to publish, its
// rows as cells of Columns (valid until the next call), or keep false when
// the filter leaves the change out. A filter that the row no longer meets
// turns an update into a delete of its key, so that a copy holds only the
// rows that meet it; an insert (or a snapshot's read) that does not meet
// it is left out, as is a delete whose old row shows it never did. A
// condition on a column the change does not carry (absent, or a TOASTed
// value left unchanged) counts as met.
func (t *StreamTable) Change(op protocol.Op, before, after []protocol.Cell) (protocol.Op, []protocol.Cell, []protocol.Cell, bool, error) {
	if t.p.same {
		return op, before, after, true, nil
	}
	t.buf = t.buf[:0]
	var err error
	switch op {
	case protocol.OpInsert, protocol.OpRead:
		if !t.meets(after) {
			return op, nil, nil, false, nil
		}
		after, err = t.cells(&t.after, after, false)
		return op, nil, after, true, err
	case protocol.OpUpdate:
		if !t.meets(after) {
			src := before
			if !present(before) {
				src = after
			}
			before, err = t.cells(&t.before, src, true)
			return protocol.OpDelete, before, nil, true, err
		}
		if before, err = t.cells(&t.before, before, false); err != nil {
			return op, nil, nil, false, err
		}
		after, err = t.cells(&t.after, after, false)
		return op, before, after, true, err
	case protocol.OpDelete:
		if !t.meets(before) {
			return op, nil, nil, false, nil
		}
		before, err = t.cells(&t.before, before, false)
		return op, before, nil, true, err
	}
	return op, before, after, true, nil
}

func present(cells []protocol.Cell) bool {
	for _, c := range cells {
		if c.Kind != protocol.CellAbsent {
			return true
		}
	}
	return false
}

// meets evaluates the filter on a row of cells.
func (t *StreamTable) meets(row []protocol.Cell) bool {
	for i := range t.p.conds {
		pc := &t.p.conds[i]
		if pc.in < 0 {
			if !pc.c.test(nil, true) {
				return false
			}
			continue
		}
		if pc.in >= len(row) {
			continue // not carried: unknown
		}
		switch c := row[pc.in]; c.Kind {
		case protocol.CellAbsent, protocol.CellUnchanged:
			continue // unknown
		case protocol.CellNull:
			if !pc.c.test(nil, true) {
				return false
			}
		default:
			if !pc.c.test(c.Text, false) {
				return false
			}
		}
	}
	return true
}

// cells transforms a row of input cells into *dst, cells of the output
// columns; keyOnly keeps the key columns alone.
func (t *StreamTable) cells(dst *[]protocol.Cell, in []protocol.Cell, keyOnly bool) ([]protocol.Cell, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := (*dst)[:0]
	for _, oc := range t.p.out {
		var c protocol.Cell
		if oc.in < len(in) && (!keyOnly || slices.Contains(t.key, oc.in)) {
			c = in[oc.in]
		}
		if c.Kind == protocol.CellText && !oc.fn.keep() {
			if oc.fn.col.Action == Null {
				c = protocol.Cell{Kind: protocol.CellNull}
			} else {
				start := len(t.buf)
				var err error
				if t.buf, err = oc.fn.fn(t.buf, c.Text); err != nil {
					return nil, fmt.Errorf("%s, column %q: %w", t.r.what, oc.fn.name, valueError(oc.fn, err))
				}
				c = protocol.Cell{Kind: protocol.CellText, Text: t.buf[start:len(t.buf):len(t.buf)]}
			}
		}
		out = append(out, c)
	}
	*dst = out
	return out, nil
}
