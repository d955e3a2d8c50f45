package iceberg

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// SnapshotsAfter lists the table's lineage after the last snapshot
// announced, oldest first, at most limit: none for a table not created
// yet, every one committed since a start, none after the current one.
// After a rollback, the walk stops at the last announced snapshot's time:
// the snapshot committed since is listed, the restored older one is not.
func TestSnapshotsAfter(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "ready")
	src, err := NewSource(SourceConfig{Config: cfg.Config})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ids := func(sn []connectors.Snapshot) []string {
		var out []string
		for _, s := range sn {
			out = append(out, s.ID)
		}
		return out
	}
	if got, err := src.SnapshotsAfter(ctx, "", time.Time{}, 0); err != nil || len(got) != 0 {
		t.Fatalf("before the table exists: %v, %v", got, err)
	}
	s := newSink(t, cfg)
	defer s.Close()
	var snaps []string
	var times []time.Time
	for v := int64(1); v <= 3; v++ {
		run := "run-" + strconv.FormatInt(v, 10)
		commit(t, s, run, v, write(t, s, run, "t0", 1, idv, idvBatches(2)))
		cur := load(t, cfg.Config).CurrentSnapshot()
		snaps = append(snaps, strconv.FormatInt(cur.SnapshotID, 10))
		times = append(times, time.UnixMilli(cur.TimestampMs).UTC())
		time.Sleep(5 * time.Millisecond)
	}
	all, err := src.SnapshotsAfter(ctx, "", time.Time{}, 0)
	if err != nil || !slices.Equal(ids(all), snaps) {
		t.Fatalf("all snapshots: %v (%v), want %v", ids(all), err, snaps)
	}
	if all[0].Summary["operation"] == "" || !all[2].Time.Equal(times[2]) {
		t.Errorf("snapshot %+v: no operation in its summary, or not its commit time %s", all[2], times[2])
	}
	for _, tc := range []struct {
		last  string
		since time.Time
		limit int
		want  []string
	}{
		{snaps[0], times[0], 0, snaps[1:]},
		{snaps[0], times[0], 1, snaps[1:2]},
		{snaps[2], times[2], 0, nil},
		{"", times[1], 0, snaps[1:]},
	} {
		got, err := src.SnapshotsAfter(ctx, tc.last, tc.since, tc.limit)
		if err != nil || !slices.Equal(ids(got), tc.want) {
			t.Errorf("after %q since %s limit %d: %v (%v), want %v", tc.last, tc.since, tc.limit, ids(got), err, tc.want)
		}
	}
	// Back to version 1, then a new commit on it.
	if err := s.Expose(ctx, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	commit(t, s, "run-4", 4, write(t, s, "run-4", "t0", 1, idv, idvBatches(1)))
	next := strconv.FormatInt(load(t, cfg.Config).CurrentSnapshot().SnapshotID, 10)
	got, err := src.SnapshotsAfter(ctx, snaps[2], times[2], 0)
	if err != nil || !slices.Equal(ids(got), []string{next}) {
		t.Fatalf("after a rollback and a commit: %v (%v), want [%s]", ids(got), err, next)
	}
}
