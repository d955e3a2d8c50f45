package contract

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"hash"
	"slices"
)

// hasher computes the hash action: the lower-case hex of HMAC-SHA256
// (RFC 2104) of a value under the contract's key. The states of SHA-256
// after the key's inner and outer pads are computed once; a value then
// costs the compressions HMAC needs (two for a value of up to 55 bytes)
// and little more: the hasher pads each message itself, so that it ends
// on a block boundary, and reads the digest from the state the hash
// marshals (AppendBinary) instead of asking for a Sum, which copies the
// state and pads it again on every call. The marshaled state's layout is
// checked against crypto/hmac once per key (hmacKey); a hash whose state
// does not read as expected computes each value with Sum (slow).
type hasher struct {
	inner, outer   hash.Hash
	innerU, outerU encoding.BinaryUnmarshaler
	innerA, outerA encoding.BinaryAppender
	// innerS and outerS are the marshaled states after the pads.
	innerS, outerS []byte
	fast           bool
	// tail is the padded end of a message; state a marshaled state.
	tail  [2 * sha256.BlockSize]byte
	state []byte
	sum   [sha256.Size]byte
}

// The layout of a SHA-256 state as crypto/sha256 marshals it: a magic
// string, then the eight words of the state, big-endian, then the
// buffered bytes and the length.
const (
	stateMagic = "sha\x03"
	stateSize  = len(stateMagic) + sha256.Size + sha256.BlockSize + 8
)

// hmacKey is what a hasher needs of the contract's key, computed once
// per contract: the marshaled states of SHA-256 after the key's inner and
// outer pads, and whether the fast path computes HMAC-SHA256 on this Go.
// It is immutable.
type hmacKey struct {
	innerS, outerS []byte
	fast           bool
}

func newHMACKey(key []byte) *hmacKey {
	if len(key) > sha256.BlockSize {
		k := sha256.Sum256(key)
		key = k[:]
	}
	var ipad, opad [sha256.BlockSize]byte
	copy(ipad[:], key)
	copy(opad[:], key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	inner, outer := sha256.New(), sha256.New()
	inner.Write(ipad[:])
	outer.Write(opad[:])
	k := &hmacKey{}
	var err error
	if k.innerS, err = inner.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		panic(err) // crypto/sha256 always marshals
	}
	if k.outerS, err = outer.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		panic(err)
	}
	if len(k.innerS) == stateSize && string(k.innerS[:len(stateMagic)]) == stateMagic {
		k.fast = true
		if h := newHasher(k); !h.fast || !h.check(key) {
			k.fast = false
		}
	}
	return k
}

// newHasher returns a hasher of the key k, for one goroutine.
func newHasher(k *hmacKey) *hasher {
	h := &hasher{inner: sha256.New(), outer: sha256.New(), innerS: k.innerS, outerS: k.outerS, state: make([]byte, 0, stateSize)}
	h.innerU, h.outerU = h.inner.(encoding.BinaryUnmarshaler), h.outer.(encoding.BinaryUnmarshaler)
	a, ok := h.inner.(encoding.BinaryAppender)
	b, ok2 := h.outer.(encoding.BinaryAppender)
	if k.fast && ok && ok2 {
		h.innerA, h.outerA, h.fast = a, b, true
	}
	return h
}

// check reports whether the fast path computes HMAC-SHA256 of key as
// crypto/hmac does, for values that end in one block, in two, and after
// whole blocks.
func (h *hasher) check(key []byte) bool {
	var v [3*sha256.BlockSize + 7]byte
	for i := range v {
		v[i] = byte(i*7 + 1)
	}
	m := hmac.New(sha256.New, key)
	for _, n := range []int{0, 1, 55, 56, 63, 64, 65, 119, 120, len(v)} {
		m.Reset()
		m.Write(v[:n])
		want := m.Sum(nil)
		got, err := h.digest(v[:n])
		if err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

func (h *hasher) apply(dst, v []byte) ([]byte, error) {
	d, err := h.digest(v)
	if err != nil {
		return dst, err
	}
	return appendHex32(dst, d), nil
}

// digest returns HMAC-SHA256 of v, valid until the next call.
func (h *hasher) digest(v []byte) ([]byte, error) {
	if !h.fast {
		if err := h.innerU.UnmarshalBinary(h.innerS); err != nil {
			return nil, err
		}
		h.inner.Write(v)
		s := h.inner.Sum(h.sum[:0])
		if err := h.outerU.UnmarshalBinary(h.outerS); err != nil {
			return nil, err
		}
		h.outer.Write(s)
		return h.outer.Sum(h.sum[:0]), nil
	}
	// Inner: the key's inner pad (already in the state), v, then SHA-256's
	// padding: 0x80, zeros up to 56 bytes into a block, and the length in
	// bits of everything hashed, the pad's block included.
	if err := h.innerU.UnmarshalBinary(h.innerS); err != nil {
		return nil, err
	}
	whole := len(v) &^ (sha256.BlockSize - 1)
	if whole > 0 {
		h.inner.Write(v[:whole])
	}
	n := copy(h.tail[:], v[whole:])
	end := sha256.BlockSize
	if n >= sha256.BlockSize-8 {
		end = 2 * sha256.BlockSize
	}
	h.tail[n] = 0x80
	clear(h.tail[n+1 : end-8])
	binary.BigEndian.PutUint64(h.tail[end-8:], uint64(sha256.BlockSize+len(v))*8)
	h.inner.Write(h.tail[:end])
	d, err := h.read(h.innerA)
	if err != nil {
		return nil, err
	}
	// Outer: the key's outer pad, the inner digest, padded to one block.
	copy(h.tail[:sha256.Size], d)
	if err := h.outerU.UnmarshalBinary(h.outerS); err != nil {
		return nil, err
	}
	h.tail[sha256.Size] = 0x80
	clear(h.tail[sha256.Size+1 : sha256.BlockSize-8])
	binary.BigEndian.PutUint64(h.tail[sha256.BlockSize-8:], uint64(sha256.BlockSize+sha256.Size)*8)
	h.outer.Write(h.tail[:sha256.BlockSize])
	return h.read(h.outerA)
}

// read returns the state of a hash that ended on a block boundary, which
// is the digest of what it hashed (in h.state, valid until the next
// read).
func (h *hasher) read(a encoding.BinaryAppender) ([]byte, error) {
	s, err := a.AppendBinary(h.state[:0])
	if err != nil {
		return nil, err
	}
	h.state = s
	return s[len(stateMagic) : len(stateMagic)+sha256.Size], nil
}

// appendHex32 appends the lower-case hex of d, a digest, four bytes at a
// time: their eight nibbles spread into the bytes of a word, then made
// digits ('0' + n, plus 'a'-'0'-10 where n > 9) all at once, written in
// place.
func appendHex32(dst, d []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, 2*sha256.Size)[:n+2*sha256.Size]
	out, d := dst[n:n+2*sha256.Size], d[:sha256.Size]
	for i := 0; i < sha256.Size; i += 4 {
		x := uint64(binary.BigEndian.Uint32(d[i:]))
		x = (x | x<<16) & 0x0000ffff0000ffff
		x = (x | x<<8) & 0x00ff00ff00ff00ff
		x = (x<<4 | x) & 0x0f0f0f0f0f0f0f0f
		letters := (x + 0x0606060606060606) >> 4 & 0x0101010101010101
		binary.BigEndian.PutUint64(out[2*i:], x+0x3030303030303030+letters*('a'-'0'-10))
	}
	return dst
}

// HashValue returns what the hash action makes of value under key: the
// lower-case hex of HMAC-SHA256(key, value). Anyone holding the key can
// compute it, to find a row by a value they know.
func HashValue(key []byte, value string) string {
	out, _ := newHasher(newHMACKey(key)).apply(nil, []byte(value))
	return string(out)
}
