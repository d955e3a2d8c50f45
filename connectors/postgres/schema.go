package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/protocol"
)

// pgTypeInfo is what the catalog says of one column's type.
type pgTypeInfo struct {
	name    string // the column's type as format_type renders it, with its modifier
	base    string // the base type's name in pg_catalog (a domain resolved), such as "numeric" or "_int4"
	typmod  int32  // the modifier, -1 when none (a domain's own modifier when the column has none)
	array   bool   // base is an array type
	elem    string // the element type's name for an array (a domain resolved)
	elemMod int32  // the element domain's modifier, -1 when none
	notNull bool
}

// schemaSQL returns, for the given columns of a table in order, the
// column's type, modifier, NOT NULL flag, and the base type (domains
// resolved, to any depth) and its element type (and the element domain's
// modifier) for arrays.
const schemaSQL = `
WITH RECURSIVE cols AS (
	SELECT a.attname, a.attnum, a.atttypid, a.atttypmod, a.attnotnull, format_type(a.atttypid, a.atttypmod) AS native
	FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = ANY ($2) AND a.attnum > 0 AND NOT a.attisdropped
), base AS (
	SELECT c.attname, t.oid AS typ, c.atttypmod AS typmod, t.typtype, t.typbasetype, t.typtypmod, 0 AS depth
	FROM cols c JOIN pg_type t ON t.oid = c.atttypid
	UNION ALL
	SELECT b.attname, t.oid, CASE WHEN b.typmod = -1 THEN b.typtypmod ELSE b.typmod END, t.typtype, t.typbasetype, t.typtypmod, b.depth + 1
	FROM base b JOIN pg_type t ON t.oid = b.typbasetype WHERE b.typtype = 'd'
)
SELECT c.attname, c.native, c.attnotnull, b.typmod, bt.typname, bt.typcategory = 'A' AND bt.typelem <> 0,
	coalesce(el.typname, ''), coalesce(el.typmod, -1)
FROM cols c JOIN base b ON b.attname = c.attname AND b.typtype <> 'd'
JOIN pg_type bt ON bt.oid = b.typ
LEFT JOIN LATERAL (
	WITH RECURSIVE e AS (
		SELECT t.typname, t.typtype, t.typbasetype, t.typtypmod AS typmod FROM pg_type t WHERE t.oid = bt.typelem
		UNION ALL
		SELECT t.typname, t.typtype, t.typbasetype, CASE WHEN e.typmod = -1 THEN t.typtypmod ELSE e.typmod END
		FROM e JOIN pg_type t ON t.oid = e.typbasetype WHERE e.typtype = 'd')
	SELECT typname, typmod FROM e WHERE typtype <> 'd' LIMIT 1) el ON bt.typelem <> 0
ORDER BY c.attnum`

// schema describes the given columns of the table oid, in the given order,
// from the catalog: see logicalType for the mapping. The table's primary
// key becomes the schema's key when every key column is among columns.
func (s *Source) schema(ctx context.Context, conn *pgx.Conn, oid uint32, columns []string) (*protocol.Schema, error) {
	rows, err := conn.Query(ctx, schemaSQL, oid, columns)
	if err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	infos := map[string]pgTypeInfo{}
	var name string
	var ti pgTypeInfo
	_, err = pgx.ForEachRow(rows, []any{&name, &ti.name, &ti.notNull, &ti.typmod, &ti.base, &ti.array, &ti.elem, &ti.elemMod}, func() error {
		infos[name] = ti
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
	}
	sc := &protocol.Schema{System: Kind}
	for _, c := range columns {
		ti, ok := infos[c]
		if !ok {
			return nil, fmt.Errorf("describe columns: table %s has no column %q", s.cfg.Table, c)
		}
		col := logicalType(ti)
		col.Name = c
		sc.Columns = append(sc.Columns, col)
	}

	krows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i
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
	if len(key) > 0 && !slices.ContainsFunc(key, func(k string) bool { return !slices.Contains(columns, k) }) {
		sc.Key = key
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("describe columns: %w", err)
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

// logicalType maps a column's type to a logical type: integers, floats,
// bool, bytea, date, time, timestamp, timestamptz, uuid to their own;
// text, varchar, char and name to string; json and jsonb to json; numeric
// to decimal with the modifier's precision and scale (precision 0 for a
// bare numeric, and string for the modifiers PostgreSQL 15 allows that a
// decimal cannot express: a negative scale, or one above the precision);
// an array to a list of its element type (the column's modifier applies to
// the elements); every other type (enums, inet, interval, money, timetz,
// ranges, composites, ...) to string, which holds its text form exactly. A
// domain is mapped as its base type. Native is always the column's type
// as format_type renders it.
func logicalType(ti pgTypeInfo) protocol.Column {
	col := protocol.Column{Native: ti.name, NotNull: ti.notNull}
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
