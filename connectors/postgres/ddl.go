package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/protocol"
)

// Typed DDL: tables created from a protocol.Schema, with the source's
// column types, NOT NULL, defaults and primary key. A schema of this
// system (Schema.System is Kind) keeps every column's exact Native type
// (and its Default and Generated expressions), as long as the target
// database knows the type (UnknownTypes); any other column, and every
// column of another system's schema, takes the PostgreSQL type of its
// logical type (LogicalColumnType). The cdc_apply applier creates its
// replica tables this way, and the full-load sink its tables when it knows
// no other definition.

// DDLOptions says what CreateTableSQL puts beside the columns and types.
type DDLOptions struct {
	// PrimaryKey declares the schema's Key as the table's primary key.
	PrimaryKey bool
	// Generated creates a column with a Generated expression as a
	// generated column (its values computed by the target, as change
	// events do not carry them); without it the column is a plain one
	// that takes the values written to it.
	Generated bool
	// IfNotExists creates the table only when no relation of its name
	// exists.
	IfNotExists bool
	// Unknown lists the Native type names the target does not know
	// (UnknownTypes): such a column takes the type of its logical type,
	// and no default.
	Unknown map[string]bool
	// Collations gives, by column name, the collation of a column of its
	// native type whose collation is not its type's default, as an SQL
	// name (pg_catalog."C"): see TableDef.
	Collations map[string]string
}

// LogicalColumnType is the PostgreSQL type of a logical column type:
// boolean, smallint, integer, bigint, real, double precision, numeric(p,s)
// (numeric when unconstrained), text, bytea, date, time, timestamp,
// timestamptz, jsonb, uuid; a list is an array of its element's type when
// that is a scalar, else jsonb.
func LogicalColumnType(c protocol.Column) (string, error) {
	switch c.Type {
	case protocol.TypeBool:
		return "boolean", nil
	case protocol.TypeInt16:
		return "smallint", nil
	case protocol.TypeInt32:
		return "integer", nil
	case protocol.TypeInt64:
		return "bigint", nil
	case protocol.TypeFloat32:
		return "real", nil
	case protocol.TypeFloat64:
		return "double precision", nil
	case protocol.TypeDecimal:
		if c.Precision == 0 {
			return "numeric", nil
		}
		return fmt.Sprintf("numeric(%d,%d)", c.Precision, c.Scale), nil
	case protocol.TypeString:
		return "text", nil
	case protocol.TypeBytes:
		return "bytea", nil
	case protocol.TypeDate:
		return "date", nil
	case protocol.TypeTime:
		return "time", nil
	case protocol.TypeTimestamp:
		return "timestamp", nil
	case protocol.TypeTimestampTZ:
		return "timestamptz", nil
	case protocol.TypeJSON:
		return "jsonb", nil
	case protocol.TypeUUID:
		return "uuid", nil
	case protocol.TypeList:
		if c.Elem == nil {
			return "", fmt.Errorf("column %q: a list without an element type", c.Name)
		}
		if c.Elem.Type == protocol.TypeList {
			return "jsonb", nil
		}
		elem, err := LogicalColumnType(*c.Elem)
		if err != nil {
			return "", err
		}
		return elem + "[]", nil
	}
	return "", fmt.Errorf("column %q: unknown type %q", c.Name, c.Type)
}

// ColumnType is the PostgreSQL type of column c of a schema of system
// system: its Native type when system is Kind and the type is not in
// unknown, else its logical type's (LogicalColumnType). native reports
// which of the two it is.
func ColumnType(c protocol.Column, system string, unknown map[string]bool) (typ string, native bool, err error) {
	if system == Kind && c.Native != "" && !unknown[c.Native] {
		return c.Native, true, nil
	}
	typ, err = LogicalColumnType(c)
	return typ, false, err
}

// ColumnSQL is the definition of column c of a schema of system system in
// a CREATE TABLE or an ALTER TABLE ... ADD COLUMN: its quoted name, its
// type (ColumnType), NOT NULL, and, for a column of its native type, its
// default, or its generation expression (with o.Generated).
func ColumnSQL(c protocol.Column, system string, o DDLOptions) (string, error) {
	typ, native, err := ColumnType(c, system, o.Unknown)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(pgx.Identifier{c.Name}.Sanitize())
	b.WriteByte(' ')
	b.WriteString(typ)
	if coll, ok := o.Collations[c.Name]; ok && native {
		b.WriteString(" COLLATE " + coll)
	}
	if native && c.Generated != "" && o.Generated {
		b.WriteString(" GENERATED ALWAYS AS (" + c.Generated + ") STORED")
	}
	if c.NotNull {
		b.WriteString(" NOT NULL")
	}
	if native && c.Default != "" && c.Generated == "" {
		b.WriteString(" DEFAULT " + c.Default)
	}
	return b.String(), nil
}

// CreateTableSQL is the CREATE TABLE statement of table t with the columns
// of s (ColumnSQL), and its Key as the primary key with o.PrimaryKey.
func CreateTableSQL(t pgx.Identifier, s *protocol.Schema, o DDLOptions) (string, error) {
	if s == nil || len(s.Columns) == 0 {
		return "", fmt.Errorf("create table %s: no columns", t.Sanitize())
	}
	if err := s.Validate(); err != nil {
		return "", fmt.Errorf("create table %s: %w", t.Sanitize(), err)
	}
	defs := make([]string, 0, len(s.Columns)+1)
	for _, c := range s.Columns {
		d, err := ColumnSQL(c, s.System, o)
		if err != nil {
			return "", fmt.Errorf("create table %s: %w", t.Sanitize(), err)
		}
		defs = append(defs, d)
	}
	if o.PrimaryKey && len(s.Key) > 0 {
		defs = append(defs, "PRIMARY KEY ("+idents(s.Key)+")")
	}
	create := "CREATE TABLE "
	if o.IfNotExists {
		create += "IF NOT EXISTS "
	}
	return create + t.Sanitize() + " (" + strings.Join(defs, ", ") + ")", nil
}

// UnknownTypes returns the Native type names of s's columns that the
// database q is connected to does not know (to_regtype finds no type of
// that name), for DDLOptions.Unknown: an enum or a domain of the source
// that the target lacks. It asks nothing for a schema of another system.
func UnknownTypes(ctx context.Context, q Querier, s *protocol.Schema) (map[string]bool, error) {
	if s == nil || s.System != Kind {
		return nil, nil
	}
	var natives []string
	for _, c := range s.Columns {
		if c.Native != "" && !slices.Contains(natives, c.Native) {
			natives = append(natives, c.Native)
		}
	}
	if len(natives) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, "SELECT n FROM unnest($1::text[]) AS n WHERE to_regtype(n) IS NULL", natives)
	if err != nil {
		return nil, fmt.Errorf("look up column types: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up column types: %w", err)
	}
	out := make(map[string]bool, len(missing))
	for _, n := range missing {
		out[n] = true
	}
	return out, nil
}

// CreateTable creates table t from s on q: the types the target lacks are
// looked up (UnknownTypes) and replaced by their logical types, then
// CreateTableSQL is executed.
func CreateTable(ctx context.Context, q Querier, t pgx.Identifier, s *protocol.Schema, o DDLOptions) error {
	unknown, err := UnknownTypes(ctx, q, s)
	if err != nil {
		return fmt.Errorf("create table %s: %w", t.Sanitize(), err)
	}
	if len(unknown) > 0 {
		merged := make(map[string]bool, len(unknown)+len(o.Unknown))
		for k := range o.Unknown {
			merged[k] = true
		}
		for k := range unknown {
			merged[k] = true
		}
		o.Unknown = merged
	}
	sql, err := CreateTableSQL(t, s, o)
	if err != nil {
		return err
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create table %s: %w", t.Sanitize(), err)
	}
	return nil
}

// TableDef is what recreating a table exactly needs besides what a
// protocol.Schema says of its columns (native types, NOT NULL, defaults,
// generation expressions, primary key columns): the enum types its
// columns use, their collations, its constraints (primary key, unique,
// exclusion and check constraints) and the indexes that back none, and
// its identity columns. DescribeTableDef reads it from a source's
// catalog; a passthrough carries it in Schema.Native to the target, which
// creates the enums and the table first (CreateTypes, CreateTableSQL with
// the collations) and the rest once the rows are in (FinishSQL). Foreign
// keys, triggers, policies, comments and storage settings are not part
// of it.
type TableDef struct {
	Enums       []EnumDef         `json:"enums,omitempty"`
	Collations  map[string]string `json:"collations,omitempty"`
	Constraints []ConstraintDef   `json:"constraints,omitempty"`
	Indexes     []IndexDef        `json:"indexes,omitempty"`
	Identity    []IdentityDef     `json:"identity,omitempty"`
}

// EnumDef is an enum type: its schema, name and labels in order.
type EnumDef struct {
	Schema string   `json:"schema"`
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
}

// ConstraintDef is a table constraint: its name and its definition as
// pg_get_constraintdef writes it ("PRIMARY KEY (id)", "UNIQUE (a, b)
// DEFERRABLE", "CHECK ((n > 0))", "EXCLUDE USING gist (r WITH &&)").
// Indexed marks a constraint backed by an index (primary key, unique,
// exclusion), whose name, the index's, must be unique in its schema.
type ConstraintDef struct {
	Name    string `json:"name"`
	Def     string `json:"def"`
	Indexed bool   `json:"indexed,omitempty"`
	// Columns names the columns it refers to; nil when not known (a
	// definition described by an earlier release).
	Columns []string `json:"columns,omitempty"`
}

// IndexDef is an index that backs no constraint: its name and its
// definition after its table, as pg_get_indexdef writes it ("USING btree
// (lower(email)) WHERE (active)").
type IndexDef struct {
	Name   string `json:"name"`
	Unique bool   `json:"unique,omitempty"`
	Def    string `json:"def"`
	// Columns names the columns it refers to (keys, expressions,
	// predicate); nil when not known.
	Columns []string `json:"columns,omitempty"`
}

// IdentityDef is an identity column: GENERATED ALWAYS (Always) or BY
// DEFAULT, its sequence going on from Start.
type IdentityDef struct {
	Column string `json:"column"`
	Always bool   `json:"always,omitempty"`
	Start  int64  `json:"start"`
}

// DecodeTableDef decodes the TableDef a schema of this system carries in
// Native, for the columns the schema describes (see TableDef.For); an
// empty one when it carries none.
func DecodeTableDef(s *protocol.Schema) (TableDef, error) {
	var d TableDef
	if s == nil || s.System != Kind || len(s.Native) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(s.Native, &d); err != nil {
		return d, fmt.Errorf("the schema's table definition: %w", err)
	}
	return d.For(s), nil
}

// For returns d for a table of the columns s describes, which may be
// fewer than the source's or changed by a data contract (a dropped column
// is not in s; a hashed, masked, tokenized, nulled or truncated one is
// protocol.Column.Transformed): a constraint or an index that refers to
// such a column is left out (its values may no longer meet it: masked
// values repeat, truncated ones too), as are such a column's collation and
// identity, and the enum types no column of s uses any more. A
// constraint or an index whose columns are not known (described by an
// earlier release) is kept when no column of s is Transformed.
func (d TableDef) For(s *protocol.Schema) TableDef {
	cols := map[string]bool{} // present and unchanged
	changed := false
	for _, c := range s.Columns {
		if c.Transformed != "" {
			changed = true
			continue
		}
		cols[c.Name] = true
	}
	ok := func(names []string) bool {
		if names == nil {
			return !changed
		}
		for _, n := range names {
			if !cols[n] {
				return false
			}
		}
		return true
	}
	out := TableDef{}
	for _, e := range d.Enums {
		for _, c := range s.Columns {
			if c.Transformed == "" && strings.Contains(c.Native, e.Name) {
				out.Enums = append(out.Enums, e)
				break
			}
		}
	}
	for col, coll := range d.Collations {
		if cols[col] {
			if out.Collations == nil {
				out.Collations = map[string]string{}
			}
			out.Collations[col] = coll
		}
	}
	for _, c := range d.Constraints {
		if ok(c.Columns) {
			out.Constraints = append(out.Constraints, c)
		}
	}
	for _, ix := range d.Indexes {
		if ok(ix.Columns) {
			out.Indexes = append(out.Indexes, ix)
		}
	}
	for _, id := range d.Identity {
		if cols[id.Column] {
			out.Identity = append(out.Identity, id)
		}
	}
	return out
}

// CreateTypesSQL returns the statements that create, on q, the enum types
// of d the database lacks (in the same schemas, with the same labels).
func (d TableDef) CreateTypesSQL(ctx context.Context, q Querier) ([]string, error) {
	var out []string
	for _, e := range d.Enums {
		name := pgx.Identifier{e.Schema, e.Name}.Sanitize()
		var exists bool
		if err := q.QueryRow(ctx, "SELECT to_regtype($1) IS NOT NULL", name).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look up type %s: %w", name, err)
		}
		if exists {
			continue
		}
		labels := make([]string, len(e.Labels))
		for i, l := range e.Labels {
			labels[i] = quoteLiteral(l)
		}
		out = append(out, "CREATE TYPE "+name+" AS ENUM ("+strings.Join(labels, ", ")+")")
	}
	return out, nil
}

// FinishSQL returns the statements that give table t, once its rows are
// in, the constraints, indexes and identity columns of d. An index (and
// an indexed constraint) is named after base, the name of the table it
// ends up on (IndexName), so that the tables of one schema never share
// one; a check constraint keeps its name.
func (d TableDef) FinishSQL(t pgx.Identifier, base string) []string {
	var out []string
	table := t.Sanitize()
	for _, c := range d.Constraints {
		name := c.Name
		if c.Indexed {
			name = IndexName(base, c.Name)
		}
		out = append(out, "ALTER TABLE "+table+" ADD CONSTRAINT "+pgx.Identifier{name}.Sanitize()+" "+c.Def)
	}
	for _, ix := range d.Indexes {
		unique := ""
		if ix.Unique {
			unique = "UNIQUE "
		}
		out = append(out, "CREATE "+unique+"INDEX "+pgx.Identifier{IndexName(base, ix.Name)}.Sanitize()+" ON "+table+" "+ix.Def)
	}
	for _, id := range d.Identity {
		kind := "BY DEFAULT"
		if id.Always {
			kind = "ALWAYS"
		}
		out = append(out, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s ADD GENERATED %s AS IDENTITY (START WITH %d)",
			table, pgx.Identifier{id.Column}.Sanitize(), kind, id.Start))
	}
	return out
}

// indexed reports whether FinishSQL builds an index: d has an index, or
// a constraint backed by one.
func (d TableDef) indexed() bool {
	if len(d.Indexes) > 0 {
		return true
	}
	return slices.ContainsFunc(d.Constraints, func(c ConstraintDef) bool { return c.Indexed })
}

// IndexName is the name of the index (or indexed constraint) src of the
// source on the table named base: "<base>_<src>", cut to PostgreSQL's 63
// bytes with a hash of the whole kept at its end.
func IndexName(base, src string) string {
	name := base + "_" + src
	if len(name) <= 63 {
		return name
	}
	h := sha256.Sum256([]byte(name))
	suffix := "_" + hex.EncodeToString(h[:4])
	cut := name[:63-len(suffix)]
	for !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return cut + suffix
}
