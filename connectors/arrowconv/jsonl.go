package arrowconv

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sluicehq/sluice/connectors"
)

// AppendJSONL appends the JSON objects of raw, one per line (each line
// ending in '\n', as a connectors.Batch carries them; blank lines are
// skipped). A key names a field of the schema (a key that is none is
// refused); a field without a key, or with null, is NULL. Values convert
// by the field's type: a JSON number into a number column exactly (a
// decimal from its digits), a JSON string in its text form (a timestamp,
// a decimal, bytes as \x followed by hex), true and false into a boolean,
// an array into a list, element by element; a string field takes a JSON
// string's text, and any other JSON value (an object, an array, a number)
// as its JSON text. sum, when not nil, gets each line's bytes (without
// its newline). It returns the rows appended; a bad line or value is a
// *connectors.RowError at position, rows numbered from firstRow.
func (b *Builder) AppendJSONL(raw []byte, position string, firstRow int64, sum *connectors.Checksum) (int64, error) {
	var rows int64
	for p := 0; p < len(raw); {
		q := bytes.IndexByte(raw[p:], '\n')
		if q < 0 {
			q = len(raw) - p
		}
		line := raw[p : p+q]
		p += q + 1
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		row := firstRow + rows
		if c, err := b.appendObject(line); err != nil {
			re := &connectors.RowError{Location: position, Row: row, Err: err}
			if c != nil {
				re.Field = c.name
			}
			return rows, re
		}
		if sum != nil {
			sum.Add(line)
		}
		rows++
	}
	b.rows += int(rows)
	b.bytes += int64(len(raw))
	return rows, nil
}

var errJSON = errors.New("malformed JSON")

// appendObject appends one row from a JSON object; on error it returns
// the column at fault, if any.
func (b *Builder) appendObject(v []byte) (*column, error) {
	clear(b.seen)
	p := skipSpace(v, 0)
	if p >= len(v) || v[p] != '{' {
		return nil, fmt.Errorf("%w: a line is not a JSON object", errJSON)
	}
	p = skipSpace(v, p+1)
	if p < len(v) && v[p] == '}' {
		p++
	} else {
		for {
			if p >= len(v) || v[p] != '"' {
				return nil, fmt.Errorf("%w: want a key at byte %d", errJSON, p+1)
			}
			key, np, err := b.readString(v, p, &b.field)
			if err != nil {
				return nil, err
			}
			j, ok := b.csvCols.byName[string(key)]
			if !ok {
				return nil, fmt.Errorf("key %q is not a column of the target schema (%s)", clip(key), fieldNames(b.schema))
			}
			if b.seen[j] {
				return nil, fmt.Errorf("key %q appears twice", clip(key))
			}
			b.seen[j] = true
			p = skipSpace(v, np)
			if p >= len(v) || v[p] != ':' {
				return nil, fmt.Errorf("%w: want ':' after key %q", errJSON, clip(key))
			}
			c := b.cols[j]
			p, err = b.appendJSON(c, v, skipSpace(v, p+1))
			if err != nil {
				return c, err
			}
			p = skipSpace(v, p)
			if p < len(v) && v[p] == ',' {
				p = skipSpace(v, p+1)
				continue
			}
			if p < len(v) && v[p] == '}' {
				p++
				break
			}
			return nil, fmt.Errorf("%w: want ',' or '}' at byte %d", errJSON, p+1)
		}
	}
	if skipSpace(v, p) != len(v) {
		return nil, fmt.Errorf("%w: text after the object at byte %d", errJSON, p+1)
	}
	for j, c := range b.cols {
		if !b.seen[j] {
			if err := c.appendNull(); err != nil {
				return c, err
			}
		}
	}
	return nil, nil
}

// appendJSON appends the JSON value at p to column c and returns the
// offset after it.
func (b *Builder) appendJSON(c *column, v []byte, p int) (int, error) {
	if p >= len(v) {
		return p, fmt.Errorf("%w: a value is missing", errJSON)
	}
	switch ch := v[p]; {
	case ch == 'n':
		if !bytes.HasPrefix(v[p:], []byte("null")) {
			return p, fmt.Errorf("%w at byte %d", errJSON, p+1)
		}
		return p + 4, c.appendNull()
	case ch == '"':
		s, np, err := b.readString(v, p, &b.str)
		if err != nil {
			return p, err
		}
		if c.kind == kList {
			return np, fmt.Errorf("a JSON string where a list (a JSON array) is wanted")
		}
		return np, c.appendText(s, &b.arrays)
	case ch == 't' || ch == 'f':
		word := "true"
		if ch == 'f' {
			word = "false"
		}
		if !bytes.HasPrefix(v[p:], []byte(word)) {
			return p, fmt.Errorf("%w at byte %d", errJSON, p+1)
		}
		np := p + len(word)
		switch c.kind {
		case kBool:
			c.st.putBit(ch == 't')
		case kString:
			c.st.putBytes(v[p:np])
		default:
			return np, fmt.Errorf("a JSON boolean in a column of %s", c.kind)
		}
		return np, nil
	case ch == '-' || ch >= '0' && ch <= '9':
		np := p + 1
		for np < len(v) && isNumberByte(v[np]) {
			np++
		}
		switch c.kind {
		case kInt16, kInt32, kInt64, kFloat32, kFloat64, kDecimal, kString:
			return np, c.appendText(v[p:np], nil)
		}
		return np, fmt.Errorf("a JSON number in a column of %s", c.kind)
	case ch == '[':
		switch c.kind {
		case kList:
			return b.appendJSONArray(c, v, p)
		case kString:
			np, err := skipValue(v, p)
			if err != nil {
				return np, err
			}
			c.st.putBytes(v[p:np])
			return np, nil
		}
		return p, fmt.Errorf("a JSON array in a column of %s", c.kind)
	case ch == '{':
		if c.kind != kString {
			return p, fmt.Errorf("a JSON object in a column of %s", c.kind)
		}
		np, err := skipValue(v, p)
		if err != nil {
			return np, err
		}
		c.st.putBytes(v[p:np])
		return np, nil
	}
	return p, fmt.Errorf("%w at byte %d", errJSON, p+1)
}

// appendJSONArray appends a JSON array at p as a list.
func (b *Builder) appendJSONArray(c *column, v []byte, p int) (int, error) {
	p = skipSpace(v, p+1)
	if p < len(v) && v[p] == ']' {
		c.st.putList(c.elem.st.n)
		return p + 1, nil
	}
	for i := 1; ; i++ {
		if p < len(v) && v[p] == '[' {
			return p, fmt.Errorf("element %d: an array in an array: more than one dimension is not supported", i)
		}
		np, err := b.appendJSON(c.elem, v, p)
		if err != nil {
			return np, fmt.Errorf("element %d: %w", i, err)
		}
		p = skipSpace(v, np)
		if p < len(v) && v[p] == ',' {
			p = skipSpace(v, p+1)
			continue
		}
		if p < len(v) && v[p] == ']' {
			c.st.putList(c.elem.st.n)
			return p + 1, nil
		}
		return p, fmt.Errorf("%w: want ',' or ']' at byte %d", errJSON, p+1)
	}
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

func skipSpace(v []byte, p int) int {
	for p < len(v) && (v[p] == ' ' || v[p] == '\t' || v[p] == '\r' || v[p] == '\n') {
		p++
	}
	return p
}

// readString reads the JSON string at p (v[p] is '"') and returns its
// text, pointing into v unless it holds escapes (then into *scratch), and
// the offset after it.
func (b *Builder) readString(v []byte, p int, scratch *[]byte) ([]byte, int, error) {
	start := p + 1
	i := start
	for i < len(v) && v[i] != '"' && v[i] != '\\' {
		i++
	}
	if i >= len(v) {
		return nil, i, fmt.Errorf("%w: a string does not end", errJSON)
	}
	if v[i] == '"' {
		return v[start:i], i + 1, nil
	}
	buf := append((*scratch)[:0], v[start:i]...)
	for i < len(v) {
		ch := v[i]
		switch {
		case ch == '"':
			*scratch = buf
			return buf, i + 1, nil
		case ch != '\\':
			buf = append(buf, ch)
			i++
			continue
		}
		if i+1 >= len(v) {
			break
		}
		i++
		switch v[i] {
		case '"', '\\', '/':
			buf = append(buf, v[i])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, n, ok := readU(v[i+1:])
			if !ok {
				return nil, i, fmt.Errorf("%w: bad \\u escape", errJSON)
			}
			i += n
			if utf16.IsSurrogate(r) {
				r2, n2, ok := rune(0), 0, false
				if i+2 < len(v) && v[i+1] == '\\' && v[i+2] == 'u' {
					r2, n2, ok = readU(v[i+3:])
				}
				if ok {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 2 + n2
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, i, fmt.Errorf("%w: bad escape \\%c", errJSON, v[i])
		}
		i++
	}
	return nil, i, fmt.Errorf("%w: a string does not end", errJSON)
}

// readU reads the four hex digits of a \u escape.
func readU(v []byte) (rune, int, bool) {
	if len(v) < 4 {
		return 0, 0, false
	}
	var r rune
	for _, c := range v[:4] {
		d, ok := unhex(c)
		if !ok {
			return 0, 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, 4, true
}

// skipValue returns the offset after the JSON value at p (an object or an
// array, with whatever they nest).
func skipValue(v []byte, p int) (int, error) {
	depth := 0
	for i := p; i < len(v); i++ {
		switch v[i] {
		case '"':
			i++
			for i < len(v) && v[i] != '"' {
				if v[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(v) {
				return i, fmt.Errorf("%w: a string does not end", errJSON)
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, nil
			}
		}
	}
	return len(v), fmt.Errorf("%w: an object or array does not end", errJSON)
}

func (k kind) String() string {
	switch k {
	case kBool:
		return "bool"
	case kInt16:
		return "int16"
	case kInt32:
		return "int32"
	case kInt64:
		return "int64"
	case kFloat32:
		return "float32"
	case kFloat64:
		return "float64"
	case kDecimal:
		return "decimal"
	case kString:
		return "string"
	case kBinary:
		return "bytes"
	case kDate:
		return "date"
	case kTime:
		return "time"
	case kTimestamp:
		return "timestamp"
	case kUUID:
		return "uuid"
	case kList:
		return "list"
	}
	return "?"
}
