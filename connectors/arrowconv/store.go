package arrowconv

import (
	"encoding/binary"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// The widths of a store that are not a value's bytes.
const (
	widthBits   = 0  // booleans: one bit a value
	widthBinary = -1 // strings and bytes: offsets and data
	widthList   = -2 // lists: offsets into the elements' store
)

// store holds the values of one column of a record being built, in the
// buffers of its Arrow array: a validity bitmap, then values of width
// bytes (or bits), or int32 offsets and bytes. Values go in straight,
// without an Arrow builder's checks and calls per value; finish hands the
// buffers to the array. Memory comes from mem (an Allocator recycles it
// once the array is released).
type store struct {
	mem   memory.Allocator
	width int
	valid *memory.Buffer
	data  *memory.Buffer // values, or the bytes of strings
	offs  *memory.Buffer // offsets of strings and lists: n+1 of them
	n     int            // values
	nulls int
	cap   int // values the buffers hold
	size  int // bytes of data used by strings
	// The sizes of the last record, reserved for the next.
	lastCap, lastSize int
}

// grow makes room for one more value.
func (s *store) grow() {
	if s.n < s.cap {
		return
	}
	c := max(s.cap*2, s.lastCap, 64)
	if s.valid == nil {
		s.valid = memory.NewResizableBuffer(s.mem)
		switch s.width {
		case widthBinary:
			s.data = memory.NewResizableBuffer(s.mem)
			s.data.Reserve(max(s.lastSize, 256))
			fallthrough
		case widthList:
			s.offs = memory.NewResizableBuffer(s.mem)
			s.offs.Reserve(4)
			binary.LittleEndian.PutUint32(s.offs.Buf(), 0)
		default:
			s.data = memory.NewResizableBuffer(s.mem)
		}
	}
	s.valid.Reserve(int(bitutil.BytesForBits(int64(c))))
	switch s.width {
	case widthBinary, widthList:
		s.offs.Reserve((c + 1) * 4)
	case widthBits:
		s.data.Reserve(int(bitutil.BytesForBits(int64(c))))
	default:
		s.data.Reserve(c * s.width)
	}
	s.cap = c
}

// setValid marks value n valid or not and counts it.
func (s *store) setValid(ok bool) {
	v := s.valid.Buf()
	if ok {
		v[s.n>>3] |= 1 << (s.n & 7)
	} else {
		v[s.n>>3] &^= 1 << (s.n & 7)
		s.nulls++
	}
	s.n++
}

func (s *store) put16(v uint16) {
	s.grow()
	binary.LittleEndian.PutUint16(s.data.Buf()[s.n*2:], v)
	s.setValid(true)
}

func (s *store) put32(v uint32) {
	s.grow()
	binary.LittleEndian.PutUint32(s.data.Buf()[s.n*4:], v)
	s.setValid(true)
}

func (s *store) put64(v uint64) {
	s.grow()
	binary.LittleEndian.PutUint64(s.data.Buf()[s.n*8:], v)
	s.setValid(true)
}

// put128 puts a 128-bit decimal: low 64 bits first.
func (s *store) put128(lo, hi uint64) {
	s.grow()
	b := s.data.Buf()[s.n*16:]
	binary.LittleEndian.PutUint64(b, lo)
	binary.LittleEndian.PutUint64(b[8:], hi)
	s.setValid(true)
}

// putFixed puts a value of exactly width bytes.
func (s *store) putFixed(v []byte) {
	s.grow()
	copy(s.data.Buf()[s.n*s.width:(s.n+1)*s.width], v)
	s.setValid(true)
}

func (s *store) putBit(v bool) {
	s.grow()
	d := s.data.Buf()
	if v {
		d[s.n>>3] |= 1 << (s.n & 7)
	} else {
		d[s.n>>3] &^= 1 << (s.n & 7)
	}
	s.setValid(true)
}

// putBytes puts a string or bytes.
func (s *store) putBytes(v []byte) {
	s.grow()
	if need := s.size + len(v); need > s.data.Cap() {
		s.data.Reserve(max(need, 2*s.data.Cap()))
	}
	copy(s.data.Buf()[s.size:], v)
	s.size += len(v)
	s.setOffset(s.size)
	s.setValid(true)
}

// putList ends a list whose elements end at element end.
func (s *store) putList(end int) {
	s.grow()
	s.setOffset(end)
	s.setValid(true)
}

// setOffset sets the offset after value n (offset 0 is always 0).
func (s *store) setOffset(end int) {
	binary.LittleEndian.PutUint32(s.offs.Buf()[(s.n+1)*4:], uint32(end))
}

func (s *store) putNull() {
	s.grow()
	switch s.width {
	case widthBinary:
		s.setOffset(s.size)
	case widthList:
		s.setOffset(int(binary.LittleEndian.Uint32(s.offs.Buf()[s.n*4:])))
	}
	s.setValid(false)
}

// finish returns the values as the array data of type dt (with children,
// a list's elements), which the caller releases, and resets the store.
func (s *store) finish(dt arrow.DataType, children []arrow.ArrayData) arrow.ArrayData {
	if s.valid == nil {
		// No value yet: buffers for none.
		s.grow()
	}
	s.valid.ResizeNoShrink(int(bitutil.BytesForBits(int64(s.n))))
	valid := s.valid
	if s.nulls == 0 {
		valid = nil
	}
	var bufs []*memory.Buffer
	switch s.width {
	case widthBinary:
		s.offs.ResizeNoShrink((s.n + 1) * 4)
		s.data.ResizeNoShrink(s.size)
		bufs = []*memory.Buffer{valid, s.offs, s.data}
	case widthList:
		s.offs.ResizeNoShrink((s.n + 1) * 4)
		bufs = []*memory.Buffer{valid, s.offs}
	case widthBits:
		s.data.ResizeNoShrink(int(bitutil.BytesForBits(int64(s.n))))
		bufs = []*memory.Buffer{valid, s.data}
	default:
		s.data.ResizeNoShrink(s.n * s.width)
		bufs = []*memory.Buffer{valid, s.data}
	}
	d := array.NewData(dt, s.n, bufs, children, s.nulls, 0)
	s.lastCap, s.lastSize = s.cap, s.size
	s.release()
	return d
}

// release drops the store's references to its buffers.
func (s *store) release() {
	for _, b := range []*memory.Buffer{s.valid, s.data, s.offs} {
		if b != nil {
			b.Release()
		}
	}
	s.valid, s.data, s.offs = nil, nil, nil
	s.n, s.nulls, s.cap, s.size = 0, 0, 0, 0
}
