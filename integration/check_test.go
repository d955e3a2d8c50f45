package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// Late data, found two ways. A row written into a window after the window
// was loaded: `sluice check` finds that window (and only it) different by
// count and checksum, --repair loads it again, and the check then finds
// every window equal. A pipeline with lookback: 2 finds a late row of one
// of the two windows before its watermark on its next live run, without
// a check.
func TestLateDataCheckAndLookback(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)
	src := incrementalSource(t, conn, schema, start)
	c := newCluster(t, clusterConfig{workers: 2})
	hour := func(h int) time.Time { return start.Add(time.Duration(h) * time.Hour) }
	late := func(id int, at time.Time) {
		t.Helper()
		pgtest.Exec(t, conn, "INSERT INTO "+src+" (id, updated_at, customer) VALUES ($1, $2, 'late')", id, at)
	}
	runs := func(p string, n int) {
		t.Helper()
		for range n {
			if st := c.wait(c.run(p).RunID); st.State != protocol.RunCommitted {
				t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
			}
		}
	}

	target := schema + ".events_checked"
	pgtest.Exec(t, conn, "CREATE TABLE "+target+" (LIKE "+src+")")
	applyIncremental(t, c, "checked", dsn, src, target, start, 100)
	runs("checked", 4)
	late(200001, hour(1).Add(90*time.Second))
	check := func(repair bool) protocol.CheckReply {
		t.Helper()
		res, err := c.client.Check(c.ctx(), protocol.CheckRequest{Pipeline: "checked", From: hour(0), To: hour(4), Repair: repair})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := check(false)
	if len(res.Windows) != 4 || res.Differ != 1 || res.Windows[1].Same || res.Windows[1].SourceRows != res.Windows[1].TargetRows+1 || !res.Windows[1].ChecksumsCompared {
		t.Fatalf("check: %+v; want window 1 of 4 different by one row", res)
	}
	if res.Backfill != "" {
		t.Fatalf("a check without --repair started backfill %s", res.Backfill)
	}
	res = check(true)
	if res.Backfill == "" {
		t.Fatalf("check --repair: %+v; want a backfill", res)
	}
	st, err := c.client.WaitBackfill(c.ctx(), res.Backfill, 100*time.Millisecond, nil)
	if err != nil || st.Committed != 1 || st.Total != 1 || !st.Windows[0].Window.Equal(protocol.Window{From: hour(1), To: hour(2)}) {
		t.Fatalf("repair backfill: %+v, %v; want window [1h, 2h) committed, alone", st, err)
	}
	if res = check(false); res.Differ != 0 {
		t.Fatalf("check after the repair: %d windows differ", res.Differ)
	}
	sameWindowRows(t, conn, src, target, start, hour(4))
	// The windows after the watermark are not loaded yet: refused.
	if _, err := c.client.Check(c.ctx(), protocol.CheckRequest{Pipeline: "checked", From: hour(0), To: hour(9)}); err == nil {
		t.Fatal("a check past the watermark was accepted")
	}

	// lookback: 2 re-reads the two windows before the watermark.
	looked := schema + ".events_lookback"
	pgtest.Exec(t, conn, "CREATE TABLE "+looked+" (LIKE "+src+")")
	c.applyYAML("lookback", fmt.Sprintf(`name: lookback
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: postgres, dsn: %q, table: %s}
incremental: {delta_column: updated_at, window: 1h, lag: 5m, start: %s, lookback: 2}
`, dsn, src, dsn, looked, start.Format(time.RFC3339)))
	runs("lookback", 5)
	late(200002, hour(3).Add(time.Minute)) // two windows before the watermark (5h)
	late(200003, hour(2).Add(time.Minute)) // three windows before: out of reach
	res6 := c.run("lookback")
	if res6.Window == nil || !res6.Window.From.Equal(hour(3)) || !res6.Window.To.Equal(hour(6)) {
		t.Fatalf("the run with lookback reads %v, want [3h, 6h)", res6.Window)
	}
	if st := c.wait(res6.RunID); st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	if got := watermark(t, c, "lookback"); got != hour(6).Format(time.RFC3339) {
		t.Fatalf("watermark %s after the lookback run, want %s", got, hour(6).Format(time.RFC3339))
	}
	var found, lost int
	if err := conn.QueryRow(ctx, "SELECT count(*) FILTER (WHERE id = 200002), count(*) FILTER (WHERE id = 200003) FROM "+looked).Scan(&found, &lost); err != nil {
		t.Fatal(err)
	}
	if found != 1 || lost != 0 {
		t.Fatalf("late rows in the target: %d within the lookback (want 1), %d beyond it (want 0)", found, lost)
	}
	// The windows the run read hold exactly the source's rows.
	where := fmt.Sprintf(" WHERE updated_at >= '%s' AND updated_at < '%s'", hour(3).Format(time.RFC3339), hour(6).Format(time.RFC3339))
	cols := "SELECT id, updated_at, customer, amount, note FROM "
	want, err := postgres.TableChecksum(ctx, conn, cols+src+where)
	if err != nil {
		t.Fatal(err)
	}
	got, err := postgres.TableChecksum(ctx, conn, cols+looked+where)
	if err != nil || got != want {
		t.Fatalf("target rows of [3h, 6h): %d checksum %s (%v); source's %d checksum %s", got.Rows, got, err, want.Rows, want)
	}
}
