package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DescribeTableDef reads the TableDef of the table with OID oid from the
// catalog: the enum types of its columns (arrays of enums included), the
// collations that are not their type's default, its primary key, unique,
// exclusion and check constraints, the valid indexes that back none, and
// its identity columns with where their sequences are. Names of the
// database's own objects in the definitions are qualified as the
// session's search_path makes them: run it with search_path set to
// pg_catalog to have them all qualified. q is a connection or a
// transaction.
func DescribeTableDef(ctx context.Context, q Querier, oid uint32) (TableDef, error) {
	var d TableDef
	rows, err := q.Query(ctx, `SELECT DISTINCT n.nspname, t.typname,
			array(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = t.oid ORDER BY enumsortorder)
		FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
		JOIN pg_type t ON t.oid = CASE WHEN at.typcategory = 'A' AND at.typelem <> 0 THEN at.typelem ELSE at.oid END
		JOIN pg_namespace n ON n.oid = t.typnamespace
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'e'
		ORDER BY 1, 2`, oid)
	if err != nil {
		return d, fmt.Errorf("describe enum types: %w", err)
	}
	var e EnumDef
	if _, err := pgx.ForEachRow(rows, []any{&e.Schema, &e.Name, &e.Labels}, func() error { d.Enums = append(d.Enums, e); return nil }); err != nil {
		return d, fmt.Errorf("describe enum types: %w", err)
	}

	rows, err = q.Query(ctx, `SELECT a.attname, quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		JOIN pg_collation co ON co.oid = a.attcollation JOIN pg_namespace cn ON cn.oid = co.collnamespace
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attcollation <> t.typcollation
		ORDER BY a.attnum`, oid)
	if err != nil {
		return d, fmt.Errorf("describe collations: %w", err)
	}
	var col, coll string
	if _, err := pgx.ForEachRow(rows, []any{&col, &coll}, func() error {
		if d.Collations == nil {
			d.Collations = map[string]string{}
		}
		d.Collations[col] = coll
		return nil
	}); err != nil {
		return d, fmt.Errorf("describe collations: %w", err)
	}

	// The columns a constraint or an index refers to: its key columns
	// and those its expressions and predicate use (pg_depend).
	rows, err = q.Query(ctx, `SELECT k.conname, pg_get_constraintdef(k.oid), k.contype IN ('p', 'u', 'x'),
			array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = k.conrelid AND a.attnum > 0
				AND (a.attnum = ANY(k.conkey) OR EXISTS (SELECT FROM pg_depend d
					WHERE d.classid IN ('pg_constraint'::regclass, 'pg_class'::regclass) AND d.objid IN (k.oid, k.conindid)
					AND d.refclassid = 'pg_class'::regclass AND d.refobjid = k.conrelid AND d.refobjsubid = a.attnum))
				ORDER BY a.attnum)
		FROM pg_constraint k WHERE k.conrelid = $1 AND k.contype IN ('p', 'u', 'x', 'c')
		ORDER BY k.contype <> 'p', k.contype = 'c', k.conname`, oid)
	if err != nil {
		return d, fmt.Errorf("describe constraints: %w", err)
	}
	var c ConstraintDef
	if _, err := pgx.ForEachRow(rows, []any{&c.Name, &c.Def, &c.Indexed, &c.Columns}, func() error { d.Constraints = append(d.Constraints, c); return nil }); err != nil {
		return d, fmt.Errorf("describe constraints: %w", err)
	}

	// pg_get_indexdef starts with what the prefix column renders (for a
	// plain index of a table); the rest is the definition after the table.
	rows, err = q.Query(ctx, `SELECT ic.relname, i.indisunique, pg_get_indexdef(i.indexrelid),
			format('CREATE %sINDEX %s ON %s USING %s (', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
				quote_ident(ic.relname), quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(am.amname)),
			quote_ident(am.amname),
			array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum > 0
				AND (a.attnum = ANY(i.indkey::int2[]) OR EXISTS (SELECT FROM pg_depend d
					WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
					AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum))
				ORDER BY a.attnum)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = ic.relam
		WHERE i.indrelid = $1 AND i.indisvalid
			AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
		ORDER BY ic.relname`, oid)
	if err != nil {
		return d, fmt.Errorf("describe indexes: %w", err)
	}
	var ix IndexDef
	var full, prefix, am string
	if _, err := pgx.ForEachRow(rows, []any{&ix.Name, &ix.Unique, &full, &prefix, &am, &ix.Columns}, func() error {
		rest, ok := strings.CutPrefix(full, prefix)
		if !ok {
			return fmt.Errorf("index %s: its definition %q does not start as expected (%q)", ix.Name, full, prefix)
		}
		ix.Def = "USING " + am + " (" + rest
		d.Indexes = append(d.Indexes, ix)
		return nil
	}); err != nil {
		return d, fmt.Errorf("describe indexes: %w", err)
	}

	rows, err = q.Query(ctx, `SELECT a.attname, a.attidentity = 'a',
			coalesce(CASE WHEN has_sequence_privilege(s.seqrelid, 'SELECT') THEN pg_sequence_last_value(s.seqrelid) + s.seqincrement END, s.seqstart)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_sequence s ON s.seqrelid = pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname)::regclass
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity IN ('a', 'd')
		ORDER BY a.attnum`, oid)
	if err != nil {
		return d, fmt.Errorf("describe identity columns: %w", err)
	}
	var id IdentityDef
	if _, err := pgx.ForEachRow(rows, []any{&id.Column, &id.Always, &id.Start}, func() error { d.Identity = append(d.Identity, id); return nil }); err != nil {
		return d, fmt.Errorf("describe identity columns: %w", err)
	}
	return d, nil
}

// textCastDiffers names the columns of the table oid whose cast to text
// is a function of its own rather than the type's output function (or,
// for a domain, its base type's): a boolean's (true, not t), a
// character(n)'s (trailing blanks trimmed), an inet's or a cidr's (the
// netmask always shown), a name's or a "char"'s, a user's cast. A cast of
// any other type to text gives the text COPY's text format holds.
func textCastDiffers(ctx context.Context, q Querier, oid uint32) (map[string]bool, error) {
	rows, err := q.Query(ctx, `WITH RECURSIVE base AS (
			SELECT a.attname, a.atttypid AS t FROM pg_attribute a
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
			UNION ALL
			SELECT b.attname, ty.typbasetype FROM base b JOIN pg_type ty ON ty.oid = b.t WHERE ty.typtype = 'd')
		SELECT DISTINCT b.attname::text FROM base b JOIN pg_cast c ON c.castsource = b.t
		WHERE c.casttarget = 'pg_catalog.text'::pg_catalog.regtype AND c.castmethod <> 'b'`, oid)
	if err != nil {
		return nil, fmt.Errorf("look up the columns' casts to text: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up the columns' casts to text: %w", err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// binaryCopySafe reports whether COPY's binary format of the table's
// columns (its generated ones left out) reads the same in another
// database: not when a column's type (a domain's base type) embeds type
// OIDs that are the database's own (an array of an enum or another type
// of the database's, a composite, a range of its own) or has no binary
// form. Such a table is copied in COPY's text format instead.
func binaryCopySafe(ctx context.Context, q Querier, oid uint32) (bool, error) {
	var unsafe bool
	err := q.QueryRow(ctx, `WITH RECURSIVE base AS (
			SELECT t.oid, t.typtype, t.typbasetype FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
			UNION ALL
			SELECT t.oid, t.typtype, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.typbasetype WHERE b.typtype = 'd')
		SELECT coalesce(bool_or(t.typsend::oid = 0 OR t.typreceive::oid = 0
			OR t.oid >= 16384 AND t.typtype IN ('c', 'r', 'm')
			OR t.typcategory = 'A' AND t.typelem >= 16384), false)
		FROM base b JOIN pg_type t ON t.oid = b.oid WHERE b.typtype <> 'd'`, oid).Scan(&unsafe)
	if err != nil {
		return false, fmt.Errorf("look up the columns' binary forms: %w", err)
	}
	return !unsafe, nil
}
