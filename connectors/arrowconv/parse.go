package arrowconv

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow/decimal128"
)

// The parsers below read values in the text forms PostgreSQL writes with
// the session settings of the postgres connector (ISO dates, UTC, hex
// bytea), which are also the usual forms of CSV and JSONL files: an
// optional sign and decimal digits for numbers, t/f or true/false for
// booleans, YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM]] (or with a T, or Z)
// for dates and times. Each returns an error saying why a value does not
// fit; the caller adds the row and the column.

// parseInt parses a decimal integer that must fit in bits bits.
func parseInt(v []byte, bits int) (int64, error) {
	if len(v) == 0 {
		return 0, errors.New("empty integer")
	}
	neg := false
	i := 0
	switch v[0] {
	case '-':
		neg, i = true, 1
	case '+':
		i = 1
	}
	if i == len(v) {
		return 0, fmt.Errorf("%q is not an integer", clip(v))
	}
	limit := uint64(1) << (bits - 1) // the magnitude of the smallest value
	var n uint64
	for ; i < len(v); i++ {
		c := v[i] - '0'
		if c > 9 {
			return 0, fmt.Errorf("%q is not an integer", clip(v))
		}
		if n > limit/10 {
			return 0, fmt.Errorf("%s is out of range for a %d-bit integer", clip(v), bits)
		}
		n = n*10 + uint64(c)
	}
	if neg {
		if n > limit {
			return 0, fmt.Errorf("%s is out of range for a %d-bit integer", clip(v), bits)
		}
		return -int64(n-1) - 1, nil
	}
	if n >= limit {
		return 0, fmt.Errorf("%s is out of range for a %d-bit integer", clip(v), bits)
	}
	return int64(n), nil
}

// parseFloat parses a float, NaN and infinities included (PostgreSQL's
// NaN, Infinity, -Infinity, and inf or nan in any case).
func parseFloat(v []byte, bits int) (float64, error) {
	if len(v) == 0 {
		return 0, errors.New("empty number")
	}
	// ParseFloat does not keep the string: no copy needed.
	f, err := strconv.ParseFloat(unsafeString(v), bits)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("%s is out of range for a %d-bit float", clip(v), bits)
		}
		return 0, fmt.Errorf("%q is not a number", clip(v))
	}
	return f, nil
}

// parseBool parses t, f, true, false (any case), 1 and 0.
func parseBool(v []byte) (bool, error) {
	switch len(v) {
	case 1:
		switch v[0] {
		case 't', 'T', '1':
			return true, nil
		case 'f', 'F', '0':
			return false, nil
		}
	case 4:
		if eqFold(v, "true") {
			return true, nil
		}
	case 5:
		if eqFold(v, "false") {
			return false, nil
		}
	}
	return false, fmt.Errorf("%q is not a boolean (t, f, true or false)", clip(v))
}

func eqFold(v []byte, lower string) bool {
	if len(v) != len(lower) {
		return false
	}
	for i := range v {
		c := v[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// parseDecimal parses a decimal number (digits, an optional point and
// exponent) into an unscaled 128-bit integer of the given scale. A value
// with more significant digits after the point than scale (other than
// zeros), or more digits than precision, is refused rather than rounded:
// the conversion is exact or fails. NaN and infinities are refused.
func parseDecimal(v []byte, precision, scale int32) (decimal128.Num, error) {
	bad := func() (decimal128.Num, error) {
		return decimal128.Num{}, fmt.Errorf("%q is not a decimal number", clip(v))
	}
	if len(v) == 0 {
		return bad()
	}
	i := 0
	neg := false
	switch v[0] {
	case '-':
		neg, i = true, 1
	case '+':
		i = 1
	}
	if i < len(v) && (v[i] == 'N' || v[i] == 'n' || v[i] == 'I' || v[i] == 'i') {
		return decimal128.Num{}, fmt.Errorf("%s cannot be held by a decimal", clip(v))
	}
	// digits holds the significant digits (leading zeros dropped); frac
	// counts the digits read after the point; exp is an exponent.
	var digits [80]byte
	nd := 0
	frac := 0
	seenDigit, seenPoint := false, false
	for ; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			seenDigit = true
			if seenPoint {
				frac++
			}
			if nd == 0 && c == '0' {
				continue
			}
			if nd == len(digits) {
				return decimal128.Num{}, fmt.Errorf("%s has too many digits for a decimal", clip(v))
			}
			digits[nd] = c - '0'
			nd++
		case c == '.' && !seenPoint:
			seenPoint = true
		case c == 'e' || c == 'E':
			goto exponent
		default:
			return bad()
		}
	}
	if !seenDigit {
		return bad()
	}
	return scaleDigits(v, digits[:nd], frac, 0, neg, precision, scale)
exponent:
	if !seenDigit {
		return bad()
	}
	{
		e, err := parseInt(v[i+1:], 16)
		if err != nil {
			return bad()
		}
		return scaleDigits(v, digits[:nd], frac, int(e), neg, precision, scale)
	}
}

// scaleDigits makes the unscaled integer of digits x 10^(exp-frac) at
// the given scale.
func scaleDigits(v []byte, digits []byte, frac, exp int, neg bool, precision, scale int32) (decimal128.Num, error) {
	// The value's own scale is frac-exp; it must not exceed scale unless
	// the digits beyond it are zeros.
	if len(digits) == 0 {
		return decimal128.Num{}, nil
	}
	shift := int(scale) - (frac - exp)
	if shift < 0 {
		drop := -shift
		if drop > len(digits) {
			drop = len(digits)
		}
		for _, d := range digits[len(digits)-drop:] {
			if d != 0 {
				return decimal128.Num{}, fmt.Errorf("%s has more than %d digits after the point", clip(v), scale)
			}
		}
		digits = digits[:len(digits)-drop]
		shift = 0
	}
	if len(digits)+shift > int(precision) {
		return decimal128.Num{}, fmt.Errorf("%s does not fit decimal(%d,%d)", clip(v), precision, scale)
	}
	var n decimal128.Num
	if len(digits) <= 18 {
		var u uint64
		for _, d := range digits {
			u = u*10 + uint64(d)
		}
		n = decimal128.FromU64(u)
	} else {
		ten := decimal128.FromU64(10)
		for _, d := range digits {
			n = n.Mul(ten).Add(decimal128.FromU64(uint64(d)))
		}
	}
	if shift > 0 {
		n = n.Mul(decimal128.GetScaleMultiplier(shift))
	}
	if neg {
		n = n.Negate()
	}
	return n, nil
}

// ParseDate parses YYYY-MM-DD (four or more year digits, optionally " BC")
// into days since 1970-01-01.
func ParseDate(v []byte) (int32, error) {
	y, m, d, rest, ok := parseYMD(v)
	if !ok || len(rest) > 0 && string(rest) != " BC" {
		if string(v) == "infinity" || string(v) == "-infinity" {
			return 0, fmt.Errorf("date %s cannot be held by a date", v)
		}
		return 0, fmt.Errorf("%q is not a date (YYYY-MM-DD)", clip(v))
	}
	if len(rest) > 0 {
		y = 1 - y
	}
	days := daysFromCivil(y, m, d)
	if days > math.MaxInt32 || days < math.MinInt32 {
		return 0, fmt.Errorf("date %s is out of range", clip(v))
	}
	return int32(days), nil
}

// ParseTimestamp parses a date and time: "YYYY-MM-DD HH:MM:SS[.ffffff]"
// or with a 'T', then an optional UTC offset (+HH, +HH:MM, +HH:MM:SS, or
// Z) and " BC", into microseconds since 1970-01-01 00:00 UTC (the time is
// taken as UTC when no offset is given). infinity and -infinity are
// refused: no timestamp holds them.
func ParseTimestamp(v []byte) (int64, error) {
	bad := func() (int64, error) { return 0, fmt.Errorf("%q is not a timestamp", clip(v)) }
	y, mo, d, rest, ok := parseYMD(v)
	if !ok {
		if string(v) == "infinity" || string(v) == "-infinity" {
			return 0, fmt.Errorf("timestamp %s cannot be held by a timestamp", v)
		}
		return bad()
	}
	var us int64
	if len(rest) > 0 && (rest[0] == ' ' || rest[0] == 'T') && len(rest) >= 9 && rest[3] == ':' {
		t, n, ok := parseClock(rest[1:])
		if !ok {
			return bad()
		}
		us, rest = t, rest[1+n:]
	}
	var off int64
	switch {
	case len(rest) > 0 && rest[0] == 'Z':
		rest = rest[1:]
	case len(rest) > 0 && (rest[0] == '+' || rest[0] == '-'):
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
		if parts == 0 {
			return bad()
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
	days := daysFromCivil(y, mo, d)
	const maxDays = math.MaxInt64/86_400_000_000 - 1
	if days > maxDays || days < -maxDays {
		return 0, fmt.Errorf("timestamp %s is out of range", clip(v))
	}
	return days*86_400_000_000 + us - off*1_000_000, nil
}

// parseTime parses a time of day HH:MM:SS[.ffffff] into microseconds
// since midnight. 24:00:00, which PostgreSQL allows, is refused.
func parseTime(v []byte) (int64, error) {
	us, n, ok := parseClock(v)
	if !ok || n != len(v) {
		return 0, fmt.Errorf("%q is not a time of day (HH:MM:SS)", clip(v))
	}
	if us >= 86_400_000_000 {
		return 0, fmt.Errorf("time %s is beyond 23:59:59.999999", clip(v))
	}
	return us, nil
}

// parseClock parses HH:MM:SS[.f...] at the start of v (one to six digits
// of fraction) and returns microseconds and the bytes read.
func parseClock(v []byte) (int64, int, bool) {
	if len(v) < 8 || v[2] != ':' || v[5] != ':' {
		return 0, 0, false
	}
	h, ok1 := num2(v[0:2])
	m, ok2 := num2(v[3:5])
	s, ok3 := num2(v[6:8])
	if !ok1 || !ok2 || !ok3 || h > 24 || m > 59 || s > 59 {
		return 0, 0, false
	}
	us := (int64(h)*3600 + int64(m)*60 + int64(s)) * 1_000_000
	n := 8
	if n < len(v) && v[n] == '.' {
		n++
		start := n
		var f int64
		for n < len(v) && v[n] >= '0' && v[n] <= '9' {
			if n-start == 6 {
				return 0, 0, false
			}
			f = f*10 + int64(v[n]-'0')
			n++
		}
		if n == start {
			return 0, 0, false
		}
		for k := n - start; k < 6; k++ {
			f *= 10
		}
		us += f
	}
	return us, n, true
}

// parseYMD parses YYYY-MM-DD (four to seven year digits) at the start of v.
func parseYMD(v []byte) (y, m, d int, rest []byte, ok bool) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		y = y*10 + int(v[i]-'0')
		i++
		if i > 7 {
			return 0, 0, 0, nil, false
		}
	}
	if i < 4 || len(v) < i+6 || v[i] != '-' || v[i+3] != '-' {
		return 0, 0, 0, nil, false
	}
	var ok1, ok2 bool
	m, ok1 = num2(v[i+1 : i+3])
	d, ok2 = num2(v[i+4 : i+6])
	if !ok1 || !ok2 || m < 1 || m > 12 || d < 1 || d > daysIn(y, m) {
		return 0, 0, 0, nil, false
	}
	return y, m, d, v[i+6:], true
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic
// Gregorian date (year 0 is 1 BC), after Howard Hinnant's algorithm.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

func num2(b []byte) (int, bool) {
	if len(b) != 2 || b[0] < '0' || b[0] > '9' || b[1] < '0' || b[1] > '9' {
		return 0, false
	}
	return int(b[0]-'0')*10 + int(b[1]-'0'), true
}

// appendBytea decodes PostgreSQL's hex form of bytea (\x0a1b...) onto dst.
func appendBytea(dst, v []byte) ([]byte, error) {
	if len(v) < 2 || v[0] != '\\' || v[1] != 'x' || len(v)%2 != 0 {
		return dst, fmt.Errorf("%q is not bytes in hex form (\\x...)", clip(v))
	}
	n := len(dst)
	dst = append(dst, make([]byte, (len(v)-2)/2)...)
	if _, err := hex.Decode(dst[n:], v[2:]); err != nil {
		return dst[:n], fmt.Errorf("bytes in hex form: %w", err)
	}
	return dst, nil
}

// parseUUID parses the 36-character form of a UUID (hex digits in groups
// of 8-4-4-4-12), or 32 hex digits, in either case.
func parseUUID(v []byte) ([16]byte, error) {
	var u [16]byte
	j := 0
	for i := 0; i < len(v); {
		if v[i] == '-' && len(v) == 36 && (i == 8 || i == 13 || i == 18 || i == 23) {
			i++
			continue
		}
		if i+1 >= len(v) || j == 16 {
			return u, fmt.Errorf("%q is not a UUID", clip(v))
		}
		hi, ok1 := unhex(v[i])
		lo, ok2 := unhex(v[i+1])
		if !ok1 || !ok2 {
			return u, fmt.Errorf("%q is not a UUID", clip(v))
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	if j != 16 {
		return u, fmt.Errorf("%q is not a UUID", clip(v))
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// SplitArray splits a one-dimensional PostgreSQL array literal
// ({a,"b c",NULL}) into its elements (unquoted, unescaped) and which of
// them are NULL, appending to elems and nulls; the unescaped bytes of
// quoted elements are appended to buf, which the elements may point into.
// A literal with dimension bounds ([0:1]={...}) or of more dimensions is
// refused.
func SplitArray(v []byte, elems [][]byte, nulls []bool, buf []byte) ([][]byte, []bool, []byte, error) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return elems, nulls, buf, fmt.Errorf("%q is not a one-dimensional array literal {...}", clip(v))
	}
	body := v[1 : len(v)-1]
	if len(body) == 0 {
		return elems, nulls, buf, nil
	}
	// Quoted elements are unescaped into buf; buf must not grow while
	// elements point into it, so reserve room for the whole body.
	buf = buf[:0]
	if cap(buf) < len(body) {
		buf = make([]byte, 0, len(body))
	}
	for p := 0; ; {
		var el []byte
		null := false
		switch {
		case p < len(body) && body[p] == '"':
			p++
			start := len(buf)
			for p < len(body) && body[p] != '"' {
				if body[p] == '\\' && p+1 < len(body) {
					p++
				}
				buf = append(buf, body[p])
				p++
			}
			if p >= len(body) {
				return elems, nulls, buf, fmt.Errorf("an array element's quotes do not end in %q", clip(v))
			}
			p++
			el = buf[start:len(buf):len(buf)]
		case p < len(body) && body[p] == '{':
			return elems, nulls, buf, fmt.Errorf("multi-dimensional array %q: want one dimension", clip(v))
		default:
			q := p
			for q < len(body) && body[q] != ',' {
				q++
			}
			el = body[p:q]
			p = q
			null = len(el) == 4 && eqFold(el, "null")
		}
		elems = append(elems, el)
		nulls = append(nulls, null)
		if p == len(body) {
			return elems, nulls, buf, nil
		}
		if body[p] != ',' {
			return elems, nulls, buf, fmt.Errorf("bad array literal %q", clip(v))
		}
		p++
	}
}

// clip shortens a value for an error message.
func clip(v []byte) string {
	if len(v) > 60 {
		return string(v[:60]) + "..."
	}
	return string(v)
}
