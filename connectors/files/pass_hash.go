package files

import (
	"encoding/hex"
	"fmt"
	"io"

	"github.com/zeebo/xxh3"
)

// blockHasher sums bytes of a file, from an offset on a block (passBlock),
// into one XXH3-128 digest per block (the last one possibly short).
type blockHasher struct {
	off    int64 // the file offset of the next byte
	n      int64 // bytes of the current block summed so far
	h      *xxh3.Hasher
	blocks []string
}

func newBlockHasher(off int64) *blockHasher {
	return &blockHasher{off: off, h: xxh3.New()}
}

// Write sums p; it never fails.
func (b *blockHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), passBlock-b.off%passBlock)
		b.h.Write(p[:k])
		b.off += k
		b.n += k
		p = p[k:]
		if b.off%passBlock == 0 {
			b.cut()
		}
	}
	return n, nil
}

func (b *blockHasher) cut() {
	d := b.h.Sum128().Bytes()
	b.blocks = append(b.blocks, hex.EncodeToString(d[:]))
	b.h.Reset()
	b.n = 0
}

// Blocks ends the sums and returns the digests of the blocks summed: at
// least one, the digest of nothing for no bytes.
func (b *blockHasher) Blocks() []string {
	if b.n > 0 || len(b.blocks) == 0 {
		b.cut()
	}
	return b.blocks
}

// fileSum is the checksum of a file from the digests of its blocks: the
// digest of its one block, or the XXH3-128 of the digests one after the
// other.
func fileSum(blocks []string) (string, error) {
	if len(blocks) == 1 {
		return blocks[0], nil
	}
	h := xxh3.New()
	for _, b := range blocks {
		d, err := hex.DecodeString(b)
		if err != nil || len(d) != 16 {
			return "", fmt.Errorf("bad block digest %q", b)
		}
		h.Write(d)
	}
	d := h.Sum128().Bytes()
	return hex.EncodeToString(d[:]), nil
}

// sumReader returns the block digests of n bytes read from r, which start
// at file offset off.
func sumReader(r io.Reader, off, n int64, buf []byte) ([]string, error) {
	h := newBlockHasher(off)
	got, err := io.CopyBuffer(h, io.LimitReader(r, n), buf)
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("read %d bytes, want %d: %w", got, n, io.ErrUnexpectedEOF)
	}
	return h.Blocks(), nil
}

// FileChecksum returns the checksum a passthrough records for a file of
// size bytes read from r (see passBlock), for tests and tools that check
// a copy.
func FileChecksum(r io.Reader, size int64) (string, error) {
	blocks, err := sumReader(r, 0, size, make([]byte, 1<<20))
	if err != nil {
		return "", err
	}
	return fileSum(blocks)
}
