package files

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// A dataset on S3 has the local layout, with a pointer object where a
// local dataset has its current symlink, and a window directory holds one
// directory per run:
//
//	<prefix>/_staging/<run>/part-<task>.<ext>     task outputs of a running run
//	<prefix>/v000007/part-*.<ext>, _SUCCESS        committed versions
//	<prefix>/current                               "v000007": the exposed version
//	<prefix>/window=<from>_<to>/current            "run=<run>": the exposed run of a window
//	<prefix>/window=<from>_<to>/run=<run>/part-*, _SUCCESS
//
// S3 has no rename: a commit copies the task outputs into the version's
// directory on the server, then writes the pointer (one PUT, which
// replaces the object atomically), then _SUCCESS.

// copyConcurrency bounds the server-side copies of one commit.
const copyConcurrency = 8

// runDirPrefix starts the name of a run's directory inside a window.
const runDirPrefix = "run="

// stagingRel returns the staging directory of a run, relative to the
// dataset.
func stagingRel(run string) string { return "_staging/" + run }

// s3TaskWriter writes one task attempt as an upload of its staging
// object: a retried task's upload replaces the object of an earlier
// attempt whole when it completes, and an attempt that dies leaves an
// upload that is never visible (the commit or Abort of the run aborts it).
type s3TaskWriter struct {
	attempt
	obj      *objstore.Writer
	bw       *bufio.Writer
	enc      encoder
	sum      connectors.Checksum
	location string
}

var _ connectors.TaskWriter = (*s3TaskWriter)(nil)

func (s *Sink) openTaskS3(t connectors.TaskRef, typed *arrow.Schema) (*s3TaskWriter, error) {
	name := taskFileName(t.TaskID, s.cfg.Format)
	rel := path.Join(stagingRel(t.RunID), name)
	w := &s3TaskWriter{location: rel}
	w.bw = bufio.NewWriterSize(nil, 64<<10)
	enc, err := newEncoder(s.cfg.Format, w.bw, &w.sum, typed, s.mem)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("open task %s: %w", t.TaskID, err))
	}
	w.enc, w.obj = enc, s.s3.b.NewWriter(s.s3.key(rel))
	w.bw.Reset(w.obj)
	return w, nil
}

// Write encodes one batch into the upload; parts go out in the
// background. ctx ending interrupts the uploads in flight.
func (w *s3TaskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if err := w.usable(ctx, false); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, w.obj.Interrupt)
	defer stop()
	if err := w.enc.write(b); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		w.err = fmt.Errorf("write %s: %w", w.location, err)
		return w.err
	}
	return nil
}

// Close completes the upload, replacing the output of any earlier attempt
// of the task.
func (w *s3TaskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if err := w.usable(ctx, true); err != nil {
		return connectors.TaskOutput{}, err
	}
	w.done = true
	stop := context.AfterFunc(ctx, w.obj.Interrupt)
	err := w.enc.finish()
	w.enc.release()
	if err == nil {
		err = w.bw.Flush()
	}
	stop()
	if err != nil {
		w.obj.Abort(context.WithoutCancel(ctx))
		return connectors.TaskOutput{}, fmt.Errorf("close %s: %w", w.location, err)
	}
	size, err := w.obj.Close(ctx)
	if err != nil {
		return connectors.TaskOutput{}, fmt.Errorf("close %s: %w", w.location, err)
	}
	return connectors.TaskOutput{Rows: w.sum.Rows, Bytes: size, Checksum: w.sum, Location: w.location}, nil
}

// Abort stops the upload and removes its parts; a closed output of an
// earlier attempt stays.
func (w *s3TaskWriter) Abort(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	w.enc.release()
	if err := w.obj.Abort(ctx); err != nil {
		return fmt.Errorf("abort %s: %w", w.location, err)
	}
	return nil
}

// commitS3 publishes a run as version req.Version on S3: it copies the
// task outputs into v<N>/ (on the server), points current at v<N>, writes
// v<N>/_SUCCESS, removes the run's staging objects (and uploads left by
// dead attempts) and prunes old versions. A version whose _SUCCESS exists
// is complete; each other step is repeated or skipped, so a commit
// repeated after a crash at any point completes it.
func (s *Sink) commitS3(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	name := versionName(req.Version)
	fail := func(err error) (connectors.CommitResult, error) {
		return connectors.CommitResult{}, fmt.Errorf("commit run %s as %s: %w", req.RunID, s.s3.url(name), err)
	}
	want, sum, err := stagedOutputs(req)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return connectors.CommitResult{}, err
	}
	if cur, err := s.s3.pointer(ctx, ""); err != nil {
		return fail(err)
	} else if d, ok := parseVersionDir(cur); ok && d.v == req.Version && d.run != "" {
		// Committed before, and compacted since: only clean up.
		if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(req.RunID))); err != nil {
			return fail(fmt.Errorf("remove staging: %w", err))
		}
		return connectors.CommitResult{Location: s.s3.url(cur), Marker: s.s3.url(path.Join(cur, SuccessFile))}, nil
	}
	markerRel := path.Join(name, SuccessFile)
	_, err = s.s3.readMarker(ctx, name)
	complete := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if !complete {
		if err := s.s3.fill(ctx, req.RunID, name, want); err != nil {
			return fail(err)
		}
	}
	if err := s.s3.point(ctx, "", name); err != nil {
		return fail(err)
	}
	if !complete {
		m := marker{Run: req.RunID, Pipeline: req.Pipeline, Version: req.Version, Rows: sum.Rows, Checksum: sum.String(),
			Time: s.now().UTC(), Files: sortedNames(want)}
		if err := s.s3.writeMarker(ctx, name, m); err != nil {
			return fail(err)
		}
	}
	if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(req.RunID))); err != nil {
		return fail(fmt.Errorf("remove staging: %w", err))
	}
	if err := s.pruneS3(ctx, name); err != nil {
		return fail(err)
	}
	return connectors.CommitResult{Location: s.s3.url(name), Marker: s.s3.url(markerRel)}, nil
}

func sortedNames(want map[string]string) []string {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// fill makes the directory dir hold exactly the listed outputs of run:
// each staged output still in staging is copied there (on the server), an
// output found only in dir was copied by an earlier, interrupted commit,
// one found nowhere fails the commit; anything else in dir is removed.
func (r *s3Root) fill(ctx context.Context, run, dir string, want map[string]string) error {
	staged := map[string]objstore.Object{}
	if err := r.b.List(ctx, r.dir(stagingRel(run)), func(o objstore.Object) error {
		staged[path.Base(o.Key)] = o
		return nil
	}); err != nil {
		return err
	}
	objs := make(map[string]objstore.Object, len(want))
	for base := range want {
		objs[base] = staged[base]
	}
	return r.copyInto(ctx, dir, objs, func(base string) error {
		return connectors.Permanent(fmt.Errorf("task output %s is missing", r.url(want[base])))
	})
}

// copyInto makes the directory dir hold exactly the objects want, by
// name, copied on the server: an object there already (copied by an
// earlier, interrupted commit) stays; a wanted object without a source
// (an empty Key) must be there already, else missing names the error;
// anything else in dir but its marker is removed.
func (r *s3Root) copyInto(ctx context.Context, dir string, want map[string]objstore.Object, missing func(name string) error) error {
	have := map[string]bool{}
	var stray []string
	if err := r.b.List(ctx, r.dir(dir), func(o objstore.Object) error {
		rel := strings.TrimPrefix(o.Key, r.dir(dir))
		if _, ok := want[rel]; ok {
			have[rel] = true
		} else if rel != SuccessFile {
			stray = append(stray, o.Key)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := r.b.Delete(ctx, stray...); err != nil {
		return err
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyConcurrency)
	for _, name := range names {
		src := want[name]
		switch {
		case have[name]:
			continue
		case src.Key == "":
			return missing(name)
		}
		g.Go(func() error {
			err := r.b.Copy(gctx, src, r.key(path.Join(dir, name)))
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: %w", missing(name), err)
			}
			return err
		})
	}
	return g.Wait()
}

// point writes the pointer of the directory dir (relative; "" for the
// dataset) to name, unless it holds name already.
func (r *s3Root) point(ctx context.Context, dir, name string) error {
	key := r.key(path.Join(dir, PointerFile))
	cur, err := r.readPointer(ctx, key)
	if err == nil && cur == name {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := r.b.Put(ctx, key, []byte(name+"\n")); err != nil {
		return fmt.Errorf("swap current: %w", err)
	}
	return nil
}

// pointer returns the name the pointer of dir holds, "" when there is
// none.
func (r *s3Root) pointer(ctx context.Context, dir string) (string, error) {
	cur, err := r.readPointer(ctx, r.key(path.Join(dir, PointerFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return cur, err
}

func (r *s3Root) writeMarker(ctx context.Context, dir string, m marker) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := r.b.Put(ctx, r.key(path.Join(dir, SuccessFile)), append(data, '\n')); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	return nil
}

// readMarker reads the _SUCCESS marker of a directory; an error wrapping
// fs.ErrNotExist when it has none.
func (r *s3Root) readMarker(ctx context.Context, dir string) (marker, error) {
	var m marker
	data, err := r.b.Get(ctx, r.key(path.Join(dir, SuccessFile)))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("marker %s: %w", r.url(path.Join(dir, SuccessFile)), err)
	}
	return m, nil
}

// versionDirs lists the version directories of the dataset.
func (r *s3Root) versionDirs(ctx context.Context) ([]versionDir, error) {
	_, dirs, err := r.b.ListDir(ctx, r.dir(""))
	if err != nil {
		return nil, err
	}
	var vs []versionDir
	for _, d := range dirs {
		if v, ok := parseVersionDir(d); ok {
			vs = append(vs, v)
		}
	}
	return vs, nil
}

// pruneS3 removes the versions older than the newest KeepVersions (every
// directory of each), never the current one.
func (s *Sink) pruneS3(ctx context.Context, current string) error {
	dirs, err := s.s3.versionDirs(ctx)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, d := range pruned(dirs, current, s.cfg.KeepVersions) {
		if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(d.name)); err != nil {
			return fmt.Errorf("prune %s: %w", d.name, err)
		}
	}
	return nil
}

// pruned returns the directories of the versions beyond the newest keep,
// except those of the version current names.
func pruned(dirs []versionDir, current string, keep int) []versionDir {
	var vs []int64
	curV := int64(-1)
	for _, d := range dirs {
		if !slices.Contains(vs, d.v) {
			vs = append(vs, d.v)
		}
		if d.name == current {
			curV = d.v
		}
	}
	slices.SortFunc(vs, func(a, b int64) int { return cmp.Compare(b, a) })
	var out []versionDir
	for _, d := range dirs {
		if i := slices.Index(vs, d.v); i >= keep && d.v != curV {
			out = append(out, d)
		}
	}
	return out
}

// keptS3 returns the kept versions of the dataset (see keptVersions) and
// the name the current pointer holds.
func (s *Sink) keptS3(ctx context.Context) ([]keptVersion, string, error) {
	dirs, err := s.s3.versionDirs(ctx)
	if err != nil {
		return nil, "", err
	}
	cur, err := s.s3.pointer(ctx, "")
	if err != nil {
		return nil, "", err
	}
	kept, err := keptVersions(dirs, cur, func(name string) (marker, error) { return s.s3.readMarker(ctx, name) })
	return kept, cur, err
}

// versionsS3 lists the complete versions: the version directories that
// hold their _SUCCESS marker (one per version, see keptVersions), the one
// the current pointer names exposed.
func (s *Sink) versionsS3(ctx context.Context) ([]connectors.Version, error) {
	kept, cur, err := s.keptS3(ctx)
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	return versionList(kept, cur, s.s3.url), nil
}

// exposeS3 points current at kept version v (its newest rewrite, if a
// compaction made one); a version without a complete directory is
// refused.
func (s *Sink) exposeS3(ctx context.Context, v int64) error {
	kept, cur, err := s.keptS3(ctx)
	if err != nil {
		return fmt.Errorf("expose version %d: %w", v, err)
	}
	i := slices.IndexFunc(kept, func(k keptVersion) bool { return k.dir.v == v })
	if i < 0 {
		name := versionName(v)
		partial, err := s.s3.b.HasObjects(ctx, s.s3.dir(name))
		if err != nil {
			return fmt.Errorf("expose version %d: %w", v, err)
		}
		return notKept(v, versionList(kept, cur, s.s3.url), partial, s.s3.url(name))
	}
	if err := s.s3.point(ctx, "", kept[i].dir.name); err != nil {
		return fmt.Errorf("expose version %d: %w", v, err)
	}
	return nil
}

// commitWindowS3 commits an incremental run (ModeAppend) on S3 as the
// directory window=<from>_<to>/run=<run>/: the task outputs are copied
// there, the window's current pointer is written to name it, then its
// _SUCCESS; then the window's earlier run directories, the window
// directories lying inside the new window, and the run's staging are
// removed. Readers that read the window's pointer see the earlier run or
// the new one, whole. A window that overlaps the new one partially fails
// the commit before anything changes. A commit repeated for the same run
// finds its pointer and marker in place and only cleans up.
func (s *Sink) commitWindowS3(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	if req.Window == nil || req.Window.Empty() {
		return connectors.CommitResult{}, connectors.Permanent(fmt.Errorf("commit run %s: an append commit needs a non-empty window", req.RunID))
	}
	w := *req.Window
	name := WindowDir(w)
	runDir := runDirPrefix + req.RunID
	rel := path.Join(name, runDir)
	res := connectors.CommitResult{Location: s.s3.url(name), Marker: s.s3.url(path.Join(rel, SuccessFile))}
	fail := func(err error) (connectors.CommitResult, error) {
		return connectors.CommitResult{}, fmt.Errorf("commit run %s as %s: %w", req.RunID, s.s3.url(name), err)
	}
	want, sum, err := stagedOutputs(req)
	if err != nil {
		return fail(err)
	}
	m, err := s.s3.readMarker(ctx, rel)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	complete := err == nil && m.Run == req.RunID
	cur, err := s.s3.pointer(ctx, name)
	if err != nil {
		return fail(err)
	}
	if complete && cur == runDir {
		return res, s.cleanWindowS3(ctx, req.RunID, w, name)
	}
	_, dirs, err := s.s3.b.ListDir(ctx, s.s3.dir(""))
	if err != nil {
		return fail(err)
	}
	for _, d := range dirs {
		o, ok := parseWindowDir(d)
		if !ok || d == name || !o.From.Before(w.To) || !w.From.Before(o.To) {
			continue
		}
		if o.From.Before(w.From) || o.To.After(w.To) {
			return fail(connectors.Permanent(fmt.Errorf("committed window %s overlaps %s partially: its rows cannot be replaced exactly", d, name)))
		}
	}
	if err := ctx.Err(); err != nil {
		return connectors.CommitResult{}, err
	}
	if !complete {
		if err := s.s3.fill(ctx, req.RunID, rel, want); err != nil {
			return fail(err)
		}
	}
	if err := s.s3.point(ctx, name, runDir); err != nil {
		return fail(err)
	}
	if !complete {
		m := marker{Run: req.RunID, Pipeline: req.Pipeline, Version: req.Version, Rows: sum.Rows, Checksum: sum.String(),
			Time: s.now().UTC(), Window: &w, Files: sortedNames(want)}
		if err := s.s3.writeMarker(ctx, rel, m); err != nil {
			return fail(err)
		}
	}
	if err := s.cleanWindowS3(ctx, req.RunID, w, name); err != nil {
		return fail(err)
	}
	return res, nil
}

// cleanWindowS3 removes what a committed window leaves behind: the
// window's other run directories, the window directories inside it, and
// the run's staging.
func (s *Sink) cleanWindowS3(ctx context.Context, runID string, w connectors.Window, name string) error {
	_, runs, err := s.s3.b.ListDir(ctx, s.s3.dir(name))
	if err != nil {
		return err
	}
	for _, d := range runs {
		if d != runDirPrefix+runID {
			if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(path.Join(name, d))); err != nil {
				return err
			}
		}
	}
	_, dirs, err := s.s3.b.ListDir(ctx, s.s3.dir(""))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		o, ok := parseWindowDir(d)
		if ok && d != name && !o.From.Before(w.From) && !o.To.After(w.To) {
			if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(d)); err != nil {
				return err
			}
		}
	}
	if err := s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(runID))); err != nil {
		return fmt.Errorf("remove staging: %w", err)
	}
	return nil
}
