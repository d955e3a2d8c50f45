package protocol

import (
	"encoding/binary"
	"math/bits"
)

// Eight bytes at a time ("SIMD within a register"): the JSON codec of
// change events skips the runs of bytes that need no work a word at a
// time. For each test below, the lowest flagged byte of a word is exact
// (a borrow only runs upwards from a byte that is flagged), which is the
// one these functions use; the bytes above it may be flagged wrongly.

const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// swarLess flags the bytes of x below n (n at most 128).
func swarLess(x uint64, n byte) uint64 {
	return (x - swarOnes*uint64(n)) &^ x & swarHigh
}

// swarEq flags the bytes of x equal to c.
func swarEq(x uint64, c byte) uint64 {
	y := x ^ swarOnes*uint64(c)
	return (y - swarOnes) &^ y & swarHigh
}

// jsonPlainEnd returns the index in s, from i on, of the first byte that
// ends a run of string text a JSON decoder takes as it is: a '"', a '\\'
// or a control character; len(s) when there is none. ascii reports that
// s[i:end] is ASCII (else it must be checked for valid UTF-8).
func jsonPlainEnd(s []byte, i int) (end int, ascii bool) {
	var high uint64
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(s[i:])
		if m := swarLess(x, 0x20) | swarEq(x, '"') | swarEq(x, '\\'); m != 0 {
			n := bits.TrailingZeros64(m) / 8
			high |= x & (1<<(8*n) - 1)
			return i + n, high&swarHigh == 0
		}
		high |= x
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' {
			break
		}
		high |= uint64(c)
	}
	return i, high&swarHigh == 0
}
