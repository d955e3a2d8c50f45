package iceberg

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/protocol"
)

// icebergType maps a logical column type to an Iceberg type: bool to
// boolean; int16 and int32 to int; int64 to long; float32 to float;
// float64 to double; decimal(p,s) to decimal(p,s) (p up to 38); string
// and json to string; bytes to binary; date, time, timestamp and
// timestamptz to the same; uuid to uuid; a list to a list of its element.
// ids assigns field ids to list elements. An unbounded decimal, one of
// more than 38 digits and a list of lists have no Iceberg type: refused.
func icebergType(c protocol.Column, ids *int) (iceberg.Type, error) {
	switch c.Type {
	case protocol.TypeBool:
		return iceberg.PrimitiveTypes.Bool, nil
	case protocol.TypeInt16, protocol.TypeInt32:
		return iceberg.PrimitiveTypes.Int32, nil
	case protocol.TypeInt64:
		return iceberg.PrimitiveTypes.Int64, nil
	case protocol.TypeFloat32:
		return iceberg.PrimitiveTypes.Float32, nil
	case protocol.TypeFloat64:
		return iceberg.PrimitiveTypes.Float64, nil
	case protocol.TypeDecimal:
		if c.Precision == 0 {
			return nil, fmt.Errorf("an Iceberg decimal needs a precision: declare the column numeric(p,s) with p at most %d, or cast it in the source", arrowconv.MaxDecimalPrecision)
		}
		if c.Precision > arrowconv.MaxDecimalPrecision {
			return nil, fmt.Errorf("precision %d is above the %d digits of an Iceberg decimal", c.Precision, arrowconv.MaxDecimalPrecision)
		}
		return iceberg.DecimalTypeOf(c.Precision, c.Scale), nil
	case protocol.TypeString, protocol.TypeJSON:
		return iceberg.PrimitiveTypes.String, nil
	case protocol.TypeBytes:
		return iceberg.PrimitiveTypes.Binary, nil
	case protocol.TypeDate:
		return iceberg.PrimitiveTypes.Date, nil
	case protocol.TypeTime:
		return iceberg.PrimitiveTypes.Time, nil
	case protocol.TypeTimestamp:
		return iceberg.PrimitiveTypes.Timestamp, nil
	case protocol.TypeTimestampTZ:
		return iceberg.PrimitiveTypes.TimestampTz, nil
	case protocol.TypeUUID:
		return iceberg.PrimitiveTypes.UUID, nil
	case protocol.TypeList:
		if c.Elem == nil {
			return nil, errors.New("a list without an element type")
		}
		if c.Elem.Type == protocol.TypeList {
			return nil, errors.New("a list of lists (a multi-dimensional array) is not supported")
		}
		et, err := icebergType(*c.Elem, ids)
		if err != nil {
			return nil, fmt.Errorf("element: %w", err)
		}
		*ids++
		return &iceberg.ListType{ElementID: *ids, Element: et, ElementRequired: c.Elem.NotNull}, nil
	}
	return nil, fmt.Errorf("unknown type %q", c.Type)
}

// newSchema makes the Iceberg schema of a new table: the columns in
// order, ids 1 to n, list elements after; a NOT NULL column is required.
// A column whose type has no Iceberg form is refused, naming it.
func newSchema(s *protocol.Schema) (*iceberg.Schema, error) {
	ids := len(s.Columns)
	fields := make([]iceberg.NestedField, len(s.Columns))
	for i, c := range s.Columns {
		t, err := icebergType(c, &ids)
		if err != nil {
			return nil, fmt.Errorf("column %q (%s): %w", c.Name, arrowconv.Describe(c), err)
		}
		fields[i] = iceberg.NestedField{ID: i + 1, Name: c.Name, Type: t, Required: c.NotNull}
	}
	return iceberg.NewSchema(0, fields...), nil
}

// schemaDiff compares the source's columns with an existing table's.
// Columns the table lacks come back in added (the table can take them as
// new optional columns); any other difference is an error naming the
// column: a type that differs (Iceberg types compared after the mapping
// of icebergType), a column the table requires that the source may leave
// NULL or does not have.
func schemaDiff(s *protocol.Schema, tbl *iceberg.Schema, name string) (added []protocol.Column, err error) {
	var problems []string
	seen := map[string]bool{}
	for _, c := range s.Columns {
		seen[c.Name] = true
		ids := 0
		want, err := icebergType(c, &ids)
		if err != nil {
			return nil, connectors.Permanent(fmt.Errorf("column %q (%s): %w", c.Name, arrowconv.Describe(c), err))
		}
		f, ok := tbl.FindFieldByName(c.Name)
		if !ok {
			added = append(added, c)
			continue
		}
		if !sameType(want, f.Type) {
			problems = append(problems, fmt.Sprintf("column %q is %s in the source (%s) but %s in %s", c.Name, want, arrowconv.Describe(c), f.Type, name))
			continue
		}
		if f.Required && !c.NotNull {
			problems = append(problems, fmt.Sprintf("column %q is required in %s but the source may leave it NULL", c.Name, name))
		}
	}
	for _, f := range tbl.Fields() {
		if !seen[f.Name] && f.Required {
			problems = append(problems, fmt.Sprintf("column %q is required in %s but the source has no such column", f.Name, name))
		}
	}
	if len(problems) > 0 {
		return nil, connectors.Permanent(errors.New(strings.Join(problems, "; ")))
	}
	return added, nil
}

// sameType compares Iceberg types, ignoring list element ids.
func sameType(a, b iceberg.Type) bool {
	la, okA := a.(*iceberg.ListType)
	lb, okB := b.(*iceberg.ListType)
	if okA || okB {
		return okA && okB && la.ElementRequired == lb.ElementRequired && sameType(la.Element, lb.Element)
	}
	return a.Equals(b)
}

// protocolSchema describes an Iceberg table's columns as a Schema: the
// reverse of icebergType (int as int32, string as string, fixed as
// bytes). Structs, maps and the types without a logical counterpart are
// refused, naming the column.
func protocolSchema(sc *iceberg.Schema) (*protocol.Schema, error) {
	out := &protocol.Schema{System: Kind}
	for _, f := range sc.Fields() {
		c, err := protocolColumn(f)
		if err != nil {
			return nil, fmt.Errorf("column %q (%s): %w", f.Name, f.Type, err)
		}
		out.Columns = append(out.Columns, c)
	}
	for _, id := range sc.IdentifierFieldIDs {
		if f, ok := sc.FindFieldByID(id); ok {
			out.Key = append(out.Key, f.Name)
		}
	}
	return out, nil
}

func protocolColumn(f iceberg.NestedField) (protocol.Column, error) {
	c := protocol.Column{Name: f.Name, NotNull: f.Required, Native: f.Type.String()}
	switch t := f.Type.(type) {
	case iceberg.BooleanType:
		c.Type = protocol.TypeBool
	case iceberg.Int32Type:
		c.Type = protocol.TypeInt32
	case iceberg.Int64Type:
		c.Type = protocol.TypeInt64
	case iceberg.Float32Type:
		c.Type = protocol.TypeFloat32
	case iceberg.Float64Type:
		c.Type = protocol.TypeFloat64
	case iceberg.DecimalType:
		c.Type, c.Precision, c.Scale = protocol.TypeDecimal, t.Precision(), t.Scale()
	case iceberg.StringType:
		c.Type = protocol.TypeString
	case iceberg.BinaryType, iceberg.FixedType:
		c.Type = protocol.TypeBytes
	case iceberg.DateType:
		c.Type = protocol.TypeDate
	case iceberg.TimeType:
		c.Type = protocol.TypeTime
	case iceberg.TimestampType:
		c.Type = protocol.TypeTimestamp
	case iceberg.TimestampTzType:
		c.Type = protocol.TypeTimestampTZ
	case iceberg.UUIDType:
		c.Type = protocol.TypeUUID
	case *iceberg.ListType:
		e, err := protocolColumn(t.ElementField())
		if err != nil {
			return c, fmt.Errorf("element: %w", err)
		}
		e.Name = arrowconv.ListElement
		c.Type, c.Elem = protocol.TypeList, &e
	default:
		return c, errors.New("no logical type holds it (structs, maps and nanosecond timestamps are not read)")
	}
	return c, nil
}

// arrowSchema returns the Arrow schema of a table's data files, with the
// Parquet field ids of the table's schema.
func arrowSchema(sc *iceberg.Schema) (*arrow.Schema, error) {
	as, err := table.SchemaToArrowSchema(sc, nil, true, false)
	if err != nil {
		return nil, fmt.Errorf("arrow schema of %s: %w", sc, err)
	}
	return as, nil
}
