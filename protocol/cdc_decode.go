package protocol

import (
	"bytes"
	"slices"
	"strconv"
	"time"
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
	return decodeEventShared(data, text, nil)
}

// shared holds what an event decoded last shares with the next ones of
// its message, which mostly repeat it: the key columns and the commit
// time. The events of a message then share one Key slice.
type shared struct {
	key      []string
	timeText []byte // the commit_time JSON string, quotes included
	time     time.Time
	scratch  []string
	buf      []byte // eventScanner.buf
}

// decodeEventShared is decodeEventFastIn taking from sh, when not nil,
// what the event decoded before it has in common with it, and keeping
// there what it decodes.
func decodeEventShared(data []byte, text string, sh *shared) (e ChangeEvent, ok bool) {
	d := eventScanner{b: data, s: text, sh: sh}
	if sh != nil {
		d.buf = sh.buf
		defer func() { sh.buf = d.buf[:0] }()
	}
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
				raw := d.b[start:d.i]
				switch {
				case sh != nil && sh.timeText != nil && bytes.Equal(raw, sh.timeText):
					e.CommitTime = sh.time
				default:
					// what encoding/json does: the quoted text to the Unmarshaler
					if ok = e.CommitTime.UnmarshalJSON(raw) == nil; ok && sh != nil {
						sh.timeText, sh.time = raw, e.CommitTime
					}
				}
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
	sh  *shared
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
	i, ascii := jsonPlainEnd(d.b, start)
	switch {
	case i >= len(d.b):
		return nil, false
	case d.b[i] == '"':
		d.i = i + 1
		s := d.b[start:i]
		return s, ascii || utf8.Valid(s)
	case d.b[i] == '\\':
		return d.escaped(start, i, ascii)
	}
	return nil, false // a control character
}

// escaped reads the rest of a string whose text starts at start and whose
// first escape is at i; ascii reports that the text before it is ASCII.
func (d *eventScanner) escaped(start, i int, ascii bool) ([]byte, bool) {
	if !ascii && !utf8.Valid(d.b[start:i]) {
		return nil, false
	}
	out := append(d.buf[:0], d.b[start:i]...)
	for i < len(d.b) {
		// d.b[i] is a backslash: an escape. The text it decodes to is
		// valid UTF-8, and so is the whole when every run of text
		// between escapes is (a run ends at an ASCII byte).
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
			i += 4
		default:
			return nil, false
		}
		i += 2
		j, ascii := jsonPlainEnd(d.b, i)
		if !ascii && !utf8.Valid(d.b[i:j]) {
			return nil, false
		}
		out = append(out, d.b[i:j]...)
		switch {
		case j >= len(d.b):
			return nil, false
		case d.b[j] == '"':
			d.i = j + 1
			d.buf = out
			return out, true
		case d.b[j] != '\\':
			return nil, false // a control character
		}
		i = j
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

// strings reads an array of strings, or null (nil). With d.sh set, an
// array equal to the last one read is that same slice.
func (d *eventScanner) strings() ([]string, bool) {
	if d.null() {
		return nil, true
	}
	if !d.consume('[') {
		return nil, false
	}
	if d.consume(']') {
		return []string{}, true
	}
	var out []string
	if d.sh != nil {
		out = d.sh.scratch[:0]
	}
	for {
		s, ok := d.string()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if d.consume(']') {
			break
		}
		if !d.consume(',') {
			return nil, false
		}
	}
	if d.sh == nil {
		return out, true
	}
	d.sh.scratch = out
	if !slices.Equal(out, d.sh.key) {
		d.sh.key = slices.Clip(slices.Clone(out))
	}
	return d.sh.key, true
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
