//go:build unix

package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// defaultUmask leaves others no access to what sluice writes (data files,
// staging, keys): files 0640, directories 0750.
const defaultUmask = 0o027

// setUmask sets the process's file creation mask from $SLUICE_UMASK (octal,
// such as 022 to give others read access), 027 by default. Modes a
// passthrough copies from its source are kept as they are.
func setUmask() error {
	mask := defaultUmask
	if v := os.Getenv("SLUICE_UMASK"); v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			return fmt.Errorf("SLUICE_UMASK=%q is not an octal mask such as 027", v)
		}
		mask = int(m)
	}
	syscall.Umask(mask)
	return nil
}
