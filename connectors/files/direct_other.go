//go:build !linux

package files

import (
	"errors"
	"os"
)

// setDirect is not supported here: output files are written through the
// page cache.
func setDirect(f *os.File, on bool) error {
	if !on {
		return nil
	}
	return errors.New("O_DIRECT is not supported on this system")
}
