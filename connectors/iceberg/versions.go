package iceberg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.Versioned = (*Sink)(nil)

// version is a kept version and its snapshot.
type version struct {
	v        connectors.Version
	snapshot int64
}

// Versions lists the kept versions, oldest first: the snapshots that
// full-load runs committed and that keep_versions has not expired, each
// located as "namespace.table@<snapshot id>", the one readers see marked
// Exposed (the current snapshot, or the latest full load among its
// ancestors). A table that does not exist, or that no full load committed
// to, has none.
func (s *Sink) Versions(ctx context.Context) ([]connectors.Version, error) {
	_, tbl, err := s.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", s.cfg.Table, err)
	}
	if tbl == nil {
		return nil, nil
	}
	vs := versions(tbl, s.cfg.Table)
	out := make([]connectors.Version, len(vs))
	for i, v := range vs {
		out[i] = v.v
	}
	return out, nil
}

func versions(tbl *table.Table, name string) []version {
	var out []version
	for _, sn := range tbl.Metadata().Snapshots() {
		v, ok := versionOf(&sn)
		if !ok {
			continue
		}
		rows, _ := strconv.ParseInt(sn.Summary.Properties[propRows], 10, 64)
		out = append(out, version{v: connectors.Version{
			Version: v, Run: sn.Summary.Properties[propRun], Rows: rows,
			Location: fmt.Sprintf("%s@%d", name, sn.SnapshotID), Time: time.UnixMilli(sn.TimestampMs).UTC(),
		}, snapshot: sn.SnapshotID})
	}
	slices.SortFunc(out, func(a, b version) int { return cmp.Compare(a.v.Version, b.v.Version) })
	if exposed, ok := exposedVersion(tbl); ok {
		for i := range out {
			out[i].v.Exposed = out[i].v.Version == exposed
		}
	}
	return out
}

// versionOf returns the version a full load's snapshot is.
func versionOf(sn *table.Snapshot) (int64, bool) {
	if sn.Summary == nil || sn.Summary.Properties[propMode] != modeReplace {
		return 0, false
	}
	v, err := strconv.ParseInt(sn.Summary.Properties[propVersion], 10, 64)
	return v, err == nil
}

// exposedVersion is the version of the current snapshot or of its
// nearest full-load ancestor.
func exposedVersion(tbl *table.Table) (int64, bool) {
	cur := tbl.CurrentSnapshot()
	if cur == nil {
		return 0, false
	}
	for _, sn := range table.AncestorsOf(cur.SnapshotID, tbl.SnapshotByID) {
		if v, ok := versionOf(&sn); ok {
			return v, true
		}
	}
	return 0, false
}

// Expose makes kept version v the table's current snapshot again (a
// rollback, the shape of connectors.Versioned's Expose), in
// one catalog commit: RollbackToSnapshot when v is an ancestor of the
// current snapshot, else a move of the main branch to v's snapshot (going
// forward again after a rollback). Exposing the exposed version changes
// nothing. A version that is not kept is refused with a permanent error
// listing the kept ones.
func (s *Sink) Expose(ctx context.Context, v int64) error {
	if err := s.expose(ctx, v); err != nil {
		return fmt.Errorf("expose version %d of %s: %w", v, s.cfg.Table, err)
	}
	return nil
}

func (s *Sink) expose(ctx context.Context, v int64) error {
	l, tbl, err := s.load(ctx)
	if err != nil {
		return err
	}
	var kept []version
	if tbl != nil {
		kept = versions(tbl, s.cfg.Table)
	}
	i := slices.IndexFunc(kept, func(k version) bool { return k.v.Version == v })
	if i < 0 {
		list := make([]connectors.Version, len(kept))
		for i, k := range kept {
			list[i] = k.v
		}
		return connectors.VersionNotKept(v, "is not kept", list)
	}
	target := kept[i].snapshot
	cur := tbl.CurrentSnapshot()
	if cur.SnapshotID == target {
		return nil
	}
	if table.IsAncestorOf(cur.SnapshotID, target, tbl.SnapshotByID) {
		txn := tbl.NewTransaction()
		if err := txn.RollbackToSnapshot(target); err != nil {
			return err
		}
		_, err = txn.Commit(ctx)
		return err
	}
	curID := cur.SnapshotID
	_, _, err = l.cat.CommitTable(ctx, l.ident,
		[]table.Requirement{table.AssertRefSnapshotID(table.MainBranch, &curID)},
		[]table.Update{table.NewSetSnapshotRefUpdate(table.MainBranch, target, table.BranchRef, 0, 0, 0)})
	return err
}

// prune expires the snapshots of the versions beyond keep_versions (the
// newest versions by number stay, and the current snapshot always), then
// deletes the files only they referenced. It returns the table as it is
// afterwards.
func (s *Sink) prune(ctx context.Context, tbl *table.Table) (*table.Table, error) {
	kept := versions(tbl, s.cfg.Table)
	keep := s.cfg.keepVersions()
	if len(kept) <= keep {
		return tbl, nil
	}
	cur := tbl.CurrentSnapshot()
	var drop []int64
	for _, k := range kept[:len(kept)-keep] {
		if cur == nil || k.snapshot != cur.SnapshotID {
			drop = append(drop, k.snapshot)
		}
	}
	if len(drop) == 0 {
		return tbl, nil
	}
	l, err := s.get(ctx)
	if err != nil {
		return tbl, err
	}
	var reqs []table.Requirement
	if cur != nil {
		id := cur.SnapshotID
		reqs = append(reqs, table.AssertRefSnapshotID(table.MainBranch, &id))
	}
	u := table.NewRemoveSnapshotsUpdate(drop, true)
	if _, _, err := l.cat.CommitTable(ctx, l.ident, reqs, []table.Update{u}); err != nil {
		return tbl, err
	}
	post, err := l.load(ctx)
	if err != nil || post == nil {
		return tbl, err
	}
	// The files only the expired snapshots referenced; files already
	// gone (those an earlier expiry deleted, which a later snapshot lists
	// as deleted) are no error.
	if err := u.PostCommit(ctx, tbl, post); err != nil && !allNotExist(err) {
		return post, err
	}
	return post, nil
}

// allNotExist reports whether err, and every error it joins, says a file
// does not exist.
func allNotExist(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !allNotExist(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, fs.ErrNotExist)
}

// TableSnapshot describes a table's current snapshot, from its summary.
type TableSnapshot struct {
	// Location is the table's location in the warehouse, Metadata its
	// current metadata file (what a reader without the catalog opens).
	Location, Metadata string
	// ID is the snapshot's id; Run the run that committed it, if any.
	ID  int64
	Run string
	// Rows and Files are the snapshot's totals.
	Rows, Files int64
	Time        time.Time
}

// CurrentSnapshot describes the current snapshot of the configured table;
// an error when the table does not exist or has none.
func CurrentSnapshot(ctx context.Context, cfg Config) (TableSnapshot, error) {
	z := lazyLake{cfg: cfg}
	defer z.Close()
	_, tbl, err := z.load(ctx)
	if err != nil {
		return TableSnapshot{}, err
	}
	if tbl == nil || tbl.CurrentSnapshot() == nil {
		return TableSnapshot{}, fmt.Errorf("table %s has no snapshot", cfg.Table)
	}
	sn := tbl.CurrentSnapshot()
	out := TableSnapshot{Location: tbl.Location(), Metadata: tbl.MetadataLocation(), ID: sn.SnapshotID, Time: time.UnixMilli(sn.TimestampMs).UTC()}
	if sn.Summary != nil {
		out.Run = sn.Summary.Properties[propRun]
		out.Rows, _ = strconv.ParseInt(sn.Summary.Properties["total-records"], 10, 64)
		out.Files, _ = strconv.ParseInt(sn.Summary.Properties["total-data-files"], 10, 64)
	}
	return out, nil
}
