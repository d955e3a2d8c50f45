package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.Versioned = (*Sink)(nil)

// Versions lists the complete versions of the dataset, oldest first: the
// v<N> directories that hold their _SUCCESS marker (for a version a
// compaction rewrote, the directory readers get: see keptVersions), the
// one the current symlink (on S3, the current pointer) points at exposed.
// A directory without its marker (a commit that did not complete) is not
// listed.
func (s *Sink) Versions(ctx context.Context) ([]connectors.Version, error) {
	if s.s3 != nil {
		return s.versionsS3(ctx)
	}
	kept, cur, err := s.localVersions(ctx)
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	return versionList(kept, cur, func(name string) string { return filepath.Join(s.root, name) }), nil
}

// localVersionDirs lists the version directories of a local dataset and
// the name current points at ("" when none).
func (s *Sink) localVersionDirs() ([]versionDir, string, error) {
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	cur, err := os.Readlink(filepath.Join(s.root, "current"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	var dirs []versionDir
	for _, e := range entries {
		if d, ok := parseVersionDir(e.Name()); ok && e.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs, filepath.Base(cur), nil
}

// localVersions returns the kept versions of a local dataset (see
// keptVersions) and the name current points at.
func (s *Sink) localVersions(ctx context.Context) ([]keptVersion, string, error) {
	dirs, cur, err := s.localVersionDirs()
	if err != nil {
		return nil, "", err
	}
	kept, err := keptVersions(dirs, cur, func(name string) (marker, error) {
		if err := ctx.Err(); err != nil {
			return marker{}, err
		}
		return readMarker(filepath.Join(s.root, name))
	})
	return kept, cur, err
}

// Expose points the current symlink (on S3, rewrites the current
// pointer) at kept version v, atomically (the swap of the sink's commit):
// at its newest rewrite by a compaction, if any. It does nothing when
// current points there already. A version without a complete directory is
// refused.
func (s *Sink) Expose(ctx context.Context, v int64) error {
	if s.s3 != nil {
		return s.exposeS3(ctx, v)
	}
	kept, cur, err := s.localVersions(ctx)
	if err != nil {
		return fmt.Errorf("expose version %d: %w", v, err)
	}
	i := slices.IndexFunc(kept, func(k keptVersion) bool { return k.dir.v == v })
	if i < 0 {
		dir := filepath.Join(s.root, versionName(v))
		_, err := os.Stat(dir)
		return notKept(v, versionList(kept, cur, func(string) string { return "" }), err == nil, dir)
	}
	if err := s.swapCurrent(kept[i].dir.name); err != nil {
		return fmt.Errorf("expose version %d: %w", v, err)
	}
	return nil
}

// notKept is the refusal to expose version v, which kept does not hold;
// partial says its directory dir exists without a marker.
func notKept(v int64, kept []connectors.Version, partial bool, dir string) error {
	why := "was never committed"
	if partial && v > 0 {
		why = "is incomplete: " + dir + " has no _SUCCESS marker"
	} else if len(kept) > 0 && v > 0 && v < kept[len(kept)-1].Version {
		why = "is not kept: pruned by keep_versions, or never committed"
	}
	return connectors.VersionNotKept(v, why, kept)
}
