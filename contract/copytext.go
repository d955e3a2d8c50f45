package contract

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// CopyText applies a load's contract to rows in PostgreSQL COPY's text
// format (a unit of a table's rows a passthrough source reads with COPY
// ... TO STDOUT): fields separated by tabs, each row ending in a newline,
// NULL written \N, and backslash escapes in values. A kept field is
// copied byte for byte; a transformed one is unescaped, transformed and
// escaped again; a dropped one is left out, and so is a row the filter
// does not keep. It is used by one goroutine.
type CopyText struct {
	p       *plan
	fields  [][2]int // the current row's fields: line[start:end]
	line    []byte   // the current row, for value
	scratch []byte   // an unescaped value
	val     []byte   // a transformed value
}

// CopyText compiles the contract for rows of the columns cols, in order.
// A column a strict contract does not classify is an error naming it.
func (c *Contract) CopyText(cols []string) (*CopyText, error) {
	if c.dataset == nil {
		return nil, errors.New("contract: a contract by tables applies to cdc and cdc_apply pipelines: a load's contract classifies columns")
	}
	p, err := planFor(c.dataset, c.keys, cols)
	if err != nil {
		return nil, err
	}
	return &CopyText{p: p}, nil
}

// Columns names the columns of the rows the contract makes, in order:
// the input's without the dropped ones.
func (t *CopyText) Columns() []string { return t.p.names }

// Same reports whether rows pass unchanged: every column kept, no filter.
func (t *CopyText) Same() bool { return t.p.same }

var errCopyText = errors.New("malformed row of COPY's text format")

// row appends line (one row without its newline) with the contract
// applied and a newline, unless the filter leaves it out; kept says
// which.
func (t *CopyText) row(dst, line []byte) (out []byte, kept bool, err error) {
	t.fields = t.fields[:0]
	start := 0
	for i, c := range line {
		if c == '\t' {
			t.fields = append(t.fields, [2]int{start, i})
			start = i + 1
		}
	}
	t.fields = append(t.fields, [2]int{start, len(line)})
	if len(t.fields) != len(t.p.in) {
		return dst, false, fmt.Errorf("%w: %d fields, want %d", errCopyText, len(t.fields), len(t.p.in))
	}
	if len(t.p.conds) > 0 {
		t.line = line
		ok := t.p.keepRow(t.value)
		t.line = nil
		if !ok {
			return dst, false, nil
		}
	}
	for j, oc := range t.p.out {
		if j > 0 {
			dst = append(dst, '\t')
		}
		f := line[t.fields[oc.in][0]:t.fields[oc.in][1]]
		if oc.keep {
			dst = append(dst, f...)
			continue
		}
		if isCopyNull(f) || oc.null {
			dst = append(dst, '\\', 'N')
			continue
		}
		v, err := t.unescape(f)
		if err != nil {
			return dst, false, err
		}
		if oc.fn.plain {
			// Hex digits: nothing to escape.
			if dst, err = oc.fn.fn(dst, v); err != nil {
				return dst, false, &rowError{column: oc.fn.name, err: valueError(oc.fn, err)}
			}
			continue
		}
		if t.val, err = oc.fn.fn(t.val[:0], v); err != nil {
			return dst, false, &rowError{column: oc.fn.name, err: valueError(oc.fn, err)}
		}
		dst = appendCopyText(dst, t.val)
	}
	return append(dst, '\n'), true, nil
}

// value returns input column i of the current row and whether it is
// NULL, for the filter.
func (t *CopyText) value(i int) ([]byte, bool) {
	f := t.line[t.fields[i][0]:t.fields[i][1]]
	if isCopyNull(f) {
		return nil, true
	}
	v, err := t.unescape(f)
	if err != nil {
		return nil, true
	}
	return v, false
}

func isCopyNull(f []byte) bool { return len(f) == 2 && f[0] == '\\' && f[1] == 'N' }

// unescape returns the value a field of COPY's text format holds.
func (t *CopyText) unescape(f []byte) ([]byte, error) {
	if bytes.IndexByte(f, '\\') < 0 {
		return f, nil
	}
	out := t.scratch[:0]
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i == len(f) {
			return nil, fmt.Errorf("%w: a backslash ends a field", errCopyText)
		}
		switch c = f[i]; c {
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
		case 'v':
			out = append(out, '\v')
		case 'x':
			// \xh or \xhh
			v, n := 0, 0
			for n < 2 && i+1 < len(f) && hexDigit(f[i+1]) >= 0 {
				v = v*16 + hexDigit(f[i+1])
				i++
				n++
			}
			if n == 0 {
				out = append(out, 'x')
			} else {
				out = append(out, byte(v))
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for n := 1; n < 3 && i+1 < len(f) && f[i+1] >= '0' && f[i+1] <= '7'; n++ {
				v = v*8 + int(f[i+1]-'0')
				i++
			}
			out = append(out, byte(v))
		default:
			out = append(out, c)
		}
	}
	t.scratch = out
	return out, nil
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// appendCopyText appends v as a field of COPY's text format that is not
// NULL.
func appendCopyText(dst, v []byte) []byte {
	for _, c := range v {
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// Reader returns the rows of r, in COPY's text format, with the contract
// applied. A row it cannot read or a value an action cannot take makes
// Read fail with an error naming the row (its 1-based number in r) and
// the column, never the value; Err returns it afterwards.
func (t *CopyText) Reader(r io.Reader) *CopyTextReader {
	// See CopyBinary.Reader.
	return &CopyTextReader{t: t, r: r, in: make([]byte, 0, copyTextBuffer), out: make([]byte, 0, 3*copyTextBuffer)}
}

const copyTextBuffer = 256 << 10

// CopyTextReader is the reader CopyText.Reader returns.
type CopyTextReader struct {
	t   *CopyText
	r   io.Reader
	in  []byte // read and not transformed yet: a row's start
	out []byte
	op  int // out[op:] is still to give
	row int64
	err error // what Read returns once out is given
	bad error // a row or value the contract could not take
}

// Err returns the error of a row or a value the contract could not take,
// nil when there was none.
func (x *CopyTextReader) Err() error { return x.bad }

func (x *CopyTextReader) Read(p []byte) (int, error) {
	for x.op == len(x.out) {
		if x.err != nil {
			return 0, x.err
		}
		x.fill()
	}
	n := copy(p, x.out[x.op:])
	x.op += n
	return n, nil
}

// fill reads more of r and transforms the whole rows it has.
func (x *CopyTextReader) fill() {
	x.out, x.op = x.out[:0], 0
	if len(x.in) == cap(x.in) {
		x.in = append(x.in, make([]byte, cap(x.in))...)[:len(x.in)]
	}
	n, err := x.r.Read(x.in[len(x.in):cap(x.in)])
	x.in = x.in[:len(x.in)+n]
	last := bytes.LastIndexByte(x.in, '\n')
	if last >= 0 {
		rows := x.in[:last+1]
		for len(rows) > 0 {
			i := bytes.IndexByte(rows, '\n')
			x.row++
			var terr error
			x.out, _, terr = x.t.row(x.out, rows[:i])
			if terr != nil {
				var re *rowError
				if errors.As(terr, &re) {
					re.row = x.row
				} else {
					terr = &rowError{row: x.row, err: terr}
				}
				x.bad = fmt.Errorf("contract: %w", terr)
				x.err = x.bad
				return
			}
			rows = rows[i+1:]
		}
		x.in = x.in[:copy(x.in, x.in[last+1:])]
	}
	switch {
	case err == io.EOF && len(x.in) > 0:
		x.bad = fmt.Errorf("contract: %w", &rowError{row: x.row + 1, err: fmt.Errorf("%w: the last row has no line end", errCopyText)})
		x.err = x.bad
	case err != nil:
		x.err = err
	}
}
