package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
