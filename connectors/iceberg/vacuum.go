package iceberg

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
)

// Vacuum expires the table's snapshots older than the retention, deleting
// the files only they referenced (among them what a compaction replaced),
// and deletes the orphan files under the table's location: files no
// snapshot or metadata references, older than orphan_age, outside the
// directories of the runs in flight. It never expires what a rollback or
// a reader at the current state needs: the current snapshot, the heads of
// branches and tags, and the snapshots of the newest keep_versions
// versions (the settings', else the sink's keep_versions). DryRun only lists, with the
// data files each expiry would delete.
func (s *Sink) Vacuum(ctx context.Context, req connectors.VacuumRequest) (connectors.VacuumReport, error) {
	var rep connectors.VacuumReport
	l, tbl, err := s.load(ctx)
	if err != nil || tbl == nil {
		return rep, err
	}
	keep := req.Settings.KeepVersions
	if keep <= 0 {
		keep = s.cfg.keepVersions()
	}
	kept := versions(tbl, s.cfg.Table)
	if len(kept) > keep {
		kept = kept[len(kept)-keep:]
	}
	retain := map[int64]bool{}
	for _, k := range kept {
		rep.Kept = append(rep.Kept, k.v)
		retain[k.snapshot] = true
	}
	cur := tbl.CurrentSnapshot()
	if cur != nil && len(kept) == 0 {
		// A table of windows or appends has no versions: its rollback
		// window is its newest snapshots.
		for i, sn := range table.AncestorsOf(cur.SnapshotID, tbl.SnapshotByID) {
			if i >= keep {
				break
			}
			retain[sn.SnapshotID] = true
		}
	}
	for _, ref := range tbl.Metadata().Refs() {
		retain[ref.SnapshotID] = true
	}
	cutoff := req.Now.Add(-req.Settings.Retention)
	var drop []table.Snapshot
	for _, sn := range tbl.Metadata().Snapshots() {
		if !retain[sn.SnapshotID] && time.UnixMilli(sn.TimestampMs).Before(cutoff) {
			drop = append(drop, sn)
		}
	}
	if len(drop) > 0 {
		items, err := s.expiry(ctx, tbl, drop, req.Now)
		if err != nil {
			return rep, fmt.Errorf("vacuum %s: %w", s.cfg.Table, err)
		}
		rep.Removed = append(rep.Removed, items...)
		if !req.DryRun {
			ids := make([]int64, len(drop))
			for i, sn := range drop {
				ids[i] = sn.SnapshotID
			}
			if tbl, err = expire(ctx, l, tbl, ids); err != nil {
				return rep, fmt.Errorf("vacuum %s: expire snapshots: %w", s.cfg.Table, err)
			}
		}
	}
	orphans, err := s.orphans(ctx, tbl, req)
	if err != nil {
		return rep, fmt.Errorf("vacuum %s: %w", s.cfg.Table, err)
	}
	rep.Removed = append(rep.Removed, orphans...)
	return rep, nil
}

// expiry describes the expiry of snapshots drop: one item each, with the
// data files only it (and other dropped snapshots) references, each file
// counted with the oldest snapshot that references it.
func (s *Sink) expiry(ctx context.Context, tbl *table.Table, drop []table.Snapshot, now time.Time) ([]connectors.VacuumItem, error) {
	dropped := map[int64]bool{}
	for _, sn := range drop {
		dropped[sn.SnapshotID] = true
	}
	referenced := map[string]bool{}
	for _, sn := range tbl.Metadata().Snapshots() {
		if dropped[sn.SnapshotID] {
			continue
		}
		files, err := snapshotFiles(ctx, tbl, &sn, nil)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			referenced[normPath(f.FilePath())] = true
		}
	}
	slices.SortFunc(drop, func(a, b table.Snapshot) int { return int(a.TimestampMs - b.TimestampMs) })
	var items []connectors.VacuumItem
	for _, sn := range drop {
		files, err := snapshotFiles(ctx, tbl, &sn, nil)
		if err != nil {
			return nil, err
		}
		it := connectors.VacuumItem{Path: fmt.Sprintf("%s snapshot %d", s.cfg.Table, sn.SnapshotID),
			Why: fmt.Sprintf("%s, %s old, outside the rollback window", describeSnapshot(&sn), now.Sub(time.UnixMilli(sn.TimestampMs)).Round(time.Second))}
		for _, f := range files {
			if p := normPath(f.FilePath()); !referenced[p] {
				referenced[p] = true
				it.Files++
				it.Bytes += f.FileSizeBytes()
			}
		}
		items = append(items, it)
	}
	return items, nil
}

// describeSnapshot says what made a snapshot, for a vacuum's report.
func describeSnapshot(sn *table.Snapshot) string {
	if sn.Summary == nil {
		return "a snapshot"
	}
	p := sn.Summary.Properties
	switch {
	case p[propMode] == modeCompact:
		return "compaction " + p[propRun]
	case p[propVersion] != "":
		return "version " + p[propVersion] + " (run " + p[propRun] + ")"
	case p[propWindow] != "":
		return "window " + p[propWindow] + " (run " + p[propRun] + ")"
	case p[propRun] != "":
		return "run " + p[propRun]
	}
	return "a " + string(sn.Summary.Operation) + " by another writer"
}

// orphans lists (and, unless DryRun, deletes) the files under the table's
// location that nothing references, older than orphan_age, outside the
// directories of the runs in flight: one item per directory.
func (s *Sink) orphans(ctx context.Context, tbl *table.Table, req connectors.VacuumRequest) ([]connectors.VacuumItem, error) {
	plan, err := tbl.PlanOrphanFiles(ctx, table.WithLocation(tbl.Location()), table.WithFilesOlderThan(req.Settings.OrphanAge))
	if err != nil {
		return nil, fmt.Errorf("find orphan files: %w", err)
	}
	if len(plan.OrphanFiles()) == 0 {
		return nil, nil
	}
	var active []string
	if req.Active != nil {
		ids, err := req.Active(ctx)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			active = append(active, normPath(runDir(tbl, id))+"/")
		}
	}
	byDir := map[string]*connectors.VacuumItem{}
	var dirs, paths []string
	for _, f := range plan.OrphanFiles() {
		p := normPath(f.Path)
		if slices.ContainsFunc(active, func(a string) bool { return strings.HasPrefix(p, a) }) {
			continue
		}
		d := path.Dir(p)
		it, ok := byDir[d]
		if !ok {
			it = &connectors.VacuumItem{Path: d, Why: fmt.Sprintf("files no snapshot references, older than orphan_age (%s)", req.Settings.OrphanAge)}
			byDir[d] = it
			dirs = append(dirs, d)
		}
		it.Files++
		it.Bytes += f.SizeBytes
		paths = append(paths, f.Path)
	}
	if !req.DryRun && len(paths) > 0 {
		fs, err := tbl.FS(ctx)
		if err != nil {
			return nil, err
		}
		if err := (store{fs: fs}).remove(ctx, paths); err != nil {
			return nil, fmt.Errorf("delete orphan files: %w", err)
		}
	}
	slices.Sort(dirs)
	items := make([]connectors.VacuumItem, len(dirs))
	for i, d := range dirs {
		items[i] = *byDir[d]
	}
	return items, nil
}
