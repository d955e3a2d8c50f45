package files

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
	"github.com/sluicehq/sluice/objstore"
)

// Sink writes a versioned dataset directory, local or on S3. It is safe
// for concurrent use: tasks write distinct files; Commit and Abort are
// called by the leader only.
type Sink struct {
	cfg SinkConfig
	// root is the absolute local directory; empty on S3.
	root string
	// s3 is the bucket of an s3:// path; nil for a local one.
	s3  *s3Root
	now func() time.Time
	// mem holds the memory typed Parquet outputs convert and encode rows
	// in, recycled from task to task.
	mem *arrowconv.Allocator
	// beforeSwap, in tests, runs before a compaction swaps each
	// partition's rewrite in; an error it returns ends the commit there.
	beforeSwap func(unit string) error
}

var _ connectors.Sink = (*Sink)(nil)

// NewSink returns a sink for cfg. It reaches no server (on S3 it reads the
// AWS shared configuration files).
func NewSink(cfg SinkConfig) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if objstore.IsURL(cfg.Path) {
		r, err := openS3Root(cfg.Path, cfg.S3)
		if err != nil {
			return nil, err
		}
		return &Sink{cfg: cfg, s3: r, now: time.Now, mem: new(arrowconv.Allocator)}, nil
	}
	p, err := localPath(cfg.Path)
	if err != nil {
		return nil, &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	root, err := filepath.Abs(p)
	if err != nil {
		return nil, &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	return &Sink{cfg: cfg, root: root, now: time.Now, mem: new(arrowconv.Allocator)}, nil
}

// Close releases the idle connections of an S3 sink; a local one holds
// nothing between calls.
func (s *Sink) Close() error {
	if s.s3 != nil {
		return s.s3.b.Close()
	}
	return nil
}

// checkName rejects identifiers that cannot be one path element.
func checkName(what, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return connectors.Permanent(fmt.Errorf("bad %s %q: not usable as a file name", what, name))
	}
	return nil
}

// OpenTask starts the output of one task attempt in
// _staging/<run>/.part-<task>.<attempt>.tmp, or on S3 an upload of
// _staging/<run>/part-<task>.<ext> that Close completes.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	if err := checkName("run", t.RunID); err != nil {
		return nil, err
	}
	if err := checkName("task", t.TaskID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	typed, err := typedSchema(t.Schema)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("open task %s: %w", t.TaskID, err))
	}
	if s.s3 != nil {
		w, err := s.openTaskS3(t, typed)
		if err != nil {
			return nil, err
		}
		return w, nil
	}
	dir := stagingDir(s.root, t.RunID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open task %s: %w", t.TaskID, err)
	}
	tmp := filepath.Join(dir, tmpFileName(t))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open task %s: %w", t.TaskID, err)
	}
	name := taskFileName(t.TaskID, s.cfg.Format)
	w := &taskWriter{
		tmp:      tmp,
		final:    filepath.Join(dir, name),
		location: path.Join("_staging", t.RunID, name),
		dir:      dir,
		f:        f,
		bw:       bufio.NewWriterSize(f, 1<<20),
	}
	if w.enc, err = newEncoder(s.cfg.Format, w.bw, &w.sum, typed, s.mem); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, connectors.Permanent(fmt.Errorf("open task %s: %w", t.TaskID, err))
	}
	return w, nil
}

// versionName returns the directory name of a version.
func versionName(v int64) string { return fmt.Sprintf("v%06d", v) }

// parseVersion returns the version of a directory name, or false.
func parseVersion(name string) (int64, bool) {
	if len(name) < 7 || name[0] != 'v' {
		return 0, false
	}
	v, err := strconv.ParseInt(name[1:], 10, 64)
	if err != nil || v < 0 || versionName(v) != name {
		return 0, false
	}
	return v, true
}

// marker is the content of a version's _SUCCESS file.
type marker struct {
	Run      string    `json:"run"`
	Pipeline string    `json:"pipeline,omitempty"`
	Version  int64     `json:"version"`
	Rows     int64     `json:"rows"`
	Checksum string    `json:"checksum"`
	Time     time.Time `json:"time"`
	// Window is the window of an incremental (append) commit.
	Window *connectors.Window `json:"window,omitempty"`
	// Files lists the data files beside the marker, on S3 (where a
	// reader would otherwise list them).
	Files []string `json:"files,omitempty"`
	// Compacted is set in a directory a compaction wrote: the rows are
	// those of the directory it replaced, whose fields above it keeps.
	Compacted *compaction `json:"compacted,omitempty"`
}

// Commit publishes the task outputs of a run as version req.Version:
// it moves them into .v<N>.building, renames that to v<N>, swaps the
// current symlink, writes v<N>/_SUCCESS, removes the run's staging
// directory and prunes old versions. Each step is skipped when already
// done, so a commit repeated after a crash at any point completes it.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	if err := checkName("run", req.RunID); err != nil {
		return connectors.CommitResult{}, err
	}
	if req.Version < 0 {
		return connectors.CommitResult{}, connectors.Permanent(fmt.Errorf("commit run %s: bad version %d", req.RunID, req.Version))
	}
	if s.s3 != nil {
		if req.Mode == connectors.ModeAppend {
			return s.commitWindowS3(ctx, req)
		}
		return s.commitS3(ctx, req)
	}
	if req.Mode == connectors.ModeAppend {
		return s.commitWindow(ctx, req)
	}
	name := versionName(req.Version)
	vdir := filepath.Join(s.root, name)
	fail := func(err error) (connectors.CommitResult, error) {
		return connectors.CommitResult{}, fmt.Errorf("commit run %s as %s: %w", req.RunID, name, err)
	}
	// Check the request before touching anything.
	want, sum, err := stagedOutputs(req)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return connectors.CommitResult{}, err
	}
	if cur, err := os.Readlink(filepath.Join(s.root, "current")); err == nil {
		if d, ok := parseVersionDir(filepath.Base(cur)); ok && d.v == req.Version && d.run != "" {
			// Committed before, and compacted since: only clean up.
			if err := os.RemoveAll(stagingDir(s.root, req.RunID)); err != nil {
				return fail(fmt.Errorf("remove staging: %w", err))
			}
			dir := filepath.Join(s.root, d.name)
			return connectors.CommitResult{Location: dir, Marker: filepath.Join(dir, "_SUCCESS")}, nil
		}
	}

	if _, err := os.Stat(vdir); errors.Is(err, fs.ErrNotExist) {
		if err := s.build(ctx, name, want); err != nil {
			return fail(err)
		}
	} else if err != nil {
		return fail(err)
	}
	if err := s.swapCurrent(name); err != nil {
		return fail(err)
	}
	markerPath := filepath.Join(vdir, "_SUCCESS")
	if _, err := os.Stat(markerPath); errors.Is(err, fs.ErrNotExist) {
		m := marker{Run: req.RunID, Pipeline: req.Pipeline, Version: req.Version, Rows: sum.Rows, Checksum: sum.String(), Time: s.now().UTC()}
		if err := writeMarker(vdir, m); err != nil {
			return fail(err)
		}
	} else if err != nil {
		return fail(err)
	}
	if err := os.RemoveAll(stagingDir(s.root, req.RunID)); err != nil {
		return fail(fmt.Errorf("remove staging: %w", err))
	}
	if err := s.prune(name); err != nil {
		return fail(err)
	}
	return connectors.CommitResult{Location: vdir, Marker: markerPath}, nil
}

// stagedOutputs checks the task outputs of a commit: file name -> staged
// location, and their merged checksum.
func stagedOutputs(req connectors.CommitRequest) (map[string]string, connectors.Checksum, error) {
	staged := "_staging/" + req.RunID
	want := map[string]string{}
	var sum connectors.Checksum
	for _, t := range req.Tasks {
		dir, base := path.Split(t.Location)
		if path.Clean(dir) != staged || !strings.HasPrefix(base, "part-") {
			return nil, sum, connectors.Permanent(fmt.Errorf("task output %q is not in %s", t.Location, staged))
		}
		if _, dup := want[base]; dup {
			return nil, sum, connectors.Permanent(fmt.Errorf("task output %q listed twice", t.Location))
		}
		want[base] = t.Location
		sum.Merge(t.Checksum)
	}
	return want, sum, nil
}

// build fills .<name>.building with the listed outputs and renames it to
// name. Outputs moved by an earlier, interrupted commit are found in the
// building directory; a listed output found nowhere fails the commit.
func (s *Sink) build(ctx context.Context, name string, want map[string]string) error {
	building := filepath.Join(s.root, "."+name+".building")
	if err := s.fill(ctx, building, want); err != nil {
		return err
	}
	if err := os.Rename(building, filepath.Join(s.root, name)); err != nil {
		return err
	}
	return syncDir(s.root)
}

// fill moves the listed outputs into the directory building, removing
// anything else in it, and syncs it.
func (s *Sink) fill(ctx context.Context, building string, want map[string]string) error {
	if err := os.MkdirAll(building, 0o755); err != nil {
		return err
	}
	// Leftovers that are not part of this run never get published.
	entries, err := os.ReadDir(building)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok {
			if err := os.RemoveAll(filepath.Join(building, e.Name())); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(want))
	for base := range want {
		names = append(names, base)
	}
	sort.Strings(names)
	for _, base := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		src := filepath.Join(s.root, filepath.FromSlash(want[base]))
		dst := filepath.Join(building, base)
		err := os.Rename(src, dst)
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dst); serr == nil {
				continue // moved by an earlier attempt
			}
			return connectors.Permanent(fmt.Errorf("task output %s is missing", want[base]))
		}
		if err != nil {
			return err
		}
	}
	return syncDir(building)
}

// swapCurrent points the current symlink at name, atomically.
func (s *Sink) swapCurrent(name string) error {
	cur := filepath.Join(s.root, "current")
	if target, err := os.Readlink(cur); err == nil && target == name {
		return nil
	}
	tmp := filepath.Join(s.root, ".current."+name+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("swap current: %w", err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("swap current: %w", err)
	}
	return syncDir(s.root)
}

func writeMarker(vdir string, m marker) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(vdir, "._SUCCESS.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(vdir, "_SUCCESS"))
	}
	if err == nil {
		err = syncDir(vdir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write marker: %w", err)
	}
	return nil
}

// prune removes the versions older than the newest KeepVersions (every
// directory of each), never the current one.
func (s *Sink) prune(current string) error {
	dirs, _, err := s.localVersionDirs()
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, d := range pruned(dirs, current, s.cfg.KeepVersions) {
		if err := os.RemoveAll(filepath.Join(s.root, d.name)); err != nil {
			return fmt.Errorf("prune %s: %w", d.name, err)
		}
	}
	return nil
}

// Abort removes the staging directory of a run (on S3, its objects and
// the uploads in progress under it); the current version stays.
func (s *Sink) Abort(ctx context.Context, runID string) error {
	if err := checkName("run", runID); err != nil {
		return err
	}
	if s.s3 != nil {
		if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(runID))); err != nil {
			return fmt.Errorf("abort run %s: %w", runID, err)
		}
		return nil
	}
	if err := os.RemoveAll(stagingDir(s.root, runID)); err != nil {
		return fmt.Errorf("abort run %s: %w", runID, err)
	}
	return nil
}

// Current returns the directory of the version a dataset exposes, root's
// "current" symlink resolved; for an s3:// root, the s3:// URL of the
// directory its current pointer names (read with the standard AWS
// environment). It wraps fs.ErrNotExist when no version was committed.
func Current(root string) (string, error) {
	if objstore.IsURL(root) {
		r, err := openS3Root(root, objstore.Config{})
		if err != nil {
			return "", err
		}
		defer r.b.Close()
		cur, err := r.readPointer(context.Background(), r.key(PointerFile))
		if err != nil {
			return "", fmt.Errorf("current version of %s: %w", root, err)
		}
		return r.url(cur), nil
	}
	target, err := os.Readlink(filepath.Join(root, "current"))
	if err != nil {
		return "", fmt.Errorf("current version of %s: %w", root, err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(root, target)
	}
	return target, nil
}
