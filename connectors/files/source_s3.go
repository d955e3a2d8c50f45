package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// PointerFile is the object of a dataset on S3 that names its exposed
// version (v000007), or in a window directory the exposed run
// (run=<run>): S3 has no symlink to swap.
const PointerFile = "current"

// maxPointer bounds the size of an object read as a pointer.
const maxPointer = 1 << 10

// errNotPointer is wrapped by the error of readPointer for an object that
// does not hold one directory name.
var errNotPointer = errors.New("not a pointer to a directory beside it")

// readPointer returns the name a pointer object holds; an error wrapping
// fs.ErrNotExist when there is none, errNotPointer when it holds
// something else.
func (r *s3Root) readPointer(ctx context.Context, key string) (string, error) {
	data, err := r.b.Get(ctx, key)
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(data))
	if len(data) > maxPointer || name == "" || strings.ContainsAny(name, "/\\\n\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("%s: %w", r.b.URL(key), errNotPointer)
	}
	return name, nil
}

// walk returns the s3:// URL root resolves to and every object under it
// that is not hidden, by relative path. A root that is a pointer object
// (a dataset's current) resolves to the directory it names; a root that is
// another object, to its directory and the object alone. Inside the tree,
// a directory holding a current pointer contributes only the directory
// the pointer names (the exposed version or run), as a local directory's
// current symlink is not followed by the walk: old versions and runs
// being replaced are not read. An empty prefix is an empty tree: S3 has no
// directories to be missing.
func (r *s3Root) walk(ctx context.Context, root string) (string, map[string]fileRef, error) {
	loc, err := objstore.ParseURL(root)
	if err != nil {
		return "", nil, err
	}
	ref := func(rel string, o objstore.Object) fileRef {
		return fileRef{Path: rel, Size: o.Size, MTime: o.ModTime.UnixNano(), ETag: o.ETag}
	}
	if loc.Key != "" {
		obj, err := r.b.Head(ctx, loc.Key)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", nil, err
		}
		if err == nil {
			target := ""
			if path.Base(loc.Key) == PointerFile && obj.Size <= maxPointer {
				if target, err = r.readPointer(ctx, loc.Key); err != nil && !errors.Is(err, errNotPointer) {
					return "", nil, err
				}
			}
			if target == "" { // one object to read
				rel := path.Base(loc.Key)
				return s3URL(loc.Bucket, path.Dir(loc.Key)), map[string]fileRef{rel: ref(rel, obj)}, nil
			}
			loc.Key = path.Join(path.Dir(loc.Key), target)
		}
	}
	prefix := ""
	if loc.Key != "" {
		prefix = loc.Key + "/"
	}
	found := map[string]fileRef{}
	var pointers []string // relative paths of the objects that may be pointers
	err = r.b.List(ctx, prefix, func(o objstore.Object) error {
		rel := strings.TrimPrefix(o.Key, prefix)
		for _, seg := range strings.Split(rel, "/") {
			if hidden(seg) || seg == "" {
				return nil
			}
		}
		if path.Base(rel) == PointerFile && o.Size <= maxPointer {
			pointers = append(pointers, rel)
		}
		found[rel] = ref(rel, o)
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	for _, p := range pointers {
		target, err := r.readPointer(ctx, prefix+p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotPointer) {
			continue // removed meanwhile, or a file of that name
		}
		if err != nil {
			return "", nil, err
		}
		d := dirOf(p)
		keep := joinRel(d, target) + "/"
		if !hasPrefix(found, keep) {
			continue // names no directory: a file of that name
		}
		within := ""
		if d != "" {
			within = d + "/"
		}
		for rel := range found {
			if strings.HasPrefix(rel, within) && !strings.HasPrefix(rel, keep) {
				delete(found, rel)
			}
		}
	}
	return s3URL(loc.Bucket, loc.Key), found, nil
}

// walker walks root (see walk); what was asked for is one file when root
// is an object that is not a pointer.
func (r *s3Root) walker(root string) walker {
	return func(ctx context.Context) (string, map[string]fileRef, bool, error) {
		base, found, err := r.walk(ctx, root)
		if err != nil || len(found) != 1 {
			return base, found, false, err
		}
		for rel := range found {
			return base, found, strings.TrimSuffix(joinPath(base, rel), "/") == strings.TrimSuffix(root, "/"), nil
		}
		return base, found, false, nil
	}
}

// hasPrefix reports whether a path of found starts with prefix.
func hasPrefix(found map[string]fileRef, prefix string) bool {
	for rel := range found {
		if strings.HasPrefix(rel, prefix) {
			return true
		}
	}
	return false
}

// s3URL returns the s3:// URL of key in bucket.
func s3URL(bucket, key string) string {
	if key == "." {
		key = ""
	}
	return objstore.Location{Bucket: bucket, Key: strings.Trim(key, "/")}.String()
}

// dirOf returns the directory of a slash-separated relative path, "" for
// the root.
func dirOf(rel string) string {
	if d := path.Dir(rel); d != "." {
		return d
	}
	return ""
}

// joinRel joins slash-separated relative paths, "" being the root.
func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// read opens the object of ref under base (an s3:// URL) for read, which
// must have the ETag it was listed with: a changed object is a permanent
// error, a missing one a retryable one.
func (r *s3Root) read(ctx context.Context, base string, ref fileRef, read func(f io.ReaderAt) error) error {
	loc, err := objstore.ParseURL(base)
	if err != nil {
		return connectors.Permanent(fmt.Errorf("open %s: %w", ref.Path, err))
	}
	obj := objstore.Object{Key: loc.Join(ref.Path).Key, Size: ref.Size, ETag: ref.ETag}
	until := ref.End
	if until > 0 {
		until += 64 << 10 // the range's last line
	}
	rd := r.b.NewReader(ctx, obj, until)
	defer rd.Close()
	err = read(rd)
	if errors.Is(err, objstore.ErrChanged) {
		return connectors.Permanent(fmt.Errorf("%s changed since the run was planned (ETag %s then): %w", ref.Path, ref.ETag, err))
	}
	return err
}

// exists reports whether objects exist under the directory p (an s3://
// URL), or the object p does.
func (r *s3Root) exists(ctx context.Context, p string, dir bool) (bool, error) {
	loc, err := objstore.ParseURL(p)
	if err != nil {
		return false, err
	}
	if dir {
		return r.b.HasObjects(ctx, loc.Key+"/")
	}
	return r.b.Exists(ctx, loc.Key)
}
