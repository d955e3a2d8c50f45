package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// localPass is a passthrough's target and state on a file system; the
// state must be on the target's file system, where a rename puts a staged
// file in place.
type localPass struct {
	root  string // the target directory, absolute
	state string // the state directory

	mu    sync.Mutex
	dirty map[string]bool // directories a rename changed, to sync
	made  map[string]bool // directories known to exist (mkdirAll)
}

// mkdirAll makes dir and its parents, once for the store: a task's files
// share few directories, and each MkdirAll costs system calls.
func (l *localPass) mkdirAll(dir string) error {
	l.mu.Lock()
	made := l.made[dir]
	l.mu.Unlock()
	if made {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	l.mu.Lock()
	if l.made == nil {
		l.made = map[string]bool{}
	}
	l.made[dir] = true
	l.mu.Unlock()
	return nil
}

func (l *localPass) statePath(rel string) string {
	return filepath.Join(l.state, filepath.FromSlash(rel))
}

func (l *localPass) stagedPath(run, name string) string {
	return l.statePath(path.Join(passStagingRel(run), "objects", name))
}

func (l *localPass) listTarget(ctx context.Context) ([]passObject, error) {
	_, objs, err := listLocalTree(ctx, l.root, nil, true)
	return objs, err
}

// stage writes a whole file into a temporary file, syncs it, reads it
// back, gives it the source's mode and modification time and renames it
// into the run's staging; a range goes into the staged file its ranges
// share, at its offset, synced and read back.
func (l *localPass) stage(ctx context.Context, run string, ref connectors.TaskRef, u connectors.Unit, buf []byte) (blocks []string, err error) {
	dst := l.stagedPath(run, u.Name)
	if err := l.mkdirAll(filepath.Dir(dst)); err != nil {
		return nil, err
	}
	var f *os.File
	var w io.Writer
	whole := u.Offset == 0 && u.Length == u.Size
	if whole {
		tmp := l.statePath(path.Join(passStagingRel(run), "tmp"))
		if err := l.mkdirAll(tmp); err != nil {
			return nil, err
		}
		if f, err = os.CreateTemp(tmp, ref.TaskID+"-"+strconv.Itoa(ref.Attempt)+"-*"); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		w = f
	} else {
		if f, err = os.OpenFile(dst, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if st.Size() < u.Size {
			// Every range's task sets the size; none shrinks it.
			if err := f.Truncate(u.Size); err != nil {
				return nil, err
			}
		}
		w = io.NewOffsetWriter(f, u.Offset)
	}
	blocks, n, err := copyHashed(ctx, w, u.Body, u.Offset, buf)
	if err != nil {
		return nil, err
	}
	if n != u.Length {
		return nil, fmt.Errorf("%s: the source gave %d bytes, want %d", u.Position, n, u.Length)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%s: sync: %w", u.Position, err)
	}
	// A whole file's bytes are at 0 (its offset), a range's at its
	// offset in the file its ranges share.
	back, err := sumReader(io.NewSectionReader(f, u.Offset, n), u.Offset, n, buf)
	if err != nil {
		return nil, fmt.Errorf("%s: read back: %w", u.Position, err)
	}
	if !slices.Equal(back, blocks) {
		return nil, fmt.Errorf("%s: the staged bytes read back differ from those written", u.Position)
	}
	if !whole {
		return blocks, nil
	}
	if err := f.Chmod(fileMode(u)); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if mt, ok := mtimeOf(u); ok {
		if err := os.Chtimes(f.Name(), mt, mt); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return nil, err
	}
	return blocks, nil
}

// fileMode is the mode a staged file takes: the source's permission bits,
// or 0644.
func fileMode(u connectors.Unit) fs.FileMode {
	if m, ok := u.Meta["mode"]; ok {
		if mode, err := strconv.ParseUint(m, 8, 32); err == nil {
			return fs.FileMode(mode).Perm()
		}
	}
	return 0o644
}

// mtimeOf is the source's modification time of a unit's file.
func mtimeOf(u connectors.Unit) (time.Time, bool) {
	ns, err := strconv.ParseInt(u.Meta["mtime"], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// copyHashed copies body to w, summing the bytes into block digests from
// file offset off, and returns the digests and the count.
func copyHashed(ctx context.Context, w io.Writer, body io.Reader, off int64, buf []byte) ([]string, int64, error) {
	h := newBlockHasher(off)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, n, err
		}
		k, err := body.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := w.Write(buf[:k]); werr != nil {
				return nil, n, werr
			}
			n += int64(k)
		}
		if err == io.EOF {
			return h.Blocks(), n, nil
		}
		if err != nil {
			return nil, n, err
		}
	}
}

// reuse takes a whole file an earlier attempt staged, read back to its
// size and with the source's modification time.
func (l *localPass) reuse(_ context.Context, run string, u connectors.Unit, buf []byte) ([]string, bool, error) {
	f, err := os.Open(l.stagedPath(run, u.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if mt, ok := mtimeOf(u); st.Size() != u.Length || ok && !st.ModTime().Equal(mt) {
		return nil, false, nil
	}
	blocks, err := sumReader(f, 0, u.Length, buf)
	if err != nil {
		return nil, false, fmt.Errorf("%s: read back: %w", u.Position, err)
	}
	return blocks, true, nil
}

// place renames the staged file into the target (a split file once its
// size, mode and modification time are set).
func (l *localPass) place(_ context.Context, run string, p placement) (string, error) {
	src := l.stagedPath(run, p.Path)
	dst := filepath.Join(l.root, filepath.FromSlash(p.Path))
	mt := time.Unix(0, p.MTime)
	if p.Offs != nil {
		st, err := os.Stat(src)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", err
		case st.Size() != p.Size:
			return "", fmt.Errorf("the staged file holds %d bytes, want %d", st.Size(), p.Size)
		default:
			mode := fs.FileMode(p.Mode).Perm()
			if p.Mode == 0 {
				mode = 0o644
			}
			if err := os.Chmod(src, mode); err != nil {
				return "", err
			}
			if p.MTime != 0 {
				if err := os.Chtimes(src, mt, mt); err != nil {
					return "", err
				}
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	err := os.Rename(src, dst)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	st, serr := os.Stat(dst)
	if err != nil && (serr != nil || st.Size() != p.Size || p.MTime != 0 && !st.ModTime().Equal(mt)) {
		// Neither staged nor put in place by an earlier commit.
		return "", fmt.Errorf("the staged file %s is missing: %w", src, err)
	}
	if serr != nil {
		return "", serr
	}
	l.mu.Lock()
	if l.dirty == nil {
		l.dirty = map[string]bool{}
	}
	l.dirty[filepath.Dir(dst)] = true
	l.mu.Unlock()
	return passObject{MTime: st.ModTime().UnixNano()}.version(), nil
}

// flush syncs the directories place changed, so that the renames last.
func (l *localPass) flush(context.Context) error {
	l.mu.Lock()
	dirs := l.dirty
	l.dirty = nil
	l.mu.Unlock()
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// remove removes a file of the target, and the directories it leaves
// empty.
func (l *localPass) remove(_ context.Context, name string) error {
	p := filepath.Join(l.root, filepath.FromSlash(name))
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for d := filepath.Dir(p); d != l.root && len(d) > len(l.root); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

func (l *localPass) read(_ context.Context, rel string) ([]byte, error) {
	return os.ReadFile(l.statePath(rel))
}

func (l *localPass) write(_ context.Context, rel string, data []byte) error {
	return localManifests{dir: filepath.Dir(l.statePath(rel))}.write(context.Background(), path.Base(rel), data)
}

func (l *localPass) delete(_ context.Context, rel string) error {
	if err := os.Remove(l.statePath(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (l *localPass) names(_ context.Context, rel string) ([]string, error) {
	es, err := os.ReadDir(l.statePath(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(es))
	for _, e := range es {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (l *localPass) clean(_ context.Context, run string) error {
	return os.RemoveAll(l.statePath(passStagingRel(run)))
}

func (l *localPass) placeConcurrency() int { return 1 }
