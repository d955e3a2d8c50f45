package contract

import (
	"bytes"
	"errors"
	"math/big"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// valueFunc transforms the text of one value that is not NULL, appending
// the result to dst. Its error never holds the value.
type valueFunc func(dst, v []byte) ([]byte, error)

// colFn is a column's action, ready to apply: one per column of a
// compiled plan, used by one goroutine (hash and tokenize keep state).
type colFn struct {
	name string
	col  Column
	fn   valueFunc // nil for keep, drop and null
	// plain says fn's output is never empty and never holds a character
	// CSV or JSON would quote or escape (hex digits).
	plain bool
}

// keep reports whether the column's values are copied as they are.
func (f *colFn) keep() bool { return f == nil || f.col.Action == Keep }

// text reports whether the output is text whatever the input was (hash,
// mask, tokenize); truncate keeps the input's kind (a number stays a
// number), null is NULL.
func (f *colFn) text() bool {
	a := f.col.Action
	return a == Hash || a == Mask || a == Tokenize
}

// newColFn prepares the action of column c for one user.
func (k *keys) newColFn(name string, c Column) *colFn {
	f := &colFn{name: name, col: c}
	switch c.Action {
	case Hash:
		hk := k.hmac
		if hk == nil {
			hk = newHMACKey(k.hash)
		}
		h := newHasher(hk)
		f.fn, f.plain = newMemo(h.apply), true
	case Mask:
		if c.maskShape() == ShapeEmail {
			f.fn = func(dst, v []byte) ([]byte, error) { return maskEmail(dst, v), nil }
		} else {
			first, last := c.KeepFirst, c.keepLast()
			f.fn = func(dst, v []byte) ([]byte, error) { return maskChars(dst, v, first, last), nil }
		}
	case Truncate:
		switch {
		case c.To != "":
			unit := c.To
			f.fn = func(dst, v []byte) ([]byte, error) { return truncateTime(dst, v, unit) }
		case c.Bucket != "":
			b := newBucket(c.Bucket)
			f.fn = b.apply
		default:
			n := c.Length
			f.fn = func(dst, v []byte) ([]byte, error) { return truncateText(dst, v, n), nil }
		}
	case Tokenize:
		t := newTokenizer(k.tok)
		f.fn = newMemo(t.encrypt)
	}
	return f
}

// memo remembers what an expensive action (hash, tokenize) made of the
// values a column repeats (a status, a country code), in the memory of the
// task that transforms them: after memoProbe values, a column whose values
// repeat less than half the time stops remembering. The first memoFew
// values it remembers are looked up by comparing bytes, cheaper than a
// map's hash for a column of a few values; the next ones in a map.
type memo struct {
	fn            valueFunc
	few           []memoEntry
	m             map[string]string
	off           bool
	lookups, hits int
}

type memoEntry struct{ in, out []byte }

const (
	memoMax   = 4096
	memoProbe = 2048
	memoFew   = 8
)

func newMemo(fn valueFunc) valueFunc {
	m := &memo{fn: fn}
	return m.apply
}

func (m *memo) apply(dst, v []byte) ([]byte, error) {
	if m.off {
		return m.fn(dst, v)
	}
	m.lookups++
	for i := range m.few {
		if e := &m.few[i]; bytes.Equal(e.in, v) {
			m.hits++
			return append(dst, e.out...), nil
		}
	}
	if m.m != nil {
		if out, ok := m.m[string(v)]; ok {
			m.hits++
			return append(dst, out...), nil
		}
	}
	start := len(dst)
	dst, err := m.fn(dst, v)
	if err != nil {
		return dst, err
	}
	switch {
	case len(m.few) < memoFew:
		m.few = append(m.few, memoEntry{in: bytes.Clone(v), out: bytes.Clone(dst[start:])})
	case m.m == nil:
		m.m = map[string]string{string(v): string(dst[start:])}
	case len(m.m) < memoMax-memoFew:
		m.m[string(v)] = string(dst[start:])
	}
	if m.lookups == memoProbe && 2*m.hits < m.lookups {
		m.off, m.few, m.m = true, nil, nil
	}
	return dst, nil
}

func isASCIIAlnum(c byte) bool {
	// Unsigned: c-'0' wraps around above 9 for what is below '0'; c|0x20
	// is the lower case of a letter.
	return c-'0' < 10 || (c|0x20)-'a' < 26
}

// alnumRune reports whether r counts as a letter or digit for masking;
// an invalid byte counts, so that it is hidden too.
func alnumRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// maskChars appends v with every letter and digit replaced by '*' but the
// first `first` and the last `last` of them; other characters stay. When
// the kept ones would be more than half of the letters and digits (a
// short value), every one is masked.
func maskChars(dst, v []byte, first, last int) []byte {
	isASCII, n := true, 0
	for _, c := range v {
		if c >= utf8.RuneSelf {
			isASCII = false
			break
		}
		if isASCIIAlnum(c) {
			n++
		}
	}
	if !isASCII {
		n = 0
		for i := 0; i < len(v); {
			r, w := utf8.DecodeRune(v[i:])
			if alnumRune(r) {
				n++
			}
			i += w
		}
	}
	if 2*(first+last) > n {
		first, last = 0, 0
	}
	k := 0 // letters and digits seen
	if isASCII {
		// Copied whole, then the masked ones overwritten in place.
		start := len(dst)
		dst = append(dst, v...)
		out := dst[start:]
		for i, c := range out {
			if isASCIIAlnum(c) {
				if k >= first && k < n-last {
					out[i] = '*'
				}
				k++
			}
		}
		return dst
	}
	for i := 0; i < len(v); {
		r, w := utf8.DecodeRune(v[i:])
		if alnumRune(r) {
			if k >= first && k < n-last {
				dst = append(dst, '*')
			} else {
				dst = append(dst, v[i:i+w]...)
			}
			k++
		} else {
			dst = append(dst, v[i:i+w]...)
		}
		i += w
	}
	return dst
}

// maskEmail appends v with every character before its last '@' replaced
// by '*' and the domain kept; a value without a local part and a domain
// is masked whole, as maskChars with nothing kept.
func maskEmail(dst, v []byte) []byte {
	at := bytes.LastIndexByte(v, '@')
	if at <= 0 || at == len(v)-1 {
		return maskChars(dst, v, 0, 0)
	}
	for i := 0; i < at; {
		_, w := utf8.DecodeRune(v[i:at])
		dst = append(dst, '*')
		i += w
	}
	return append(dst, v[at:]...)
}

// truncateText appends the first n characters of v.
func truncateText(dst, v []byte, n int) []byte {
	i := 0
	for k := 0; k < n && i < len(v); k++ {
		_, w := utf8.DecodeRune(v[i:])
		i += w
	}
	return append(dst, v[:i]...)
}

var errNotTime = errors.New("not a date, timestamp or time of day")

// truncateTime appends v, a date, timestamp or time of day in ISO form
// (PostgreSQL's text: 2026-11-25, 2026-11-25 10:11:12.5+00,
// 2026-11-25T10:11:12Z, 10:11:12), truncated to unit: the fields below it
// reset (months and days to 01, time fields to 00, fractions removed), the
// zone offset and the era kept. infinity and -infinity stay as they are.
func truncateTime(dst, v []byte, unit string) ([]byte, error) {
	if bytes.Equal(v, []byte("infinity")) || bytes.Equal(v, []byte("-infinity")) {
		return append(dst, v...), nil
	}
	if len(v) >= 3 && digits(v[:2]) && v[2] == ':' {
		out, _, err := truncateClock(dst, v, unit)
		return out, err
	}
	// The year: 4 digits or more, then -MM-DD.
	y := 0
	for y < len(v) && v[y] >= '0' && v[y] <= '9' {
		y++
	}
	if y < 4 || len(v) < y+6 || v[y] != '-' || !digits(v[y+1:y+3]) || v[y+3] != '-' || !digits(v[y+4:y+6]) {
		return dst, errNotTime
	}
	dst = append(dst, v[:y+1]...)
	switch unit {
	case "year":
		dst = append(dst, "01-01"...)
	case "month":
		dst = append(dst, v[y+1:y+3]...)
		dst = append(dst, "-01"...)
	default:
		dst = append(dst, v[y+1:y+6]...)
	}
	rest := v[y+6:]
	if len(rest) > 0 && (rest[0] == ' ' || rest[0] == 'T') && len(rest) > 3 && digits(rest[1:3]) && rest[3] == ':' {
		dst = append(dst, rest[0])
		var err error
		if dst, rest, err = truncateClock(dst, rest[1:], unit); err != nil {
			return dst, err
		}
	}
	// What follows is a zone offset or an era: kept, if it is one.
	for _, c := range rest {
		if !(c == '+' || c == '-' || c == ':' || c == 'Z' || c == ' ' || c == 'B' || c == 'C' || c >= '0' && c <= '9') {
			return dst, errNotTime
		}
	}
	return append(dst, rest...), nil
}

// truncateClock appends the time of day that starts v (HH:MM[:SS[.frac]])
// truncated to unit, and returns what follows it.
func truncateClock(dst, v []byte, unit string) ([]byte, []byte, error) {
	if len(v) < 5 || !digits(v[:2]) || v[2] != ':' || !digits(v[3:5]) {
		return dst, nil, errNotTime
	}
	end := 5
	if len(v) >= 8 && v[5] == ':' && digits(v[6:8]) {
		end = 8
		if len(v) > 8 && v[8] == '.' {
			end = 9
			for end < len(v) && v[end] >= '0' && v[end] <= '9' {
				end++
			}
		}
	}
	switch unit {
	case "hour":
		dst = append(dst, v[:2]...)
		dst = append(dst, ":00:00"...)
	case "minute":
		dst = append(dst, v[:5]...)
		dst = append(dst, ":00"...)
	default:
		dst = append(dst, "00:00:00"...)
	}
	return dst, v[end:], nil
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

var errNotNumber = errors.New("not a number")

// bucket truncates numbers down to a multiple of a positive step.
type bucket struct {
	step  *big.Rat
	istep int64 // the step when it is a whole number that fits, else 0
	scale int   // digits after the step's point
	x, q  big.Rat
	n     big.Int
}

func newBucket(step string) *bucket {
	b := &bucket{step: new(big.Rat)}
	b.step.SetString(step)
	if i := bytes.IndexByte([]byte(step), '.'); i >= 0 {
		b.scale = len(step) - i - 1
	}
	if b.step.IsInt() && b.step.Num().IsInt64() {
		b.istep = b.step.Num().Int64()
	}
	return b
}

// apply appends the largest multiple of the step that is not above v; NaN
// and infinities stay as they are.
func (b *bucket) apply(dst, v []byte) ([]byte, error) {
	if b.istep > 0 {
		if x, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			q := x / b.istep
			if x%b.istep != 0 && x < 0 {
				q--
			}
			if p := q * b.istep; p/b.istep == q {
				return strconv.AppendInt(dst, p, 10), nil
			}
		}
	}
	switch string(bytes.ToLower(v)) {
	case "nan", "infinity", "-infinity", "+infinity", "inf", "-inf", "+inf":
		return append(dst, v...), nil
	}
	if len(v) == 0 || len(v) > 400 {
		return dst, errNotNumber
	}
	if _, ok := b.x.SetString(string(v)); !ok {
		return dst, errNotNumber
	}
	b.q.Quo(&b.x, b.step)
	// Floor of num/den, den > 0: Euclidean division rounds down.
	b.n.Div(b.q.Num(), b.q.Denom())
	b.q.SetInt(&b.n)
	b.q.Mul(&b.q, b.step)
	if b.scale == 0 {
		return b.q.Num().Append(dst, 10), nil
	}
	return append(dst, b.q.FloatString(b.scale)...), nil
}
