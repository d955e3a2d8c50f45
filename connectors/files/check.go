package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

var (
	_ connectors.Checker = (*Source)(nil)
	_ connectors.Checker = (*Sink)(nil)
)

// Check looks at what the source reads (connectors.Checker): its path
// must exist and, unless the source waits for time partitions (layout),
// hold files it would read.
func (s *Source) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	if req.Role == connectors.RolePassthroughSource {
		return s.checkTree(ctx)
	}
	if remote(s.cfg.Path) {
		return fmt.Sprintf("%s: not checked (not a local path)", s.cfg.Path), nil
	}
	st, err := os.Stat(s.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", &connectors.FieldError{Field: "path", Msg: fmt.Sprintf("%s does not exist (on the coordinator's host)", s.cfg.Path)}
	case err != nil:
		return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
	case s.layout != nil:
		if !st.IsDir() {
			return "", &connectors.FieldError{Field: "path", Msg: fmt.Sprintf("%s is not a directory: a layout lays out directories under it", s.cfg.Path)}
		}
		return fmt.Sprintf("directory %s, partitions %s", s.cfg.Path, s.cfg.Layout), nil
	}
	_, files, format, err := s.list(ctx, s.cfg.Path)
	if err != nil {
		return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	if len(files) == 0 {
		what := "file of a known format (.jsonl, .ndjson, .csv, .parquet)"
		if s.cfg.Format != "" {
			what = s.cfg.Format + " file"
		}
		if s.cfg.Glob != "" {
			what += " matching " + s.cfg.Glob
		}
		return "", &connectors.FieldError{Field: "path", Msg: fmt.Sprintf("no %s under %s: a run would have nothing to load", what, s.cfg.Path)}
	}
	return fmt.Sprintf("%s: %d %s files", s.cfg.Path, len(files), format), nil
}

// Check looks at where the sink writes (connectors.Checker): its path must
// be a directory, or not exist yet under one.
func (s *Sink) Check(_ context.Context, req connectors.CheckRequest) (string, error) {
	if req.Role == connectors.RolePassthroughSink {
		state, err := stateRoot(s.cfg)
		if err != nil {
			return "", err
		}
		found, err := checkTargetDir(s.cfg.Path)
		if err != nil {
			return "", err
		}
		return found + "; state (staging, manifests) in " + state, nil
	}
	return checkTargetDir(s.cfg.Path)
}

// checkApplier looks at where a cdc_apply pipeline's change log goes
// (connectors.CDCTarget.Check).
func checkApplier(_ context.Context, config json.RawMessage, _ connectors.CheckRequest) (string, error) {
	c, err := ParseApplierConfig(config)
	if err != nil {
		return "", err
	}
	return checkTargetDir(c.Path)
}

// checkTargetDir checks a directory a connector writes into: it is one, or
// the nearest part of it that exists is one.
func checkTargetDir(p string) (string, error) {
	if remote(p) {
		return fmt.Sprintf("%s: not checked (not a local path)", p), nil
	}
	for dir := p; ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist) && filepath.Dir(dir) != dir:
			continue
		case err != nil:
			return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
		case !st.IsDir():
			return "", &connectors.FieldError{Field: "path", Msg: fmt.Sprintf("%s is a file, not a directory", dir)}
		case dir == p:
			return fmt.Sprintf("directory %s exists", p), nil
		}
		return fmt.Sprintf("directory %s: created under %s", p, dir), nil
	}
}

// remote reports whether p names an object store rather than a local path.
func remote(p string) bool { return strings.Contains(p, "://") }

// checkTree looks at the tree a passthrough source copies: it must be a
// directory (or an s3:// prefix); it says how many files it holds.
func (s *Source) checkTree(ctx context.Context) (string, error) {
	_, objs, err := s.listTree(ctx)
	if err != nil {
		return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	var bytes int64
	for _, o := range objs {
		bytes += o.Size
	}
	return fmt.Sprintf("%s: %d files, %d bytes to copy", s.cfg.Path, len(objs), bytes), nil
}
