package protocol

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeEventFast decodes a change event of the current version without
// reflection: the decoding of DecodeChangeEvent's json.Unmarshal, for the
// JSON that AppendJSON writes and any JSON of the same fields, in any order
// and spacing. ok is false for anything it does not take exactly as
// encoding/json would (invalid JSON, an unknown or repeated field, a null
// where a value is wanted, a lone surrogate, invalid UTF-8, another
// version...): the caller then decodes data with encoding/json, which also
// words the error.
func decodeEventFast(data []byte) (e ChangeEvent, ok bool) {
	return decodeEventFastIn(data, "")
}

// decodeEventFastIn is decodeEventFast over data whose text is also in
// text (the same bytes as a string) or, when text is empty, not: every
// string decoded without an escape is then a substring of text, with no
// allocation of its own (and text stays alive as long as one of them).
func decodeEventFastIn(data []byte, text string) (e ChangeEvent, ok bool) {
	d := eventScanner{b: data, s: text}
	if !d.consume('{') {
		return e, false
	}
	var seen uint16
	first := true
	for {
		d.space()
		if d.i < len(d.b) && d.b[d.i] == '}' {
			d.i++
			break
		}
		if !first && !d.consume(',') {
			return e, false
		}
		first = false
		d.space()
		key, ok := d.stringBytes()
		if !ok || !d.consume(':') {
			return e, false
		}
		bit, ok := eventFieldBit(key)
		if !ok || seen&bit != 0 {
			return e, false
		}
		seen |= bit
		switch string(key) {
		case "v":
			n, ok := d.int(64)
			if !ok || n != Version {
				return e, false
			}
			e.V = int(n)
		case "op":
			s, ok := d.string()
			if !ok {
				return e, false
			}
			e.Op = Op(s)
		case "pipeline":
			e.Pipeline, ok = d.string()
		case "database":
			e.Database, ok = d.string()
		case "schema":
			e.Schema, ok = d.string()
		case "table":
			e.Table, ok = d.string()
		case "lsn":
			e.LSN, ok = d.string()
		case "commit_lsn":
			e.CommitLSN, ok = d.string()
		case "key":
			e.Key, ok = d.strings()
		case "before":
			e.Before, ok = d.row()
		case "after":
			e.After, ok = d.row()
		case "index":
			var n int64
			n, ok = d.int(strconv.IntSize)
			e.Index = int(n)
		case "xid":
			var n int64
			n, ok = d.int(33)
			ok = ok && n >= 0
			e.Xid = uint32(n)
		case "relation":
			// Rare (see ChangeEvent.Relation): encoding/json decodes it.
			return ChangeEvent{}, false
		case "commit_time":
			d.space()
			start := d.i
			if _, ok = d.stringBytes(); ok {
				// what encoding/json does: the quoted text to the Unmarshaler
				ok = e.CommitTime.UnmarshalJSON(d.b[start:d.i]) == nil
			}
		}
		if !ok {
			return ChangeEvent{}, false
		}
	}
	d.space()
	if d.i != len(d.b) || seen&1 == 0 { // trailing bytes, or no "v"
		return ChangeEvent{}, false
	}
	return e, true
}

// eventFieldBit is the bit of a ChangeEvent field's JSON name in a set of
// the fields seen ("v" is bit 0).
func eventFieldBit(key []byte) (uint16, bool) {
	var n uint
	switch string(key) {
	case "v":
		n = 0
	case "op":
		n = 1
	case "pipeline":
		n = 2
	case "database":
		n = 3
	case "schema":
		n = 4
	case "table":
		n = 5
	case "key":
		n = 6
	case "before":
		n = 7
	case "after":
		n = 8
	case "lsn":
		n = 9
	case "commit_lsn":
		n = 10
	case "index":
		n = 11
	case "xid":
		n = 12
	case "commit_time":
		n = 13
	case "relation":
		n = 14
	default:
		return 0, false
	}
	return 1 << n, true
}

// eventScanner reads JSON from b at i.
type eventScanner struct {
	b []byte
	// s, when not empty, holds b's bytes as a string: the strings read
	// are substrings of it.
	s   string
	i   int
	buf []byte // unescaped text of the last escaped string
}

func (d *eventScanner) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips space and then c, reporting whether c was there.
func (d *eventScanner) consume(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// null skips space and then null, reporting whether it was there.
func (d *eventScanner) null() bool {
	d.space()
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// stringBytes reads a JSON string and returns its text: a slice of b when
// it has no escape, else of d.buf (valid until the next string). Control
// characters, invalid UTF-8 and surrogates are not taken.
func (d *eventScanner) stringBytes() ([]byte, bool) {
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	i := start
	for i < len(d.b) {
		c := d.b[i]
		switch {
		case c == '"':
			d.i = i + 1
			s := d.b[start:i]
			return s, utf8.Valid(s)
		case c == '\\':
			return d.escaped(start, i)
		case c < 0x20:
			return nil, false
		}
		i++
	}
	return nil, false
}

// escaped reads the rest of a string whose text starts at start and whose
// first escape is at i.
func (d *eventScanner) escaped(start, i int) ([]byte, bool) {
	out := append(d.buf[:0], d.b[start:i]...)
	for i < len(d.b) {
		c := d.b[i]
		switch {
		case c == '"':
			d.i = i + 1
			d.buf = out
			return out, utf8.Valid(out)
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(d.b) {
			return nil, false
		}
		switch e := d.b[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(d.b) {
				return nil, false
			}
			r, err := strconv.ParseUint(string(d.b[i+2:i+6]), 16, 16)
			if err != nil || utf16.IsSurrogate(rune(r)) {
				return nil, false
			}
			out = utf8.AppendRune(out, rune(r))
			i += 6
			continue
		default:
			return nil, false
		}
		i += 2
	}
	return nil, false
}

func (d *eventScanner) string() (string, bool) {
	d.space()
	start := d.i + 1
	s, ok := d.stringBytes()
	if ok && d.s != "" && len(s) == d.i-1-start {
		// No escape (an escape always decodes shorter than it is
		// written): the text as it is in the input.
		return d.s[start : d.i-1], true
	}
	return string(s), ok
}

// int reads an integer that fits in bits bits (signed).
func (d *eventScanner) int(bits int) (int64, bool) {
	d.space()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || n > 1 && d.b[digits] == '0' {
		return 0, false
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(d.b[start:d.i]), 10, bits)
	return v, err == nil
}

// strings reads an array of strings, or null (nil).
func (d *eventScanner) strings() ([]string, bool) {
	if d.null() {
		return nil, true
	}
	if !d.consume('[') {
		return nil, false
	}
	out := []string{}
	if d.consume(']') {
		return out, true
	}
	for {
		s, ok := d.string()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if d.consume(']') {
			return out, true
		}
		if !d.consume(',') {
			return nil, false
		}
	}
}

// row reads an object of Values, or null (nil).
func (d *eventScanner) row() (Row, bool) {
	if d.null() {
		return nil, true
	}
	if !d.consume('{') {
		return nil, false
	}
	r := Row{}
	if d.consume('}') {
		return r, true
	}
	for {
		k, ok := d.string()
		if !ok || !d.consume(':') {
			return nil, false
		}
		var v Value
		d.space()
		switch {
		case d.null():
			v = NullValue
		case d.i < len(d.b) && d.b[d.i] == '"':
			s, ok := d.string()
			if !ok {
				return nil, false
			}
			v = Text(s)
		default:
			if v, ok = d.unchanged(); !ok {
				return nil, false
			}
		}
		r[k] = v
		if d.consume('}') {
			return r, true
		}
		if !d.consume(',') {
			return nil, false
		}
	}
}

// unchanged reads {"unchanged_toast":true}.
func (d *eventScanner) unchanged() (Value, bool) {
	if !d.consume('{') {
		return Value{}, false
	}
	k, ok := d.stringBytes()
	if !ok || string(k) != "unchanged_toast" || !d.consume(':') {
		return Value{}, false
	}
	d.space()
	if len(d.b)-d.i < 4 || string(d.b[d.i:d.i+4]) != "true" {
		return Value{}, false
	}
	d.i += 4
	return UnchangedValue, d.consume('}')
}
