package files

import (
	"cmp"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// A version is committed as the directory v<N> (v000007). A compaction of
// the exposed version writes its rewrite beside it as v<N>_<run>
// (v000007_events-compact-000003), holding the same rows in fewer files,
// and points current there: the version keeps its number, and rollback
// exposes its newest rewrite. The directory it replaced stays until a
// vacuum removes it, after the retention.

// versionDir is a directory holding a version: as committed (run empty),
// or rewritten by the compaction run.
type versionDir struct {
	name string
	v    int64
	run  string
}

// compactedName names the rewrite of version v by compaction run.
func compactedName(v int64, run string) string { return versionName(v) + "_" + run }

// parseVersionDir returns the version directory a name is, or false.
func parseVersionDir(name string) (versionDir, bool) {
	base, run, rewritten := strings.Cut(name, "_")
	v, ok := parseVersion(base)
	if !ok || (rewritten && checkName("run", run) != nil) {
		return versionDir{}, false
	}
	return versionDir{name: name, v: v, run: run}, true
}

// keptVersion is the directory a reader gets for one version, and its
// marker.
type keptVersion struct {
	dir versionDir
	m   marker
}

// keptVersions returns, oldest first, each version with a complete
// directory (one holding its marker) and the directory readers get for
// it: the one current names, else its newest rewrite, else the version as
// committed. read returns a directory's marker, an error wrapping
// fs.ErrNotExist when it has none.
func keptVersions(dirs []versionDir, current string, read func(name string) (marker, error)) ([]keptVersion, error) {
	best := map[int64]keptVersion{}
	for _, d := range dirs {
		m, err := read(d.name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		k := keptVersion{dir: d, m: m}
		b, seen := best[d.v]
		switch {
		case !seen || d.name == current:
		case b.dir.name == current:
			continue
		case rewriteTime(k).Before(rewriteTime(b)):
			continue
		}
		best[d.v] = k
	}
	out := make([]keptVersion, 0, len(best))
	for _, k := range best {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b keptVersion) int { return cmp.Compare(a.dir.v, b.dir.v) })
	return out, nil
}

// rewriteTime orders the directories of one version: the version as
// committed first, then its rewrites by the time of their compaction.
func rewriteTime(k keptVersion) time.Time {
	if k.dir.run == "" || k.m.Compacted == nil {
		return time.Time{}
	}
	return k.m.Compacted.Time
}

// versionList turns kept versions into the Versioned listing; location
// returns where a directory is.
func versionList(kept []keptVersion, current string, location func(name string) string) []connectors.Version {
	out := make([]connectors.Version, 0, len(kept))
	for _, k := range kept {
		out = append(out, connectors.Version{Version: k.dir.v, Run: k.m.Run, Rows: k.m.Rows, Location: location(k.dir.name),
			Time: k.m.Time, Exposed: k.dir.name == current})
	}
	return out
}

// compaction is what a marker records of the compaction that wrote its
// directory: the run, when, and the data files it replaced (so that a
// vacuum can tell them from files written later beside them).
type compaction struct {
	Run  string    `json:"run"`
	Time time.Time `json:"time"`
	// From is the directory it rewrote, relative to the dataset.
	From string `json:"from,omitempty"`
	// Replaced are the data files it replaced, relative to the dataset.
	Replaced []string `json:"replaced,omitempty"`
	// Files is how many data files the rewrite holds.
	Files int `json:"files"`
}
