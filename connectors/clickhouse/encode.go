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
		days, err = parseDate(v)
		if err != nil {
			return dst, err
		}
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
	elems, nulls, err := splitArray(v, e.elems[:0], e.isNul[:0])
	e.elems, e.isNul = elems, nulls
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

// splitArray splits a one-dimensional PostgreSQL array literal into its
// elements (unquoted, unescaped) and which of them are NULL. A literal
// with dimension bounds ([0:1]={...}) or of more dimensions is refused:
// a ClickHouse array of the element type cannot hold it.
func splitArray(v []byte, elems [][]byte, nulls []bool) ([][]byte, []bool, error) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return elems, nulls, fmt.Errorf("%q is not a one-dimensional array literal {...}", truncate(v))
	}
	body := v[1 : len(v)-1]
	if len(body) == 0 {
		return elems, nulls, nil
	}
	for p := 0; ; {
		var el []byte
		null := false
		switch {
		case p < len(body) && body[p] == '"':
			p++
			for p < len(body) && body[p] != '"' {
				if body[p] == '\\' && p+1 < len(body) {
					p++
				}
				el = append(el, body[p])
				p++
			}
			if p >= len(body) {
				return elems, nulls, fmt.Errorf("an array element's quotes do not end")
			}
			p++
			if el == nil {
				el = []byte{}
			}
		case p < len(body) && body[p] == '{':
			return elems, nulls, fmt.Errorf("multi-dimensional array %q: want one dimension", truncate(v))
		default:
			q := p
			for q < len(body) && body[q] != ',' {
				q++
			}
			el = body[p:q]
			p = q
			null = len(el) == 4 && (string(el) == "NULL" || bytes.EqualFold(el, []byte("null")))
		}
		elems = append(elems, el)
		nulls = append(nulls, null)
		if p == len(body) {
			return elems, nulls, nil
		}
		if body[p] != ',' {
			return elems, nulls, fmt.Errorf("bad array literal %q", truncate(v))
		}
		p++
	}
}

func truncate(v []byte) string {
	if len(v) > 60 {
		return string(v[:60]) + "..."
	}
	return string(v)
}

// parseDate parses PostgreSQL's ISO date (YYYY-MM-DD, optionally " BC")
// into days since 1970-01-01.
func parseDate(v []byte) (int64, error) {
	y, m, d, rest, err := parseYMD(v)
	if err != nil || len(rest) > 0 && string(rest) != " BC" {
		return 0, fmt.Errorf("%q is not a date ClickHouse can hold", truncate(v))
	}
	if len(rest) > 0 {
		y = 1 - y
	}
	return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix() / 86400, nil
}

// parseTimestamp parses PostgreSQL's ISO timestamp, with or without a
// UTC offset (timestamptz renders as +00 in UTC sessions), fractional
// seconds and " BC", into microseconds since 1970-01-01 UTC. infinity and
// -infinity become the largest and smallest Int64, as PostgreSQL stores
// them.
func parseTimestamp(v []byte) (int64, error) {
	switch string(v) {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	bad := func() (int64, error) { return 0, fmt.Errorf("%q is not a timestamp", truncate(v)) }
	y, mo, d, rest, err := parseYMD(v)
	if err != nil || len(rest) < 9 || rest[0] != ' ' || rest[3] != ':' || rest[6] != ':' {
		return bad()
	}
	h, ok1 := num2(rest[1:3])
	mi, ok2 := num2(rest[4:6])
	s, ok3 := num2(rest[7:9])
	if !ok1 || !ok2 || !ok3 {
		return bad()
	}
	rest = rest[9:]
	var us int64
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		digits := rest[1:n]
		if len(digits) == 0 || len(digits) > 6 {
			return bad()
		}
		for i := 0; i < 6; i++ {
			us *= 10
			if i < len(digits) {
				us += int64(digits[i] - '0')
			}
		}
		rest = rest[n:]
	}
	var off int64
	if len(rest) > 0 && (rest[0] == '+' || rest[0] == '-') {
		sign := int64(1)
		if rest[0] == '-' {
			sign = -1
		}
		rest = rest[1:]
		parts := 0
		for parts < 3 && len(rest) >= 2 {
			n, ok := num2(rest[:2])
			if !ok {
				return bad()
			}
			off = off*60 + int64(n)
			parts++
			rest = rest[2:]
			if len(rest) > 0 && rest[0] == ':' {
				rest = rest[1:]
			} else {
				break
			}
		}
		for ; parts < 3; parts++ {
			off *= 60
		}
		off *= sign
	}
	if len(rest) > 0 {
		if string(rest) != " BC" {
			return bad()
		}
		y = 1 - y
	}
	secs := time.Date(y, time.Month(mo), d, h, mi, s, 0, time.UTC).Unix() - off
	if secs > math.MaxInt64/1_000_000-1 || secs < math.MinInt64/1_000_000+1 {
		return 0, fmt.Errorf("timestamp %q is beyond Int64 microseconds", truncate(v))
	}
	return secs*1e6 + us, nil
}

// parseYMD parses YYYY-MM-DD (four or more year digits) at the start of v.
func parseYMD(v []byte) (y, m, d int, rest []byte, err error) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		y = y*10 + int(v[i]-'0')
		i++
		if i > 7 {
			return 0, 0, 0, nil, errors.New("year too long")
		}
	}
	if i < 4 || len(v) < i+6 || v[i] != '-' || v[i+3] != '-' {
		return 0, 0, 0, nil, errors.New("not YYYY-MM-DD")
	}
	var ok1, ok2 bool
	m, ok1 = num2(v[i+1 : i+3])
	d, ok2 = num2(v[i+4 : i+6])
	if !ok1 || !ok2 || m < 1 || m > 12 || d < 1 || d > 31 {
		return 0, 0, 0, nil, errors.New("not YYYY-MM-DD")
	}
	return y, m, d, v[i+6:], nil
}

func num2(b []byte) (int, bool) {
	if len(b) != 2 || b[0] < '0' || b[0] > '9' || b[1] < '0' || b[1] > '9' {
		return 0, false
	}
	return int(b[0]-'0')*10 + int(b[1]-'0'), true
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
