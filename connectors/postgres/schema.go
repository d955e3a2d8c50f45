package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/protocol"
)

// pgTypeInfo is what the catalog says of one column and its type.
type pgTypeInfo struct {
	name    string // the column's type as format_type renders it, with its modifier
	base    string // the base type's name in pg_catalog (a domain resolved), such as "numeric" or "_int4"
	typmod  int32  // the modifier, -1 when none (a domain's own modifier when the column has none)
	array   bool   // base is an array type
	elem    string // the element type's name for an array (a domain resolved)
	elemMod int32  // the element domain's modifier, -1 when none
	notNull bool
	attnum  int    // the column's number, 0 when the catalog no longer has a column of that name
	gen     bool   // a generated column: expr is its expression
	expr    string // the default or generation expression, as pg_get_expr renders it
	// portable reports that the default refers to no sequence and no
	// function of the database's own (only to built-in objects and types).
	portable bool
	// backfill is the value, as a literal cast to the column's type, that
	// rows older than the column have (attmissingval), "" when none.
	backfill string
}

// RelationColumn is a table's column as logical replication describes it
// (a column of pgoutput's Relation message): its name, type OID and type
// modifier.
type RelationColumn struct {
	Name    string
	Type    uint32
	TypeMod int32
}

// describeSQL describes columns given as arrays of names ($2), type OIDs
// ($3) and modifiers ($4) of the table with OID $1, in the given order:
// each column's type (format_type of the given type and modifier), NOT
// NULL flag, number, generated flag and default or generation expression
// and the value rows older than the column have (attmissingval, as a
// literal cast to its type) (from the catalog, by name: none when the
// table has no such column any more), the base type (domains resolved, to any depth) and its modifier,
// and the element type (and the element domain's modifier) of an array.
// A default is portable when it depends on no relation but its own table
// and on no function that is not built in (built-in objects are pinned:
// pg_depend records no dependency on them).
const describeSQL = `
WITH RECURSIVE cols AS (
	SELECT m.ord, m.name, m.typ, m.mod, format_type(m.typ, m.mod) AS native,
		coalesce(a.attnotnull, false) AS notnull, coalesce(a.attnum, 0)::int AS attnum,
		coalesce(a.attgenerated = 's', false) AS gen,
		coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS expr,
		d.oid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_depend x
			WHERE x.classid = 'pg_attrdef'::regclass AND x.objid = d.oid
			AND x.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass)
			AND NOT (x.refclassid = 'pg_class'::regclass AND x.refobjid = d.adrelid)) AS portable,
		CASE WHEN a.atthasmissing THEN quote_nullable((a.attmissingval::text::text[])[1]) || '::' || format_type(m.typ, m.mod) END AS backfill
	FROM unnest($2::text[], $3::oid[], $4::int4[]) WITH ORDINALITY AS m(name, typ, mod, ord)
	LEFT JOIN pg_attribute a ON a.attrelid = $1 AND a.attname = m.name AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
), base AS (
	SELECT c.ord, t.oid AS typ, c.mod AS typmod, t.typtype, t.typbasetype, t.typtypmod, 0 AS depth
	FROM cols c JOIN pg_type t ON t.oid = c.typ
	UNION ALL
	SELECT b.ord, t.oid, CASE WHEN b.typmod = -1 THEN b.typtypmod ELSE b.typmod END, t.typtype, t.typbasetype, t.typtypmod, b.depth + 1
	FROM base b JOIN pg_type t ON t.oid = b.typbasetype WHERE b.typtype = 'd'
)
SELECT c.name, c.native, c.notnull, b.typmod, bt.typname, bt.typcategory = 'A' AND bt.typelem <> 0,
	coalesce(el.typname, ''), coalesce(el.typmod, -1), c.attnum, c.gen, c.expr, c.portable, coalesce(c.backfill, '')
FROM cols c JOIN base b ON b.ord = c.ord AND b.typtype <> 'd'
JOIN pg_type bt ON bt.oid = b.typ
LEFT JOIN LATERAL (
	WITH RECURSIVE e AS (
		SELECT t.typname, t.typtype, t.typbasetype, t.typtypmod AS typmod FROM pg_type t WHERE t.oid = bt.typelem
		UNION ALL
		SELECT t.typname, t.typtype, t.typbasetype, CASE WHEN e.typmod = -1 THEN t.typtypmod ELSE e.typmod END
		FROM e JOIN pg_type t ON t.oid = e.typbasetype WHERE e.typtype = 'd')
	SELECT typname, typmod FROM e WHERE typtype <> 'd' LIMIT 1) el ON bt.typelem <> 0
ORDER BY c.ord`

// DescribeTable describes columns of the table with OID oid from the
// catalog: every column in table order (generated ones included) when
// columns is nil, else the given ones in the given order. Each column gets
// its logical type (see logicalType), Native name, NotNull, ID (its
// attnum), and its Default or Generated expression (a default that refers
// to a sequence or to a function of the database's own is left out). The
// table's primary key becomes the schema's Key when every key column is
// among the columns. q is a connection or a transaction.
func DescribeTable(ctx context.Context, q Querier, oid uint32, columns []string) (*protocol.Schema, error) {
	rows, err := q.Query(ctx, `SELECT attname, atttypid, atttypmod FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND ($2::text[] IS NULL OR attname = ANY ($2))
		ORDER BY attnum`, oid, columns)
	if err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	var rel []RelationColumn
	var c RelationColumn
	if _, err := pgx.ForEachRow(rows, []any{&c.Name, &c.Type, &c.TypeMod}, func() error { rel = append(rel, c); return nil }); err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	if columns != nil {
		byName := make(map[string]RelationColumn, len(rel))
		for _, c := range rel {
			byName[c.Name] = c
		}
		rel = rel[:0]
		for _, name := range columns {
			c, ok := byName[name]
			if !ok {
				return nil, fmt.Errorf("describe columns: the table has no column %q", name)
			}
			rel = append(rel, c)
		}
	}
	sc, err := describe(ctx, q, oid, rel)
	if err != nil {
		return nil, err
	}
	krows, err := q.Query(ctx, `SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey[0:i.indnkeyatts-1]) WITH ORDINALITY AS k(attnum, n)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n`, oid)
	if err != nil {
		return nil, fmt.Errorf("look up primary key: %w", err)
	}
	key, err := pgx.CollectRows(krows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up primary key: %w", err)
	}
	names := sc.Names()
	if len(key) > 0 && !slices.ContainsFunc(key, func(k string) bool { return !slices.Contains(names, k) }) {
		sc.Key = key
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	return sc, nil
}

// DescribeRelation describes the columns of the table with OID oid as
// logical replication gave them (a Relation message), in their order: the
// type of each is the one given (format_type of its OID and modifier),
// mapped to a logical type as DescribeTable does; NotNull, ID and Default
// come from the catalog by name (a column the catalog no longer has under
// that name gets none of them). The table's generated columns, which
// logical replication does not send, are added from the catalog at their
// place in table order, with Generated set. Key is left empty: the caller
// knows the key its events use.
func DescribeRelation(ctx context.Context, q Querier, oid uint32, columns []RelationColumn) (*protocol.Schema, error) {
	sc, err := describe(ctx, q, oid, columns)
	if err != nil {
		return nil, err
	}
	gen, err := DescribeTable(ctx, q, oid, nil)
	if err != nil {
		return nil, err
	}
	for _, g := range gen.Columns {
		if g.Generated == "" || slices.ContainsFunc(sc.Columns, func(c protocol.Column) bool { return c.Name == g.Name }) {
			continue
		}
		// Before the first column of a greater number.
		i := slices.IndexFunc(sc.Columns, func(c protocol.Column) bool { return c.ID > g.ID })
		if i < 0 {
			i = len(sc.Columns)
		}
		sc.Columns = slices.Insert(sc.Columns, i, g)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	return sc, nil
}

// describe runs describeSQL for the given columns of table oid.
func describe(ctx context.Context, q Querier, oid uint32, columns []RelationColumn) (*protocol.Schema, error) {
	names := make([]string, len(columns))
	types := make([]uint32, len(columns))
	mods := make([]int32, len(columns))
	for i, c := range columns {
		names[i], types[i], mods[i] = c.Name, c.Type, c.TypeMod
	}
	rows, err := q.Query(ctx, describeSQL, oid, names, types, mods)
	if err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	sc := &protocol.Schema{System: Kind}
	var name string
	var ti pgTypeInfo
	_, err = pgx.ForEachRow(rows, []any{&name, &ti.name, &ti.notNull, &ti.typmod, &ti.base, &ti.array, &ti.elem, &ti.elemMod,
		&ti.attnum, &ti.gen, &ti.expr, &ti.portable, &ti.backfill}, func() error {
		col := logicalType(ti)
		col.Name = name
		sc.Columns = append(sc.Columns, col)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	if len(sc.Columns) != len(columns) {
		return nil, fmt.Errorf("describe columns: %d of %d columns have a type the catalog knows", len(sc.Columns), len(columns))
	}
	return sc, nil
}

// scalarTypes maps the base types with a lossless logical type.
var scalarTypes = map[string]protocol.ColumnType{
	"bool":        protocol.TypeBool,
	"int2":        protocol.TypeInt16,
	"int4":        protocol.TypeInt32,
	"int8":        protocol.TypeInt64,
	"float4":      protocol.TypeFloat32,
	"float8":      protocol.TypeFloat64,
	"numeric":     protocol.TypeDecimal,
	"text":        protocol.TypeString,
	"varchar":     protocol.TypeString,
	"bpchar":      protocol.TypeString,
	"name":        protocol.TypeString,
	"bytea":       protocol.TypeBytes,
	"date":        protocol.TypeDate,
	"time":        protocol.TypeTime,
	"timestamp":   protocol.TypeTimestamp,
	"timestamptz": protocol.TypeTimestampTZ,
	"json":        protocol.TypeJSON,
	"jsonb":       protocol.TypeJSON,
	"uuid":        protocol.TypeUUID,
}

// logicalType describes a column: its type mapped to a logical type: integers, floats,
// bool, bytea, date, time, timestamp, timestamptz, uuid to their own;
// text, varchar, char and name to string; json and jsonb to json; numeric
// to decimal with the modifier's precision and scale (precision 0 for a
// bare numeric, and string for the modifiers PostgreSQL 15 allows that a
// decimal cannot express: a negative scale, or one above the precision);
// an array to a list of its element type (the column's modifier applies to
// the elements); every other type (enums, inet, interval, money, timetz,
// ranges, composites, ...) to string, which holds its text form exactly. A
// domain is mapped as its base type. Native is always the column's type
// as format_type renders it. The column's number becomes its ID, and its
// expression its Generated one, or its Default when portable; the value
// that rows older than the column have its Backfill.
func logicalType(ti pgTypeInfo) protocol.Column {
	col := protocol.Column{Native: ti.name, NotNull: ti.notNull, ID: ti.attnum, Backfill: ti.backfill}
	switch {
	case ti.gen:
		col.Generated = ti.expr
	case ti.portable:
		col.Default = ti.expr
	}
	if ti.array {
		mod := ti.typmod
		if mod == -1 {
			mod = ti.elemMod
		}
		elem := scalarType(ti.elem, mod)
		elem.Name = "element"
		col.Type = protocol.TypeList
		col.Elem = &elem
		return col
	}
	s := scalarType(ti.base, ti.typmod)
	col.Type, col.Precision, col.Scale = s.Type, s.Precision, s.Scale
	return col
}

func scalarType(base string, typmod int32) protocol.Column {
	t, ok := scalarTypes[base]
	if !ok {
		return protocol.Column{Type: protocol.TypeString}
	}
	if t != protocol.TypeDecimal || typmod < 4 {
		return protocol.Column{Type: t}
	}
	// numeric's modifier: ((precision << 16) | scale) + 4, the scale an
	// 11-bit signed number since PostgreSQL 15.
	m := typmod - 4
	precision := int(m>>16) & 0xffff
	scale := int(m & 0x7ff)
	if scale >= 0x400 {
		scale -= 0x800
	}
	if scale < 0 || scale > precision {
		return protocol.Column{Type: protocol.TypeString}
	}
	return protocol.Column{Type: t, Precision: precision, Scale: scale}
}
