package arrowconv

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/extensions"

	"github.com/sluicehq/sluice/protocol"
)

// MaxDecimalPrecision is the most digits a decimal column may have: what
// a 128-bit decimal holds (and what Iceberg and Parquet readers accept).
const MaxDecimalPrecision = 38

// ListElement is the name of a list's element field, as Parquet's and
// Iceberg's list layouts name it.
const ListElement = "element"

// Schema returns the Arrow schema of a dataset's columns (see Field).
func Schema(s *protocol.Schema) (*arrow.Schema, error) {
	fields := make([]arrow.Field, len(s.Columns))
	for i, c := range s.Columns {
		f, err := Field(c)
		if err != nil {
			return nil, err
		}
		fields[i] = f
	}
	return arrow.NewSchema(fields, nil), nil
}

// Field returns the Arrow field of one column: bool as Boolean; int16,
// int32, int64, float32 and float64 as the same; decimal(p,s) as
// Decimal128(p,s) (p up to 38); string as String; json as String holding
// the document's text; bytes as Binary; date as Date32; time as Time64 in
// microseconds; timestamp as Timestamp in microseconds without a time
// zone, and timestamptz with the time zone "UTC"; uuid as the arrow.uuid
// extension type; list as a List of the element's field, named "element".
// A json column (or element) is flagged with JSONMetadataKey. A NOT NULL
// column is not nullable. An unbounded decimal (precision 0,
// PostgreSQL's bare numeric) or one of more than 38 digits has no exact
// Arrow form here: Field refuses it, naming the column.
func Field(c protocol.Column) (arrow.Field, error) {
	t, err := dataType(c)
	if err != nil {
		return arrow.Field{}, fmt.Errorf("column %q (%s): %w", c.Name, Describe(c), err)
	}
	return arrow.Field{Name: c.Name, Type: t, Nullable: !c.NotNull, Metadata: metadata(c)}, nil
}

// metadata returns the metadata of a column's field: JSONMetadataKey for
// json.
func metadata(c protocol.Column) arrow.Metadata {
	if c.Type == protocol.TypeJSON {
		return arrow.NewMetadata([]string{JSONMetadataKey}, []string{"true"})
	}
	return arrow.Metadata{}
}

func dataType(c protocol.Column) (arrow.DataType, error) {
	switch c.Type {
	case protocol.TypeBool:
		return arrow.FixedWidthTypes.Boolean, nil
	case protocol.TypeInt16:
		return arrow.PrimitiveTypes.Int16, nil
	case protocol.TypeInt32:
		return arrow.PrimitiveTypes.Int32, nil
	case protocol.TypeInt64:
		return arrow.PrimitiveTypes.Int64, nil
	case protocol.TypeFloat32:
		return arrow.PrimitiveTypes.Float32, nil
	case protocol.TypeFloat64:
		return arrow.PrimitiveTypes.Float64, nil
	case protocol.TypeDecimal:
		if c.Precision == 0 {
			return nil, fmt.Errorf("a decimal without a precision has no exact fixed-size form: declare numeric(p,s) in the source, p at most %d", MaxDecimalPrecision)
		}
		if c.Precision > MaxDecimalPrecision {
			return nil, fmt.Errorf("precision %d is above the %d digits a decimal column holds", c.Precision, MaxDecimalPrecision)
		}
		return &arrow.Decimal128Type{Precision: int32(c.Precision), Scale: int32(c.Scale)}, nil
	case protocol.TypeString, protocol.TypeJSON:
		return arrow.BinaryTypes.String, nil
	case protocol.TypeBytes:
		return arrow.BinaryTypes.Binary, nil
	case protocol.TypeDate:
		return arrow.FixedWidthTypes.Date32, nil
	case protocol.TypeTime:
		return arrow.FixedWidthTypes.Time64us, nil
	case protocol.TypeTimestamp:
		return &arrow.TimestampType{Unit: arrow.Microsecond}, nil
	case protocol.TypeTimestampTZ:
		return arrow.FixedWidthTypes.Timestamp_us, nil
	case protocol.TypeUUID:
		return extensions.NewUUIDType(), nil
	case protocol.TypeList:
		if c.Elem == nil {
			return nil, fmt.Errorf("a list without an element type")
		}
		if c.Elem.Type == protocol.TypeList {
			return nil, fmt.Errorf("a list of lists is not supported")
		}
		et, err := dataType(*c.Elem)
		if err != nil {
			return nil, fmt.Errorf("element: %w", err)
		}
		return arrow.ListOfField(arrow.Field{Name: ListElement, Type: et, Nullable: !c.Elem.NotNull, Metadata: metadata(*c.Elem)}), nil
	}
	return nil, fmt.Errorf("unknown type %q", c.Type)
}

// Describe renders a column's type for messages: its logical type, and
// the source's own name for it when there is one ("decimal,
// numeric").
func Describe(c protocol.Column) string {
	if c.Native != "" && c.Native != c.String() {
		return c.String() + ", " + c.Native
	}
	return c.String()
}
