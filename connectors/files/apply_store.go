package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
)

// logStore is where an Applier keeps its change log: a local directory or
// an S3 prefix. Paths are slash-separated and relative to the root.
type logStore interface {
	// read returns a file's content; an error wrapping fs.ErrNotExist
	// when there is none.
	read(ctx context.Context, rel string) ([]byte, error)
	// write writes each file whole and durably, replacing any earlier
	// one, and creates the directories it needs: a reader sees a file's
	// earlier content or the new one. ctx is checked between files.
	write(ctx context.Context, files []logFile) error
	// remove removes files; a missing one is no error.
	remove(ctx context.Context, rels []string) error
	// exists reports whether a file exists (false also when that cannot
	// be told: the caller then does again what is harmless to repeat).
	exists(ctx context.Context, rel string) bool
	// dirs lists the names of the directories in the directory rel ("" is
	// the root), sorted.
	dirs(ctx context.Context, rel string) ([]string, error)
	// describe names rel for messages: a path or an s3:// URL.
	describe(rel string) string
	// close releases what the store holds between calls.
	close() error
}

// logFile is one file for logStore.write.
type logFile struct {
	rel  string
	data []byte
}

// localLog is a change log in a local directory: files are written to a
// temporary name, fsynced and renamed, and every directory created or
// changed is fsynced.
type localLog string

func (l localLog) path(rel string) string { return filepath.Join(string(l), filepath.FromSlash(rel)) }

func (l localLog) describe(rel string) string { return l.path(rel) }

func (l localLog) close() error { return nil }

func (l localLog) read(_ context.Context, rel string) ([]byte, error) {
	return os.ReadFile(l.path(rel))
}

func (l localLog) write(ctx context.Context, files []logFile) error {
	created := map[string]bool{}
	var dirs []string
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := path.Dir(f.rel)
		if dir != "." && !created[dir] {
			if err := mkdirAllSync(string(l), filepath.FromSlash(dir)); err != nil {
				return err
			}
			created[dir] = true
		}
		if err := writeFileSync(l.path(f.rel), f.data); err != nil {
			return err
		}
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	for _, d := range dirs {
		if err := syncDir(l.path(d)); err != nil {
			return err
		}
	}
	return nil
}

func (l localLog) remove(_ context.Context, rels []string) error {
	dirs := map[string]bool{}
	for _, rel := range rels {
		if err := os.Remove(l.path(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		dirs[path.Dir(rel)] = true
	}
	for d := range dirs {
		if err := syncDir(l.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (l localLog) exists(_ context.Context, rel string) bool {
	_, err := os.Stat(l.path(rel))
	return err == nil
}

func (l localLog) dirs(_ context.Context, rel string) ([]string, error) {
	entries, err := os.ReadDir(l.path(rel))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// s3Log is a change log under an S3 prefix: each file is one PUT, which
// replaces an object atomically and durably; S3 has no directories to
// create or sync.
type s3Log struct{ r *s3Root }

// logPuts bounds the PUTs of one write.
const logPuts = 8

func (l s3Log) describe(rel string) string { return l.r.url(rel) }

func (l s3Log) close() error { return l.r.b.Close() }

func (l s3Log) read(ctx context.Context, rel string) ([]byte, error) {
	return l.r.b.Get(ctx, l.r.key(rel))
}

func (l s3Log) write(ctx context.Context, files []logFile) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(logPuts)
	for _, f := range files {
		if err := gctx.Err(); err != nil {
			break
		}
		g.Go(func() error { return l.r.b.Put(gctx, l.r.key(f.rel), f.data) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (l s3Log) remove(ctx context.Context, rels []string) error {
	keys := make([]string, len(rels))
	for i, rel := range rels {
		keys[i] = l.r.key(rel)
	}
	return l.r.b.Delete(ctx, keys...)
}

func (l s3Log) exists(ctx context.Context, rel string) bool {
	ok, err := l.r.b.Exists(ctx, l.r.key(rel))
	return ok && err == nil
}

func (l s3Log) dirs(ctx context.Context, rel string) ([]string, error) {
	_, dirs, err := l.r.b.ListDir(ctx, l.r.dir(rel))
	return dirs, err
}

// writeFileSync writes data to path through a temporary file that is
// fsynced and renamed; the caller fsyncs the directory.
func writeFileSync(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// writeAtomic replaces dir/name with data durably.
func writeAtomic(dir, name string, data []byte) error {
	if err := writeFileSync(filepath.Join(dir, name), data); err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirAllSync creates root/rel and fsyncs the parent of every directory it
// creates.
func mkdirAllSync(root, rel string) error {
	dir := root
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		parent := dir
		dir = filepath.Join(dir, c)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}
