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
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/objstore"
)

// # The switch of a compaction run
//
// A compaction run that rewrites several partitions of a dataset (the
// windows of an incremental dataset, the hours of a change log) exposes
// them all in one step: the dataset's switch manifest,
// <dataset>/_compacted/manifest.json, written in one rename (on S3 one
// PUT) once every partition's rewrite is built. It names, for each
// partition, the directory holding its rewrite (locally
// _compacted/<run>/<partition>/; on S3 the partition's run=<run>/ where
// the partition has a current pointer already, else
// _compacted/<run>/<partition>/), the partition's state before the swap
// and after it. Only then is each partition swapped in its own place
// (an exchange, a pointer write), for readers that do not read the
// manifest.
//
// A reader that follows the manifest (the files source, ReadChecksum)
// lists the dataset as always, then, for each partition the manifest
// names whose state is still the one before its swap or the one after it,
// reads the rewrite instead of what it listed there, with the data files
// written directly in the partition that the rewrite did not replace
// (late events of a change log's hour). A partition in another state was
// replaced since by another writer and is read as listed. It then reads
// the manifest again and lists again if another compaction switched
// meanwhile. Every partition of a run is therefore seen compacted from
// the moment the manifest names the run, never some before the others,
// and never twice: on S3 a partition compacted for the first time has its
// rewrite under _compacted/, which no lister that skips names starting
// with '_' sees, until its swap copies it in behind a new pointer.

// compactedDir holds, under a dataset, the rewrites a switch manifest
// names and the manifest.
const compactedDir = "_compacted"

// switchFile is the switch manifest, relative to the dataset.
const switchFile = compactedDir + "/manifest.json"

// switchSearchDepth is how many directories above the directory a reader
// reads it looks for the dataset's manifest: a change log's hour is three
// levels below its dataset (<table>/date=D/hour=H).
const switchSearchDepth = 3

// switchManifest is a dataset's switch manifest.
type switchManifest struct {
	Run        string        `json:"run"`
	Time       time.Time     `json:"time"`
	Partitions []switchEntry `json:"partitions"`
}

// switchEntry is one partition a switch exposes.
type switchEntry struct {
	// Unit is the partition's directory, relative to the dataset.
	Unit string `json:"unit"`
	// From and Swapped are the partition's state (unitIdentity) before
	// the swap and after it.
	From    string `json:"from"`
	Swapped string `json:"swapped"`
	// To is the directory holding the rewrite, relative to the dataset.
	To string `json:"to"`
}

// switchRewriteDir is where a switch keeps the rewrite of unit by run
// until its swap (locally, and on S3 for a partition without a pointer).
func switchRewriteDir(runID, unit string) string {
	return compactedDir + "/" + runID + "/" + unit
}

// unitIdentity tells what a partition exposes now: on S3 the name its
// current pointer holds ("" without one); locally its marker's run and
// the run of the compaction that wrote it ("-" without a marker).
func unitIdentity(ctx context.Context, t tree, unit string) (string, error) {
	if _, ok := t.(s3Tree); ok {
		return t.pointer(ctx, unit)
	}
	m, err := t.marker(ctx, unit)
	if errors.Is(err, fs.ErrNotExist) {
		return "-", nil
	}
	if err != nil {
		return "", err
	}
	return markerIdentity(m), nil
}

// markerIdentity is the local identity of a partition whose marker is m.
func markerIdentity(m marker) string {
	id := m.Run + "|"
	if m.Compacted != nil {
		id += m.Compacted.Run
	}
	return id
}

// readSwitch reads the switch manifest of the dataset t; nil without one.
func readSwitch(ctx context.Context, t tree) (*switchManifest, error) {
	data, err := t.read(ctx, switchFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m switchManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("switch manifest: %w", err)
	}
	return &m, nil
}

// writeSwitch writes the switch manifest of the sink's dataset in one
// step: a rename locally, one PUT on S3.
func (s *Sink) writeSwitch(ctx context.Context, m switchManifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if s.s3 != nil {
		return s.s3.b.Put(ctx, s.s3.key(switchFile), data)
	}
	dir := filepath.Join(s.root, compactedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeAtomic(dir, path.Base(switchFile), data)
}

// treeAt opens the tree of a directory (a local path or an s3:// URL) of
// the same store as a reader's.
type treeAt func(dir string) (tree, error)

// localTreeAt opens local trees.
func localTreeAt(dir string) (tree, error) { return localTree(dir), nil }

// s3TreeAt opens trees in r's bucket.
func s3TreeAt(r *s3Root) treeAt {
	return func(dir string) (tree, error) {
		loc, err := objstore.ParseURL(dir)
		if err != nil {
			return nil, err
		}
		return s3Tree{&s3Root{b: r.b, prefix: loc.Key}}, nil
	}
}

// parentDir returns the directory above dir (a local path or an s3://
// URL), false at the top.
func parentDir(dir string) (string, bool) {
	if objstore.IsURL(dir) {
		loc, err := objstore.ParseURL(dir)
		if err != nil || loc.Key == "" {
			return "", false
		}
		loc.Key = dirOf(loc.Key)
		return loc.String(), true
	}
	p := filepath.Dir(dir)
	return p, p != dir
}

// walker lists what a reader reads: the directory the paths are relative
// to, the files under it, and whether what was asked for is one file.
type walker func(ctx context.Context) (base string, found map[string]fileRef, file bool, err error)

// followSwitch lists what a reader reads: walk lists base and the files
// under it (paths relative to base); the switch manifest of the dataset
// at or above base then replaces the files of the partitions it names
// (see the switch above). It returns the base the paths are relative to,
// which is the dataset's when the manifest changed what was listed, and
// then where the directory listed lies in it (within; see logicalRel).
// A reader of one file reads that file.
func followSwitch(ctx context.Context, open treeAt, walk walker) (base string, found map[string]fileRef, within string, err error) {
	for attempt := 0; ; attempt++ {
		base, found, file, err := walk(ctx)
		if err != nil || file {
			return base, found, "", err
		}
		root, within, t, m, err := findSwitch(ctx, open, base)
		if err != nil || m == nil {
			return base, found, "", err
		}
		out, changed, err := applySwitch(ctx, t, within, m, found)
		if err != nil {
			return "", nil, "", fmt.Errorf("follow the switch manifest of %s: %w", root, err)
		}
		again, err := readSwitch(ctx, t)
		if err != nil {
			return "", nil, "", fmt.Errorf("follow the switch manifest of %s: %w", root, err)
		}
		if again != nil && again.Run == m.Run {
			if !changed {
				return base, found, "", nil
			}
			return root, out, within, nil
		}
		if attempt >= 4 {
			return "", nil, "", fmt.Errorf("follow the switch manifest of %s: compactions switched it %d times while it was listed", root, attempt+1)
		}
	}
}

// logicalRel is where a file followSwitch listed (rel, relative to the
// base it returned) lies for the reader that listed the directory within
// it: a rewrite's file under _compacted/<run>/ in its partition, relative
// to that directory.
func logicalRel(rel, within string) string {
	if rest, ok := strings.CutPrefix(rel, compactedDir+"/"); ok {
		_, rel, _ = strings.Cut(rest, "/")
	}
	if within != "" {
		rel = strings.TrimPrefix(rel, within+"/")
	}
	return rel
}

// findSwitch looks for the switch manifest of the dataset at base or up
// to switchSearchDepth directories above it. It returns the dataset's
// directory, base relative to it, its tree and the manifest; a nil
// manifest without one.
func findSwitch(ctx context.Context, open treeAt, base string) (string, string, tree, *switchManifest, error) {
	dir, within := base, ""
	for depth := 0; depth <= switchSearchDepth; depth++ {
		t, err := open(dir)
		if err != nil {
			return "", "", nil, nil, err
		}
		m, err := readSwitch(ctx, t)
		if err != nil {
			return "", "", nil, nil, fmt.Errorf("switch manifest of %s: %w", dir, err)
		}
		if m != nil {
			return dir, within, t, m, nil
		}
		up, ok := parentDir(dir)
		if !ok {
			break
		}
		name := filepath.Base(dir)
		if objstore.IsURL(dir) {
			loc, _ := objstore.ParseURL(dir)
			name = path.Base(loc.Key)
		}
		if hidden(name) {
			break // a reader of a hidden directory reads it as it is
		}
		within = joinRel(name, within)
		dir = up
	}
	return "", "", nil, nil, nil
}

// switchLookups bounds the partitions applySwitch looks at at once (on
// S3 each costs a few requests).
const switchLookups = 16

// switchedUnit is what a reader reads of one partition a manifest names:
// the rewrite's data files and the partition's files it did not replace;
// ok false when the partition is read as listed.
type switchedUnit struct {
	ok    bool
	files []fileRef
}

// lookupSwitched tells what a reader reads of the partition of entry e
// of the dataset t.
func lookupSwitched(ctx context.Context, t tree, e switchEntry) (switchedUnit, error) {
	state, err := unitIdentity(ctx, t, e.Unit)
	if err != nil {
		return switchedUnit{}, err
	}
	if state != e.From && state != e.Swapped {
		return switchedUnit{}, nil // replaced since by another writer
	}
	// The rewrite is listed before its marker is read: a vacuum removes
	// the marker first, so a listing followed by a marker is whole.
	files, _, err := t.list(ctx, e.To)
	if err != nil {
		return switchedUnit{}, err
	}
	loose, _, err := t.list(ctx, e.Unit)
	if err != nil {
		return switchedUnit{}, err
	}
	rewrite, err := t.marker(ctx, e.To)
	if errors.Is(err, fs.ErrNotExist) {
		return switchedUnit{}, nil // removed by a vacuum: the partition's own files
	}
	if err != nil {
		return switchedUnit{}, err
	}
	u := switchedUnit{ok: true}
	names := map[string]bool{}
	for _, f := range dataFiles(files) {
		names[path.Base(f.Path)] = true
		u.files = append(u.files, f)
	}
	var replaced []string
	if rewrite.Compacted != nil {
		replaced = rewrite.Compacted.Replaced
	}
	for _, f := range dataFiles(loose) {
		if !names[path.Base(f.Path)] && !slices.Contains(replaced, f.Path) {
			u.files = append(u.files, f)
		}
	}
	return u, nil
}

// applySwitch applies manifest m of the dataset t to found, the files a
// reader listed under the dataset's directory within. It returns the
// files relative to the dataset, and whether any partition was replaced.
func applySwitch(ctx context.Context, t tree, within string, m *switchManifest, found map[string]fileRef) (map[string]fileRef, bool, error) {
	var entries []switchEntry
	for _, e := range m.Partitions {
		if within == "" || e.Unit == within || strings.HasPrefix(e.Unit, within+"/") {
			entries = append(entries, e) // inside what is read
		}
	}
	units := make([]switchedUnit, len(entries))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(switchLookups)
	for i, e := range entries {
		g.Go(func() error {
			var err error
			units[i], err = lookupSwitched(gctx, t, e)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, false, err
	}
	out := make(map[string]fileRef, len(found))
	for rel, f := range found {
		rel = joinRel(within, rel)
		f.Path = rel
		out[rel] = f
	}
	drop := map[string]bool{}
	for i, e := range entries {
		if units[i].ok {
			drop[e.Unit] = true
		}
	}
	if len(drop) == 0 {
		return out, false, nil
	}
	for rel := range out {
		for d := dirOf(rel); d != ""; d = dirOf(d) {
			if drop[d] {
				delete(out, rel)
				break
			}
		}
	}
	for i := range entries {
		for _, f := range units[i].files {
			out[f.Path] = f
		}
	}
	return out, true, nil
}
