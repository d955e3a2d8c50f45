package arrowconv

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Allocator is a memory.Allocator that recycles the buffers it hands out:
// a freed buffer of 4 KiB or more goes back to a pool of its size class (a
// power of two) for the next allocation of that class, instead of to the
// garbage collector. A sink converting and writing records of about the
// same shape, one after another, then reuses the same memory for every
// record (the builders' buffers, the Parquet writer's pages) rather than
// allocating, zeroing and collecting it again each time. Memory is zeroed
// when handed out, as Go's allocator does. The pools are sync.Pools: what
// they hold goes back to the garbage collector when nothing takes it. An
// Allocator is safe for concurrent use; its zero value is ready to use.
//
// It relies on the Arrow and Parquet code that uses it to free a buffer
// only once nothing refers to it any more (what their reference counting
// does); a buffer used after it was freed would be overwritten.
type Allocator struct {
	pools [maxClass + 1]sync.Pool // of *[]byte, cap 1<<class, 64-byte aligned
}

var _ memory.Allocator = (*Allocator)(nil)

const (
	// minClass is the smallest pooled size, 4 KiB: smaller buffers come
	// from Go's allocator and are left to the garbage collector.
	minClass = 12
	// maxClass is the largest pooled size, 256 MiB.
	maxClass = 28
	// alignment is Arrow's buffer alignment.
	alignment = 64
)

// class returns the size class of size bytes: the smallest power of two
// holding it.
func class(size int) int { return bits.Len(uint(size - 1)) }

func aligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%alignment == 0
}

// Allocate returns size zeroed bytes, 64-byte aligned.
func (a *Allocator) Allocate(size int) []byte {
	c := class(size)
	if c < minClass || c > maxClass {
		return goAlloc(size)
	}
	if p, ok := a.pools[c].Get().(*[]byte); ok {
		b := (*p)[:size]
		clear(b)
		return b
	}
	return goAlloc(1 << c)[:size]
}

// goAlloc returns size zeroed bytes from Go's allocator, 64-byte aligned,
// with a capacity of exactly size.
func goAlloc(size int) []byte {
	buf := make([]byte, size+alignment)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(buf))) % alignment); r != 0 {
		shift = alignment - r
	}
	return buf[shift : shift+size : shift+size]
}

// Reallocate returns a buffer of size bytes holding b's bytes (the rest
// zeroed), b itself when its capacity allows.
func (a *Allocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		n := len(b)
		b = b[:size]
		if size > n {
			clear(b[n:])
		}
		return b
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

// Free takes back a buffer Allocate or Reallocate returned.
func (a *Allocator) Free(b []byte) {
	c := cap(b)
	if c < 1<<minClass || c > 1<<maxClass || c&(c-1) != 0 || !aligned(b) {
		return
	}
	b = b[:c]
	a.pools[bits.Len(uint(c))-1].Put(&b)
}
