package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/protocol"
)

// The columns the applier adds to every target table: the version of the
// row (its change's commit LSN), the change's index in its transaction, and
// whether the row is a deletion. The table's engine is
// ReplacingMergeTree(_sluice_version), ordered by the source's key.
const (
	colVersion = "_sluice_version"
	colIndex   = "_sluice_index"
	colDeleted = "_sluice_deleted"
)

// ViewSuffix ends the name of the view of a target table's current state:
// orders_current for orders.
const ViewSuffix = "_current"

// target is what the applier knows of a target table.
type target struct {
	db, name string
	// cols are the source's columns in the table, in the table's order,
	// the key among them; byName indexes them.
	cols   []column
	byName map[string]int
	// sorting are the columns the table is ordered by, sorted: the
	// source's key columns. key is the source's key, in key order.
	sorting []string
	key     []string
}

func tableIdent(db, name string) string { return quoteIdent(db) + "." + quoteIdent(name) }

func (tg *target) ident() string { return tableIdent(tg.db, tg.name) }

func (tg *target) String() string { return tg.db + "." + tg.name }

// quotedCols returns the names of the source's columns in the table,
// quoted, in the table's order.
func (tg *target) quotedCols() []string {
	out := make([]string, len(tg.cols))
	for i, c := range tg.cols {
		out[i] = quoteIdent(c.name)
	}
	return out
}

// cdcColumns returns the columns of a target table: typed from sc when the
// events describe their table's columns (see mapColumns, a NULL array
// stored as []), else holding the source's text, String for the key
// columns (they order the table and cannot be Nullable) and
// Nullable(String) for the others.
func cdcColumns(sc *protocol.Schema, c caps, names, key []string) ([]column, error) {
	out := make([]column, 0, len(names))
	for _, n := range names {
		isKey := slices.Contains(key, n)
		if sc == nil {
			col := stringColumn(n)
			if isKey {
				col.chType, col.nullable = "String", false
			}
			out = append(out, col)
			continue
		}
		sourceCol, ok := sc.Column(n)
		if !ok {
			return nil, fmt.Errorf("column %q is not in the table's schema (columns: %s)", n, strings.Join(sc.Names(), ", "))
		}
		col, err := mapColumn(sourceCol, c, true)
		if err != nil {
			return nil, fmt.Errorf("column %q of type %s: %w", n, sourceCol.String(), err)
		}
		if isKey && (col.nullable || col.enc.kind == encList) {
			return nil, fmt.Errorf("key column %q of type %s cannot order a ClickHouse table (it may be NULL, or is an array)", n, sourceCol.String())
		}
		out = append(out, col)
	}
	return out, nil
}

// loadTarget reads a target table's columns from the server; nil when there
// is no table of that name. A table that is not one the applier made (not a
// ReplacingMergeTree with the applier's columns) is an error naming what it
// lacks.
func (a *Applier) loadTarget(ctx context.Context, db, name string) (*target, error) {
	rows, err := a.cl.Rows(ctx, "SELECT engine, engine_full FROM system.tables WHERE database = "+quoteString(db)+" AND name = "+quoteString(name))
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, nil
	}
	tg := &target{db: db, name: name, byName: map[string]int{}}
	if string(rows[0][0]) != "ReplacingMergeTree" || !bytes.HasPrefix(rows[0][1], []byte("ReplacingMergeTree("+colVersion+")")) {
		return nil, fmt.Errorf("%s exists and is not a table of the applier (engine %s, want ReplacingMergeTree(%s)): drop or rename it", tg, rows[0][1], colVersion)
	}
	cols, err := a.cl.Rows(ctx, "SELECT name, type, is_in_sorting_key FROM system.columns WHERE database = "+quoteString(db)+
		" AND table = "+quoteString(name))
	if err != nil {
		return nil, err
	}
	var own []string
	for _, r := range cols {
		n, typ := string(r[0]), string(r[1])
		if string(r[2]) == "1" {
			tg.sorting = append(tg.sorting, n)
		}
		if strings.HasPrefix(n, "_sluice_") {
			own = append(own, n)
			continue
		}
		// The values of a table made by an earlier applier (or by hand)
		// are the source's text, which the server parses into the
		// column's type.
		col := column{name: n, chType: typ, nullable: strings.HasPrefix(typ, "Nullable("), enc: &valueEnc{kind: encString, quote: true}}
		tg.byName[n] = len(tg.cols)
		tg.cols = append(tg.cols, col)
	}
	for _, c := range []string{colVersion, colIndex, colDeleted} {
		if !slices.Contains(own, c) {
			return nil, fmt.Errorf("%s has no column %s: it is not a table of the applier", tg, c)
		}
	}
	slices.Sort(tg.sorting)
	return tg, nil
}

// prepare returns the target of t, creating the table (and its database
// and view) or adding the columns it lacks; nil for a truncate (or a
// snapshot's start) of a table that does not exist yet. Schema changes are logged through notes once the
// batch is durable.
func (a *Applier) prepare(ctx context.Context, t *batchTable, notes *[]note) (*target, error) {
	db := a.cfg.Database
	if db == "" {
		db = t.schema
	}
	id := db + "\x00" + t.table
	tg := a.targets[id]
	var err error
	if tg == nil {
		if tg, err = a.loadTarget(ctx, db, t.table); err != nil {
			return nil, err
		}
	}
	if tg == nil {
		if len(t.touched) == 0 {
			return nil, nil // only a truncate or a snapshot's start: nothing to do on a table that does not exist
		}
		if tg, err = a.create(ctx, db, t); err != nil {
			return nil, err
		}
		*notes = append(*notes, note{"cdc apply clickhouse: created target table (columns as text)", []any{"table", tg.String(), "key", t.key, "view", db + "." + t.table + ViewSuffix}})
	}
	a.targets[id] = tg
	if len(t.touched) == 0 {
		return tg, nil // only a truncate or a snapshot's start
	}
	if want := slices.Sorted(slices.Values(t.key)); !slices.Equal(tg.sorting, want) {
		return nil, fmt.Errorf("%s is ordered by %v, not by the source's key columns %v", tg, tg.sorting, t.key)
	}
	tg.key = t.key
	var added []string
	for _, c := range t.cols {
		if _, ok := tg.byName[c]; !ok {
			added = append(added, c)
		}
	}
	if len(added) == 0 {
		return tg, nil
	}
	cols, err := cdcColumns(nil, caps{}, added, nil)
	if err != nil {
		return nil, err
	}
	for _, c := range cols {
		// 18.x has no ADD COLUMN IF NOT EXISTS: a column there already
		// (added by another applier since tg was read) is code 44.
		err := a.cl.Exec(ctx, "ALTER TABLE "+tg.ident()+" ADD COLUMN "+quoteIdent(c.name)+" "+c.chType)
		if err != nil && !IsCode(err, codeColumnExists) {
			return nil, fmt.Errorf("add column %q to %s: %w", c.name, tg, err)
		}
		tg.byName[c.name] = len(tg.cols)
		tg.cols = append(tg.cols, c)
	}
	if err := a.replaceView(ctx, tg); err != nil {
		return nil, err
	}
	*notes = append(*notes, note{"cdc apply clickhouse: added columns that appeared in the source's events (as text)", []any{"table", tg.String(), "columns", added}})
	return tg, nil
}

// create creates the target table of t (and its database) and its view.
func (a *Applier) create(ctx context.Context, db string, t *batchTable) (*target, error) {
	cols, err := cdcColumns(nil, caps{}, t.cols, t.key)
	if err != nil {
		return nil, err
	}
	tg := &target{db: db, name: t.table, cols: cols, byName: map[string]int{}, key: t.key, sorting: slices.Sorted(slices.Values(t.key))}
	defs := make([]string, 0, len(cols)+3)
	for i, c := range cols {
		tg.byName[c.name] = i
		defs = append(defs, quoteIdent(c.name)+" "+c.chType)
	}
	defs = append(defs, colVersion+" UInt64", colIndex+" UInt32", colDeleted+" UInt8")
	if !a.databases[db] {
		if err := a.cl.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)); err != nil {
			return nil, fmt.Errorf("create database %s: %w", db, err)
		}
		a.databases[db] = true
	}
	q := "CREATE TABLE IF NOT EXISTS " + tg.ident() + " (" + strings.Join(defs, ", ") + ") ENGINE = ReplacingMergeTree(" + colVersion +
		") ORDER BY (" + strings.Join(quoteAll(t.key), ", ") + ")"
	if err := a.cl.Exec(ctx, q); err != nil {
		return nil, fmt.Errorf("create target table %s: %w", tg, err)
	}
	if err := a.replaceView(ctx, tg); err != nil {
		return nil, err
	}
	return tg, nil
}

// replaceView makes the view <table>_current select the current state of
// the target: its rows FINAL (one per key, the latest version) that are
// not deletions, every column but the applier's. An existing view is
// replaced in one RENAME of both, so readers never miss it.
func (a *Applier) replaceView(ctx context.Context, tg *target) error {
	name := tg.name + ViewSuffix
	sel := "SELECT " + strings.Join(tg.quotedCols(), ", ") + " FROM " + tg.ident() + " FINAL WHERE " + colDeleted + " = 0"
	engines, err := a.cl.Strings(ctx, "SELECT engine FROM system.tables WHERE database = "+quoteString(tg.db)+" AND name = "+quoteString(name))
	if err != nil {
		return err
	}
	switch {
	case len(engines) == 0:
		if err := a.cl.Exec(ctx, "CREATE VIEW IF NOT EXISTS "+tableIdent(tg.db, name)+" AS "+sel); err != nil {
			return fmt.Errorf("create view %s.%s: %w", tg.db, name, err)
		}
		return nil
	case engines[0] != "View":
		return fmt.Errorf("%s.%s, the name of the view of %s, is taken by a table of engine %s", tg.db, name, tg, engines[0])
	}
	next, old := name+"__new", name+"__old"
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + tableIdent(tg.db, next),
		"DROP TABLE IF EXISTS " + tableIdent(tg.db, old),
		"CREATE VIEW " + tableIdent(tg.db, next) + " AS " + sel,
		"RENAME TABLE " + tableIdent(tg.db, name) + " TO " + tableIdent(tg.db, old) + ", " + tableIdent(tg.db, next) + " TO " + tableIdent(tg.db, name),
		"DROP TABLE " + tableIdent(tg.db, old),
	} {
		if err := a.cl.Exec(ctx, q); err != nil {
			return fmt.Errorf("replace view %s.%s: %w", tg.db, name, err)
		}
	}
	return nil
}

// lookupBytes bounds the key values of one lookup query, which names them
// twice: a query is at most 256 KiB on 18.x (max_query_size).
const lookupBytes = 100 << 10

// lookup reads the current rows of keys from the target (its latest
// version of each, unless a deletion) and returns, by key (values joined
// by NUL), the fields of cols as the server writes them in TabSeparated,
// which it reads back as they are. A key without a current row is absent.
//
// The keys go into the query as one array literal of text per key column,
// cast to the column's type as a whole (the server parses the values as
// it parses inserted ones; a CAST per value would cost the 18.x analyzer
// milliseconds each), zipped into tuples when the key has several columns.
func (a *Applier) lookup(ctx context.Context, tg *target, keys [][]string, cols []string) (map[string][][]byte, error) {
	out := map[string][][]byte{}
	keyCols := quoteAll(tg.key)
	lits := make([][]string, len(keys)) // each key's values as quoted literals
	sizes := make([]int, len(keys))
	for i, vals := range keys {
		lits[i] = make([]string, len(vals))
		for j, v := range vals {
			// appendQuoted's escapes for text; digits and dates as they are.
			b, err := tg.cols[tg.byName[tg.key[j]]].enc.append([]byte{'\''}, []byte(v), false)
			if err != nil {
				return nil, fmt.Errorf("key column %q: %w", tg.key[j], err)
			}
			lits[i][j] = string(append(b, '\''))
			sizes[i] += len(b) + 3
		}
	}
	for start := 0; start < len(keys); {
		end, size := start, 0
		for end < len(keys) && (end == start || size+sizes[end] < lookupBytes) {
			size += sizes[end]
			end++
		}
		arrays := make([]string, len(tg.key))
		for j := range tg.key {
			vals := make([]string, end-start)
			for i := range vals {
				vals[i] = lits[start+i][j]
			}
			arrays[j] = "CAST([" + strings.Join(vals, ", ") + "] AS Array(" + tg.cols[tg.byName[tg.key[j]]].chType + "))"
		}
		set, key, in := arrays[0], keyCols[0], "SELECT arrayJoin("+arrays[0]+")"
		if len(arrays) > 1 {
			xs, parts := make([]string, len(arrays)), make([]string, len(arrays))
			for j := range arrays {
				xs[j], parts[j] = fmt.Sprintf("x%d", j+1), fmt.Sprintf("k.%d", j+1)
			}
			set = "arrayMap((" + strings.Join(xs, ", ") + ") -> tuple(" + strings.Join(xs, ", ") + "), " + strings.Join(arrays, ", ") + ")"
			key = "tuple(" + strings.Join(keyCols, ", ") + ")"
			in = "SELECT " + strings.Join(parts, ", ") + " FROM (SELECT arrayJoin(" + set + ") AS k)"
		}
		q := "SELECT indexOf(" + set + ", " + key + "), " + strings.Join(quoteAll(cols), ", ") +
			" FROM " + tg.ident() + " FINAL WHERE " + colDeleted + " = 0 AND " + key + " IN (" + in + ")"
		rows, err := a.cl.rawRows(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("read current rows of %s: %w", tg, err)
		}
		for _, r := range rows {
			i, err := strconv.Atoi(string(r[0]))
			if err != nil || i < 1 || i > end-start || len(r) != len(cols)+1 {
				return nil, fmt.Errorf("read current rows of %s: unexpected row %q", tg, r)
			}
			out[strings.Join(keys[start+i-1], "\x00")] = r[1:]
		}
		start = end
	}
	return out, nil
}

// rows encodes the rows t writes to tg, as TabSeparated in the order of
// tg's columns and then the applier's: each key's last state, a deletion
// with its key alone, values the batch does not know read from the
// target's current rows.
func (a *Applier) rows(ctx context.Context, t *batchTable, tg *target) ([]byte, error) {
	// Which columns each key takes from the target, and which keys.
	need := map[string]bool{}
	var from [][]string
	seen := map[string]bool{}
	for _, s := range t.touched {
		if s.gone || s.from == nil {
			continue
		}
		wants := false
		for _, c := range tg.cols {
			if v, ok := s.row[c.name]; !ok || v.Unchanged {
				need[c.name], wants = true, true
			}
		}
		if id := strings.Join(s.from, "\x00"); wants && !seen[id] {
			seen[id] = true
			from = append(from, s.from)
		}
	}
	var cols []string
	for _, c := range tg.cols {
		if need[c.name] {
			cols = append(cols, c.name)
		}
	}
	var found map[string][][]byte
	if len(from) > 0 {
		var err error
		if found, err = a.lookup(ctx, tg, from, cols); err != nil {
			return nil, err
		}
	}
	enc := rowEncoder{cols: tg.cols}
	var buf []byte
	for _, s := range t.touched {
		var old [][]byte
		if s.from != nil {
			old = found[strings.Join(s.from, "\x00")]
		}
		if old == nil && s.inSnap && !s.gone && slices.ContainsFunc(tg.cols, func(c column) bool { v, ok := s.row[c.name]; return ok && v.Unchanged }) {
			// A snapshot is under way and its chunk of the row, of a
			// later version, brings the value: the row is left to it.
			continue
		}
		for i := range tg.cols {
			c := &tg.cols[i]
			if i > 0 {
				buf = append(buf, '\t')
			}
			var err error
			v, ok := s.row[c.name]
			if k := slices.Index(t.key, c.name); s.gone && k >= 0 {
				v, ok = protocol.Text(s.vals[k]), true
			}
			switch {
			case s.gone && !ok:
				buf = appendZero(buf, c)
			case !ok || v.Unchanged:
				j := slices.Index(cols, c.name)
				switch {
				case old != nil:
					buf = append(buf, old[j]...)
				case v.Unchanged:
					return nil, fmt.Errorf("%s: an update leaves column %q unchanged (TOAST), which no earlier change of the batch holds, and the target has no row with key %v to keep it from: the target is missing rows of the source (load a snapshot first)",
						tg, c.name, s.from)
				default: // a column the change did not carry, of a row the target does not hold
					buf, err = enc.appendValue(buf, c, nil, true)
				}
			default:
				buf, err = enc.appendValue(buf, c, []byte(v.Text), v.Null)
			}
			if err != nil {
				return nil, fmt.Errorf("%s, column %q of key %v: %w", tg, c.name, s.vals, err)
			}
		}
		deleted := byte('0')
		if s.gone {
			deleted = '1'
		}
		buf = fmt.Appendf(buf, "\t%d\t%d\t%c\n", s.lsn, s.index, deleted)
	}
	return buf, nil
}

// stageDeletions stages the deletion, at version lsn and index, of every
// key the target holds (of a version below before, when not 0) that the
// batch does not write (those rows are in the staging table already, if
// written): a truncate deletes every row, a snapshot the rows from before
// it, which it reads again.
func (a *Applier) stageDeletions(ctx context.Context, tg *target, stage string, written bool, lsn uint64, index int, before uint64) error {
	key := strings.Join(quoteAll(tg.sorting), ", ") // the key columns, also of a batch that writes no row
	q := fmt.Sprintf("INSERT INTO %s (%s, %s, %s, %s) SELECT %s, %d, %d, 1 FROM %s FINAL WHERE %s = 0",
		tableIdent(tg.db, stage), key, colVersion, colIndex, colDeleted, key, lsn, index, tg.ident(), colDeleted)
	if before > 0 {
		q += fmt.Sprintf(" AND %s < %d", colVersion, before)
	}
	if written {
		q += " AND tuple(" + key + ") NOT IN (SELECT " + key + " FROM " + tableIdent(tg.db, stage) + ")"
	}
	return a.cl.Exec(ctx, q)
}

// quoteAll quotes each name.
func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = quoteIdent(n)
	}
	return out
}

// appendZero appends the value a deletion's row holds in a column that is
// not part of the key: NULL, or the type's zero when it cannot be NULL.
func appendZero(dst []byte, c *column) []byte {
	switch {
	case c.nullable:
		return append(dst, '\\', 'N')
	case c.enc.kind == encList:
		return append(dst, '[', ']')
	case c.enc.kind == encString || c.enc.kind == encBytes:
		return dst
	case c.enc.kind == encRaw && c.enc.quote: // UUID
		return append(dst, "00000000-0000-0000-0000-000000000000"...)
	case c.enc.kind == encDate:
		return append(dst, "1970-01-01"...)
	case c.enc.kind == encDateTime64:
		return append(dst, "1970-01-01 00:00:00.000000"...)
	case c.enc.kind == encBool && c.enc.boolText:
		return append(dst, "false"...)
	}
	return append(dst, '0')
}
