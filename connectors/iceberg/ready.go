package iceberg

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.Snapshots = (*Source)(nil)

// SnapshotsAfter returns the snapshots of the table's current lineage
// committed after last (a snapshot id), oldest first, at most limit (see
// connectors.Snapshots). A table that does not exist yet has none. Each
// snapshot's summary holds its operation ("operation": append,
// overwrite, replace, delete) and the table format's counts.
func (s *Source) SnapshotsAfter(ctx context.Context, last string, since time.Time, limit int) ([]connectors.Snapshot, error) {
	var lastID int64
	if last != "" {
		id, err := strconv.ParseInt(last, 10, 64)
		if err != nil {
			return nil, connectors.Permanent(fmt.Errorf("%q is not an Iceberg snapshot id", last))
		}
		lastID = id
	}
	_, tbl, err := s.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.cfg.Table, err)
	}
	if tbl == nil {
		return nil, nil
	}
	var out []connectors.Snapshot
	for sn := tbl.CurrentSnapshot(); sn != nil; {
		at := time.UnixMilli(sn.TimestampMs).UTC()
		if (last != "" && sn.SnapshotID == lastID) || at.Before(since) {
			break
		}
		summary := map[string]string{}
		if sn.Summary != nil {
			maps.Copy(summary, sn.Summary.Properties)
			summary["operation"] = string(sn.Summary.Operation)
		}
		out = append(out, connectors.Snapshot{ID: strconv.FormatInt(sn.SnapshotID, 10), Time: at, Summary: summary})
		if sn.ParentSnapshotID == nil {
			break
		}
		sn = tbl.SnapshotByID(*sn.ParentSnapshotID)
	}
	slices.Reverse(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
