package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Schema describes the columns of a dataset as its source declares them: a
// database's catalog, a Parquet file's schema. A sink creates typed columns
// from it (a numeric stays a decimal, a timestamptz a timestamp with time
// zone) instead of guessing types from text. It travels from the source's
// plan through the run to every task and to the commit.
type Schema struct {
	// Columns are the dataset's columns, in the order batches carry them.
	Columns []Column `json:"columns"`
	// Key names the columns of the primary key (or another unique, not
	// null key), in key order; empty when the source has none.
	Key []string `json:"key,omitempty"`
	// System names the source system whose type names Column.Native uses
	// (a connector kind, such as the one of a database), so a sink of the
	// same system can recreate exact native types.
	System string `json:"system,omitempty"`
	// Native is the source system's own description of what the dataset
	// has besides its columns (a table's indexes, constraints and the
	// types its columns use), for a sink of the same system that
	// recreates the dataset exactly, as a passthrough does; opaque to
	// every other. Empty when the source gives none.
	Native json.RawMessage `json:"native,omitempty"`
}

// ColumnType is a logical column type, independent of any one system.
type ColumnType string

// The logical column types. A source maps each of its types to one of
// these; a type with no lossless match (an interval, an IP address, an
// enum) maps to TypeString with its text form, and keeps its native name in
// Column.Native.
const (
	TypeBool    ColumnType = "bool"
	TypeInt16   ColumnType = "int16"
	TypeInt32   ColumnType = "int32"
	TypeInt64   ColumnType = "int64"
	TypeFloat32 ColumnType = "float32"
	TypeFloat64 ColumnType = "float64"
	// TypeDecimal is an exact decimal of Column.Precision digits, Scale of
	// them after the point; Precision 0 means unconstrained (PostgreSQL's
	// bare numeric), which a sink of bounded decimals must refuse or map
	// explicitly.
	TypeDecimal ColumnType = "decimal"
	TypeString  ColumnType = "string"
	TypeBytes   ColumnType = "bytes"
	TypeDate    ColumnType = "date"
	// TypeTime is a time of day without a time zone, in microseconds.
	TypeTime ColumnType = "time"
	// TypeTimestamp is a date and time without a time zone, and
	// TypeTimestampTZ an instant (stored in UTC); both in microseconds.
	TypeTimestamp   ColumnType = "timestamp"
	TypeTimestampTZ ColumnType = "timestamptz"
	// TypeJSON is a JSON document (PostgreSQL json and jsonb).
	TypeJSON ColumnType = "json"
	TypeUUID ColumnType = "uuid"
	// TypeList is an array of Column.Elem.
	TypeList ColumnType = "list"
)

// Column is one column of a Schema.
type Column struct {
	Name string     `json:"name"`
	Type ColumnType `json:"type"`
	// NotNull is set when the source guarantees a value in every row.
	NotNull bool `json:"not_null,omitempty"`
	// Precision and Scale bound a TypeDecimal.
	Precision int `json:"precision,omitempty"`
	Scale     int `json:"scale,omitempty"`
	// Elem is the element type of a TypeList.
	Elem *Column `json:"elem,omitempty"`
	// Native is the type as the source system names it, for messages and
	// for a sink of the same system: "numeric(38,10)", "timestamp with time
	// zone", "public.mood".
	Native string `json:"native,omitempty"`
	// Default is the column's default expression as the source system
	// writes it ("'new'::text", "0"), for a sink of the same system; empty
	// when the column has none, or when it refers to objects another
	// database would lack (a sequence, a function the source defined).
	Default string `json:"default,omitempty"`
	// Backfill is, for a column added to a table that had rows, the value
	// those rows took, as an expression of the source system (PostgreSQL:
	// the "missing value" of a column added with a constant default,
	// which stays when the default changes later); empty when they took
	// NULL or the value is not known. A consumer adding the column to a
	// copy of the table gives it to the copy's rows.
	Backfill string `json:"backfill,omitempty"`
	// Generated is the expression of a generated (computed) column as the
	// source system writes it, for a sink of the same system. A generated
	// column's values are computed by the database: batches and change
	// events do not carry them.
	Generated string `json:"generated,omitempty"`
	// ID identifies the column within its table: it stays when the column
	// is renamed and is never given to another column after a drop
	// (PostgreSQL's attnum); 0 when unknown. It lets a consumer of change
	// events tell a renamed column from a dropped one and an added one.
	ID int `json:"id,omitempty"`
	// Transformed names the data contract's action that changed the
	// column's values ("hash", "mask", "tokenize", "null", "truncate");
	// empty when they are the source's. A sink that recreates what the
	// source said of the column's values (Schema.Native: its constraints,
	// indexes, collation) leaves that out for such a column.
	Transformed string `json:"transformed,omitempty"`
}

// String renders the column's logical type: "decimal(38,10)",
// "list<int32>".
func (c Column) String() string {
	switch c.Type {
	case TypeDecimal:
		if c.Precision == 0 {
			return "decimal"
		}
		return fmt.Sprintf("decimal(%d,%d)", c.Precision, c.Scale)
	case TypeList:
		if c.Elem == nil {
			return "list<?>"
		}
		return "list<" + c.Elem.String() + ">"
	}
	return string(c.Type)
}

// Column returns the column named name.
func (s *Schema) Column(name string) (Column, bool) {
	if s == nil {
		return Column{}, false
	}
	for _, c := range s.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// Names lists the column names in order.
func (s *Schema) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		out[i] = c.Name
	}
	return out
}

// Validate checks that the schema is well formed: named, distinct columns
// of known types, decimals with a scale within their precision, lists with
// an element type, key columns that exist.
func (s *Schema) Validate() error {
	if s == nil {
		return nil
	}
	seen := make(map[string]bool, len(s.Columns))
	for i, c := range s.Columns {
		if c.Name == "" {
			return fmt.Errorf("schema: column %d has no name", i+1)
		}
		if seen[c.Name] {
			return fmt.Errorf("schema: column %q appears twice", c.Name)
		}
		seen[c.Name] = true
		if err := c.validate(); err != nil {
			return fmt.Errorf("schema: column %q: %w", c.Name, err)
		}
	}
	for _, k := range s.Key {
		if !seen[k] {
			return fmt.Errorf("schema: key column %q is not a column (columns: %s)", k, strings.Join(s.Names(), ", "))
		}
	}
	return nil
}

func (c Column) validate() error {
	switch c.Type {
	case TypeBool, TypeInt16, TypeInt32, TypeInt64, TypeFloat32, TypeFloat64, TypeString, TypeBytes,
		TypeDate, TypeTime, TypeTimestamp, TypeTimestampTZ, TypeJSON, TypeUUID:
		return nil
	case TypeDecimal:
		if c.Precision < 0 || c.Scale < 0 || (c.Precision > 0 && c.Scale > c.Precision) {
			return fmt.Errorf("decimal(%d,%d): want 0 <= scale <= precision", c.Precision, c.Scale)
		}
		return nil
	case TypeList:
		if c.Elem == nil {
			return fmt.Errorf("a list needs an element type")
		}
		return c.Elem.validate()
	}
	return fmt.Errorf("unknown type %q", c.Type)
}
