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
// v<N> directories that hold their _SUCCESS marker, the one the current
// symlink (on S3, the current pointer) points at exposed. A directory
// without its marker (a commit that did not complete) is not listed.
func (s *Sink) Versions(ctx context.Context) ([]connectors.Version, error) {
	if s.s3 != nil {
		return s.versionsS3(ctx)
	}
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	cur, err := os.Readlink(filepath.Join(s.root, "current"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	var out []connectors.Version
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir := filepath.Join(s.root, e.Name())
		m, err := readMarker(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list versions: %w", err)
		}
		out = append(out, connectors.Version{Version: v, Run: m.Run, Rows: m.Rows, Location: dir, Time: m.Time,
			Exposed: filepath.Base(cur) == e.Name()})
	}
	slices.SortFunc(out, func(a, b connectors.Version) int { return int(a.Version - b.Version) })
	return out, nil
}

// Expose points the current symlink (on S3, rewrites the current
// pointer) at kept version v, atomically (the swap of the sink's commit);
// it does nothing when current points there already. A version without a
// complete directory is refused.
func (s *Sink) Expose(ctx context.Context, v int64) error {
	kept, err := s.Versions(ctx)
	if err != nil {
		return fmt.Errorf("expose version %d: %w", v, err)
	}
	if s.s3 != nil {
		return s.exposeS3(ctx, v, kept)
	}
	if !slices.ContainsFunc(kept, func(k connectors.Version) bool { return k.Version == v }) {
		dir := filepath.Join(s.root, versionName(v))
		_, err := os.Stat(dir)
		return notKept(v, kept, err == nil, dir)
	}
	if err := s.swapCurrent(versionName(v)); err != nil {
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
