package postgres

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// TablesTable is the table in which an Applier keeps what it knows of each
// source table of a pipeline: the source's description it last applied
// (protocol.ChangeEvent.Relation), against which the next one is compared,
// and whether the table stopped (the sequence of its first event not
// applied, the error, when). It lives beside OffsetsTable.
const TablesTable = "sluice_cdc_tables"

// targetTable is what Apply knows of a target table.
type targetTable struct {
	ident pgx.Identifier
	name  string
	// types maps each column to its type without modifier: values are cast
	// to it, and an assignment applies the modifier (a too long varchar
	// fails rather than being cut).
	types     map[string]string
	generated map[string]bool
	// uniques lists the column sets (sorted) of the table's immediate,
	// plain unique indexes.
	uniques [][]string
}

// schemaNote is a schema change to log once its transaction committed.
type schemaNote struct {
	msg  string
	args []any
}

// prepare returns the target of t, creating the table, or changing its
// columns to follow the source's description, as needed, and checks it can
// take t's changes. It returns a nil target for a truncate of a table that
// does not exist when tables are created on demand.
func (p *Applier) prepare(ctx context.Context, tx pgx.Tx, s *session, t *tableChanges) (*targetTable, []schemaNote, error) {
	schema := p.cfg.Schema
	if schema == "" {
		schema = t.schema
	}
	id := schema + "\x00" + t.table
	name := schema + "." + t.table
	tg := s.tables[id]
	var notes []schemaNote
	if tg == nil {
		var err error
		if tg, err = loadTarget(ctx, tx, schema, t.table); err != nil {
			return nil, nil, err
		}
	}
	rel := t.relation
	if rel != nil && len(t.key) > 0 && !slices.Equal(rel.Key, t.key) {
		c := *rel
		c.Key = t.key
		rel = &c
	}
	if rel != nil && rel.Validate() != nil {
		rel = nil // not a description DDL can follow: columns are added as text
	}
	st := p.source(t.schema + "\x00" + t.table)
	if tg == nil {
		if !p.cfg.CreateTables {
			return nil, nil, connectors.Permanent(fmt.Errorf("target table %s (of source table %s) does not exist: create it, with a primary key on the source's key columns, or enable create_tables", name, t.name()))
		}
		if len(t.order) == 0 {
			return nil, nil, nil // only a truncate: nothing to do on a table that does not exist
		}
		ident := pgx.Identifier{schema, t.table}
		// Lanes of a Parallel applier may create the schema at once: one
		// at a time, or the second fails on the first's catalog row.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('sluice_cdc_apply_schema'), hashtext($1))", schema); err != nil {
			return nil, nil, fmt.Errorf("lock schema %q: %w", schema, err)
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, nil, fmt.Errorf("create schema %q: %w", schema, err)
		}
		if rel != nil {
			if err := CreateTable(ctx, tx, ident, rel, DDLOptions{PrimaryKey: true, Generated: true}); err != nil {
				return nil, nil, fmt.Errorf("create target table %s: %w", name, err)
			}
			if err := p.storeRelation(ctx, tx, t, st, rel); err != nil {
				return nil, nil, err
			}
			notes = append(notes, schemaNote{"cdc apply: created target table with the source's types", []any{"table", name, "primary_key", rel.Key}})
		} else {
			var defs []string
			for _, c := range t.cols {
				defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
			}
			defs = append(defs, "PRIMARY KEY ("+idents(t.key)+")")
			if _, err := tx.Exec(ctx, "CREATE TABLE "+ident.Sanitize()+" ("+strings.Join(defs, ", ")+")"); err != nil {
				return nil, nil, fmt.Errorf("create target table %s: %w", name, err)
			}
			notes = append(notes, schemaNote{"cdc apply: created target table (columns as text: the events carry no description of the source table)", []any{"table", name, "primary_key", t.key}})
		}
		var err error
		if tg, err = loadTarget(ctx, tx, schema, t.table); err != nil {
			return nil, nil, err
		}
		if tg == nil {
			return nil, nil, fmt.Errorf("target table %s vanished after creation", name)
		}
	} else if rel != nil && !sameRelation(st.relation, rel) {
		applied, n, err := alterTarget(ctx, tx, tg, st.relation, rel)
		if err != nil {
			return nil, nil, err
		}
		notes = append(notes, n...)
		if err := p.storeRelation(ctx, tx, t, st, applied); err != nil {
			return nil, nil, err
		}
		if len(n) > 0 {
			if tg, err = loadTarget(ctx, tx, schema, t.table); err != nil {
				return nil, nil, err
			}
		}
	}
	if slices.ContainsFunc(t.cols, func(c string) bool { _, ok := tg.types[c]; return !ok }) {
		// A column may have been added to the target since it was loaded.
		var err error
		if tg, err = loadTarget(ctx, tx, schema, t.table); err != nil {
			return nil, nil, err
		}
		if tg == nil {
			return nil, nil, connectors.Permanent(fmt.Errorf("target table %s (of source table %s) was dropped", name, t.name()))
		}
	}
	s.tables[id] = tg
	for _, c := range t.cols {
		if _, ok := tg.types[c]; ok {
			if tg.generated[c] {
				return nil, nil, connectors.Permanent(fmt.Errorf("column %q of target table %s is generated: it cannot take the source's values", c, name))
			}
			continue
		}
		if _, err := tx.Exec(ctx, "ALTER TABLE "+tg.ident.Sanitize()+" ADD COLUMN IF NOT EXISTS "+pgx.Identifier{c}.Sanitize()+" text"); err != nil {
			return nil, nil, fmt.Errorf("add column %q to target table %s: %w", c, name, err)
		}
		tg.types[c] = "text"
		notes = append(notes, schemaNote{"cdc apply: added a column that appeared in the source's events (as text: no description of it came with them)", []any{"table", name, "column", c}})
	}
	if len(t.order) > 0 {
		key := slices.Sorted(slices.Values(t.key))
		if !slices.ContainsFunc(tg.uniques, func(u []string) bool { return slices.Equal(u, key) }) {
			return nil, nil, connectors.Permanent(fmt.Errorf("target table %s has no primary key or unique index on exactly the source's key columns %v: add one", name, t.key))
		}
	}
	return tg, notes, nil
}

// alterTarget changes the columns of target table tg from the source's
// description old (nil when none was applied) to rel: columns of old that
// rel lacks are dropped, renamed ones (the same ID under another name)
// renamed, retyped ones (another type) altered with a cast of their
// values, NOT NULL and defaults changed, and new ones added with their
// type and default, the rows the target has taking the column's Backfill
// (so a constant default reaches them, as it did at the source, even when
// the default changed since). Without old it only adds the columns of rel
// the target lacks: the target's columns are not known to be the
// source's. A change the target refuses (a cast that fails on a value) is
// an error naming the table and the column.
//
// The catalog describes a table as it is when the reader meets the
// change, which may be ahead of the events applied so far: NOT NULL is
// set only when the target's rows allow it, and otherwise left for a later
// description. It returns rel as applied (without the NOT NULL that could
// not be set yet), to be compared with the next description, and a note
// per change.
func alterTarget(ctx context.Context, tx pgx.Tx, tg *targetTable, old, rel *protocol.Schema) (*protocol.Schema, []schemaNote, error) {
	unknown, err := UnknownTypes(ctx, tx, rel)
	if err != nil {
		return nil, nil, fmt.Errorf("target table %s: %w", tg.name, err)
	}
	alter := "ALTER TABLE " + tg.ident.Sanitize() + " "
	has := func(c string) bool { _, ok := tg.types[c]; return ok }
	var notes []schemaNote
	note := func(what, col string, args ...any) {
		notes = append(notes, schemaNote{"cdc apply: " + what + " a column, following the source table", append([]any{"table", tg.name, "column", col}, args...)})
	}
	exec := func(sql, what string, col string, args ...any) error {
		if _, err := tx.Exec(ctx, alter+sql); err != nil {
			return fmt.Errorf("%s column %q of target table %s, following the source table: %w", what, col, tg.name, err)
		}
		note(what, col, args...)
		return nil
	}
	applied := *rel
	applied.Columns = slices.Clone(rel.Columns)
	// notNull sets NOT NULL on column j of rel when the target's rows
	// allow it; else it leaves it for a later description.
	notNull := func(j int) error {
		c := rel.Columns[j]
		sql := alter + "ALTER COLUMN " + pgx.Identifier{c.Name}.Sanitize() + " SET NOT NULL"
		_, err := tx.Exec(ctx, "SAVEPOINT sluice_not_null; "+sql+"; RELEASE SAVEPOINT sluice_not_null")
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23502" {
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT sluice_not_null; RELEASE SAVEPOINT sluice_not_null"); err != nil {
				return fmt.Errorf("target table %s: %w", tg.name, err)
			}
			applied.Columns[j].NotNull = false
			note("left NOT NULL for later (rows of the target hold NULL yet) on", c.Name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("set NOT NULL on column %q of target table %s, following the source table: %w", c.Name, tg.name, err)
		}
		note("set NOT NULL on", c.Name)
		return nil
	}
	setDefault := func(c protocol.Column, from string) error {
		if c.Default == from {
			return nil
		}
		name := pgx.Identifier{c.Name}.Sanitize()
		if c.Default == "" {
			return exec("ALTER COLUMN "+name+" DROP DEFAULT", "dropped the default of", c.Name)
		}
		return exec("ALTER COLUMN "+name+" SET DEFAULT "+c.Default, "set the default of", c.Name)
	}
	matched := map[int]bool{} // indexes in old.Columns
	var added, kept []int     // indexes in rel.Columns
	match := matchColumns(old, rel)
	for j, i := range match {
		if i < 0 {
			added = append(added, j)
			continue
		}
		matched[i] = true
		kept = append(kept, j)
	}
	if old != nil {
		for i, c := range old.Columns {
			if matched[i] || !has(c.Name) {
				continue
			}
			if err := exec("DROP COLUMN "+pgx.Identifier{c.Name}.Sanitize(), "dropped", c.Name); err != nil {
				return nil, nil, err
			}
			delete(tg.types, c.Name)
		}
	}
	for _, j := range kept {
		o, c := old.Columns[match[j]], rel.Columns[j]
		name := pgx.Identifier{c.Name}.Sanitize()
		if o.Name != c.Name && has(o.Name) && !has(c.Name) {
			if err := exec("RENAME COLUMN "+pgx.Identifier{o.Name}.Sanitize()+" TO "+name, "renamed", c.Name, "from", o.Name); err != nil {
				return nil, nil, err
			}
			tg.types[c.Name] = tg.types[o.Name]
			delete(tg.types, o.Name)
		}
		if !has(c.Name) {
			added = append(added, j)
			continue
		}
		if c.Generated != "" || o.Generated != "" {
			continue // computed by the target
		}
		oldType, _, errO := ColumnType(o, old.System, unknown)
		newType, native, errN := ColumnType(c, rel.System, unknown)
		if err := errors.Join(errO, errN); err != nil {
			return nil, nil, fmt.Errorf("target table %s: %w", tg.name, err)
		}
		if oldType != newType {
			if err := exec("ALTER COLUMN "+name+" TYPE "+newType+" USING "+name+"::"+newType, "retyped", c.Name, "from", oldType, "to", newType); err != nil {
				return nil, nil, err
			}
		}
		switch {
		case o.NotNull && !c.NotNull:
			if err := exec("ALTER COLUMN "+name+" DROP NOT NULL", "dropped NOT NULL of", c.Name); err != nil {
				return nil, nil, err
			}
		case !o.NotNull && c.NotNull:
			if err := notNull(j); err != nil {
				return nil, nil, err
			}
		}
		if native {
			if err := setDefault(c, o.Default); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, j := range added {
		c := rel.Columns[j]
		if has(c.Name) {
			continue
		}
		typ, native, err := ColumnType(c, rel.System, unknown)
		if err != nil {
			return nil, nil, fmt.Errorf("target table %s: %w", tg.name, err)
		}
		def := pgx.Identifier{c.Name}.Sanitize() + " " + typ
		filled := ""
		switch {
		case native && c.Generated != "":
			def += " GENERATED ALWAYS AS (" + c.Generated + ") STORED"
		case native && c.Backfill != "":
			def += " DEFAULT " + c.Backfill
			filled = c.Backfill
		}
		if err := exec("ADD COLUMN "+def, "added", c.Name, "definition", def); err != nil {
			return nil, nil, err
		}
		tg.types[c.Name] = typ
		if native && c.Generated == "" {
			if err := setDefault(c, filled); err != nil {
				return nil, nil, err
			}
		}
		if c.NotNull {
			if err := notNull(j); err != nil {
				return nil, nil, err
			}
		}
	}
	return &applied, notes, nil
}

// sameRelation reports whether the description applied, old, is rel's,
// Backfill values aside (they matter only when a column is added, and a
// rewrite of the source table clears them). A NOT NULL that could not be
// set yet makes them differ, so the next description tries again.
func sameRelation(old, rel *protocol.Schema) bool {
	if old == nil || len(old.Columns) != len(rel.Columns) {
		return false
	}
	a, b := *old, *rel
	a.Columns, b.Columns = slices.Clone(old.Columns), slices.Clone(rel.Columns)
	for i := range a.Columns {
		a.Columns[i].Backfill, b.Columns[i].Backfill = "", ""
	}
	return reflect.DeepEqual(&a, &b)
}

// matchColumns finds, for each column of rel, the column of old it is (its
// index in old.Columns), or -1 for a new column: the column of the same ID
// when both IDs are known; else the one of the same name, unless both IDs
// are known (another column was added under a dropped one's name); else,
// when one of the IDs is unknown (a column renamed again before the source
// was described), the one at the same place of the same type whose name
// is gone. Each column of old is matched at most once. A nil old matches
// nothing.
func matchColumns(old, rel *protocol.Schema) []int {
	out := make([]int, len(rel.Columns))
	for j := range out {
		out[j] = -1
	}
	if old == nil {
		return out
	}
	taken := make([]bool, len(old.Columns))
	match := func(ok func(i, j int) bool) {
		for j := range rel.Columns {
			if out[j] >= 0 {
				continue
			}
			for i := range old.Columns {
				if !taken[i] && ok(i, j) {
					out[j], taken[i] = i, true
					break
				}
			}
		}
	}
	known := func(i, j int) bool { return old.Columns[i].ID != 0 && rel.Columns[j].ID != 0 }
	match(func(i, j int) bool { return known(i, j) && old.Columns[i].ID == rel.Columns[j].ID })
	match(func(i, j int) bool { return !known(i, j) && old.Columns[i].Name == rel.Columns[j].Name })
	names := make(map[string]bool, len(rel.Columns))
	for _, c := range rel.Columns {
		names[c.Name] = true
	}
	match(func(i, j int) bool {
		o, n := old.Columns[i], rel.Columns[j]
		return i == j && !known(i, j) && !names[o.Name] && o.Native == n.Native && o.String() == n.String()
	})
	return out
}

// loadTarget reads a table's columns and unique indexes; nil when the table
// does not exist.
func loadTarget(ctx context.Context, tx pgx.Tx, schema, table string) (*targetTable, error) {
	name := schema + "." + table
	var oid uint32
	err := tx.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, table).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up target table %s: %w", name, err)
	}
	tg := &targetTable{ident: pgx.Identifier{schema, table}, name: name, types: map[string]string{}, generated: map[string]bool{}}
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, NULL), attgenerated <> '' FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
	if err != nil {
		return nil, fmt.Errorf("columns of target table %s: %w", name, err)
	}
	var col, typ string
	var gen bool
	_, err = pgx.ForEachRow(rows, []any{&col, &typ, &gen}, func() error {
		tg.types[col], tg.generated[col] = typ, gen
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("columns of target table %s: %w", name, err)
	}
	rows, err = tx.Query(ctx, `SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indisvalid
			AND i.indpred IS NULL AND i.indexprs IS NULL
		GROUP BY i.indexrelid`, oid)
	if err != nil {
		return nil, fmt.Errorf("unique indexes of target table %s: %w", name, err)
	}
	if tg.uniques, err = pgx.CollectRows(rows, pgx.RowTo[[]string]); err != nil {
		return nil, fmt.Errorf("unique indexes of target table %s: %w", name, err)
	}
	for _, u := range tg.uniques {
		// ORDER BY uses the column collation; Go's order is byte order.
		slices.Sort(u)
	}
	return tg, nil
}
