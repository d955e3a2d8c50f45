package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
)

// cardinalityViolation is the SQLSTATE of an upsert that meets a key twice
// ("ON CONFLICT DO UPDATE command cannot affect row a second time").
const cardinalityViolation = "21000"

// mergeStaged merges the staged rows of a window into target by key
// (connectors.CommitRequest.Merge), inside the commit's transaction: of
// the staged rows the newest of each key (greatest delta column) is
// taken; one whose deleted column is true deletes the target's row of its
// key unless that row is newer; the others are inserted, or update the
// target's row of their key unless it is newer (INSERT ... ON CONFLICT on
// the key's unique index). It returns the rows deleted. The target needs
// a unique index (or primary key) on exactly the key columns; one this
// commit created gets one.
//
// Without a deleted column the staged rows are first upserted as they
// are, which is what a window of a table keyed by the merge key holds
// (each key once): PostgreSQL refuses an upsert that meets a key twice
// (cardinality_violation), and only then is the newest row of each key
// picked (DISTINCT ON, a sort of the staged rows), after a rollback to a
// savepoint.
func (s *Sink) mergeStaged(ctx context.Context, tx pgx.Tx, target, rowsT pgx.Identifier, cols []string, req connectors.CommitRequest, created bool) (int64, error) {
	m := req.Merge
	for _, c := range append(slices.Clone(m.Key), req.DeltaColumn, m.Deleted) {
		if c != "" && !slices.Contains(cols, c) {
			return 0, connectors.Permanent(fmt.Errorf("merge by key: the staged rows have no column %q", c))
		}
	}
	if err := s.ensureUniqueKey(ctx, tx, target, m.Key, created); err != nil {
		return 0, err
	}
	types, err := columnTypes(ctx, tx, target)
	if err != nil {
		return 0, err
	}
	staged, err := columnTypes(ctx, tx, rowsT)
	if err != nil {
		return 0, err
	}
	q := func(c string) string { return pgx.Identifier{c}.Sanitize() }
	var casts, names, keys, sets []string
	for _, c := range cols {
		t, ok := types[c]
		if !ok {
			return 0, connectors.Permanent(fmt.Errorf("%s has no column %q, which the source sends", target.Sanitize(), c))
		}
		cast := q(c)
		if staged[c] != t {
			cast += "::" + t + " AS " + q(c) // staged as text: cast to the target's type
		}
		casts = append(casts, cast)
		names = append(names, q(c))
		if !slices.Contains(m.Key, c) {
			sets = append(sets, q(c)+" = EXCLUDED."+q(c))
		}
	}
	for _, k := range m.Key {
		keys = append(keys, q(k))
	}
	d := q(req.DeltaColumn)
	// A target loaded without types holds the delta column as text: its
	// values compare as what they are.
	dv := func(tbl string) string { return tbl + "." + d }
	if types[req.DeltaColumn] == "text" {
		as := "::timestamptz"
		if req.Window != nil && req.Window.Values {
			as = "::numeric"
		}
		dv = func(tbl string) string { return "(" + tbl + "." + d + ")" + as }
	}
	rows := "SELECT " + strings.Join(casts, ", ") + " FROM " + rowsT.Sanitize()
	newest := "SELECT DISTINCT ON (" + strings.Join(keys, ", ") + ") * FROM (" + rows + ") x ORDER BY " + strings.Join(keys, ", ") + ", " + dv("x") + " DESC"
	conflict := "DO NOTHING"
	if len(sets) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(sets, ", ") + " WHERE cur." + d + " IS NULL OR " + dv("cur") + " <= " + dv("EXCLUDED")
	}
	upsert := func(from, where string) string {
		return "INSERT INTO " + target.Sanitize() + " AS cur (" + strings.Join(names, ", ") + ") SELECT " + strings.Join(names, ", ") +
			" FROM " + from + where + " ON CONFLICT (" + strings.Join(keys, ", ") + ") " + conflict
	}
	if m.Deleted == "" {
		if _, err := tx.Exec(ctx, "SAVEPOINT sluice_merge"); err != nil {
			return 0, err
		}
		_, err := tx.Exec(ctx, upsert("("+rows+") m", ""))
		if err == nil {
			return 0, nil
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != cardinalityViolation {
			return 0, fmt.Errorf("merge staged rows by %s: %w", strings.Join(m.Key, ", "), err)
		}
		// A key twice among the staged rows: merge the newest of each.
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT sluice_merge"); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, upsert("("+newest+") m", "")); err != nil {
			return 0, fmt.Errorf("merge staged rows by %s: %w", strings.Join(m.Key, ", "), err)
		}
		return 0, nil
	}
	var on []string
	for _, k := range keys {
		on = append(on, "t."+k+" = m."+k)
	}
	del := "coalesce(m." + q(m.Deleted) + "::boolean, false)"
	gone := "DELETE FROM " + target.Sanitize() + " t USING m WHERE " + del + " AND " + strings.Join(on, " AND ") +
		" AND (t." + d + " IS NULL OR " + dv("t") + " <= " + dv("m") + ") RETURNING 1"
	sql := "WITH m AS (" + newest + "), gone AS (" + gone + "), up AS (" + upsert("m", " WHERE NOT "+del) +
		" RETURNING 1) SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM up)"
	var deleted, upserted int64
	if err := tx.QueryRow(ctx, sql).Scan(&deleted, &upserted); err != nil {
		return 0, fmt.Errorf("merge staged rows by %s: %w", strings.Join(m.Key, ", "), err)
	}
	return deleted, nil
}

// ensureUniqueKey makes sure target has a unique index on exactly the key
// columns, which INSERT ... ON CONFLICT needs: it creates one on a table
// this commit created, and refuses any other table without one.
func (s *Sink) ensureUniqueKey(ctx context.Context, tx pgx.Tx, target pgx.Identifier, key []string, created bool) error {
	sorted := slices.Sorted(slices.Values(key))
	var ok bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
		AND i.indnkeyatts = $3 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
			WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) = $2::text[])`, target.Sanitize(), sorted, len(sorted)).Scan(&ok)
	if err != nil || ok {
		return err
	}
	keys := make([]string, len(key))
	for i, k := range key {
		keys[i] = pgx.Identifier{k}.Sanitize()
	}
	if !created {
		return connectors.Permanent(fmt.Errorf("merge by key needs a unique index (or primary key) on (%s) of %s: CREATE UNIQUE INDEX ON %s (%s)",
			strings.Join(key, ", "), target.Sanitize(), target.Sanitize(), strings.Join(keys, ", ")))
	}
	_, err = tx.Exec(ctx, "CREATE UNIQUE INDEX ON "+target.Sanitize()+" ("+strings.Join(keys, ", ")+")")
	return err
}

// columnTypes returns the type (with its modifier) of every column of t.
func columnTypes(ctx context.Context, q querier, t pgx.Identifier) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, t.Sanitize())
	if err != nil {
		return nil, err
	}
	types := map[string]string{}
	var name, typ string
	_, err = pgx.ForEachRow(rows, []any{&name, &typ}, func() error { types[name] = typ; return nil })
	return types, err
}
