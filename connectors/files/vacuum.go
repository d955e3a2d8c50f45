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
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

var _ connectors.Vacuumer = (*Sink)(nil)

// vacuumItem is one thing a vacuum may remove: a directory (dir) or a set
// of files, relative to the dataset, with why, and the run it belongs to
// when it is a run's staging or build ("" none; anyRun when it may be
// any run's).
type vacuumItem struct {
	rel   string
	dir   bool
	files []string
	why   string
	run   string
	// markersFirst removes the directory's _SUCCESS markers before its
	// other files (locally: renames it out of the way first), so that a
	// reader never finds a marker beside a part of its files (a switch's
	// rewrites: see lookupSwitched).
	markersFirst bool
}

// anyRun marks what a run in flight, whichever, may still use.
const anyRun = "\x00any"

// Vacuum removes what no reader of the dataset needs any more:
//
//   - the staging of runs not in flight (task outputs a failed run, or a
//     task that ran late, left in _staging/<run>/), and locally the
//     hidden building directories of commits that did not finish;
//   - the directories a compaction replaced (a version's, a window's, an
//     hour's), once replaced for longer than the retention; on S3 the
//     files of a change log hour its rewrite replaced, and a window's or
//     an hour's other run directories;
//   - the versions beyond keep_versions (the settings', else the sink's).
//
// It never removes the directory a version is read from, for each of the
// newest keep_versions versions and the exposed one (the rollback window:
// rollback exposes them), nor what a run in flight may use, nor a
// change log's files a rewrite has not taken in (late events: the next
// compaction takes them). DryRun only lists.
func (s *Sink) Vacuum(ctx context.Context, req connectors.VacuumRequest) (connectors.VacuumReport, error) {
	var rep connectors.VacuumReport
	keep := req.Settings.KeepVersions
	if keep <= 0 {
		keep = s.cfg.KeepVersions
	}
	t := s.tree()
	items, kept, err := s.vacuumItems(ctx, t, req.Now, req.Settings.Retention, keep)
	if err != nil {
		return rep, fmt.Errorf("vacuum %s: %w", s.base(), err)
	}
	rep.Kept = kept
	active := map[string]bool{}
	if req.Active != nil {
		ids, err := req.Active(ctx)
		if err != nil {
			return rep, fmt.Errorf("vacuum %s: %w", s.base(), err)
		}
		for _, id := range ids {
			active[id] = true
		}
	}
	for _, it := range items {
		if it.run != "" && (active[it.run] || it.run == anyRun && len(active) > 0) {
			continue
		}
		ri := connectors.VacuumItem{Path: s.describe(it.rel), Why: it.why}
		if err := s.sizeOf(ctx, it, &ri); err != nil {
			return rep, fmt.Errorf("vacuum %s: %w", s.base(), err)
		}
		if !req.DryRun {
			if err := s.remove(ctx, it); err != nil {
				return rep, fmt.Errorf("vacuum %s: remove %s: %w", s.base(), ri.Path, err)
			}
		}
		rep.Removed = append(rep.Removed, ri)
	}
	return rep, nil
}

// vacuumItems lists what may go, and the versions kept for rollback.
func (s *Sink) vacuumItems(ctx context.Context, t tree, now time.Time, retention time.Duration, keep int) ([]vacuumItem, []connectors.Version, error) {
	var items []vacuumItem
	old := func(at time.Time) bool { return !at.IsZero() && now.Sub(at) >= retention }
	_, dirs, err := t.list(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	// Staging of runs not in flight.
	_, runs, err := t.list(ctx, "_staging")
	if err != nil {
		return nil, nil, err
	}
	if s.s3 != nil {
		// A run whose tasks died mid-upload has uploads and no object.
		keys, err := s.s3.b.Uploads(ctx, s.s3.dir("_staging"))
		if err != nil {
			return nil, nil, err
		}
		for _, k := range keys {
			run, _, _ := strings.Cut(strings.TrimPrefix(k, s.s3.dir("_staging")), "/")
			if run != "" && !slices.Contains(runs, run) {
				runs = append(runs, run)
			}
		}
	}
	for _, run := range runs {
		items = append(items, vacuumItem{rel: joinRel("_staging", run), dir: true, run: run,
			why: fmt.Sprintf("staging of run %s, which is not in flight", run)})
	}
	// Versions: beyond keep_versions, and the directories their rewrites
	// replaced.
	var vdirs []versionDir
	for _, d := range dirs {
		if v, ok := parseVersionDir(d); ok {
			vdirs = append(vdirs, v)
		}
	}
	cur, err := t.pointer(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	markers := map[string]marker{}
	kv, err := keptVersions(vdirs, cur, func(name string) (marker, error) {
		m, err := t.marker(ctx, name)
		if err == nil {
			markers[name] = m
		}
		return m, err
	})
	if err != nil {
		return nil, nil, err
	}
	for _, d := range pruned(vdirs, cur, keep) {
		items = append(items, vacuumItem{rel: d.name, dir: true, why: fmt.Sprintf("version %d, beyond keep_versions (%d)", d.v, keep)})
	}
	var kept []keptVersion
	for _, k := range kv {
		if !slices.ContainsFunc(pruned(vdirs, cur, keep), func(d versionDir) bool { return d.v == k.dir.v }) {
			kept = append(kept, k)
		}
	}
	for _, k := range kept {
		for _, d := range vdirs {
			if d.v != k.dir.v || d.name == k.dir.name || d.name == cur {
				continue
			}
			m, complete := markers[d.name]
			if !complete || k.m.Compacted == nil || rewriteTime(keptVersion{d, m}).After(rewriteTime(k)) {
				// A commit that did not finish (its run may still), or a
				// rewrite no reader is pointed at yet.
				continue
			}
			if !old(compactTime(k.m)) {
				continue
			}
			items = append(items, vacuumItem{rel: d.name, dir: true,
				why: fmt.Sprintf("version %d as %s, replaced by %s %s ago", d.v, d.name, k.dir.name, now.Sub(compactTime(k.m)).Round(time.Second))})
		}
	}
	// Windows and hours a compaction replaced.
	if s.s3 == nil {
		local, err := s.localLeftovers(ctx, dirs, old)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, local...)
	} else {
		units, err := s.units(ctx, t)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range units {
			if u.kind == unitVersion || u.dir == u.rel {
				continue
			}
			more, err := s.s3Replaced(ctx, t, u, old, now)
			if err != nil {
				return nil, nil, err
			}
			items = append(items, more...)
		}
	}
	more, err := switchLeftovers(ctx, t, old, now)
	if err != nil {
		return nil, nil, err
	}
	items = append(items, more...)
	slices.SortFunc(items, func(a, b vacuumItem) int { return strings.Compare(a.rel, b.rel) })
	return items, versionList(kept, cur, s.describe), nil
}

// switchLeftovers lists the rewrites under _compacted/<run>/ that no
// reader of the switch manifest needs any more: never those the manifest
// names for a partition still waiting for its swap; those of the run the
// manifest names, and of other runs (an earlier switch, a commit that
// never switched), once the manifest is older than the retention (old),
// or at once without a manifest. A run in flight keeps its own.
func switchLeftovers(ctx context.Context, t tree, old func(time.Time) bool, now time.Time) ([]vacuumItem, error) {
	_, runs, err := t.list(ctx, compactedDir)
	if err != nil || len(runs) == 0 {
		return nil, err
	}
	m, err := readSwitch(ctx, t)
	if err != nil {
		return nil, err
	}
	pending := map[string]bool{}
	if m != nil {
		for _, e := range m.Partitions {
			rest, ok := strings.CutPrefix(e.To, compactedDir+"/")
			if !ok {
				continue
			}
			state, err := unitIdentity(ctx, t, e.Unit)
			if err != nil {
				return nil, err
			}
			if state == e.From {
				run, _, _ := strings.Cut(rest, "/")
				pending[run] = true
			}
		}
	}
	var items []vacuumItem
	for _, run := range runs {
		rel := joinRel(compactedDir, run)
		switch {
		case pending[run]:
		case m == nil:
			items = append(items, vacuumItem{rel: rel, dir: true, run: run, markersFirst: true, why: fmt.Sprintf("rewrites of compaction %s, never switched in", run)})
		case !old(m.Time):
		case run == m.Run:
			items = append(items, vacuumItem{rel: rel, dir: true, run: run, markersFirst: true,
				why: fmt.Sprintf("rewrites of compaction %s as the switch manifest named them, swapped in %s ago", run, now.Sub(m.Time).Round(time.Second))})
		default:
			items = append(items, vacuumItem{rel: rel, dir: true, run: run, markersFirst: true,
				why: fmt.Sprintf("rewrites of compaction %s, superseded by compaction %s %s ago", run, m.Run, now.Sub(m.Time).Round(time.Second))})
		}
	}
	return items, nil
}

// localLeftovers lists, on a local disk, the hidden building directories
// of commits that did not finish, and the directories of windows and
// hours a compaction replaced longer than the retention ago (old).
func (s *Sink) localLeftovers(ctx context.Context, dirs []string, old func(time.Time) bool) ([]vacuumItem, error) {
	var items []vacuumItem
	scan := func(parent string) error {
		entries, err := os.ReadDir(filepath.Join(s.root, filepath.FromSlash(parent)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for _, e := range entries {
			name := e.Name()
			if !e.IsDir() || !strings.HasPrefix(name, ".") {
				continue
			}
			rel := joinRel(parent, name)
			if base, ok := strings.CutSuffix(name[1:], ".building"); ok {
				items = append(items, vacuumItem{rel: rel, dir: true, run: buildingRun(base), why: "a commit's build that did not finish"})
				continue
			}
			if i := strings.Index(name, ".replaced."); i > 0 {
				info, err := e.Info()
				if err != nil {
					continue
				}
				if old(info.ModTime()) {
					items = append(items, vacuumItem{rel: rel, dir: true,
						why: fmt.Sprintf("%s as it was before compaction %s, replaced %s ago", name[1:i], name[i+len(".replaced."):], time.Since(info.ModTime()).Round(time.Second))})
				}
			}
		}
		return nil
	}
	if err := scan(""); err != nil {
		return nil, err
	}
	for _, d := range dirs {
		_, version := parseVersionDir(d)
		_, window := parseWindowDir(d)
		switch {
		case hidden(d) || version || window:
		case strings.HasPrefix(d, "date="):
			if err := scan(d); err != nil {
				return nil, err
			}
		default:
			// A change log's table: the hours' leftovers are in its date
			// directories.
			_, dates, err := localTree(s.root).list(ctx, d)
			if err != nil {
				return nil, err
			}
			for _, dd := range dates {
				if strings.HasPrefix(dd, "date=") {
					if err := scan(joinRel(d, dd)); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return items, nil
}

// buildingRun returns the run whose commit builds the hidden directory
// .<base>.building: a compaction's rewrite of a version (v<N>_<run>), a
// window's or an hour's (<name>.<run>: run names hold no dot), or a run
// appended without a window (run=<run>); anyRun for a version's commit,
// whose run is not in the name.
func buildingRun(base string) string {
	if run, ok := parseRunDir(base); ok && !strings.Contains(run, ".") {
		return run
	}
	if d, ok := parseVersionDir(base); ok {
		if d.run == "" {
			return anyRun
		}
		return d.run
	}
	if i := strings.LastIndex(base, "."); i >= 0 {
		return base[i+1:]
	}
	return anyRun
}

// s3Replaced lists what a window's or an hour's rewrite on S3 replaced,
// once replaced longer than the retention ago (old): the partition's
// other run directories, and the files directly in it the rewrite
// replaced (those it did not are left for the next compaction).
func (s *Sink) s3Replaced(ctx context.Context, t tree, u unit, old func(time.Time) bool, now time.Time) ([]vacuumItem, error) {
	m, err := t.marker(ctx, u.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	at := compactTime(m)
	if !old(at) {
		return nil, nil
	}
	ago := now.Sub(at).Round(time.Second)
	var items []vacuumItem
	loose, runs, err := t.list(ctx, u.rel)
	if err != nil {
		return nil, err
	}
	for _, r := range runs {
		if rel := joinRel(u.rel, r); rel != u.dir && strings.HasPrefix(r, runDirPrefix) {
			items = append(items, vacuumItem{rel: rel, dir: true, why: fmt.Sprintf("replaced by %s %s ago", path.Base(u.dir), ago)})
		}
	}
	if m.Compacted != nil {
		var files []string
		for _, f := range dataFiles(loose) {
			if slices.Contains(m.Compacted.Replaced, f.Path) {
				files = append(files, f.Path)
			}
		}
		if len(files) > 0 {
			items = append(items, vacuumItem{rel: u.rel, files: files,
				why: fmt.Sprintf("%d files rewritten into %s %s ago", len(files), path.Base(u.dir), ago)})
		}
	}
	return items, nil
}

// sizeOf fills the files and bytes of an item.
func (s *Sink) sizeOf(ctx context.Context, it vacuumItem, ri *connectors.VacuumItem) error {
	if s.s3 != nil {
		if !it.dir {
			for _, f := range it.files {
				o, err := s.s3.b.Head(ctx, s.s3.key(f))
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return err
				}
				ri.Files++
				ri.Bytes += o.Size
			}
			return nil
		}
		return s.s3.b.List(ctx, s.s3.dir(it.rel), func(o objstore.Object) error {
			ri.Files++
			ri.Bytes += o.Size
			return nil
		})
	}
	if !it.dir {
		for _, f := range it.files {
			if st, err := os.Stat(filepath.Join(s.root, filepath.FromSlash(f))); err == nil {
				ri.Files++
				ri.Bytes += st.Size()
			}
		}
		return nil
	}
	return filepath.WalkDir(filepath.Join(s.root, filepath.FromSlash(it.rel)), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				ri.Files++
				ri.Bytes += info.Size()
			}
		}
		return nil
	})
}

// remove removes an item.
func (s *Sink) remove(ctx context.Context, it vacuumItem) error {
	if s.s3 != nil {
		if !it.dir {
			keys := make([]string, len(it.files))
			for i, f := range it.files {
				keys[i] = s.s3.key(f)
			}
			return s.s3.b.Delete(ctx, keys...)
		}
		if it.markersFirst {
			var markers []string
			if err := s.s3.b.List(ctx, s.s3.dir(it.rel), func(o objstore.Object) error {
				if path.Base(o.Key) == SuccessFile {
					markers = append(markers, o.Key)
				}
				return nil
			}); err != nil {
				return err
			}
			if err := s.s3.b.Delete(ctx, markers...); err != nil {
				return err
			}
		}
		return s.s3.b.DeletePrefix(ctx, s.s3.dir(it.rel))
	}
	if !it.dir {
		for _, f := range it.files {
			if err := os.Remove(filepath.Join(s.root, filepath.FromSlash(f))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	dir := filepath.Join(s.root, filepath.FromSlash(it.rel))
	if it.markersFirst {
		gone := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".removing")
		if err := os.Rename(dir, gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		dir = gone
	}
	return os.RemoveAll(dir)
}
