package contract

import (
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Events applies a contract to change events of the tables of a stream,
// rows given as protocol.Row: the events a cdc_apply pipeline applies, the
// read events of a cdc pipeline's snapshot. It is used by one goroutine.
type Events struct {
	c      *Contract
	tables map[string]*rowTable
}

// rowTable is a table's contract, its columns' actions made as they come.
type rowTable struct {
	r     *rules
	k     *keys
	fns   map[string]*colFn
	conds []cond
	same  bool
	// keys are the key column lists checked (joined by commas).
	keys map[string]bool
	// relation is the description an event the filter left out carried,
	// for the table's next event that is kept.
	relation *protocol.Schema
}

// Events returns an Events of c.
func (c *Contract) Events() *Events {
	return &Events{c: c, tables: map[string]*rowTable{}}
}

func (e *Events) table(schema, table string) *rowTable {
	name := schema + "." + table
	t, ok := e.tables[name]
	if !ok {
		r := e.c.table(name)
		t = &rowTable{r: r, k: e.c.keys, fns: map[string]*colFn{}, conds: compileFilter(r.filter), same: r.passes(), keys: map[string]bool{}}
		e.tables[name] = t
	}
	return t
}

// Event applies the contract to ev in place, as StreamTable.Change does
// to a change (an update leaving the filter becomes a delete of its key):
// its rows and its relation. keep is false when the filter leaves the
// event out; the relation such an event carried goes with the table's
// next event that is kept. Errors name the table and the column, never a
// value.
func (e *Events) Event(ev *protocol.ChangeEvent) (keep bool, err error) {
	t := e.table(ev.Schema, ev.Table)
	if t.same {
		return true, nil
	}
	keep, err = t.event(ev)
	switch {
	case err != nil:
	case !keep && ev.Relation != nil:
		t.relation = ev.Relation
	case keep && ev.Relation != nil:
		t.relation = nil
	case keep && t.relation != nil && ev.Op != protocol.OpSnapshot && ev.Op != protocol.OpTruncate:
		ev.Relation, t.relation = t.relation, nil
	}
	return keep, err
}

func (t *rowTable) event(ev *protocol.ChangeEvent) (keep bool, err error) {
	if len(ev.Key) > 0 {
		if err := t.checkKey(ev.Key); err != nil {
			return false, err
		}
	}
	if ev.Relation != nil {
		if ev.Relation, err = t.r.schema(ev.Relation, true); err != nil {
			return false, err
		}
	}
	switch ev.Op {
	case protocol.OpInsert, protocol.OpRead:
		if !t.meets(ev.After) {
			return false, nil
		}
	case protocol.OpUpdate:
		if !t.meets(ev.After) {
			src := ev.Before
			if len(src) == 0 {
				src = ev.After
			}
			key := make(protocol.Row, len(ev.Key))
			for _, k := range ev.Key {
				if v, ok := src[k]; ok {
					key[k] = v
				}
			}
			ev.Op, ev.Before, ev.After = protocol.OpDelete, key, nil
		}
	case protocol.OpDelete:
		if !t.meets(ev.Before) {
			return false, nil
		}
	}
	if ev.Before, err = t.row(ev.Before); err != nil {
		return false, err
	}
	if ev.After, err = t.row(ev.After); err != nil {
		return false, err
	}
	return true, nil
}

// Apply applies the contract to a batch of events of a cdc_apply pipeline
// (the hook of connectors/cdcapply), in place: the events the filter
// leaves out are removed. An error names the event's stream sequence.
func (e *Events) Apply(events []connectors.Event) ([]connectors.Event, error) {
	out := events[:0]
	for i := range events {
		ev := events[i]
		keep, err := e.Event(&ev.ChangeEvent)
		if err != nil {
			return nil, fmt.Errorf("contract: event of stream sequence %d (lsn %s): %w", ev.Seq, ev.LSN, err)
		}
		if keep {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (t *rowTable) checkKey(key []string) error {
	joined := strings.Join(key, ",")
	if t.keys[joined] {
		return nil
	}
	for _, k := range key {
		if col, ok := t.r.cols[k]; ok && !col.injective() {
			return fmt.Errorf("key column %q of %s is %s by the contract: a change stream applies rows by their key, which must stay distinct: keep, hash or tokenize it", k, t.r.what, actionPast(col.Action))
		}
	}
	t.keys[joined] = true
	return nil
}

func (t *rowTable) fn(name string) (*colFn, error) {
	if fn, ok := t.fns[name]; ok {
		return fn, nil
	}
	fn, err := t.r.column(t.k, name)
	if err != nil {
		return nil, err
	}
	t.fns[name] = fn
	return fn, nil
}

// meets evaluates the filter on a row; a column the row does not carry,
// or an unchanged TOAST value, counts as meeting its condition.
func (t *rowTable) meets(row protocol.Row) bool {
	for i := range t.conds {
		c := &t.conds[i]
		v, ok := row[c.column]
		switch {
		case !ok || v.Unchanged:
			continue
		case v.Null:
			if !c.test(nil, true) {
				return false
			}
		default:
			if !c.test([]byte(v.Text), false) {
				return false
			}
		}
	}
	return true
}

// row returns a transformed copy of row; nil is nil.
func (t *rowTable) row(row protocol.Row) (protocol.Row, error) {
	if row == nil {
		return nil, nil
	}
	out := make(protocol.Row, len(row))
	var buf []byte
	for k, v := range row {
		fn, err := t.fn(k)
		if err != nil {
			return nil, err
		}
		switch {
		case fn.col.Action == Drop:
			continue
		case fn.keep() || v.Null || v.Unchanged:
		case fn.col.Action == Null:
			v = protocol.NullValue
		default:
			if buf, err = fn.fn(buf[:0], []byte(v.Text)); err != nil {
				return nil, fmt.Errorf("%s, column %q: %w", t.r.what, fn.name, valueError(fn, err))
			}
			v = protocol.Text(string(buf))
		}
		out[k] = v
	}
	return out, nil
}
