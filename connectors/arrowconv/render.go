package arrowconv

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/float16"
)

// The JSON forms of typed values, one per type, which a typed JSON line
// holds (Lines) and which a row of an Arrow record renders to (RowRenderer),
// so that the same rows give the same lines either way:
//
//   - NULL: null;
//   - booleans: true, false;
//   - integers: numbers;
//   - floats: numbers (the shortest form that reads back the same value,
//     exponents below 1e-6 and from 1e21), NaN and the infinities as the
//     strings "NaN", "Infinity" and "-Infinity", which JSON has no number
//     for (PostgreSQL's to_json writes them so);
//   - decimals of up to MaxJSONNumberDigits digits: numbers with the
//     column's scale (12.50); wider ones: strings with every digit
//     ("12345678901234567890.0123456789"), which a JSON reader's 64-bit
//     float would round;
//   - strings: strings; a JSON document (a column flagged with
//     JSONMetadataKey): the document itself, nested, its line breaks
//     (only ever whitespace between tokens) dropped, or a string when it
//     is not valid JSON;
//   - bytes: strings in base64 (standard, padded);
//   - dates: "YYYY-MM-DD"; times of day: "HH:MM:SS" and a fraction of up
//     to six digits without trailing zeros; timestamps with a time zone:
//     RFC 3339 in UTC ("2024-02-29T23:59:59.5Z"); without one: the same
//     without the Z;
//   - UUIDs: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
//   - lists: arrays of their elements in these forms.

// MaxJSONNumberDigits is the most digits a decimal column may have for
// its values to be written as JSON numbers: what a 64-bit float, the
// number of most JSON readers, holds exactly.
const MaxJSONNumberDigits = 15

// JSONMetadataKey, set to "true" in a string field's metadata, says the
// field holds JSON documents (Field sets it for TypeJSON columns).
const JSONMetadataKey = "sluice.json"

// IsJSONField reports whether f holds JSON documents in a string column.
func IsJSONField(f arrow.Field) bool {
	v, ok := f.Metadata.GetValue(JSONMetadataKey)
	return ok && v == "true"
}

// AppendJSONString appends s as a JSON string, escaping only '"', '\\'
// and control characters; invalid UTF-8 becomes U+FFFD.
func AppendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONBytes is AppendJSONString of bytes.
func appendJSONBytes(dst, b []byte) []byte {
	return AppendJSONString(dst, unsafeString(b))
}

// AppendJSONFloat appends f as a JSON number the way encoding/json writes
// it (bits is 32 or 64), and NaN and the infinities as the strings
// "NaN", "Infinity" and "-Infinity".
func AppendJSONFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// AppendDecimal appends a decimal's text at its scale: digits, then the
// point and scale digits when scale > 0 ("-0.05", "12.50", "7").
func AppendDecimal(dst []byte, n decimal128.Num, scale int32) []byte {
	if hi := n.HighBits(); hi == 0 && n.LowBits() <= math.MaxInt64 || hi == -1 && n.LowBits() > math.MaxInt64 {
		v := int64(n.LowBits())
		if v < 0 {
			dst = append(dst, '-')
		}
		u := uint64(v)
		if v < 0 {
			u = -u
		}
		var buf [20]byte
		return appendScaled(dst, strconv.AppendUint(buf[:0], u, 10), scale)
	}
	s := n.Abs().BigInt().String()
	if n.Sign() < 0 {
		dst = append(dst, '-')
	}
	return appendScaled(dst, []byte(s), scale)
}

// appendScaled appends the digits of an unscaled magnitude with the
// point scale digits from the right, zeros added in front as needed.
func appendScaled(dst, digits []byte, scale int32) []byte {
	if scale <= 0 {
		dst = append(dst, digits...)
		for range -scale {
			if len(digits) == 1 && digits[0] == '0' {
				break
			}
			dst = append(dst, '0')
		}
		return dst
	}
	s := int(scale)
	if len(digits) <= s {
		dst = append(dst, '0', '.')
		for range s - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
	dst = append(dst, digits[:len(digits)-s]...)
	dst = append(dst, '.')
	return append(dst, digits[len(digits)-s:]...)
}

// appendJSONDecimal appends a decimal of a column of precision digits in
// its JSON form: a number, or a string when the column is wider than
// MaxJSONNumberDigits.
func appendJSONDecimal(dst []byte, n decimal128.Num, precision, scale int32) []byte {
	if precision <= MaxJSONNumberDigits {
		return AppendDecimal(dst, n, scale)
	}
	dst = append(dst, '"')
	return append(AppendDecimal(dst, n, scale), '"')
}

// appendJSONDocument appends a JSON document's text, nested, without its
// line breaks (whitespace between tokens: a JSON string cannot hold one
// unescaped); a text that is not one JSON value becomes a JSON string.
func appendJSONDocument(dst, doc []byte) []byte {
	if !json.Valid(doc) {
		return appendJSONBytes(dst, doc)
	}
	for len(doc) > 0 {
		i := 0
		for i < len(doc) && doc[i] != '\n' && doc[i] != '\r' {
			i++
		}
		dst = append(dst, doc[:i]...)
		if i < len(doc) {
			i++
		}
		doc = doc[i:]
	}
	return dst
}

// appendJSONBase64 appends bytes as a base64 JSON string.
func appendJSONBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendJSONUUID appends a UUID as a JSON string, lower case.
func appendJSONUUID(dst, u []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[c>>4], hex[c&0xf])
	}
	return append(dst, '"')
}

const (
	microsPerDay = 86_400_000_000
	daysTo1970   = 719_468 // days from 0000-03-01 to 1970-01-01
)

// civil returns the proleptic Gregorian date of days since 1970-01-01,
// after Howard Hinnant's algorithm.
func civil(days int64) (y int64, m, d int) {
	z := days + daysTo1970
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func append2(dst []byte, v int) []byte { return append(dst, byte('0'+v/10), byte('0'+v%10)) }

// appendDate appends YYYY-MM-DD for days since 1970-01-01, as time.Format
// writes it (years outside 0-9999 included).
func appendDate(dst []byte, days int64) []byte {
	y, m, d := civil(days)
	if y < 0 || y > 9999 {
		return time.Unix(days*86400, 0).UTC().AppendFormat(dst, time.DateOnly)
	}
	dst = append2(append2(dst, int(y/100)), int(y%100))
	dst = append2(append(dst, '-'), m)
	return append2(append(dst, '-'), d)
}

// appendClock appends HH:MM:SS and a fraction of up to nine digits
// without trailing zeros (none when zero) for nanoseconds into a day.
func appendClock(dst []byte, ns int64) []byte {
	secs := int(ns / 1e9)
	dst = append2(dst, secs/3600)
	dst = append2(append(dst, ':'), secs/60%60)
	dst = append2(append(dst, ':'), secs%60)
	return appendFraction(dst, int(ns%1e9), 9)
}

// appendFraction appends '.' and the n digits of frac (a fraction of a
// second in units of 10^-n s) without trailing zeros; nothing when zero.
func appendFraction(dst []byte, frac, n int) []byte {
	if frac == 0 {
		return dst
	}
	for frac%10 == 0 {
		frac /= 10
		n--
	}
	dst = append(dst, '.')
	start := len(dst)
	for range n {
		dst = append(dst, '0')
	}
	for i := len(dst) - 1; i >= start; i-- {
		dst[i] = byte('0' + frac%10)
		frac /= 10
	}
	return dst
}

// appendJSONTimestamp appends a timestamp of microseconds since
// 1970-01-01 UTC as an RFC 3339 JSON string, with a Z when utc.
func appendJSONTimestamp(dst []byte, us int64, utc bool) []byte {
	dst = append(dst, '"')
	dst = appendTimestamp(dst, us, utc)
	return append(dst, '"')
}

// appendTimestamp appends a timestamp of microseconds since 1970-01-01
// UTC in RFC 3339 form, as time.Format with RFC3339Nano writes it in UTC
// (with the Z only when utc).
func appendTimestamp(dst []byte, us int64, utc bool) []byte {
	days := us / microsPerDay
	rem := us % microsPerDay
	if rem < 0 {
		days--
		rem += microsPerDay
	}
	y, m, d := civil(days)
	if y < 0 || y > 9999 {
		t := time.UnixMicro(us).UTC()
		if utc {
			return t.AppendFormat(dst, time.RFC3339Nano)
		}
		return t.AppendFormat(dst, "2006-01-02T15:04:05.999999999")
	}
	secs := int(rem / 1e6)
	dst = append2(append2(dst, int(y/100)), int(y%100))
	dst = append2(append(dst, '-'), m)
	dst = append2(append(dst, '-'), d)
	dst = append2(append(dst, 'T'), secs/3600)
	dst = append2(append(dst, ':'), secs/60%60)
	dst = append2(append(dst, ':'), secs%60)
	dst = appendFraction(dst, int(rem%1e6), 6)
	if utc {
		dst = append(dst, 'Z')
	}
	return dst
}

// ValueRenderer appends the JSON form of row i of one column.
type ValueRenderer func(dst []byte, i int) []byte

// NewValueRenderer returns the renderer of the JSON forms of a column's
// values (see above). Types without a form of their own there (structs,
// maps, intervals, durations, dictionaries) render as encoding/json
// renders Arrow's own value of them.
func NewValueRenderer(f arrow.Field, col arrow.Array) ValueRenderer {
	withNull := func(r ValueRenderer) ValueRenderer {
		if col.NullN() == 0 {
			return r
		}
		return func(dst []byte, i int) []byte {
			if col.IsNull(i) {
				return append(dst, "null"...)
			}
			return r(dst, i)
		}
	}
	switch a := col.(type) {
	case *array.Null:
		return func(dst []byte, _ int) []byte { return append(dst, "null"...) }
	case *array.Boolean:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendBool(dst, a.Value(i)) })
	case *array.Int8:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int16:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int32:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(a.Value(i)), 10) })
	case *array.Int64:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendInt(dst, a.Value(i), 10) })
	case *array.Uint8:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint16:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint32:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, uint64(a.Value(i)), 10) })
	case *array.Uint64:
		return withNull(func(dst []byte, i int) []byte { return strconv.AppendUint(dst, a.Value(i), 10) })
	case *array.Float16:
		return withNull(func(dst []byte, i int) []byte {
			return AppendJSONFloat(dst, float64(float16.Num(a.Value(i)).Float32()), 32)
		})
	case *array.Float32:
		return withNull(func(dst []byte, i int) []byte { return AppendJSONFloat(dst, float64(a.Value(i)), 32) })
	case *array.Float64:
		return withNull(func(dst []byte, i int) []byte { return AppendJSONFloat(dst, a.Value(i), 64) })
	case *array.Decimal128:
		t := a.DataType().(*arrow.Decimal128Type)
		return withNull(func(dst []byte, i int) []byte { return appendJSONDecimal(dst, a.Value(i), t.Precision, t.Scale) })
	case *array.String:
		return withNull(stringRenderer(f, a.Value))
	case *array.LargeString:
		return withNull(stringRenderer(f, a.Value))
	case *array.StringView:
		return withNull(stringRenderer(f, a.Value))
	case *array.Binary:
		return withNull(func(dst []byte, i int) []byte { return appendJSONBase64(dst, a.Value(i)) })
	case *array.LargeBinary:
		return withNull(func(dst []byte, i int) []byte { return appendJSONBase64(dst, a.Value(i)) })
	case *array.Timestamp:
		t := a.DataType().(*arrow.TimestampType)
		utc := t.TimeZone != ""
		if t.Unit == arrow.Microsecond {
			return withNull(func(dst []byte, i int) []byte { return appendJSONTimestamp(dst, int64(a.Value(i)), utc) })
		}
		layout := "2006-01-02T15:04:05.999999999"
		if utc {
			layout = time.RFC3339Nano
		}
		return withNull(func(dst []byte, i int) []byte {
			dst = append(dst, '"')
			return append(a.Value(i).ToTime(t.Unit).UTC().AppendFormat(dst, layout), '"')
		})
	case *array.Date32:
		return withNull(func(dst []byte, i int) []byte {
			return append(appendDate(append(dst, '"'), int64(a.Value(i))), '"')
		})
	case *array.Date64:
		return withNull(func(dst []byte, i int) []byte {
			return append(appendDate(append(dst, '"'), int64(a.Value(i))/86_400_000), '"')
		})
	case *array.Time64:
		scale := int64(1)
		if a.DataType().(*arrow.Time64Type).Unit == arrow.Microsecond {
			scale = 1000
		}
		return withNull(func(dst []byte, i int) []byte {
			return append(appendClock(append(dst, '"'), int64(a.Value(i))*scale), '"')
		})
	case *extensions.UUIDArray:
		st := a.Storage().(*array.FixedSizeBinary)
		return withNull(func(dst []byte, i int) []byte { return appendJSONUUID(dst, st.Value(i)) })
	case *array.List:
		return withNull(listRenderer(a.DataType().(*arrow.ListType).ElemField(), a.ListValues(), a.ValueOffsets))
	case *array.LargeList:
		return withNull(listRenderer(a.DataType().(*arrow.LargeListType).ElemField(), a.ListValues(), a.ValueOffsets))
	}
	return withNull(func(dst []byte, i int) []byte {
		b, err := json.Marshal(col.GetOneForMarshal(i))
		if err != nil {
			return AppendJSONString(dst, col.ValueStr(i))
		}
		return append(dst, b...)
	})
}

func stringRenderer(f arrow.Field, value func(int) string) ValueRenderer {
	if IsJSONField(f) {
		return func(dst []byte, i int) []byte { return appendJSONDocument(dst, unsafeBytes(value(i))) }
	}
	return func(dst []byte, i int) []byte { return AppendJSONString(dst, value(i)) }
}

// listRenderer renders the lists of an array as JSON arrays.
func listRenderer[O int32 | int64](elem arrow.Field, values arrow.Array, offsets func(int) (O, O)) ValueRenderer {
	r := NewValueRenderer(elem, values)
	return func(dst []byte, i int) []byte {
		start, end := offsets(i)
		dst = append(dst, '[')
		for j := start; j < end; j++ {
			if j > start {
				dst = append(dst, ',')
			}
			dst = r(dst, int(j))
		}
		return append(dst, ']')
	}
}

// RowRenderer renders the rows of one record as JSON objects, its columns
// as members in their order, values in the forms above.
type RowRenderer struct {
	keys [][]byte // `"name":` for each column, the first after '{', the others after ','
	cols []ValueRenderer
}

// NewRowRenderer returns the renderer of rec's rows.
func NewRowRenderer(rec arrow.RecordBatch) *RowRenderer {
	r := &RowRenderer{}
	r.keys = objectKeys(rec.Schema())
	for i, f := range rec.Schema().Fields() {
		r.cols = append(r.cols, NewValueRenderer(f, rec.Column(i)))
	}
	return r
}

// objectKeys returns `{"name":` for the first field, `,"name":` for the
// others.
func objectKeys(s *arrow.Schema) [][]byte {
	keys := make([][]byte, s.NumFields())
	for i, f := range s.Fields() {
		k := []byte{','}
		if i == 0 {
			k[0] = '{'
		}
		keys[i] = append(AppendJSONString(k, f.Name), ':')
	}
	return keys
}

// AppendRow appends row i as one JSON object, without a newline.
func (r *RowRenderer) AppendRow(dst []byte, i int) []byte {
	if len(r.keys) == 0 {
		return append(dst, '{', '}')
	}
	for c, k := range r.keys {
		dst = append(dst, k...)
		dst = r.cols[c](dst, i)
	}
	return append(dst, '}')
}

// unsafeString views b as a string, for a call that does not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsafeBytes views s as bytes, for a call that neither keeps nor changes
// them.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
