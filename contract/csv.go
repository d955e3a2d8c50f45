package contract

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/sluicehq/sluice/connectors"
)

// span is one field of a CSV record in the batch: raw[start:end], its
// quotes included when quoted.
type span struct {
	start, end      int
	quoted, escaped bool // escaped: it holds a doubled quote
}

var errCSV = errors.New("malformed CSV record")

// csvRows applies a plan to CSV records.
type csvRows struct {
	p       *plan
	fields  []span
	scratch []byte // unquoted values
	val     []byte // a transformed value
	cur     []byte // the batch being transformed, for value
	// grow is the last batch's output size over its input's, in
	// sixteenths: the next output buffer is sized by it.
	grow int
	// sum is the checksum of the records written, as a sink computes it.
	sum connectors.Checksum
	// out is the last batch's output, whose memory the next batch reuses:
	// a sink does not retain a batch's Raw after its Write returns.
	out []byte
}

// outBuffer returns a buffer for the output of the batch raw: the first
// batch's is sized by the records' count (each hash adds its 64 digits),
// the next ones' as the last one grew: the last output's memory when it
// is large enough.
func (t *csvRows) outBuffer(raw []byte) []byte {
	n := len(raw)
	if want := n*t.grow/16 + n/32 + 64; t.grow > 0 && cap(t.out) >= want {
		return t.out[:0]
	}
	if t.grow == 0 {
		per := 8
		for _, oc := range t.p.out {
			if oc.fn.plain {
				per += 2 * 32
			}
		}
		return make([]byte, 0, n+bytes.Count(raw, []byte{'\n'})*per+64)
	}
	return make([]byte, 0, n*t.grow/16+n/32+64)
}

// transform appends the records of raw (RFC 4180 data rows of the plan's
// input columns; an unquoted empty field is NULL, a quoted one an empty
// text, as PostgreSQL's COPY writes them) with the contract applied, each
// ending in '\n', and returns how many it kept. A bad record or value is
// an error with its 1-based number in raw and, for a value, its column.
func (t *csvRows) transform(dst, raw []byte) ([]byte, int64, error) {
	n := len(t.p.in)
	t.sum = connectors.Checksum{}
	t.cur = raw
	defer func() { t.cur = nil }()
	var kept int64
	row := int64(0)
	for p := 0; p < len(raw); {
		row++
		start := len(dst)
		var err error
		t.fields, p, err = scanRecord(raw, p, n, t.fields[:0])
		if err != nil {
			return dst, kept, &rowError{row: row, err: err}
		}
		if len(t.p.conds) > 0 && !t.p.keepRow(t.value) {
			continue
		}
		for j, oc := range t.p.out {
			if j > 0 {
				dst = append(dst, ',')
			}
			f := t.fields[oc.in]
			if oc.keep {
				dst = append(dst, raw[f.start:f.end]...)
				continue
			}
			v, null := t.field(raw, f)
			if null || oc.null {
				continue // NULL: an unquoted empty field
			}
			if oc.fn.plain {
				// Text that never needs quotes (a hash): straight in.
				if dst, err = oc.fn.fn(dst, v); err != nil {
					return dst, kept, &rowError{row: row, column: oc.fn.name, err: valueError(oc.fn, err)}
				}
				continue
			}
			t.val, err = oc.fn.fn(t.val[:0], v)
			if err != nil {
				return dst, kept, &rowError{row: row, column: oc.fn.name, err: valueError(oc.fn, err)}
			}
			dst = appendCSVField(dst, t.val)
		}
		t.sum.Add(dst[start:])
		dst = append(dst, '\n')
		kept++
	}
	if len(raw) > 0 {
		t.grow = max(1, len(dst)*16/len(raw))
	}
	return dst, kept, nil
}

// value returns input column i of the current record, for the filter.
func (t *csvRows) value(i int) ([]byte, bool) {
	return t.field(t.cur, t.fields[i])
}

// field returns the value of f and whether it is NULL.
func (t *csvRows) field(raw []byte, f span) ([]byte, bool) {
	switch {
	case !f.quoted:
		return raw[f.start:f.end], f.start == f.end
	case !f.escaped:
		return raw[f.start+1 : f.end-1], false
	}
	t.scratch = t.scratch[:0]
	in := raw[f.start+1 : f.end-1]
	for i := 0; i < len(in); i++ {
		t.scratch = append(t.scratch, in[i])
		if in[i] == '"' {
			i++ // the doubled quote
		}
	}
	return t.scratch, false
}

// scanRecord reads the n fields of the record at raw[p:] into fields and
// returns the position after its line ending.
func scanRecord(raw []byte, p, n int, fields []span) ([]span, int, error) {
	for i := range n {
		f := span{start: p}
		if p < len(raw) && raw[p] == '"' {
			f.quoted = true
			j := p + 1
			for {
				k := bytes.IndexByte(raw[j:], '"')
				if k < 0 {
					return fields, p, fmt.Errorf("%w: a quoted field does not end", errCSV)
				}
				j += k + 1
				if j < len(raw) && raw[j] == '"' {
					f.escaped = true
					j++
					continue
				}
				break
			}
			p = j
		} else {
			p = csvFieldEnd(raw, p)
			if p < len(raw) && raw[p] == '"' {
				return fields, p, fmt.Errorf("%w: a quote inside an unquoted field", errCSV)
			}
		}
		f.end = p
		fields = append(fields, f)
		last := i == n-1
		switch {
		case !last && (p >= len(raw) || raw[p] != ','):
			return fields, p, fmt.Errorf("%w: %d fields, want %d", errCSV, i+1, n)
		case !last:
			p++
		case p < len(raw) && raw[p] != '\n' && raw[p] != '\r':
			return fields, p, fmt.Errorf("%w: more than %d fields", errCSV, n)
		}
	}
	if p < len(raw) && raw[p] == '\r' {
		p++
	}
	if p < len(raw) && raw[p] == '\n' {
		p++
	}
	return fields, p, nil
}

// csvFieldEnd returns the position of the first delimiter, quote or line
// ending in raw at p or after it, len(raw) when there is none. It looks at
// eight bytes at a time: each byte of the word that equals one of those
// four gets its high bit set in special's result (a byte above a match
// may get one too, never a byte below it, so the lowest is exact).
func csvFieldEnd(raw []byte, p int) int {
	for ; len(raw)-p >= 8; p += 8 {
		if m := csvSpecial(binary.LittleEndian.Uint64(raw[p:])); m != 0 {
			return p + bits.TrailingZeros64(m)/8
		}
	}
	for p < len(raw) && raw[p] != ',' && raw[p] != '"' && raw[p] != '\n' && raw[p] != '\r' {
		p++
	}
	return p
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// csvSpecial marks the bytes of w that are ',', '"', '\n' or '\r' (see
// csvFieldEnd).
func csvSpecial(w uint64) uint64 {
	a, b, c, d := w^(ones*','), w^(ones*'"'), w^(ones*'\n'), w^(ones*'\r')
	return ((a-ones)&^a | (b-ones)&^b | (c-ones)&^c | (d-ones)&^d) & highs
}

// appendCSVField appends v as a CSV field that is not NULL: quoted when
// it is empty (else it would read as NULL), holds a delimiter, a quote or
// a line ending, or is PostgreSQL's end-of-data marker \.
func appendCSVField(dst, v []byte) []byte {
	quote := len(v) == 0 || (len(v) == 2 && v[0] == '\\' && v[1] == '.')
	if !quote {
		for _, c := range v {
			if c == ',' || c == '"' || c == '\n' || c == '\r' {
				quote = true
				break
			}
		}
	}
	if !quote {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// rowError is a bad row of a batch: its 1-based number in the batch and,
// for a value, its column. It never holds a value.
type rowError struct {
	row    int64
	column string
	err    error
}

func (e *rowError) Error() string {
	if e.column != "" {
		return fmt.Sprintf("row %d of the batch, column %q: %v", e.row, e.column, e.err)
	}
	return fmt.Sprintf("row %d of the batch: %v", e.row, e.err)
}

func (e *rowError) Unwrap() error { return e.err }
