package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/objstore"
)

// passObject is one file of the tree a passthrough copies, or of its
// target, as listed.
type passObject struct {
	Path  string `json:"p"` // slash-separated, relative to the tree's root
	Size  int64  `json:"s"`
	MTime int64  `json:"m,omitempty"` // Unix nanoseconds
	// ETag is an object's ETag on S3, without quotes.
	ETag string `json:"e,omitempty"`
	// Mode holds a local file's permission bits.
	Mode uint32 `json:"mode,omitempty"`
}

// version identifies the object's content as listed: its ETag on S3, its
// modification time on a file system (with its size, which a version is
// always compared with).
func (o passObject) version() string {
	if o.ETag != "" {
		return "etag:" + o.ETag
	}
	return "mtime:" + strconv.FormatInt(o.MTime, 10)
}

// trimETag drops the quotes of an ETag as a store sends it.
func trimETag(e string) string { return strings.Trim(e, `"`) }

// listLocalTree returns the directory root resolves to (symlinks followed)
// and every regular file under it (a symlink to a file counts as the
// file; one to a directory is not followed) whose path skip does not
// refuse, sorted by path. skip sees directories too: a refused directory
// is left out whole. A root that does not exist is an error unless
// missingOK, when it is an empty tree.
func listLocalTree(ctx context.Context, root string, skip func(rel string) bool, missingOK bool) (string, []passObject, error) {
	base, err := filepath.EvalSymlinks(root)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return root, nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	if base, err = filepath.Abs(base); err != nil {
		return "", nil, err
	}
	st, err := os.Stat(base)
	if err != nil {
		return "", nil, err
	}
	if !st.IsDir() {
		return "", nil, fmt.Errorf("%s is not a directory: a passthrough copies a tree", root)
	}
	var out []passObject
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == base {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(p) // follows a symlink
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile, or a dangling link
		}
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		out = append(out, passObject{Path: rel, Size: info.Size(), MTime: info.ModTime().UnixNano(), Mode: uint32(info.Mode().Perm())})
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return base, out, nil
}

// listTree returns every object under the root's prefix whose relative
// path skip does not refuse, sorted by path (keys ending in '/' are
// directory markers, not objects).
func (r *s3Root) listTree(ctx context.Context, skip func(rel string) bool) ([]passObject, error) {
	prefix := r.dir("")
	var out []passObject
	err := r.b.List(ctx, prefix, func(o objstore.Object) error {
		rel := strings.TrimPrefix(o.Key, prefix)
		if rel == "" || skip != nil && skip(rel) {
			return nil
		}
		out = append(out, passObject{Path: rel, Size: o.Size, MTime: o.ModTime.UnixNano(), ETag: trimETag(o.ETag)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
