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

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// # Compaction
//
// A Sink compacts the dataset it writes (connectors.Compactor). Its
// partitions are the directories readers read whole:
//
//   - the exposed version (the directory current names), rewritten as
//     v<N>_<run> beside it, current then pointing there;
//   - each incremental window: locally window=<from>_<to>/, swapped with
//     its rewrite in one atomic exchange (the directory it replaced is
//     kept, hidden, as .window=<from>_<to>.replaced.<run>); on S3 a new
//     run directory behind the window's current pointer;
//   - each closed hour of a change log (<table>/date=D/hour=H/ holding
//     _SUCCESS; an hour without it is never touched): locally swapped
//     like a window, on S3 a run directory hour=H/run=<run>/ behind a
//     current pointer in the hour (the hour's _SUCCESS stays where it is).
//
// A partition is compacted when it holds at least MinFiles data files
// smaller than half the target size, all of one format, and its newest
// file is older than MinAge. Its small files are grouped, in name order,
// into groups of up to the target size of input; a group is a task, which
// reads its files as the source does and writes them in their format
// (Parquet in one file per schema) into the run's staging, then reads
// what it wrote back and checks the rows' count and checksum against what
// it read. The commit checks each group again (its manifest against the
// task's result), and, where the partition is rewritten whole and its
// _SUCCESS marker records the rows (versions, windows), the sum of its
// groups against the marker; builds the rewrite (the partition's other
// files linked, or copied on the server, beside the groups' outputs, and
// a marker that keeps the partition's run, rows and checksum and records
// the compaction); once every partition's rewrite is built, switches them
// all in with one write of the dataset's switch manifest (see switch.go),
// then swaps each in its own place. A partition whose files changed since
// the plan is left out. Files written beside a partition's files while it
// was compacted (a change log's late events) are moved into the rewrite.

// The kinds of partition a compaction rewrites.
const (
	unitVersion = "version"
	unitWindow  = "window"
	unitHour    = "hour"
)

// unit is one partition of a dataset: the directory readers read whole.
type unit struct {
	kind string
	// rel is the partition's directory; dir is where its data files lie
	// (rel, or on S3 the directory its pointer names), both relative to
	// the dataset.
	rel, dir string
	// files are its data files, paths relative to the dataset, sorted.
	files []fileRef
	// m is its marker; nil for a change log hour (whose _SUCCESS is
	// empty) or a partition without one.
	m *marker
	// replaced are the files directly in rel that the rewrite in dir (a
	// partition behind a pointer) replaced: they are not the partition's.
	replaced []string
}

// groupSpec is the Spec of a rewrite group.
type groupSpec struct {
	Kind   string `json:"kind"`
	Unit   string `json:"unit"`
	Dir    string `json:"dir"`
	Format string `json:"format"`
	// Files are the group's files, paths relative to the dataset, as
	// they were when the run was planned.
	Files []fileRef `json:"files"`
	// Whole is set when the partition's groups rewrite all its files.
	Whole bool `json:"whole,omitempty"`
	// Index numbers the group within its partition (from 1), of Count.
	Index int `json:"index"`
	Count int `json:"count"`
}

// tree lists and reads the directories of a dataset, on a local disk or
// on S3. Paths are slash-separated and relative to the dataset.
type tree interface {
	// list returns the regular files of dir (paths relative to the
	// dataset) and the names of its subdirectories; an empty listing for
	// a directory that does not exist.
	list(ctx context.Context, dir string) ([]fileRef, []string, error)
	// pointer returns the name dir's current pointer (a local symlink)
	// holds, "" without one.
	pointer(ctx context.Context, dir string) (string, error)
	// marker reads dir's _SUCCESS marker, an error wrapping
	// fs.ErrNotExist without one; an empty marker reads as zero.
	marker(ctx context.Context, dir string) (marker, error)
	// exists reports whether the file rel exists.
	exists(ctx context.Context, rel string) (bool, error)
	// read returns the content of the file rel, an error wrapping
	// fs.ErrNotExist without one.
	read(ctx context.Context, rel string) ([]byte, error)
}

// localTree is a dataset on a local disk.
type localTree string

func (t localTree) path(rel string) string { return filepath.Join(string(t), filepath.FromSlash(rel)) }

func (t localTree) list(ctx context.Context, dir string) ([]fileRef, []string, error) {
	entries, err := os.ReadDir(t.path(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var files []fileRef
	var dirs []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		switch {
		case e.IsDir():
			dirs = append(dirs, e.Name())
		case e.Type().IsRegular():
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			files = append(files, fileRef{Path: joinRel(dir, e.Name()), Size: info.Size(), MTime: info.ModTime().UnixNano()})
		}
	}
	return files, dirs, nil
}

func (t localTree) pointer(_ context.Context, dir string) (string, error) {
	target, err := os.Readlink(t.path(joinRel(dir, PointerFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(target), nil
}

func (t localTree) marker(_ context.Context, dir string) (marker, error) {
	data, err := os.ReadFile(t.path(joinRel(dir, SuccessFile)))
	if err != nil {
		return marker{}, err
	}
	return decodeMarker(data, t.path(dir))
}

func (t localTree) exists(_ context.Context, rel string) (bool, error) {
	_, err := os.Lstat(t.path(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (t localTree) read(_ context.Context, rel string) ([]byte, error) {
	return os.ReadFile(t.path(rel))
}

// s3Tree is a dataset under an S3 prefix.
type s3Tree struct{ r *s3Root }

func (t s3Tree) list(ctx context.Context, dir string) ([]fileRef, []string, error) {
	objs, dirs, err := t.r.b.ListDir(ctx, t.r.dir(dir))
	if err != nil {
		return nil, nil, err
	}
	files := make([]fileRef, 0, len(objs))
	for _, o := range objs {
		rel := joinRel(dir, path.Base(o.Key))
		files = append(files, fileRef{Path: rel, Size: o.Size, MTime: o.ModTime.UnixNano(), ETag: o.ETag})
	}
	return files, dirs, nil
}

func (t s3Tree) pointer(ctx context.Context, dir string) (string, error) {
	name, err := t.r.pointer(ctx, dir)
	if errors.Is(err, errNotPointer) {
		return "", nil
	}
	return name, err
}

func (t s3Tree) marker(ctx context.Context, dir string) (marker, error) {
	data, err := t.r.b.Get(ctx, t.r.key(joinRel(dir, SuccessFile)))
	if err != nil {
		return marker{}, err
	}
	return decodeMarker(data, t.r.url(dir))
}

func (t s3Tree) exists(ctx context.Context, rel string) (bool, error) {
	return t.r.b.Exists(ctx, t.r.key(rel))
}

func (t s3Tree) read(ctx context.Context, rel string) ([]byte, error) {
	return t.r.b.Get(ctx, t.r.key(rel))
}

// decodeMarker decodes a _SUCCESS marker; an empty one (a change log
// hour's) is the zero marker.
func decodeMarker(data []byte, where string) (marker, error) {
	var m marker
	if len(strings.TrimSpace(string(data))) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("marker of %s: %w", where, err)
	}
	return m, nil
}

// tree returns the sink's dataset as a tree.
func (s *Sink) tree() tree {
	if s.s3 != nil {
		return s3Tree{s.s3}
	}
	return localTree(s.root)
}

// base is where the paths of a tree start: the local directory or the
// s3:// URL of the dataset.
func (s *Sink) base() string {
	if s.s3 != nil {
		return s.s3.url("")
	}
	return s.root
}

var _ connectors.Compactor = (*Sink)(nil)

// Dataset names the dataset: "files:" and its directory or s3:// URL.
func (s *Sink) Dataset() string { return "files:" + s.base() }

// PlanCompaction lists the dataset's partitions (see Compaction above)
// and groups the small files of each that needs it. It only reads.
func (s *Sink) PlanCompaction(ctx context.Context, req connectors.CompactRequest) (connectors.CompactPlan, error) {
	units, err := s.units(ctx, s.tree())
	if err != nil {
		return connectors.CompactPlan{}, fmt.Errorf("plan compaction of %s: %w", s.base(), err)
	}
	var plan connectors.CompactPlan
	for _, u := range units {
		for _, g := range u.groups(req.Settings, req.Now) {
			spec, err := json.Marshal(g)
			if err != nil {
				return connectors.CompactPlan{}, fmt.Errorf("encode group: %w", err)
			}
			var bytes int64
			for _, f := range g.Files {
				bytes += f.Size
			}
			plan.Groups = append(plan.Groups, protocol.Partition{
				Key:  fmt.Sprintf("%s #%d/%d (%d files)", u.rel, g.Index, g.Count, len(g.Files)),
				Spec: spec, Bytes: bytes})
			plan.Files = append(plan.Files, len(g.Files))
		}
	}
	return plan, nil
}

// units lists the partitions of the dataset: the exposed version, the
// windows, the closed hours of a change log.
func (s *Sink) units(ctx context.Context, t tree) ([]unit, error) {
	var out []unit
	_, dirs, err := t.list(ctx, "")
	if err != nil {
		return nil, err
	}
	cur, err := t.pointer(ctx, "")
	if err != nil {
		return nil, err
	}
	if _, ok := parseVersionDir(cur); ok {
		u, err := loadUnit(ctx, t, unitVersion, cur, cur)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	for _, d := range dirs {
		if hidden(d) {
			continue
		}
		if _, ok := parseVersionDir(d); ok {
			continue // only the exposed version is compacted
		}
		if _, ok := parseWindowDir(d); ok {
			dir := d
			if s.s3 != nil {
				ptr, err := t.pointer(ctx, d)
				if err != nil {
					return nil, err
				}
				if ptr == "" {
					continue // not committed yet
				}
				dir = joinRel(d, ptr)
			}
			u, err := loadUnit(ctx, t, unitWindow, d, dir)
			if err != nil {
				return nil, err
			}
			out = append(out, u)
			continue
		}
		hours, err := closedHours(ctx, t, d)
		if err != nil {
			return nil, err
		}
		out = append(out, hours...)
	}
	if len(dirs) > 0 {
		// A dataset laid out by date=/hour= at its root.
		hours, err := closedHours(ctx, t, "")
		if err != nil {
			return nil, err
		}
		out = append(out, hours...)
	}
	return out, nil
}

// closedHours returns the closed hours (those holding _SUCCESS) under
// parent/date=D/hour=H.
func closedHours(ctx context.Context, t tree, parent string) ([]unit, error) {
	var out []unit
	_, dates, err := t.list(ctx, parent)
	if err != nil {
		return nil, err
	}
	for _, d := range dates {
		if !strings.HasPrefix(d, "date=") {
			continue
		}
		_, hours, err := t.list(ctx, joinRel(parent, d))
		if err != nil {
			return nil, err
		}
		for _, h := range hours {
			if !strings.HasPrefix(h, "hour=") {
				continue
			}
			rel := joinRel(joinRel(parent, d), h)
			closed, err := t.exists(ctx, joinRel(rel, SuccessFile))
			if err != nil {
				return nil, err
			}
			if !closed {
				continue // still being written
			}
			dir := rel
			ptr, err := t.pointer(ctx, rel)
			if err != nil {
				return nil, err
			}
			if ptr != "" {
				dir = joinRel(rel, ptr)
			}
			u, err := loadUnit(ctx, t, unitHour, rel, dir)
			if err != nil {
				return nil, err
			}
			out = append(out, u)
		}
	}
	return out, nil
}

// loadUnit lists a partition: its data files and its marker. Behind a
// pointer (dir inside rel), the data files directly in rel that the
// rewrite in dir did not replace (written after it) count too.
func loadUnit(ctx context.Context, t tree, kind, rel, dir string) (unit, error) {
	u := unit{kind: kind, rel: rel, dir: dir}
	m, err := t.marker(ctx, dir)
	switch {
	case err == nil && kind != unitHour:
		u.m = &m
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return u, err
	}
	files, _, err := t.list(ctx, dir)
	if err != nil {
		return u, err
	}
	u.files = dataFiles(files)
	if dir != rel {
		loose, _, err := t.list(ctx, rel)
		if err != nil {
			return u, err
		}
		if m.Compacted != nil {
			u.replaced = m.Compacted.Replaced
		}
		for _, f := range dataFiles(loose) {
			if !slices.Contains(u.replaced, f.Path) {
				u.files = append(u.files, f)
			}
		}
	}
	slices.SortFunc(u.files, func(a, b fileRef) int { return strings.Compare(a.Path, b.Path) })
	return u, nil
}

// dataFiles keeps the files that hold rows: not hidden, of a known
// format.
func dataFiles(files []fileRef) []fileRef {
	var out []fileRef
	for _, f := range files {
		if base := path.Base(f.Path); !hidden(base) && formatOf(base) != "" {
			out = append(out, f)
		}
	}
	return out
}

// groups returns the rewrite groups of u under settings, none when it
// does not need compacting (see Compaction): its small files, in name
// order, in the fewest groups of about the target size.
func (u unit) groups(settings connectors.CompactSettings, now time.Time) []groupSpec {
	if len(u.files) < 2 {
		return nil
	}
	format := formatOf(u.files[0].Path)
	var newest int64
	for _, f := range u.files {
		if formatOf(f.Path) != format {
			return nil // not one dataset's files
		}
		newest = max(newest, f.MTime)
	}
	if now.Sub(time.Unix(0, newest)) < settings.MinAge {
		return nil
	}
	target := settings.TargetFileBytes
	var small []fileRef
	for _, f := range u.files {
		if f.Size < target/2 {
			small = append(small, f)
		}
	}
	if len(small) < max(settings.MinFiles, 2) {
		return nil
	}
	// Runs of small files, packed each on its own: in a change log's
	// hour a group never spans a file it leaves, so that the rewrite,
	// named after its first file (outputName), keeps the hour's files in
	// stream order.
	runs := [][]fileRef{small}
	if u.kind == unitHour {
		runs = nil
		var run []fileRef
		for _, f := range u.files {
			if f.Size < target/2 {
				run = append(run, f)
				continue
			}
			if len(run) > 0 {
				runs = append(runs, run)
			}
			run = nil
		}
		if len(run) > 0 {
			runs = append(runs, run)
		}
	}
	var packs [][]fileRef
	for _, run := range runs {
		sizes := make([]int64, len(run))
		for i, f := range run {
			sizes[i] = f.Size
		}
		for _, idx := range connectors.PackGroups(sizes, target) {
			if len(idx) < 2 {
				continue // one file alone gains nothing
			}
			p := make([]fileRef, len(idx))
			for j, i := range idx {
				p[j] = run[i]
			}
			packs = append(packs, p)
		}
	}
	rewritten := 0
	for _, p := range packs {
		rewritten += len(p)
	}
	out := make([]groupSpec, len(packs))
	for i, p := range packs {
		out[i] = groupSpec{Kind: u.kind, Unit: u.rel, Dir: u.dir, Format: format, Files: p,
			Whole: rewritten == len(u.files), Index: i + 1, Count: len(packs)}
	}
	return out
}
