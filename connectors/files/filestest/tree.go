// Package filestest holds what tests and benchmarks of file copies share: a
// checksum of a whole tree, names and bytes, computed without Sluice.
package filestest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// TreeSum is a checksum of a directory tree as a user compares two copies
// of one: the SHA-256 of every regular file's slash-separated name
// relative to dir and its bytes, hidden files included, in name order,
// and how many files and bytes the tree holds. A missing dir is an empty
// tree.
type TreeSum struct {
	Files int64  `json:"files"`
	Bytes int64  `json:"bytes"`
	SHA   string `json:"sha256"`
}

func (s TreeSum) String() string {
	return fmt.Sprintf("%d files, %d bytes, sha256 %s", s.Files, s.Bytes, s.SHA)
}

// SumTree computes the TreeSum of dir.
func SumTree(dir string) (TreeSum, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return filepath.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return TreeSum{}, fmt.Errorf("sum tree %s: %w", dir, err)
	}
	sort.Strings(names)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var sum TreeSum
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(n)))
		if err != nil {
			return TreeSum{}, fmt.Errorf("sum tree %s: %w", dir, err)
		}
		fmt.Fprintf(h, "%s\x00", n)
		k, err := io.CopyBuffer(h, f, buf)
		f.Close()
		if err != nil {
			return TreeSum{}, fmt.Errorf("sum tree %s: %w", dir, err)
		}
		h.Write([]byte{0})
		sum.Files++
		sum.Bytes += k
	}
	sum.SHA = hex.EncodeToString(h.Sum(nil))
	return sum, nil
}
