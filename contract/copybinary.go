package contract

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// CopyBinary applies a load's contract to rows in PostgreSQL COPY's
// binary format (a unit of a table's rows a passthrough source reads with
// COPY ... TO STDOUT (FORMAT binary)) whose columns the contract's
// actions take were read in their text form (TextColumns): a kept field
// is copied byte for byte in its binary form, undecoded; a hashed, masked
// or tokenized one is the text the text format would hold, unescaped,
// which the action takes as CopyText does (so that a hash is the same on
// every path) and which goes out as text; a nulled one is NULL and a
// dropped one left out. A contract with a filter or a truncate reads the
// text format instead (TextColumns says which). It is used by one
// goroutine.
type CopyBinary struct {
	p      *plan
	fields [][2]int // the current tuple's fields: in[start:end], start -1 for NULL
}

// TextColumns returns the columns of a table whose values the contract's
// actions take (hashed, masked or tokenized), for a source that reads its
// rows in COPY's binary format with those columns in their text form
// (CopyBinary); ok is false when the contract cannot take rows in that
// form: a filter or a truncate needs every value it reads as text, and
// truncate keeps a column's type.
func (s *Spec) TextColumns() (cols []string, ok bool) {
	if s == nil || len(s.Filter) > 0 {
		return nil, false
	}
	for name, c := range s.Columns {
		switch c.Action {
		case Truncate:
			return nil, false
		case Hash, Mask, Tokenize:
			cols = append(cols, name)
		}
	}
	slices.Sort(cols)
	return cols, true
}

var errCopyBinary = errors.New("malformed row of COPY's binary format")

// CopyBinary compiles the contract for binary rows of the columns cols,
// in order, of which the columns text were read in their text form. A
// column a strict contract does not classify is an error naming it; so is
// a column whose value an action takes that was not read as text.
func (c *Contract) CopyBinary(cols, text []string) (*CopyBinary, error) {
	if c.dataset == nil {
		return nil, errors.New("contract: a contract by tables applies to cdc and cdc_apply pipelines: a load's contract classifies columns")
	}
	p, err := planFor(c.dataset, c.keys, cols)
	if err != nil {
		return nil, err
	}
	if len(p.conds) > 0 {
		return nil, errors.New("contract: a filter reads the text format: the rows were read in the binary one (was the run planned by another version?)")
	}
	for _, oc := range p.out {
		switch a := oc.fn.col.Action; {
		case oc.fn.keep(), a == Null:
		case a == Truncate:
			return nil, fmt.Errorf("contract: column %q is truncated, which reads the text format: the rows were read in the binary one (was the run planned by another version?)", oc.fn.name)
		case !slices.Contains(text, oc.fn.name):
			return nil, fmt.Errorf("contract: column %q is %s but was read in its binary form, not as text (was the run planned by another version?)", oc.fn.name, actionPast(a))
		}
	}
	return &CopyBinary{p: p}, nil
}

// Columns names the columns of the rows the contract makes, in order:
// the input's without the dropped ones.
func (t *CopyBinary) Columns() []string { return t.p.names }

// Same reports whether rows pass unchanged: every column kept, no filter.
func (t *CopyBinary) Same() bool { return t.p.same }

// copySignature starts COPY's binary format, before its flags and the
// length of its header extension.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// header returns the bytes the header at in's start takes (0 when in does
// not hold it whole yet).
func copyBinaryHeader(in []byte) (int, error) {
	n := len(copySignature) + 8
	if len(in) < n {
		if !bytes.HasPrefix([]byte(copySignature), in[:min(len(in), len(copySignature))]) {
			return 0, fmt.Errorf("%w: no signature", errCopyBinary)
		}
		return 0, nil
	}
	if string(in[:len(copySignature)]) != copySignature {
		return 0, fmt.Errorf("%w: no signature", errCopyBinary)
	}
	flags := binary.BigEndian.Uint32(in[len(copySignature):])
	if flags&(1<<16) != 0 {
		return 0, fmt.Errorf("%w: rows with OIDs", errCopyBinary)
	}
	if flags&0xffff0000 != 0 {
		return 0, fmt.Errorf("%w: unknown critical flags %#x", errCopyBinary, flags)
	}
	ext := binary.BigEndian.Uint32(in[len(copySignature)+4:])
	if ext > 1<<20 {
		return 0, fmt.Errorf("%w: a header extension of %d bytes", errCopyBinary, ext)
	}
	if len(in) < n+int(ext) {
		return 0, nil
	}
	return n + int(ext), nil
}

// appendCopyBinaryHeader appends the header of COPY's binary format:
// no flags, no extension.
func appendCopyBinaryHeader(dst []byte) []byte {
	dst = append(dst, copySignature...)
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
}

// tuple appends the tuple at in's start (or the trailer) with the contract
// applied and returns the bytes it took: 0 when in does not hold it whole
// yet. end says it was the trailer.
func (t *CopyBinary) tuple(dst, in []byte) (out []byte, used int, end bool, err error) {
	if len(in) < 2 {
		return dst, 0, false, nil
	}
	n := int(int16(binary.BigEndian.Uint16(in)))
	if n == -1 {
		return append(dst, 0xff, 0xff), 2, true, nil
	}
	if n != len(t.p.in) {
		return dst, 0, false, fmt.Errorf("%w: %d fields, want %d", errCopyBinary, n, len(t.p.in))
	}
	pos := 2
	if cap(t.fields) < n {
		t.fields = make([][2]int, n)
	}
	fields := t.fields[:n]
	for i := range fields {
		if len(in)-pos < 4 {
			return dst, 0, false, nil
		}
		l := int(int32(binary.BigEndian.Uint32(in[pos:])))
		pos += 4
		switch {
		case l == -1:
			fields[i] = [2]int{-1, -1}
			continue
		case l < 0:
			return dst, 0, false, fmt.Errorf("%w: a field of %d bytes", errCopyBinary, l)
		case len(in)-pos < l:
			return dst, 0, false, nil
		}
		fields[i] = [2]int{pos, pos + l}
		pos += l
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(t.p.out)))
	for _, oc := range t.p.out {
		f := fields[oc.in]
		if f[0] < 0 || oc.null {
			dst = append(dst, 0xff, 0xff, 0xff, 0xff)
			continue
		}
		v := in[f[0]:f[1]]
		if oc.keep {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
			continue
		}
		at := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		if dst, err = oc.fn.fn(dst, v); err != nil {
			return dst, 0, false, &rowError{column: oc.fn.name, err: valueError(oc.fn, err)}
		}
		binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	}
	return dst, pos, false, nil
}

// Reader returns the rows of r, in COPY's binary format, with the
// contract applied. A row it cannot read or a value an action cannot take
// makes Read fail with an error naming the row (its 1-based number in r)
// and the column, never the value; Err returns it afterwards.
func (t *CopyBinary) Reader(r io.Reader) *CopyBinaryReader {
	// The output of a fill of the input is larger than it when values
	// are hashed: made big enough for a few hashes a row once.
	return &CopyBinaryReader{t: t, r: r, in: make([]byte, 0, copyTextBuffer), out: make([]byte, 0, 3*copyTextBuffer)}
}

// CopyBinaryReader is the reader CopyBinary.Reader returns.
type CopyBinaryReader struct {
	t      *CopyBinary
	r      io.Reader
	in     []byte // read and not transformed yet: a tuple's start
	out    []byte
	op     int // out[op:] is still to give
	row    int64
	header bool // the header was read
	ended  bool // the trailer was read
	err    error
	bad    error
}

// Err returns the error of a row or a value the contract could not take,
// nil when there was none.
func (x *CopyBinaryReader) Err() error { return x.bad }

func (x *CopyBinaryReader) Read(p []byte) (int, error) {
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

func (x *CopyBinaryReader) fail(err error) {
	var re *rowError
	if errors.As(err, &re) {
		re.row = x.row
	} else {
		err = &rowError{row: x.row, err: err}
	}
	x.bad = fmt.Errorf("contract: %w", err)
	x.err = x.bad
}

// fill reads more of r and transforms the whole tuples it has.
func (x *CopyBinaryReader) fill() {
	x.out, x.op = x.out[:0], 0
	if len(x.in) == cap(x.in) {
		x.in = append(x.in, make([]byte, cap(x.in))...)[:len(x.in)]
	}
	n, err := x.r.Read(x.in[len(x.in):cap(x.in)])
	x.in = x.in[:len(x.in)+n]
	pos := 0
	if !x.header {
		k, herr := copyBinaryHeader(x.in)
		if herr != nil {
			x.bad = fmt.Errorf("contract: %w", herr)
			x.err = x.bad
			return
		}
		if k > 0 {
			x.header, pos = true, k
			x.out = appendCopyBinaryHeader(x.out)
		}
	}
	for x.header && !x.ended && pos < len(x.in) {
		out, used, end, terr := x.t.tuple(x.out, x.in[pos:])
		if terr != nil {
			x.row++
			x.fail(terr)
			return
		}
		if used == 0 {
			break
		}
		if !end {
			x.row++
		}
		x.out, x.ended = out, end
		pos += used
	}
	if x.ended && pos < len(x.in) {
		x.fail(fmt.Errorf("%w: bytes after the trailer", errCopyBinary))
		return
	}
	x.in = x.in[:copy(x.in, x.in[pos:])]
	switch {
	case err == io.EOF && (!x.ended || len(x.in) > 0):
		x.row++
		x.fail(fmt.Errorf("%w: the rows end inside a row, or without the trailer", errCopyBinary))
	case err != nil:
		x.err = err
	}
}
