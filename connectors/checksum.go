package connectors

import (
	"fmt"
	"strconv"

	"github.com/zeebo/xxh3"
)

// Checksum is an order-independent checksum of a set of rows: the sum,
// modulo 2^64, of the 64-bit XXH3 hash of each row's canonical bytes, with
// the row count. Sums of task checksums give the run's checksum, so the
// output of a run can be compared with its source whatever the task split.
// A row's canonical bytes are its JSON object line without the trailing
// newline for JSONL, and the CSV record line without the line ending for
// CSV.
type Checksum struct {
	Sum  uint64
	Rows int64
}

// Add adds one row.
func (c *Checksum) Add(row []byte) {
	c.Sum += RowHash(row)
	c.Rows++
}

// RowHash is the hash Add sums for one row (XXH3, 64 bits): code that
// computes a checksum in its own pass, such as a source's record splitter,
// sums it for each row.
func RowHash(row []byte) uint64 { return xxh3.Hash(row) }

// Merge adds the rows counted in o.
func (c *Checksum) Merge(o Checksum) {
	c.Sum += o.Sum
	c.Rows += o.Rows
}

// String formats the sum as 16 hex digits.
func (c Checksum) String() string { return fmt.Sprintf("%016x", c.Sum) }

// ParseChecksum parses the hex form written by String.
func ParseChecksum(s string, rows int64) (Checksum, error) {
	if s == "" {
		return Checksum{Rows: rows}, nil
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return Checksum{}, fmt.Errorf("parse checksum %q: %w", s, err)
	}
	return Checksum{Sum: v, Rows: rows}, nil
}
