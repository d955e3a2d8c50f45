package files

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing n bytes of f from off
// to the device, without waiting for it (sync_file_range with
// SYNC_FILE_RANGE_WRITE): a later fsync then finds most of them written.
// It is only a hint; a failure is ignored, the fsync does the work.
func startWriteback(f *os.File, off, n int64) {
	if n <= 0 {
		return
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	sc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
