package connectors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// PathsFunc names the local file system paths of a configuration (after
// `${ENV}` expansion) by field: the files and directories a connector of
// it reads or writes. An object store's URL (s3://...) or a server's is
// not a path. It does no I/O; it returns nil when none is set.
type PathsFunc func(config json.RawMessage) map[string]string

// PathFields is a PathsFunc for top-level string fields holding a local
// path, a file:// URL or a "sqlite:" URL of a local file; any other URL
// (a scheme followed by "://") is not a path.
func PathFields(fields ...string) PathsFunc {
	return func(config json.RawMessage) map[string]string {
		var m map[string]json.RawMessage
		if json.Unmarshal(config, &m) != nil {
			return nil
		}
		var out map[string]string
		for _, f := range fields {
			var s string
			if json.Unmarshal(m[f], &s) != nil || s == "" {
				continue
			}
			p, ok := localPath(s)
			if !ok {
				continue
			}
			if out == nil {
				out = map[string]string{}
			}
			out[f] = p
		}
		return out
	}
}

// localPath returns the local path s names: s itself, or the path of a
// file:// or sqlite: URL; ok is false for other URLs.
func localPath(s string) (string, bool) {
	switch {
	case strings.HasPrefix(s, "file://"):
		return strings.TrimPrefix(s, "file://"), true
	case strings.HasPrefix(s, "sqlite:"):
		return strings.TrimPrefix(strings.TrimPrefix(s, "sqlite:"), "//"), true
	case strings.Contains(s, "://"):
		return "", false
	}
	return s, true
}

// pathRoots are the directories a registry confines connectors' paths
// to; none: no confinement (a library's registry, a dev cluster).
type pathRoots struct {
	mu    sync.RWMutex
	roots []string // absolute, cleaned, symlinks resolved
}

// ConfinePaths makes the registry refuse, at validation and when a
// connector opens, a configuration with a local path (Connector.Paths)
// outside every one of roots, symlinks resolved: a spec or a trigger's
// parameters cannot make a worker read or write elsewhere. No roots lifts
// the confinement. A root must be an absolute path.
func (r *Registry) ConfinePaths(roots ...string) error {
	var rs []string
	for _, root := range roots {
		if !filepath.IsAbs(root) {
			return fmt.Errorf("path root %q is not an absolute path", root)
		}
		rs = append(rs, resolvePath(filepath.Clean(root)))
	}
	r.paths.mu.Lock()
	defer r.paths.mu.Unlock()
	r.paths.roots = rs
	return nil
}

// PathRoots returns the roots paths are confined to (ConfinePaths).
func (r *Registry) PathRoots() []string {
	r.paths.mu.RLock()
	defer r.paths.mu.RUnlock()
	return append([]string(nil), r.paths.roots...)
}

// checkPaths refuses expanded when the registry confines paths and a
// path of it is outside every root.
func (r *Registry) checkPaths(e *entry, expanded json.RawMessage) error {
	roots := r.PathRoots()
	if e == nil || e.paths == nil || len(roots) == 0 {
		return nil
	}
	ps := e.paths(expanded)
	// by field name, so that the error is the same every time
	for _, f := range slices.Sorted(maps.Keys(ps)) {
		if slices.Contains(strings.Split(filepath.ToSlash(ps[f]), "/"), "..") {
			return &FieldError{Field: f, Msg: fmt.Sprintf("%q has a .. element: refused while paths are confined (--path-roots, SLUICE_PATH_ROOTS)", ps[f])}
		}
		if !within(ps[f], roots) {
			return &FieldError{Field: f, Msg: fmt.Sprintf("%q is outside the directories this cluster may read and write (--path-roots, SLUICE_PATH_ROOTS: %s)", ps[f], strings.Join(roots, ", "))}
		}
	}
	return nil
}

// within reports whether p, made absolute and its symlinks resolved, is
// one of roots or below one.
func within(p string, roots []string) bool {
	if !filepath.IsAbs(p) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return false
		}
		p = abs
	}
	p = resolvePath(filepath.Clean(p))
	for _, root := range roots {
		rel, err := filepath.Rel(root, p)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// resolvePath resolves the symlinks of the longest part of the absolute,
// clean path p that exists, and appends the rest: a path not made yet
// resolves as it will be made.
func resolvePath(p string) string {
	rest := ""
	for cur := p; ; {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest)
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrNotExist) {
			return p
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
