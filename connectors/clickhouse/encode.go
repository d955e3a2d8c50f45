package clickhouse

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// rowEncoder turns CSV records as PostgreSQL's COPY writes them (NULL an
// unquoted empty field, values in PostgreSQL's text form under the
// source's session settings: UTC, ISO dates, hex bytea) into ClickHouse
// TabSeparated rows of the columns' types.
type rowEncoder struct {
	cols  []column
	field []byte // the current field, unquoted
	elems [][]byte
	isNul []bool
	buf   []byte // the unescaped elements of an array
}

// errRecord is a malformed record; the caller adds its position.
var errRecord = errors.New("malformed CSV record")

// encode appends the TSV rows of the CSV records in raw to dst. sum, when
// not nil, gets each record's hash (the record's bytes without the line
// ending). It returns the rows encoded; a bad value is a *RowError
// numbered from firstRow, at position.
func (e *rowEncoder) encode(dst, raw []byte, sum *connectors.Checksum, position string, firstRow int64) ([]byte, int64, error) {
	var rows int64
	p := 0
	for p < len(raw) {
		start := p
		var err error
		for i := range e.cols {
			if p >= len(raw) {
				err = fmt.Errorf("%w: %d fields, want %d", errRecord, i, len(e.cols))
				break
			}
			var null bool
			p, null, err = e.readField(raw, p)
			if err != nil {
				break
			}
			last := i == len(e.cols)-1
			switch {
			case last && p < len(raw) && raw[p] != '\n' && raw[p] != '\r':
				err = fmt.Errorf("%w: more than %d fields", errRecord, len(e.cols))
			case !last && (p >= len(raw) || raw[p] != ','):
				err = fmt.Errorf("%w: %d fields, want %d", errRecord, i+1, len(e.cols))
			}
			if err != nil {
				break
			}
			if i > 0 {
				dst = append(dst, '\t')
			}
			dst, err = e.appendValue(dst, &e.cols[i], e.field, null)
			if err != nil {
				err = &connectors.RowError{Location: position, Row: firstRow + rows, Field: e.cols[i].name, Err: err}
				return dst, rows, err
			}
			if !last {
				p++
			}
		}
		if err != nil {
			return dst, rows, &connectors.RowError{Location: position, Row: firstRow + rows, Err: err}
		}
		end := p
		if p < len(raw) && raw[p] == '\r' {
			p++
		}
		if p < len(raw) {
			p++ // '\n'
		}
		if sum != nil {
			sum.Add(raw[start:end])
		}
		dst = append(dst, '\n')
		rows++
	}
	return dst, rows, nil
}

// readField reads one CSV field at p into e.field and returns the offset
// after it. An unquoted empty field is NULL.
func (e *rowEncoder) readField(raw []byte, p int) (int, bool, error) {
	e.field = e.field[:0]
	if p < len(raw) && raw[p] == '"' {
		p++
		for {
			q := bytes.IndexByte(raw[p:], '"')
			if q < 0 {
				return p, false, fmt.Errorf("%w: a quoted field does not end", errRecord)
			}
			e.field = append(e.field, raw[p:p+q]...)
			p += q + 1
			if p < len(raw) && raw[p] == '"' {
				e.field = append(e.field, '"')
				p++
				continue
			}
			return p, false, nil
		}
	}
	q := p
	for q < len(raw) && raw[q] != ',' && raw[q] != '\n' && raw[q] != '\r' {
		q++
	}
	e.field = append(e.field, raw[p:q]...)
	return q, q == p, nil
}

// appendValue appends one top-level value in TSV form.
func (e *rowEncoder) appendValue(dst []byte, c *column, v []byte, null bool) ([]byte, error) {
	if null {
		switch {
		case c.nullable:
			return append(dst, '\\', 'N'), nil
		case c.emptyForNull:
			return append(dst, '[', ']'), nil
		}
		return dst, errors.New("NULL in a column the schema says is NOT NULL")
	}
	if c.enc.kind == encList {
		// ClickHouse reads an array of a TabSeparated row as its literal,
		// not unescaped first: the strings inside are escaped within
		// their quotes, tabs and newlines included.
		return e.appendList(dst, c.enc, v)
	}
	return c.enc.append(dst, v, false)
}

// append appends one scalar value; inArray quotes it as an array element.
func (en *valueEnc) append(dst, v []byte, inArray bool) ([]byte, error) {
	q := inArray && en.quote
	if q {
		dst = append(dst, '\'')
	}
	var err error
	switch en.kind {
	case encString:
		dst = appendQuoted(dst, v)
	case encRaw:
		dst = append(dst, v...)
	case encDecimal:
		if len(v) > 0 && (v[0] == 'N' || v[0] == 'I' || v[0] == '-' && len(v) > 1 && v[1] == 'I') {
			return dst, fmt.Errorf("%s cannot be held by a ClickHouse Decimal", v)
		}
		dst = append(dst, v...)
	case encFloat:
		switch string(v) {
		case "NaN":
			dst = append(dst, "nan"...)
		case "Infinity":
			dst = append(dst, "inf"...)
		case "-Infinity":
			dst = append(dst, "-inf"...)
		default:
			dst = append(dst, v...)
		}
	case encBool:
		t := len(v) == 1 && v[0] == 't'
		if !t && !(len(v) == 1 && v[0] == 'f') {
			return dst, fmt.Errorf("%q is not a PostgreSQL boolean (t or f)", v)
		}
		switch {
		case en.boolText && t:
			dst = append(dst, "true"...)
		case en.boolText:
			dst = append(dst, "false"...)
		case t:
			dst = append(dst, '1')
		default:
			dst = append(dst, '0')
		}
	case encBytes:
		if len(v) < 2 || v[0] != '\\' || v[1] != 'x' || len(v)%2 != 0 {
			return dst, fmt.Errorf("bytea is not in hex form (\\x...)")
		}
		n := len(dst)
		dst = append(dst, make([]byte, (len(v)-2)/2)...)
		if _, err := hex.Decode(dst[n:], v[2:]); err != nil {
			return dst[:n], fmt.Errorf("bytea: %w", err)
		}
		raw := append([]byte{}, dst[n:]...)
		dst = appendQuoted(dst[:n], raw)
	case encDate:
		var days int64
		var d int32
		if d, err = arrowconv.ParseDate(v); err != nil {
			return dst, err
		}
		days = int64(d)
		if days < en.dateLo || days > en.dateHi {
			return dst, fmt.Errorf("date %s is outside what this ClickHouse Date holds (%s to %s)", v, dayString(en.dateLo), dayString(en.dateHi))
		}
		dst = append(dst, v...)
	case encMicros:
		var us int64
		us, err = parseTimestamp(v)
		if err != nil {
			return dst, err
		}
		dst = strconv.AppendInt(dst, us, 10)
	case encDateTime64:
		var us int64
		us, err = parseTimestamp(v)
		if err != nil {
			return dst, err
		}
		if us < minDateTime64 || us > maxDateTime64 {
			return dst, fmt.Errorf("timestamp %s is outside DateTime64's range (1900 to 2299)", v)
		}
		dst = time.UnixMicro(us).UTC().AppendFormat(dst, "2006-01-02 15:04:05.000000")
	default:
		return dst, fmt.Errorf("no scalar encoding %d", en.kind)
	}
	if q {
		dst = append(dst, '\'')
	}
	return dst, err
}

// The range of DateTime64 in microseconds: 1900-01-01 to 2299-12-31
// 23:59:59.999999 UTC.
var (
	minDateTime64 = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	maxDateTime64 = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() - 1
)

func dayString(d int64) string {
	return time.Unix(d*86400, 0).UTC().Format("2006-01-02")
}

// appendList converts a PostgreSQL array literal ({a,"b c",NULL}) of one
// dimension into a ClickHouse one (['a','b c',NULL]).
func (e *rowEncoder) appendList(dst []byte, en *valueEnc, v []byte) ([]byte, error) {
	elems, nulls, buf, err := arrowconv.SplitArray(v, e.elems[:0], e.isNul[:0], e.buf)
	e.elems, e.isNul, e.buf = elems, nulls, buf
	if err != nil {
		return dst, err
	}
	dst = append(dst, '[')
	for i, el := range elems {
		if i > 0 {
			dst = append(dst, ',')
		}
		if nulls[i] {
			if !en.elemNull {
				return dst, errors.New("NULL element in an array of NOT NULL elements")
			}
			dst = append(dst, "NULL"...)
			continue
		}
		if dst, err = en.elem.append(dst, el, true); err != nil {
			return dst, fmt.Errorf("element %d: %w", i+1, err)
		}
	}
	return append(dst, ']'), nil
}

func truncate(v []byte) string {
	if len(v) > 60 {
		return string(v[:60]) + "..."
	}
	return string(v)
}

// parseTimestamp parses PostgreSQL's ISO timestamp (see
// arrowconv.ParseTimestamp) into microseconds since 1970-01-01 UTC;
// infinity and -infinity become the largest and smallest Int64, as
// PostgreSQL stores them.
func parseTimestamp(v []byte) (int64, error) {
	switch string(v) {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	return arrowconv.ParseTimestamp(v)
}

// appendEscaped appends s escaped for a TabSeparated field: backslash,
// tab, newline, carriage return and NUL.
func appendEscaped(dst, s []byte) []byte {
	for _, ch := range s {
		switch ch {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\r':
			dst = append(dst, '\\', 'r')
		case 0:
			dst = append(dst, '\\', '0')
		default:
			dst = append(dst, ch)
		}
	}
	return dst
}
