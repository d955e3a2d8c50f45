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
		k := version{v: connectors.Version{
			Version: v, Run: sn.Summary.Properties[propRun], Rows: rows,
			Location: fmt.Sprintf("%s@%d", name, sn.SnapshotID), Time: time.UnixMilli(sn.TimestampMs).UTC(),
		}, snapshot: sn.SnapshotID}
		// A version compacted is its compaction's snapshot, the newest;
		// it keeps the run that loaded it.
		i := slices.IndexFunc(out, func(o version) bool { return o.v.Version == v })
		switch {
		case i < 0:
			out = append(out, k)
		case newer(tbl.SnapshotByID(sn.SnapshotID), tbl.SnapshotByID(out[i].snapshot)):
			if sn.Summary.Properties[propMode] == modeCompact {
				k.v.Run, k.v.Time = out[i].v.Run, out[i].v.Time
			}
			out[i] = k
		case tbl.SnapshotByID(out[i].snapshot).Summary.Properties[propMode] == modeCompact:
			out[i].v.Run, out[i].v.Time = k.v.Run, k.v.Time
		}
	}
	slices.SortFunc(out, func(a, b version) int { return cmp.Compare(a.v.Version, b.v.Version) })
	if exposed, ok := exposedVersion(tbl); ok {
		for i := range out {
			out[i].v.Exposed = out[i].v.Version == exposed
		}
	}
	return out
}

// newer reports whether snapshot a came after b.
func newer(a, b *table.Snapshot) bool {
	if a.SequenceNumber != b.SequenceNumber {
		return a.SequenceNumber > b.SequenceNumber
	}
	return a.TimestampMs > b.TimestampMs
}

// versionOf returns the version a snapshot is: a full load's, or a
// compaction's of a full load's data.
func versionOf(sn *table.Snapshot) (int64, bool) {
	if sn.Summary == nil {
		return 0, false
	}
	switch sn.Summary.Properties[propMode] {
	case modeReplace, modeCompact:
	default:
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
	pruned := map[int64]bool{}
	for _, k := range kept[:len(kept)-keep] {
		pruned[k.v.Version] = true
	}
	var drop []int64
	for _, sn := range tbl.Metadata().Snapshots() {
		// Every snapshot of a version pruned: as loaded, and compacted.
		if v, ok := versionOf(&sn); ok && pruned[v] && (cur == nil || sn.SnapshotID != cur.SnapshotID) {
			drop = append(drop, sn.SnapshotID)
		}
	}
	if len(drop) == 0 {
		return tbl, nil
	}
	l, err := s.get(ctx)
	if err != nil {
		return tbl, err
	}
	return expire(ctx, l, tbl, drop)
}

// expire removes snapshots drop in one catalog commit, asserting the main
// branch, then deletes the files only they referenced; files already gone
// (those an earlier expiry deleted, which a later snapshot lists as
// deleted) are no error. It returns the table as it is afterwards.
func expire(ctx context.Context, l *lake, tbl *table.Table, drop []int64) (*table.Table, error) {
	var reqs []table.Requirement
	if cur := tbl.CurrentSnapshot(); cur != nil {
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
