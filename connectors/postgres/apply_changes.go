package postgres

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// tableChanges is the net effect of consecutive events of one batch on one
// source table, all of one shape of the table: whether the table was
// truncated (everything before the last truncate is discarded), then the
// final state of every key touched after it.
type tableChanges struct {
	schema, table string
	// first is the stream sequence of the batch's first event of the
	// table (of any of its parts).
	first uint64
	// relation is the source's description of the table that its events
	// came with (the first event's Relation); nil when none did.
	relation *protocol.Schema
	// snapshot is the position of the snapshot that begins with this part
	// (protocol.OpSnapshot, with truncate set); 0 when none does.
	snapshot uint64
	// updated reports an event of the part other than an insert (and a
	// truncate before them): its rows may exist in the target.
	updated bool
	// snapshotting reports that a snapshot of the table is under way in
	// this part: an update whose unchanged TOAST value has no row to come
	// from is left out, the row's chunk bringing it later. done reports
	// that the part ends with the snapshot's snapshot_done event.
	snapshotting, done bool
	key                []string
	truncate           bool
	// cols lists every column of the row images, key columns first, then
	// in order of first appearance.
	cols []string
	// colSet holds the names of cols once they are more than smallCols.
	colSet map[string]bool
	rows   map[string]*rowChange
	order  []*rowChange // rows in order of first touch
	// unchanged and absent report whether some image has an unchanged
	// (TOAST) value or lacks a column of cols.
	unchanged, absent bool
	// newKey and oldKey are scratch slices of an event's key values.
	newKey, oldKey []string
}

// rowChange is the final state of one key after a batch.
type rowChange struct {
	keyVals []string
	deleted bool
	// row is the final image when not deleted. An Unchanged value in it
	// could not be resolved within the batch: it is the value of the
	// target row with key origin (the row's key before a key change).
	row    protocol.Row
	origin []string
	// unchanged reports an Unchanged value in row.
	unchanged bool
}

func (t *tableChanges) name() string { return t.schema + "." + t.table }

// fail returns err as an error of t's table: permanent (see
// isPermanentApply) or not.
func (t *tableChanges) fail(err error) error {
	return &tableError{schema: t.schema, table: t.table, seq: t.first, permanent: isPermanentApply(err), err: err}
}

// tableFilter says what collect leaves out of a source table's events.
type tableFilter struct {
	// skip leaves out every event.
	skip bool
	// stopped leaves out every event but a snapshot event after
	// snapshot, which starts the table over.
	stopped bool
	// snapshot is the position of the last snapshot event applied: a
	// snapshot event at or before it and a read event before it are left
	// out.
	snapshot uint64
	// snapshotting reports a snapshot under way: after a snapshot event,
	// before its snapshot_done event.
	snapshotting bool
	// applied leaves out every event at or below this stream sequence:
	// the table's events applied already (a Parallel applier's table
	// ahead of the pipeline's offset).
	applied uint64
}

// maxRowsHint bounds the size a table's map of rows is made with: the
// events left in the batch.
const maxRowsHint = 4096

// collect collapses a batch of events (in stream order) per table and key.
// An event that carries another description of its table (Relation) than
// the one its table's events came with so far starts a new part of that
// table, applied after the earlier ones: the target follows the source's
// shape between them; so does a snapshot event (protocol.OpSnapshot) after
// the table's last one, whose part starts with the table emptied. Parts
// come back in order of their first event. filter (given "schema NUL
// table") says which events of a table are left out. An event the table's
// changes cannot take (no key, an inconsistent stream) fails with a
// permanent *tableError.
func collect(events []connectors.Event, filter func(id string) tableFilter) ([]*tableChanges, error) {
	// What collect keeps of a source table: its filter, the sequence of
	// its first event taken, and its part being filled (nil: none).
	type source struct {
		filter   tableFilter
		first    uint64
		hasFirst bool
		part     *tableChanges
	}
	sources := map[string]*source{}
	var out []*tableChanges
	var src *source          // the last event's table
	var schema, table string // its names
	for i, ev := range events {
		if i == 0 || ev.Schema != schema || ev.Table != table {
			id := ev.Schema + "\x00" + ev.Table
			schema, table = ev.Schema, ev.Table
			if src = sources[id]; src == nil {
				src = &source{}
				if filter != nil {
					src.filter = filter(id)
				}
				sources[id] = src
			}
		}
		f := &src.filter
		var lsn uint64
		if ev.Op == protocol.OpSnapshot || ev.Op == protocol.OpRead {
			var err error
			if lsn, err = protocol.ParseLSN(ev.LSN); err != nil {
				return nil, (&tableChanges{schema: ev.Schema, table: ev.Table, first: ev.Seq}).fail(
					connectors.Permanent(fmt.Errorf("event at sequence %d (%s): %w", ev.Seq, ev.Op, err)))
			}
		}
		switch {
		case f.skip, ev.Seq <= f.applied:
			continue
		case ev.Op == protocol.OpSnapshot:
			if lsn <= f.snapshot {
				continue // a repeated or an older snapshot's
			}
			f.snapshot, f.stopped, f.snapshotting = lsn, false, true
		case f.stopped, ev.Op == protocol.OpRead && lsn < f.snapshot:
			continue
		case ev.Op == protocol.OpSnapshotDone:
			if !f.snapshotting {
				continue
			}
			f.snapshotting = false
		}
		if !src.hasFirst {
			src.first, src.hasFirst = ev.Seq, true
		}
		t := src.part
		if t != nil && (ev.Op == protocol.OpSnapshot || ev.Relation != nil && !reflect.DeepEqual(t.relation, ev.Relation)) {
			if t.truncate || len(t.order) > 0 || t.snapshot != 0 {
				t = nil // a new shape, or a new snapshot: a new part
			} else if ev.Relation != nil {
				t.relation = ev.Relation
			}
		}
		if t == nil {
			t = &tableChanges{schema: ev.Schema, table: ev.Table, first: src.first, relation: ev.Relation, snapshotting: f.snapshotting,
				rows: make(map[string]*rowChange, min(len(events)-i, maxRowsHint))}
			src.part = t
			out = append(out, t)
		}
		switch ev.Op {
		case protocol.OpSnapshot:
			t.snapshot, t.truncate, t.snapshotting = lsn, true, true
			t.rows, t.order = map[string]*rowChange{}, nil
			continue
		case protocol.OpSnapshotDone:
			t.done = true
			src.part = nil // the events after it: a new part
			continue
		}
		if err := t.add(ev); err != nil {
			return nil, t.fail(connectors.Permanent(fmt.Errorf("event at sequence %d (%s): %w", ev.Seq, ev.Op, err)))
		}
	}
	for _, t := range out {
		for _, rc := range t.order {
			// A row's columns are all in t.cols: fewer leave some out.
			if !rc.deleted {
				t.absent = t.absent || len(rc.row) < len(t.cols)
				t.unchanged = t.unchanged || rc.unchanged
			}
		}
	}
	return out, nil
}

func (t *tableChanges) add(ev connectors.Event) error {
	if ev.Op == protocol.OpTruncate {
		t.truncate = true
		t.rows = map[string]*rowChange{}
		t.order = nil
		t.updated = false
		return nil
	}
	if ev.Op != protocol.OpInsert {
		t.updated = true
	}
	if len(ev.Key) == 0 {
		return fmt.Errorf("no key columns: applying changes needs a primary key or a replica identity on the source table")
	}
	if t.key == nil {
		t.key = slices.Clone(ev.Key)
		for _, k := range t.key {
			t.addCol(k)
		}
	} else if !slices.Equal(t.key, ev.Key) {
		return fmt.Errorf("key columns changed from %v to %v within one batch: not handled", t.key, ev.Key)
	}
	switch ev.Op {
	case protocol.OpDelete:
		keyVals, err := t.keyValues(t.oldKey, ev.Before, "old row")
		if err != nil {
			return err
		}
		t.oldKey = keyVals
		rc := t.row(keyVals)
		rc.deleted, rc.row, rc.origin, rc.unchanged = true, nil, nil, false
		return nil
	case protocol.OpInsert, protocol.OpRead, protocol.OpUpdate:
	default:
		return fmt.Errorf("unknown op %q", ev.Op)
	}
	if ev.After == nil {
		return fmt.Errorf("no new row")
	}
	newKey, err := t.keyValues(t.newKey, ev.After, "new row")
	if err != nil {
		return err
	}
	t.newKey = newKey
	oldKey := newKey
	if ev.Op == protocol.OpUpdate && hasKey(ev.Before, t.key) {
		if oldKey, err = t.keyValues(t.oldKey, ev.Before, "old row"); err != nil {
			return err
		}
		t.oldKey = oldKey
	}
	base := t.rows[keyString(oldKey)]
	unchanged := t.addCols(ev.After)
	// The new row as it is, unless it leaves a value unchanged: then a
	// copy with what earlier images of the batch say of it. Rows are
	// never changed in place (a batch may be collected again).
	img := ev.After
	if unchanged {
		img = t.resolve(ev, base)
		unchanged = hasUnchanged(img)
	}
	origin := oldKey // the scratch: kept only as a copy
	fromBase := base != nil && !base.deleted
	if fromBase {
		origin = base.origin
	}
	if base != nil && base.deleted && unchanged {
		return fmt.Errorf("update of key %v, deleted earlier in the batch, leaves a value unchanged (TOAST): the stream is inconsistent", oldKey)
	}
	if !slices.Equal(oldKey, newKey) {
		old := t.row(oldKey)
		old.deleted, old.row, old.origin, old.unchanged = true, nil, nil, false
	}
	rc := t.row(newKey)
	if !fromBase {
		if slices.Equal(origin, rc.keyVals) {
			origin = rc.keyVals
		} else {
			origin = slices.Clone(origin)
		}
	}
	rc.deleted, rc.row, rc.origin, rc.unchanged = false, img, origin, unchanged
	return nil
}

// resolve returns a copy of ev's new row with each unchanged value taken
// from base, the row's state earlier in the batch, or else from the old
// row the event carries (REPLICA IDENTITY FULL), where they have it.
func (t *tableChanges) resolve(ev connectors.Event, base *rowChange) protocol.Row {
	img := make(protocol.Row, len(ev.After))
	for c, v := range ev.After {
		if v.Unchanged {
			switch {
			case base != nil && !base.deleted:
				if bv, ok := base.row[c]; ok {
					v = bv // may itself be unchanged: then it comes from base.origin
				}
			case base == nil:
				if bv, ok := ev.Before[c]; ok && !bv.Unchanged {
					v = bv // REPLICA IDENTITY FULL sent the old value
				}
			}
		}
		img[c] = v
	}
	return img
}

// addCols adds the columns of r that are new, in name order (a batch's
// column order, and with it its statements, does not depend on map order),
// and reports whether r has an Unchanged value.
func (t *tableChanges) addCols(r protocol.Row) (unchanged bool) {
	var added []string
	for c, v := range r {
		unchanged = unchanged || v.Unchanged
		if !t.hasCol(c) {
			added = append(added, c)
		}
	}
	slices.Sort(added)
	for _, c := range added {
		t.addCol(c)
	}
	return unchanged
}

// smallCols is the most columns looked up by a scan of t.cols rather than
// in t.colSet (which then stays nil).
const smallCols = 16

func (t *tableChanges) hasCol(c string) bool {
	if t.colSet != nil {
		return t.colSet[c]
	}
	return slices.Contains(t.cols, c)
}

func (t *tableChanges) addCol(c string) {
	if t.hasCol(c) {
		return
	}
	t.cols = append(t.cols, c)
	switch {
	case t.colSet != nil:
		t.colSet[c] = true
	case len(t.cols) > smallCols:
		t.colSet = make(map[string]bool, len(t.cols))
		for _, c := range t.cols {
			t.colSet[c] = true
		}
	}
}

// row returns the state of a key, adding it (with a copy of keyVals) when
// new.
func (t *tableChanges) row(keyVals []string) *rowChange {
	k := keyString(keyVals)
	rc := t.rows[k]
	if rc == nil {
		rc = &rowChange{keyVals: slices.Clone(keyVals)}
		t.rows[k] = rc
		t.order = append(t.order, rc)
	}
	return rc
}

// keyValues appends the key column values of a row to out (a scratch
// slice of t: t.row copies what it keeps); each must be a value (not NULL,
// not unchanged).
func (t *tableChanges) keyValues(out []string, r protocol.Row, which string) ([]string, error) {
	out = out[:0]
	for _, k := range t.key {
		v, ok := r[k]
		switch {
		case !ok:
			return nil, fmt.Errorf("the %s lacks key column %q", which, k)
		case v.Null || v.Unchanged:
			return nil, fmt.Errorf("key column %q of the %s is NULL or unchanged", k, which)
		}
		out = append(out, v.Text)
	}
	return out, nil
}

func hasKey(r protocol.Row, key []string) bool {
	if r == nil {
		return false
	}
	for _, k := range key {
		if v, ok := r[k]; !ok || v.Null || v.Unchanged {
			return false
		}
	}
	return true
}

func hasUnchanged(r protocol.Row) bool {
	for _, v := range r {
		if v.Unchanged {
			return true
		}
	}
	return false
}

// keyString joins key values unambiguously (PostgreSQL text holds no NUL).
func keyString(vals []string) string {
	return strings.Join(vals, "\x00")
}
