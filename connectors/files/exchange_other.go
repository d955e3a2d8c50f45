//go:build !linux

package files

import "os"

// exchange swaps the directories a and b. Without renameat2 it takes
// three renames: a reader may find b missing for a moment.
func exchange(a, b string) error {
	tmp := b + ".old"
	if err := os.Rename(b, tmp); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		os.Rename(tmp, b)
		return err
	}
	return os.Rename(tmp, a)
}
