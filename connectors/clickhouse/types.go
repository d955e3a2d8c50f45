package clickhouse

import (
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/protocol"
)

// caps are what a server version can hold and do.
type caps struct {
	version ServerVersion
	// dateTime64 (20.1): instants with microseconds; without it a
	// timestamp is an Int64 of microseconds since 1970-01-01 UTC.
	dateTime64 bool
	// boolType (21.12): Bool; without it UInt8 0 or 1.
	boolType bool
	// date32 (21.9): dates from 1900 to 2299; without it Date, from
	// 1970 to 2105 (18.x) or 2149.
	date32 bool
	// decimal256 (22.1): decimals of up to 76 digits; without it 38.
	decimal256 bool
}

func capsOf(v ServerVersion) caps {
	return caps{
		version:    v,
		dateTime64: v.AtLeast(20, 1),
		boolType:   v.AtLeast(21, 12),
		date32:     v.AtLeast(21, 9),
		decimal256: v.AtLeast(22, 1),
	}
}

// dateRange returns the first and last day (days since 1970-01-01) a
// date column holds.
func (c caps) dateRange() (lo, hi int64) {
	switch {
	case c.date32:
		return -25567, 120529 // 1900-01-01 .. 2299-12-31
	case c.version.AtLeast(19, 1):
		return 0, 65535 // 1970-01-01 .. 2149-06-06
	}
	return 0, 49674 // 1970-01-01 .. 2105-12-31: 18.x's date table ends there
}

// column is how one column is stored: its ClickHouse type and how a value
// in PostgreSQL's text form becomes ClickHouse's.
type column struct {
	name     string
	chType   string
	nullable bool // Nullable(...): a NULL is \N
	// emptyForNull stores a NULL array as [] (null_arrays: empty).
	emptyForNull bool
	enc          *valueEnc
}

// encKind says how a value is converted.
type encKind int

const (
	encString     encKind = iota // text as it is (strings, JSON, time, enums, ...)
	encRaw                       // digits as they are: integers, UUIDs
	encDecimal                   // digits as they are; NaN refused
	encFloat                     // NaN and Infinity renamed
	encBool                      // t/f to 1/0 (or true/false)
	encBytes                     // \x hex to the bytes
	encDate                      // range-checked date
	encMicros                    // timestamp to Int64 microseconds since 1970 UTC
	encDateTime64                // timestamp to DateTime64(6), range-checked
	encList                      // PostgreSQL array to ClickHouse array
)

// valueEnc converts the values of one column (or array element).
type valueEnc struct {
	kind     encKind
	boolText bool // Bool: true/false rather than 1/0
	quote    bool // quoted inside an array literal (strings, dates, UUIDs, DateTime64)
	dateLo   int64
	dateHi   int64
	elem     *valueEnc
	elemNull bool // elements may be NULL
}

// stringColumn is the column of a batch without a schema.
func stringColumn(name string) column {
	return column{name: name, chType: "Nullable(String)", nullable: true, enc: &valueEnc{kind: encString, quote: true}}
}

// mapColumns maps a schema's columns (see the package documentation for
// the types). A column the server cannot hold exactly is an error naming
// it and its type.
func mapColumns(s *protocol.Schema, c caps, nullArraysEmpty bool) ([]column, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	cols := make([]column, 0, len(s.Columns))
	for _, sc := range s.Columns {
		col, err := mapColumn(sc, c, nullArraysEmpty)
		if err != nil {
			native := ""
			if sc.Native != "" && sc.Native != sc.String() {
				native = " (" + sc.Native + ")"
			}
			return nil, fmt.Errorf("column %q of type %s%s: %w", sc.Name, sc.String(), native, err)
		}
		cols = append(cols, col)
	}
	return cols, nil
}

func mapColumn(sc protocol.Column, c caps, nullArraysEmpty bool) (column, error) {
	typ, enc, err := mapType(sc, c)
	if err != nil {
		return column{}, err
	}
	col := column{name: sc.Name, chType: typ, enc: enc}
	switch {
	case sc.NotNull:
	case sc.Type == protocol.TypeList && nullArraysEmpty:
		col.emptyForNull = true
	case sc.Type == protocol.TypeList:
		return column{}, fmt.Errorf("may be NULL, and a ClickHouse array cannot: make the source column NOT NULL, or set null_arrays: empty to store NULL as []")
	default:
		col.nullable = true
		col.chType = "Nullable(" + typ + ")"
	}
	return col, nil
}

func mapType(sc protocol.Column, c caps) (string, *valueEnc, error) {
	switch sc.Type {
	case protocol.TypeBool:
		if c.boolType {
			return "Bool", &valueEnc{kind: encBool, boolText: true}, nil
		}
		return "UInt8", &valueEnc{kind: encBool}, nil
	case protocol.TypeInt16:
		return "Int16", &valueEnc{kind: encRaw}, nil
	case protocol.TypeInt32:
		return "Int32", &valueEnc{kind: encRaw}, nil
	case protocol.TypeInt64:
		return "Int64", &valueEnc{kind: encRaw}, nil
	case protocol.TypeFloat32:
		return "Float32", &valueEnc{kind: encFloat}, nil
	case protocol.TypeFloat64:
		return "Float64", &valueEnc{kind: encFloat}, nil
	case protocol.TypeDecimal:
		max := 38
		if c.decimal256 {
			max = 76
		}
		switch {
		case sc.Precision == 0:
			// Unconstrained: no bounded decimal holds every value; the
			// text form does.
			return "String", &valueEnc{kind: encString, quote: true}, nil
		case sc.Precision > max:
			return "", nil, fmt.Errorf("ClickHouse %s holds decimals of at most %d digits", c.version, max)
		}
		return fmt.Sprintf("Decimal(%d, %d)", sc.Precision, sc.Scale), &valueEnc{kind: encDecimal}, nil
	case protocol.TypeString, protocol.TypeJSON, protocol.TypeTime:
		return "String", &valueEnc{kind: encString, quote: true}, nil
	case protocol.TypeBytes:
		return "String", &valueEnc{kind: encBytes, quote: true}, nil
	case protocol.TypeUUID:
		return "UUID", &valueEnc{kind: encRaw, quote: true}, nil
	case protocol.TypeDate:
		lo, hi := c.dateRange()
		typ := "Date"
		if c.date32 {
			typ = "Date32"
		}
		return typ, &valueEnc{kind: encDate, quote: true, dateLo: lo, dateHi: hi}, nil
	case protocol.TypeTimestamp, protocol.TypeTimestampTZ:
		if c.dateTime64 {
			return "DateTime64(6, 'UTC')", &valueEnc{kind: encDateTime64, quote: true}, nil
		}
		return "Int64", &valueEnc{kind: encMicros}, nil
	case protocol.TypeList:
		if sc.Elem.Type == protocol.TypeList {
			return "", nil, fmt.Errorf("nested arrays are not supported")
		}
		et, ee, err := mapType(*sc.Elem, c)
		if err != nil {
			return "", nil, fmt.Errorf("element: %w", err)
		}
		enc := &valueEnc{kind: encList, elem: ee, elemNull: !sc.Elem.NotNull}
		if enc.elemNull {
			et = "Nullable(" + et + ")"
		}
		return "Array(" + et + ")", enc, nil
	}
	return "", nil, fmt.Errorf("unknown type")
}

// orderBy returns the ORDER BY expression of a table: the schema's key
// when every key column is a plain (not Nullable, not array) column, else
// tuple() (no sorting).
func orderBy(s *protocol.Schema, cols []column) string {
	if s == nil || len(s.Key) == 0 {
		return "tuple()"
	}
	byName := map[string]column{}
	for _, c := range cols {
		byName[c.name] = c
	}
	keys := make([]string, len(s.Key))
	for i, k := range s.Key {
		c, ok := byName[k]
		if !ok || c.nullable || strings.HasPrefix(c.chType, "Array(") {
			return "tuple()"
		}
		keys[i] = quoteIdent(k)
	}
	return "(" + strings.Join(keys, ", ") + ")"
}
