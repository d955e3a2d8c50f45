package clickhouse

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// batchTable is what one batch does to one source table: whether it
// truncated the table (the changes before the last truncate no longer
// matter), then the last state of every key it touched after that.
type batchTable struct {
	schema, table string
	key           []string
	// truncated reports a truncate in the batch; truncLSN and truncIndex
	// are the position of the last one: the version of the deletions it
	// makes of the rows the table held before.
	truncated  bool
	truncLSN   uint64
	truncIndex int
	// snapLSN is the position of the last snapshot of the table the batch
	// starts (protocol.OpSnapshot), 0 when none: the rows the target
	// holds from before it (of a smaller version) are no longer the
	// table's, and read events of an earlier snapshot are left out.
	snapLSN uint64
	// snapshotting reports a snapshot of the table under way, after its
	// snapshot event (in this batch, or an earlier one the Applier
	// applied) and before its snapshot_done event.
	snapshotting bool
	// cols are the columns of the row images: the key, then the others in
	// the order they first appear (each event's new ones by name).
	cols []string
	has  map[string]bool
	keys map[string]*keyState
	// touched lists the keys in the order the batch first touched them.
	touched []*keyState
}

// keyState is the last state of one key after a batch.
type keyState struct {
	vals []string // the key's values
	// lsn and index are the position of the key's last change: its
	// version.
	lsn   uint64
	index int
	gone  bool // deleted
	// row is the key's row when not gone. An Unchanged value in it is one
	// the batch does not know: the value of the target row with key from,
	// the key's row as it was before the batch. A column of cols missing
	// from row is taken from there too, or is NULL when there is none.
	row  protocol.Row
	from []string // nil: no row before the batch counts (truncated, or deleted in the batch)
	// inSnap reports that the key's last change came while a snapshot of
	// the table was under way: a value it left unchanged (TOAST) that
	// the target lacks comes with the snapshot's chunk of the row.
	inSnap bool
}

func (t *batchTable) name() string { return t.schema + "." + t.table }

// fold reduces a batch of events (in stream order) to what it does to each
// table, tables in the order they first appear. snapshotting holds the
// tables (schema NUL table) with a snapshot under way before the batch.
func fold(events []connectors.Event, snapshotting map[string]bool) ([]*batchTable, error) {
	byName := map[string]*batchTable{}
	var out []*batchTable
	for i := range events {
		ev := &events[i]
		id := ev.Schema + "\x00" + ev.Table
		t := byName[id]
		if t == nil {
			t = &batchTable{schema: ev.Schema, table: ev.Table, has: map[string]bool{}, keys: map[string]*keyState{}, snapshotting: snapshotting[id]}
			byName[id] = t
			out = append(out, t)
		}
		if err := t.apply(ev); err != nil {
			return nil, fmt.Errorf("table %s, event at sequence %d (%s at %s/%d): %w", t.name(), ev.Seq, ev.Op, ev.CommitLSN, ev.Index, err)
		}
	}
	return out, nil
}

// apply folds one event into the table's state.
func (t *batchTable) apply(ev *connectors.Event) error {
	lsn, err := parseLSN(ev.CommitLSN)
	if err != nil {
		return err
	}
	switch {
	case ev.Op == protocol.OpTruncate:
		t.truncated, t.truncLSN, t.truncIndex = true, lsn, ev.Index
		t.keys, t.touched = map[string]*keyState{}, nil
		return nil
	case ev.Op == protocol.OpSnapshot:
		if lsn <= t.snapLSN {
			return nil // the marker again (every chunk of a snapshot sends it)
		}
		t.snapLSN, t.snapshotting = lsn, true
		t.forgetBefore(lsn)
		return nil
	case ev.Op == protocol.OpRead && lsn < t.snapLSN:
		return nil // a row of an earlier, superseded snapshot
	case ev.Op == protocol.OpSnapshotDone:
		t.snapshotting = false
		return nil // an incremental snapshot's end: its rows came before it
	}
	if len(ev.Key) == 0 {
		return fmt.Errorf("no key columns: applying changes needs a primary key or a replica identity on the source table")
	}
	if t.key == nil {
		t.key = slices.Clone(ev.Key)
		for _, k := range t.key {
			t.addColumn(k)
		}
	} else if !slices.Equal(t.key, ev.Key) {
		return fmt.Errorf("the key columns changed from %v to %v within one batch: not handled", t.key, ev.Key)
	}
	set := func(s *keyState, gone bool, row protocol.Row, from []string) {
		s.lsn, s.index, s.gone, s.row, s.from, s.inSnap = lsn, ev.Index, gone, row, from, t.snapshotting
	}
	switch ev.Op {
	case protocol.OpDelete:
		vals, err := t.keyOf(ev.Before, "old row")
		if err != nil {
			return err
		}
		set(t.state(vals), true, nil, nil)
		return nil
	case protocol.OpInsert, protocol.OpRead, protocol.OpUpdate:
	default:
		return fmt.Errorf("unknown op %q", ev.Op)
	}
	if ev.After == nil {
		return fmt.Errorf("no new row")
	}
	newKey, err := t.keyOf(ev.After, "new row")
	if err != nil {
		return err
	}
	oldKey := newKey
	if ev.Op == protocol.OpUpdate && fullKey(ev.Before, t.key) {
		if oldKey, err = t.keyOf(ev.Before, "old row"); err != nil {
			return err
		}
	}
	// The row before this change: the batch's own state of the old key,
	// else the target's row (unless the batch truncated the table).
	prev := t.keys[strings.Join(oldKey, "\x00")]
	from := oldKey
	switch {
	case prev != nil && prev.gone, prev == nil && t.truncated:
		from = nil
	case prev != nil:
		from = prev.from
	}
	names := make([]string, 0, len(ev.After))
	row := make(protocol.Row, len(ev.After))
	for c, v := range ev.After {
		names = append(names, c)
		if v.Unchanged {
			if prev != nil && !prev.gone {
				if pv, ok := prev.row[c]; ok {
					v = pv // still Unchanged when prev did not know it either
				}
			} else if bv, ok := ev.Before[c]; ok && prev == nil && !bv.Unchanged {
				v = bv // REPLICA IDENTITY FULL sent the old value
			}
			if v.Unchanged && from == nil {
				return fmt.Errorf("column %q is unchanged (TOAST) but the row was deleted or truncated earlier in the batch: the stream is inconsistent", c)
			}
		}
		row[c] = v
	}
	slices.Sort(names) // columns added in name order, not map order
	for _, c := range names {
		t.addColumn(c)
	}
	if !slices.Equal(oldKey, newKey) {
		set(t.state(oldKey), true, nil, nil)
	}
	set(t.state(newKey), false, row, from)
	return nil
}

// forgetBefore drops the state of the keys whose last change is older
// than lsn: a snapshot of that position reads them again.
func (t *batchTable) forgetBefore(lsn uint64) {
	kept := t.touched[:0]
	for _, s := range t.touched {
		if s.lsn < lsn {
			delete(t.keys, strings.Join(s.vals, "\x00"))
			continue
		}
		kept = append(kept, s)
	}
	clear(t.touched[len(kept):])
	t.touched = kept
}

func (t *batchTable) addColumn(c string) {
	if !t.has[c] {
		t.has[c] = true
		t.cols = append(t.cols, c)
	}
}

// state returns the state of a key, adding it when new.
func (t *batchTable) state(vals []string) *keyState {
	id := strings.Join(vals, "\x00")
	s := t.keys[id]
	if s == nil {
		s = &keyState{vals: vals}
		t.keys[id] = s
		t.touched = append(t.touched, s)
	}
	return s
}

// keyOf returns the key values of a row: each must be a value, not NULL
// and not unchanged.
func (t *batchTable) keyOf(r protocol.Row, which string) ([]string, error) {
	out := make([]string, len(t.key))
	for i, k := range t.key {
		v, ok := r[k]
		switch {
		case !ok:
			return nil, fmt.Errorf("the %s lacks key column %q", which, k)
		case v.Null || v.Unchanged:
			return nil, fmt.Errorf("key column %q of the %s is NULL or unchanged", k, which)
		}
		out[i] = v.Text
	}
	return out, nil
}

// fullKey reports whether r holds a value of every key column.
func fullKey(r protocol.Row, key []string) bool {
	for _, k := range key {
		if v, ok := r[k]; !ok || v.Null || v.Unchanged {
			return false
		}
	}
	return r != nil
}

// parseLSN parses a PostgreSQL WAL position as it prints it, "16/B374D848":
// two hexadecimal halves of 32 bits.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok && len(hi) > 0 && len(hi) <= 8 && len(lo) > 0 && len(lo) <= 8 {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return h<<32 | l, nil
		}
	}
	return 0, fmt.Errorf("commit LSN %q is not a PostgreSQL WAL position (X/Y): the ClickHouse applier orders changes by it", s)
}
