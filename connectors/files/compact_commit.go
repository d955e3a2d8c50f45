package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// unitGroups are the groups of one partition in a commit, in task order.
type unitGroups struct {
	specs  []groupSpec
	groups []connectors.CompactedGroup
}

// unitOutcome is what committing one partition did.
type unitOutcome struct {
	// skipped says why the partition was left out; empty when swapped.
	skipped       string
	before, after int64
}

// CommitCompaction commits the rewrites of all partitions of a run
// together (see Compaction): first it builds every partition's rewrite
// beside the partition, unexposed, with every check; only when all are
// built does it record, in the run's staging, that the run is swapping
// (_swapping), write the dataset's switch manifest naming every
// partition's rewrite (readers that follow it see them all at once), and
// swap them in one after another for the others (exchanges of hard-linked
// copies, pointer writes; on S3 a partition without a pointer has its
// rewrite copied in first). A commit that fails before the record exposes
// nothing of the run; one repeated after a crash once the record exists
// swaps in every partition the crash left out (it rolls forward). Then
// it removes the run's staging.
func (s *Sink) CommitCompaction(ctx context.Context, req connectors.CompactCommit) (connectors.CompactResult, error) {
	res := connectors.CompactResult{Location: s.base()}
	if err := checkName("run", req.RunID); err != nil {
		return res, err
	}
	var order []string
	units := map[string]*unitGroups{}
	for _, g := range req.Groups {
		var spec groupSpec
		if err := json.Unmarshal(g.Group.Spec, &spec); err != nil {
			return res, connectors.Permanent(fmt.Errorf("commit compaction %s: group %s: bad spec: %w", req.RunID, g.Group.Key, err))
		}
		u, ok := units[spec.Unit]
		if !ok {
			u = &unitGroups{}
			units[spec.Unit] = u
			order = append(order, spec.Unit)
		}
		u.specs = append(u.specs, spec)
		u.groups = append(u.groups, g)
	}
	swapping, err := s.swapping(ctx, req.RunID)
	if err != nil {
		return res, fmt.Errorf("commit compaction %s: %w", req.RunID, err)
	}
	var built []*rewrite
	for _, name := range order {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		rw, out, err := s.prepareUnit(ctx, req.RunID, units[name], swapping)
		if err != nil {
			return res, fmt.Errorf("commit compaction %s of %s: %w", req.RunID, s.describe(name), err)
		}
		if out.skipped != "" {
			res.Skipped = append(res.Skipped, name+": "+out.skipped)
			continue
		}
		if rw != nil {
			built = append(built, rw)
		}
		res.Partitions++
		res.FilesBefore += out.before
		res.FilesAfter += out.after
		if units[name].specs[0].Kind == unitVersion {
			// Readers find the version's rewrite there.
			res.Location = s.describe(compactedName(mustVersion(name), req.RunID))
		}
	}
	if len(built) > 0 {
		if err := s.markSwapping(ctx, req.RunID); err != nil {
			return res, fmt.Errorf("commit compaction %s: %w", req.RunID, err)
		}
		if err := s.switchTo(ctx, req.RunID, built); err != nil {
			return res, fmt.Errorf("commit compaction %s: write the switch manifest: %w", req.RunID, err)
		}
		for _, rw := range built {
			if s.beforeSwap != nil {
				if err := s.beforeSwap(rw.spec.Unit); err != nil {
					return res, err
				}
			}
			if err := s.swapUnit(ctx, req.RunID, rw); err != nil {
				return res, fmt.Errorf("commit compaction %s of %s: %w", req.RunID, s.describe(rw.spec.Unit), err)
			}
		}
	}
	if s.s3 != nil {
		err = s.s3.b.DeletePrefix(ctx, s.s3.dir(stagingRel(req.RunID)))
	} else {
		err = os.RemoveAll(stagingDir(s.root, req.RunID))
	}
	if err != nil {
		return res, fmt.Errorf("commit compaction %s: remove staging: %w", req.RunID, err)
	}
	return res, nil
}

// switchTo writes the dataset's switch manifest naming the rewrites of
// the run's partitions (not a version's: current switches it alone), and
// the partitions of the manifest it replaces still waiting for their
// swap, unless it names the run already (a commit repeated).
func (s *Sink) switchTo(ctx context.Context, runID string, built []*rewrite) error {
	m := switchManifest{Run: runID, Time: s.now().UTC()}
	for _, rw := range built {
		if rw.spec.Kind == unitVersion {
			continue
		}
		swapped := path.Base(rw.newDir)
		if s.s3 == nil {
			swapped = markerIdentity(rw.m)
		}
		m.Partitions = append(m.Partitions, switchEntry{Unit: rw.spec.Unit, From: rw.from, Swapped: swapped, To: rw.readDir})
	}
	if len(m.Partitions) == 0 {
		return nil
	}
	t := s.tree()
	cur, err := readSwitch(ctx, t)
	if err != nil || cur != nil && cur.Run == runID {
		return err
	}
	if cur != nil {
		// A partition an earlier switch named that is still waiting for
		// its swap (its commit failed after the switch) stays switched.
		have := map[string]bool{}
		for _, e := range m.Partitions {
			have[e.Unit] = true
		}
		for _, e := range cur.Partitions {
			if have[e.Unit] {
				continue
			}
			state, err := unitIdentity(ctx, t, e.Unit)
			if err != nil {
				return err
			}
			if state == e.From {
				m.Partitions = append(m.Partitions, e)
			}
		}
	}
	return s.writeSwitch(ctx, m)
}

// swappingFile, in a compaction run's staging, records that every
// partition's rewrite is built and the swaps have begun.
const swappingFile = "_swapping"

// swapping reports whether a compaction run began to swap its rewrites in.
func (s *Sink) swapping(ctx context.Context, runID string) (bool, error) {
	if s.s3 != nil {
		return s.s3.b.Exists(ctx, s.s3.key(path.Join(stagingRel(runID), swappingFile)))
	}
	_, err := os.Stat(filepath.Join(stagingDir(s.root, runID), swappingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// markSwapping records that a compaction run begins to swap its rewrites
// in.
func (s *Sink) markSwapping(ctx context.Context, runID string) error {
	if s.s3 != nil {
		return s.s3.b.Put(ctx, s.s3.key(path.Join(stagingRel(runID), swappingFile)), []byte(runID+"\n"))
	}
	dir := stagingDir(s.root, runID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, swappingFile), []byte(runID+"\n"), 0o644); err != nil {
		return err
	}
	return syncDir(dir)
}

// mustVersion is the version of a version directory's name (0 for
// another name).
func mustVersion(name string) int64 {
	d, _ := parseVersionDir(name)
	return d.v
}

// describe names rel for messages: a local path or an s3:// URL.
func (s *Sink) describe(rel string) string {
	if s.s3 != nil {
		return s.s3.url(rel)
	}
	return filepath.Join(s.root, filepath.FromSlash(rel))
}

// rewrite is a partition's rewrite being committed: what it holds and
// where it goes.
type rewrite struct {
	spec groupSpec
	// newDir is the directory the rewrite is exposed as: v<N>_<run>; on
	// S3 <unit>/run=<run>; locally for a window or an hour, the partition
	// itself (swapped by exchange).
	newDir string
	// readDir is where the rewrite is built, and where readers of the
	// switch manifest read it until its swap: newDir for a version and on
	// S3 for a partition with a current pointer; else
	// _compacted/<run>/<unit> (see the switch).
	readDir string
	// from is the partition's identity before the swap (unitIdentity).
	from string
	// passed are the partition's files the groups do not rewrite, kept
	// as they are; planned the files the groups rewrite.
	passed  []fileRef
	planned map[string]fileRef
	// outputs maps each output's name in the rewrite to its name in the
	// run's staging; sizes its size.
	outputs map[string]string
	sizes   map[string]int64
	m       marker
}

// prepareUnit builds the rewrite of one partition beside it, unexposed,
// and returns it for swapUnit; nil when the partition's rewrite is in
// place already (a commit repeated).
func (s *Sink) prepareUnit(ctx context.Context, runID string, u *unitGroups, swapping bool) (*rewrite, unitOutcome, error) {
	t := s.tree()
	spec := u.specs[0]
	rw := &rewrite{spec: spec, planned: map[string]fileRef{}, outputs: map[string]string{}, sizes: map[string]int64{}}
	switch {
	case spec.Kind == unitVersion:
		d, ok := parseVersionDir(spec.Unit)
		if !ok {
			return nil, unitOutcome{}, connectors.Permanent(fmt.Errorf("%q is not a version directory", spec.Unit))
		}
		rw.newDir = compactedName(d.v, runID)
	case s.s3 != nil:
		rw.newDir = joinRel(spec.Unit, runDirPrefix+runID)
	default:
		rw.newDir = spec.Unit
	}
	rw.readDir = rw.newDir
	switch st, err := s.committed(ctx, t, runID, rw, swapping); {
	case err != nil || st == unitSwapped:
		return nil, unitOutcome{}, err
	case st == unitPrepared:
		return rw, unitOutcome{}, nil
	}
	// The partition as it is now: the pointer as planned, every planned
	// file unchanged; files that came since go along unchanged.
	switch ptr, err := t.pointer(ctx, pointerDir(spec)); {
	case err != nil:
		return nil, unitOutcome{}, err
	case spec.Kind == unitVersion && ptr != spec.Unit:
		return nil, unitOutcome{skipped: fmt.Sprintf("version no longer exposed (current: %s)", dashIfEmpty(ptr))}, nil
	case spec.Kind != unitVersion && spec.Dir != spec.Unit && ptr != path.Base(spec.Dir):
		return nil, unitOutcome{skipped: fmt.Sprintf("rewritten meanwhile (current: %s)", dashIfEmpty(ptr))}, nil
	}
	now, err := loadUnit(ctx, t, spec.Kind, spec.Unit, spec.Dir)
	if err != nil {
		return nil, unitOutcome{}, err
	}
	present := map[string]fileRef{}
	for _, f := range now.files {
		present[f.Path] = f
	}
	for _, sp := range u.specs {
		for _, f := range sp.Files {
			p, ok := present[f.Path]
			if !ok || p.Size != f.Size || (s.s3 == nil && p.MTime != f.MTime) || p.ETag != f.ETag {
				return nil, unitOutcome{skipped: f.Path + " changed or went since the plan"}, nil
			}
			rw.planned[f.Path] = f
		}
	}
	for _, f := range now.files {
		if _, ok := rw.planned[f.Path]; !ok {
			rw.passed = append(rw.passed, f)
		}
	}
	var total connectors.Checksum
	for _, g := range u.groups {
		m, err := s.readManifest(ctx, runID, g.Output)
		if err != nil {
			return nil, unitOutcome{}, err
		}
		total.Merge(g.Output.Checksum)
		var sp groupSpec
		if err := json.Unmarshal(g.Group.Spec, &sp); err != nil {
			return nil, unitOutcome{}, connectors.Permanent(fmt.Errorf("group %s: bad spec: %w", g.Group.Key, err))
		}
		for _, f := range m.Files {
			name := outputName(runID, f.Name, sp)
			rw.outputs[name], rw.sizes[name] = f.Name, f.Bytes
		}
	}
	whole := len(rw.passed) == 0 && !slices.ContainsFunc(u.specs, func(sp groupSpec) bool { return !sp.Whole })
	if whole && spec.Kind != unitHour && now.m != nil && (now.m.Rows != 0 || now.m.Checksum != "") {
		want, err := connectors.ParseChecksum(now.m.Checksum, now.m.Rows)
		if err != nil {
			return nil, unitOutcome{}, connectors.Permanent(err)
		}
		if total != want {
			return nil, unitOutcome{}, connectors.Permanent(fmt.Errorf("the rewrite holds %d rows, checksum %s; the partition's marker says %d rows, checksum %s",
				total.Rows, total, want.Rows, want))
		}
	}
	if now.m != nil {
		rw.m = *now.m
	}
	rw.m.Compacted = &compaction{Run: runID, Time: s.now().UTC(), From: spec.Dir, Files: len(rw.passed) + len(rw.outputs)}
	for p := range rw.planned {
		rw.m.Compacted.Replaced = append(rw.m.Compacted.Replaced, p)
	}
	for _, f := range rw.passed {
		rw.m.Compacted.Replaced = append(rw.m.Compacted.Replaced, f.Path)
	}
	// What an earlier rewrite behind the same pointer replaced stays
	// replaced.
	for _, p := range now.replaced {
		if _, ok := rw.planned[p]; !ok && path.Dir(p) == spec.Unit {
			rw.m.Compacted.Replaced = append(rw.m.Compacted.Replaced, p)
		}
	}
	slices.Sort(rw.m.Compacted.Replaced)
	rw.m.Compacted.Replaced = slices.Compact(rw.m.Compacted.Replaced)
	if spec.Kind != unitVersion {
		if rw.from, err = unitIdentity(ctx, t, spec.Unit); err != nil {
			return nil, unitOutcome{}, err
		}
		if s.s3 == nil || rw.from == "" {
			rw.readDir = switchRewriteDir(runID, spec.Unit)
		}
	}
	if s.s3 != nil {
		err = s.prepareS3(ctx, runID, rw)
	} else {
		err = s.prepareLocal(ctx, runID, rw)
	}
	if err != nil {
		return nil, unitOutcome{}, err
	}
	return rw, unitOutcome{before: int64(len(now.files)), after: int64(rw.m.Compacted.Files)}, nil
}

// pointerDir is the directory whose pointer names a partition's files:
// the dataset's (a version), or the partition's own.
func pointerDir(spec groupSpec) string {
	if spec.Kind == unitVersion {
		return ""
	}
	return spec.Unit
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// unitState is where the rewrite of a partition by a run stands.
type unitState int

const (
	unitFresh    unitState = iota // not built (or its build to be finished)
	unitPrepared                  // built beside the partition, not exposed
	unitSwapped                   // exposed (or superseded since)
)

// committed tells where the rewrite of rw's partition by run stands (a
// commit repeated after a crash), and finishes what that commit left of a
// swap: the swap of current, once the run is swapping, and the files
// written meanwhile.
func (s *Sink) committed(ctx context.Context, t tree, runID string, rw *rewrite, swapping bool) (unitState, error) {
	spec := rw.spec
	if s.s3 == nil && spec.Kind != unitVersion {
		m, err := t.marker(ctx, spec.Unit)
		if errors.Is(err, fs.ErrNotExist) || err == nil && (m.Compacted == nil || m.Compacted.Run != runID) {
			return unitFresh, nil
		}
		if err != nil {
			return unitFresh, err
		}
		// Swapped: the directory it replaced may still be where the
		// exchange left it.
		replaced := s.replacedDir(spec.Unit, runID)
		dir, base := path.Split(spec.Unit)
		building := filepath.Join(s.root, filepath.FromSlash(dir), "."+base+"."+runID+".building")
		if _, err := os.Stat(building); err == nil {
			if err := os.Rename(building, replaced); err != nil {
				return unitSwapped, err
			}
		}
		return unitSwapped, s.rescueLocal(filepath.Join(s.root, filepath.FromSlash(spec.Unit)), replaced, replacedNames(m))
	}
	m, err := t.marker(ctx, rw.newDir)
	if errors.Is(err, fs.ErrNotExist) {
		return unitFresh, nil
	}
	if err != nil {
		return unitFresh, err
	}
	if m.Compacted == nil || m.Compacted.Run != runID {
		return unitFresh, connectors.Permanent(fmt.Errorf("%s exists and is not the rewrite of run %s", s.describe(rw.newDir), runID))
	}
	ptr, err := t.pointer(ctx, pointerDir(spec))
	if err != nil {
		return unitFresh, err
	}
	rw.m = m
	if spec.Kind == unitVersion {
		switch {
		case ptr != spec.Unit:
			return unitSwapped, nil
		case swapping:
			return unitSwapped, s.point(ctx, rw.newDir)
		}
		return unitPrepared, nil
	}
	if ptr != path.Base(rw.newDir) {
		if !swapping {
			rw.from = ptr
			return unitPrepared, nil
		}
		if err := s.s3.point(ctx, spec.Unit, path.Base(rw.newDir)); err != nil {
			return unitSwapped, err
		}
	}
	return unitSwapped, s.rescueS3(ctx, rw)
}

// point makes the dataset's current name version directory name.
func (s *Sink) point(ctx context.Context, name string) error {
	if s.s3 != nil {
		return s.s3.point(ctx, "", name)
	}
	return s.swapCurrent(name)
}

// replacedDir is where, locally, a window or an hour that run rewrote
// keeps the directory it replaced: a hidden sibling.
func (s *Sink) replacedDir(unit, runID string) string {
	dir, base := path.Split(unit)
	return filepath.Join(s.root, filepath.FromSlash(dir), "."+base+".replaced."+runID)
}

// prepareLocal builds the rewrite in a hidden directory (the kept files
// hard-linked, the outputs moved out of staging, the marker last): a
// version's is then renamed to its own name, unexposed; a window's or an
// hour's is built in its readDir, which the swap links into the
// partition.
func (s *Sink) prepareLocal(ctx context.Context, runID string, rw *rewrite) error {
	building := s.buildingDir(runID, rw)
	if rw.spec.Kind != unitVersion {
		building = filepath.Join(s.root, filepath.FromSlash(rw.readDir))
	}
	links := map[string]string{}
	for _, f := range rw.passed {
		links[path.Base(f.Path)] = filepath.Join(s.root, filepath.FromSlash(f.Path))
	}
	if err := s.fillRewrite(ctx, building, runID, links, rw); err != nil {
		return err
	}
	if rw.spec.Kind == unitVersion {
		if err := os.Rename(building, filepath.Join(s.root, rw.newDir)); err != nil {
			return err
		}
		return syncDir(s.root)
	}
	return nil
}

// buildingDir is where, locally, the rewrite of rw's partition is built.
func (s *Sink) buildingDir(runID string, rw *rewrite) string {
	if rw.spec.Kind == unitVersion {
		return filepath.Join(s.root, "."+rw.newDir+".building")
	}
	dir, base := path.Split(rw.spec.Unit)
	return filepath.Join(s.root, filepath.FromSlash(dir), "."+base+"."+runID+".building")
}

// swapUnit exposes a rewrite prepareUnit built: locally a version's with
// the current symlink, a window's or an hour's with an atomic exchange
// with the partition, whose old directory is kept hidden until a vacuum
// (files written into it meanwhile are moved into the rewrite); on S3 by
// the version's or the partition's current pointer.
func (s *Sink) swapUnit(ctx context.Context, runID string, rw *rewrite) error {
	if s.s3 != nil {
		if rw.spec.Kind == unitVersion {
			return s.s3.point(ctx, "", rw.newDir)
		}
		if rw.readDir != rw.newDir {
			if err := s.copyRewrite(ctx, rw); err != nil {
				return err
			}
		}
		if err := s.s3.point(ctx, rw.spec.Unit, path.Base(rw.newDir)); err != nil {
			return err
		}
		return s.rescueS3(ctx, rw)
	}
	if rw.spec.Kind == unitVersion {
		return s.swapCurrent(rw.newDir)
	}
	building := s.buildingDir(runID, rw)
	if err := linkTree(filepath.Join(s.root, filepath.FromSlash(rw.readDir)), building); err != nil {
		return fmt.Errorf("link the rewrite of %s: %w", rw.spec.Unit, err)
	}
	final := filepath.Join(s.root, filepath.FromSlash(rw.spec.Unit))
	replaced := s.replacedDir(rw.spec.Unit, runID)
	if err := exchange(building, final); err != nil {
		return fmt.Errorf("swap %s with its rewrite: %w", final, err)
	}
	if err := os.Rename(building, replaced); err != nil {
		return err
	}
	tm := s.now()
	if err := os.Chtimes(replaced, tm, tm); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	return s.rescueLocal(final, replaced, replacedNames(rw.m))
}

// linkTree makes the directory dst hold hard links to the files of the
// directory src (a rewrite, which holds no directories), replacing what
// dst held.
func linkTree(src, dst string) error {
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := os.Link(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return syncDir(dst)
}

// replacedNames are the names of the files a rewrite's marker says it
// replaced.
func replacedNames(m marker) map[string]bool {
	out := map[string]bool{}
	if m.Compacted != nil {
		for _, p := range m.Compacted.Replaced {
			out[path.Base(p)] = true
		}
	}
	return out
}

// fillRewrite makes the directory building hold the rewrite: links to
// the kept files, the outputs moved out of the run's staging (found in
// building when an interrupted commit moved them), the marker (replaced
// in one rename: readers of the switch manifest may read a rewrite a
// commit repeated fills again); anything else in it is removed.
func (s *Sink) fillRewrite(ctx context.Context, building, runID string, links map[string]string, rw *rewrite) error {
	if err := os.MkdirAll(building, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(building)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := links[e.Name()]; ok || e.Name() == SuccessFile {
			continue // the marker is replaced below, never missing
		}
		if _, ok := rw.outputs[e.Name()]; ok {
			continue
		}
		if err := os.RemoveAll(filepath.Join(building, e.Name())); err != nil {
			return err
		}
	}
	for name, src := range links {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(building, name)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Link(src, dst); err != nil {
			return fmt.Errorf("keep %s in the rewrite: %w", src, err)
		}
	}
	staging := stagingDir(s.root, runID)
	for name, staged := range rw.outputs {
		dst := filepath.Join(building, name)
		err := os.Rename(filepath.Join(staging, staged), dst)
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dst); serr == nil {
				continue // moved by an earlier attempt
			}
			return connectors.Permanent(fmt.Errorf("staged output %s is missing", filepath.Join(staging, staged)))
		}
		if err != nil {
			return err
		}
	}
	if err := writeMarker(building, rw.m); err != nil {
		return err
	}
	return syncDir(building)
}

// rescueLocal moves into dir the data files in replaced that accounted
// does not hold: files written into the partition while it was swapped.
func (s *Sink) rescueLocal(dir, replaced string, accounted map[string]bool) error {
	entries, err := os.ReadDir(replaced)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	moved := false
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || hidden(name) || formatOf(name) == "" || accounted[name] {
			continue
		}
		dst := filepath.Join(dir, name)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Rename(filepath.Join(replaced, name), dst); err != nil {
			return err
		}
		moved = true
	}
	if moved {
		return syncDir(dir)
	}
	return nil
}

// prepareS3 copies the rewrite into its readDir on the server (the kept
// files and the staged outputs) and writes its marker, unexposed: a
// version's beside the versions, a partition's inside it where the
// partition has a current pointer already (readers follow the pointer),
// else under _compacted/ (a copy inside the partition would show to its
// readers beside its files until the pointer), from where its swap
// copies it in (copyRewrite).
func (s *Sink) prepareS3(ctx context.Context, runID string, rw *rewrite) error {
	r := s.s3
	want := map[string]objstore.Object{}
	for _, f := range rw.passed {
		want[path.Base(f.Path)] = objstore.Object{Key: r.key(f.Path), Size: f.Size, ETag: f.ETag}
	}
	for name, staged := range rw.outputs {
		want[name] = objstore.Object{Key: r.key(path.Join(stagingRel(runID), staged)), Size: rw.sizes[name]}
	}
	if err := r.copyInto(ctx, rw.readDir, want, func(name string) error {
		return connectors.Permanent(fmt.Errorf("%s of the rewrite of %s is missing", name, r.url(rw.spec.Unit)))
	}); err != nil {
		return err
	}
	rw.m.Files = sortedKeys(want)
	return r.writeMarker(ctx, rw.readDir, rw.m)
}

// copyRewrite copies, on S3, the rewrite of a partition without a
// pointer from its readDir into the partition (newDir), marker last.
func (s *Sink) copyRewrite(ctx context.Context, rw *rewrite) error {
	r := s.s3
	files, _, err := s3Tree{r}.list(ctx, rw.readDir)
	if err != nil {
		return err
	}
	want := map[string]objstore.Object{}
	for _, f := range dataFiles(files) {
		want[path.Base(f.Path)] = objstore.Object{Key: r.key(f.Path), Size: f.Size, ETag: f.ETag}
	}
	if err := r.copyInto(ctx, rw.newDir, want, func(name string) error {
		return connectors.Permanent(fmt.Errorf("%s of the rewrite of %s is missing", name, r.url(rw.readDir)))
	}); err != nil {
		return err
	}
	return r.writeMarker(ctx, rw.newDir, rw.m)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rescueS3 copies into the rewrite of a partition on S3 the data files
// written directly in the partition that the rewrite did not replace
// (a change log's late events for an hour being compacted), and records
// them as replaced.
func (s *Sink) rescueS3(ctx context.Context, rw *rewrite) error {
	r := s.s3
	loose, _, err := s3Tree{r}.list(ctx, rw.spec.Unit)
	if err != nil {
		return err
	}
	var late []fileRef
	for _, f := range dataFiles(loose) {
		if !slices.Contains(rw.m.Compacted.Replaced, f.Path) {
			late = append(late, f)
		}
	}
	if len(late) == 0 {
		return nil
	}
	for _, f := range late {
		if err := r.b.Copy(ctx, objstore.Object{Key: r.key(f.Path), Size: f.Size, ETag: f.ETag}, r.key(joinRel(rw.newDir, path.Base(f.Path)))); err != nil {
			return err
		}
		rw.m.Compacted.Replaced = append(rw.m.Compacted.Replaced, f.Path)
		rw.m.Files = append(rw.m.Files, path.Base(f.Path))
		rw.m.Compacted.Files++
	}
	slices.Sort(rw.m.Compacted.Replaced)
	slices.Sort(rw.m.Files)
	return r.writeMarker(ctx, rw.newDir, rw.m)
}

// compactTime is when a rewrite replaced what it replaced: its
// compaction's time, else its marker's.
func compactTime(m marker) time.Time {
	if m.Compacted != nil {
		return m.Compacted.Time
	}
	return m.Time
}
