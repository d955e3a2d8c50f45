package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/protocol"
)

var errJSON = errors.New("malformed JSON line")

// jsonRows applies a dataset's contract to JSON lines, one object per
// line, whose keys are the columns: lines may differ in their keys, so
// each key's action is looked up (and cached) as it comes.
type jsonRows struct {
	r     *rules
	k     *keys
	keys  map[string]*colFn // by key; a dropped key maps to a drop
	conds []cond
	// per line
	members []member
	scratch []byte
	val     []byte
}

// member is one key and value of a line's object: raw[ks:ke] is the key
// with its quotes, raw[vs:ve] the value.
type member struct {
	ks, ke, vs, ve int
	fn             *colFn
}

func newJSONRows(r *rules, k *keys) *jsonRows {
	return &jsonRows{r: r, k: k, keys: map[string]*colFn{}, conds: compileFilter(r.filter)}
}

// transform appends the lines of raw with the contract applied, each
// ending in '\n', and returns how many it kept. Keys keep their order,
// dropped ones are left out. A bad line or value is an error with its
// 1-based number in raw and, for a value, its column.
func (t *jsonRows) transform(dst, raw []byte) ([]byte, int64, error) {
	var kept int64
	row := int64(0)
	for p := 0; p < len(raw); {
		end := bytes.IndexByte(raw[p:], '\n')
		if end < 0 {
			end = len(raw)
		} else {
			end += p
		}
		line := raw[:end]
		start := p
		p = end + 1
		row++
		if len(bytes.TrimSpace(raw[start:end])) == 0 {
			continue
		}
		if err := t.scan(line, start); err != nil {
			return dst, kept, &rowError{row: row, err: err}
		}
		for i := range t.members {
			m := &t.members[i]
			fn, err := t.key(line[m.ks:m.ke])
			if err != nil {
				return dst, kept, &rowError{row: row, err: err}
			}
			m.fn = fn
		}
		if keep, err := t.keepRow(line); err != nil || !keep {
			if err != nil {
				return dst, kept, &rowError{row: row, err: err}
			}
			continue
		}
		dst = append(dst, '{')
		first := true
		for i := range t.members {
			m := &t.members[i]
			if m.fn.col.Action == Drop {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, line[m.ks:m.ke]...)
			dst = append(dst, ':')
			if m.fn.keep() {
				dst = append(dst, line[m.vs:m.ve]...)
				continue
			}
			var err error
			if dst, err = t.value(dst, line[m.vs:m.ve], m.fn); err != nil {
				return dst, kept, &rowError{row: row, column: m.fn.name, err: err}
			}
		}
		dst = append(dst, '}', '\n')
		kept++
	}
	return dst, kept, nil
}

// key returns the action of the key raw (with its quotes).
func (t *jsonRows) key(raw []byte) (*colFn, error) {
	name := raw[1 : len(raw)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, errJSON
		}
		name = []byte(s)
	}
	if fn, ok := t.keys[string(name)]; ok {
		return fn, nil
	}
	fn, err := t.r.column(t.k, string(name))
	if err != nil {
		return nil, err
	}
	t.keys[string(name)] = fn
	return fn, nil
}

// keepRow reports whether the line meets the filter: a key the line does
// not have is NULL.
func (t *jsonRows) keepRow(line []byte) (bool, error) {
	for i := range t.conds {
		c := &t.conds[i]
		var v []byte
		null := true
		for j := range t.members {
			if m := &t.members[j]; m.fn.name == c.column {
				var err error
				if v, null, _, err = t.text(line[m.vs:m.ve]); err != nil {
					return false, err
				}
				break
			}
		}
		if !c.test(v, null) {
			return false, nil
		}
	}
	return true, nil
}

// text returns the text of a JSON value: a string's content, a number's
// or a boolean's literal, an object's or array's JSON; null is NULL. str
// tells a string.
func (t *jsonRows) text(v []byte) (text []byte, null, str bool, err error) {
	switch {
	case len(v) == 4 && string(v) == "null":
		return nil, true, false, nil
	case v[0] != '"':
		return v, false, false, nil
	case bytes.IndexByte(v, '\\') < 0:
		return v[1 : len(v)-1], false, true, nil
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return nil, false, true, fmt.Errorf("%w: a string's escapes are not JSON's", errJSON)
	}
	t.scratch = append(t.scratch[:0], s...)
	return t.scratch, false, true, nil
}

// value appends the JSON of what fn makes of the value v.
func (t *jsonRows) value(dst, v []byte, fn *colFn) ([]byte, error) {
	text, null, str, err := t.text(v)
	if err != nil {
		return dst, err
	}
	if null || fn.col.Action == Null {
		return append(dst, "null"...), nil
	}
	if t.val, err = fn.fn(t.val[:0], text); err != nil {
		return dst, valueError(fn, err)
	}
	if str || fn.text() {
		return protocol.AppendJSONString(dst, t.val), nil
	}
	// A number truncated stays a number.
	return append(dst, t.val...), nil
}

// scan reads the members of the object on line[p:] (its end is the
// line's) into t.members.
func (t *jsonRows) scan(line []byte, p int) error {
	t.members = t.members[:0]
	p = skipSpace(line, p)
	if p >= len(line) || line[p] != '{' {
		return fmt.Errorf("%w: not an object", errJSON)
	}
	p = skipSpace(line, p+1)
	if p < len(line) && line[p] == '}' {
		return trailing(line, p+1)
	}
	for {
		var m member
		if p >= len(line) || line[p] != '"' {
			return fmt.Errorf("%w: a key is not a string", errJSON)
		}
		m.ks = p
		end, err := skipString(line, p)
		if err != nil {
			return err
		}
		m.ke = end
		p = skipSpace(line, end)
		if p >= len(line) || line[p] != ':' {
			return fmt.Errorf("%w: no ':' after a key", errJSON)
		}
		p = skipSpace(line, p+1)
		m.vs = p
		if p, err = skipValue(line, p); err != nil {
			return err
		}
		m.ve = p
		t.members = append(t.members, m)
		p = skipSpace(line, p)
		if p < len(line) && line[p] == ',' {
			p = skipSpace(line, p+1)
			continue
		}
		if p < len(line) && line[p] == '}' {
			return trailing(line, p+1)
		}
		return fmt.Errorf("%w: no ',' or '}' after a value", errJSON)
	}
}

func trailing(line []byte, p int) error {
	if skipSpace(line, p) != len(line) {
		return fmt.Errorf("%w: text after the object", errJSON)
	}
	return nil
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\r' || b[p] == '\n') {
		p++
	}
	return p
}

// skipString returns the position after the string that starts at p.
func skipString(b []byte, p int) (int, error) {
	for i := p + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return p, fmt.Errorf("%w: a string does not end", errJSON)
}

// skipValue returns the position after the JSON value that starts at p.
func skipValue(b []byte, p int) (int, error) {
	if p >= len(b) {
		return p, fmt.Errorf("%w: a value is missing", errJSON)
	}
	switch b[p] {
	case '"':
		return skipString(b, p)
	case '{', '[':
		depth := 0
		for i := p; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
				if err != nil {
					return p, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return p, fmt.Errorf("%w: an object or array does not end", errJSON)
	}
	i := p
	for i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] >= 'a' && b[i] <= 'z' || b[i] == '-' || b[i] == '+' || b[i] == '.' || b[i] == 'E') {
		i++
	}
	if i == p {
		return p, fmt.Errorf("%w: not a value", errJSON)
	}
	return i, nil
}
