package devcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the name of the lock file in a data directory: it holds the
// pid of the process using the directory, which holds an exclusive lock on
// it (flock) for as long as it runs, so a lock left by a killed process
// does not count.
const LockFile = "lock"

// LockedError reports a data directory another process uses.
type LockedError struct {
	Dir string
	// PID is the process holding the lock, 0 when its file names none.
	PID int
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = fmt.Sprintf("another sluice (pid %d)", e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s, which holds %s: stop it first, or give this one another --data-dir",
		e.Dir, who, filepath.Join(e.Dir, LockFile))
}

// DirLock is the lock of a data directory, held until Unlock.
type DirLock struct {
	f *os.File
}

// LockDir takes the lock of dir (creating dir and its lock file), without
// waiting: when another process holds it, it returns a *LockedError naming
// that process. The lock file then holds this process's pid.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errHeld) {
			return nil, &LockedError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("write lock file: %w", err)
		}
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the lock and empties the lock file.
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing releases the lock
	l.f = nil
	return err
}

// LockHolder returns the pid of the process holding dir's lock, and
// whether any process holds it. It takes the lock for an instant when
// nobody holds it.
func LockHolder(dir string) (pid int, held bool) {
	path := filepath.Join(dir, LockFile)
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := tryLock(f); err != nil {
		return readPID(path), errors.Is(err, errHeld)
	}
	return 0, false
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

var errHeld = errors.New("held by another process")
