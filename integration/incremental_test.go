package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// incrementalSource creates schema.events with one row every 18 seconds
// over [start, start+48h) (200 rows an hour) and returns its name.
func incrementalSource(t *testing.T, conn *pgx.Conn, schema string, start time.Time) string {
	t.Helper()
	ctx := context.Background()
	src := schema + ".events"
	for _, q := range []string{
		`CREATE TABLE ` + src + ` (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, customer text, amount numeric(12,2), note text)`,
		`INSERT INTO ` + src + ` SELECT g, $1::timestamptz + (g - 1) * interval '18 seconds', 'cust-' || (g % 97), (g * 1.37)::numeric(12,2),
			CASE WHEN g % 7 = 0 THEN NULL ELSE E'l1\nl2 "q" ü ' || g END FROM generate_series(1, 9600) g`,
		// An index on the delta column serves the windows.
		`CREATE INDEX ON ` + src + ` (updated_at)`,
	} {
		if _, err := conn.Exec(ctx, q, pgxArgs(q, start)...); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

func pgxArgs(q string, start time.Time) []any {
	if len(q) > 6 && q[:6] == "INSERT" {
		return []any{start}
	}
	return nil
}

// sameWindowRows checks that target holds exactly the rows of src with
// updated_at in [from, to): same count, same checksum of the same query.
func sameWindowRows(t *testing.T, conn *pgx.Conn, src, target string, from, to time.Time) {
	t.Helper()
	ctx := context.Background()
	where := fmt.Sprintf(" WHERE updated_at >= '%s' AND updated_at < '%s'", from.Format(time.RFC3339), to.Format(time.RFC3339))
	cols := "SELECT id, updated_at, customer, amount, note FROM "
	want, err := postgres.TableChecksum(ctx, conn, cols+src+where)
	if err != nil {
		t.Fatal(err)
	}
	got, err := postgres.TableChecksum(ctx, conn, cols+target)
	if err != nil {
		t.Fatal(err)
	}
	if want.Rows == 0 || got != want {
		t.Fatalf("target %s holds %d rows checksum %s; source rows with updated_at in [%s, %s): %d rows checksum %s",
			target, got.Rows, got, from.Format(time.RFC3339), to.Format(time.RFC3339), want.Rows, want)
	}
}

func applyIncremental(t *testing.T, c *cluster, name, dsn, src, target string, start time.Time, targetRows int) {
	t.Helper()
	y := fmt.Sprintf(`name: %s
pattern: incremental
source:
  kind: postgres
  dsn: %s
  table: %s
sink:
  kind: postgres
  dsn: %s
  table: %s
partitioning:
  target_rows: %d
incremental:
  delta_column: updated_at
  window: 1h
  lag: 5m
  start: %s
`, name, dsn, src, dsn, target, targetRows, start.Format(time.RFC3339))
	s, err := pipeline.Load([]byte(y), name+".yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
}

func watermark(t *testing.T, c *cluster, name string) string {
	t.Helper()
	st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: name})
	if err != nil {
		t.Fatal(err)
	}
	return st.Pipelines[0].Watermark
}

// Three live incremental runs load consecutive windows of an updated_at
// column, chunked by key inside each window; the leader is killed between
// the second and the third, and the third starts where the second ended.
// A re-run of a window replaces its rows, never doubles them.
func TestIncrementalWindowsThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)
	src := incrementalSource(t, conn, schema, start)
	target := schema + ".events_inc"
	// A typed target: the sink stages in its shape and appends to it.
	if _, err := conn.Exec(ctx, "CREATE TABLE "+target+" (LIKE "+src+")"); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, clusterConfig{workers: 2})
	applyIncremental(t, c, "ev", dsn, src, target, start, 60)

	hour := func(h int) time.Time { return start.Add(time.Duration(h) * time.Hour) }
	var last protocol.RunStatus
	for i := range 3 {
		if i == 2 {
			old := c.leader()
			old.c.Kill()
			old.killed = true
			if next := c.leader(); next == old {
				t.Fatal("the killed node is still leader")
			}
		}
		res := c.run("ev")
		if res.Window == nil || !res.Window.From.Equal(hour(i)) || !res.Window.To.Equal(hour(i+1)) {
			t.Fatalf("run %d window %v, want [%s, %s)", i+1, res.Window, hour(i), hour(i+1))
		}
		if res.Tasks < 3 {
			t.Fatalf("run %d: %d tasks for 200 rows at 60 a task: chunks are not bounded inside the window", i+1, res.Tasks)
		}
		last = c.wait(res.RunID)
		if last.State != protocol.RunCommitted || last.Rows != 200 {
			t.Fatalf("run %s: %s, %d rows (%s)", last.RunID, last.State, last.Rows, last.Error)
		}
		if got, want := watermark(t, c, "ev"), hour(i+1).Format(time.RFC3339); got != want {
			t.Fatalf("watermark after run %d = %q, want %q", i+1, got, want)
		}
		sameWindowRows(t, conn, src, target, start, hour(i+1))
	}

	// A re-run of the second window (new rows arrived in it meanwhile)
	// replaces exactly that window's rows and leaves the watermark.
	if _, err := conn.Exec(ctx, "INSERT INTO "+src+" (id, updated_at, customer) SELECT 100000 + g, $1::timestamptz + g * interval '1 second', 'late' FROM generate_series(1, 30) g", hour(1)); err != nil {
		t.Fatal(err)
	}
	res, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: "ev", Window: &protocol.Window{From: hour(1), To: hour(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.wait(res.RunID); st.State != protocol.RunCommitted || st.Rows != 230 || st.Live {
		t.Fatalf("re-run %s: %s, %d rows, live %v (%s)", st.RunID, st.State, st.Rows, st.Live, st.Error)
	}
	sameWindowRows(t, conn, src, target, start, hour(3))
	if got := watermark(t, c, "ev"); got != hour(3).Format(time.RFC3339) {
		t.Fatalf("a re-run moved the watermark to %q", got)
	}
	ws, err := postgres.Windows(ctx, dsn, target)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 4 || ws[3].Deleted != 200 || ws[3].Rows != 230 {
		t.Fatalf("windows recorded: %+v; want 4, the last replacing 200 rows with 230", ws)
	}
}

// A live run while another is loading is refused; a window is cut at
// now - lag; a pipeline whose next window would start after now - lag is
// up to date: no run.
func TestIncrementalUpToDateAndOneLiveRun(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	start := time.Now().UTC().Add(-90 * time.Minute).Truncate(time.Minute)
	src := incrementalSource(t, conn, schema, start)
	c := newCluster(t, clusterConfig{workers: 0})
	applyIncremental(t, c, "ev", dsn, src, schema+".events_inc", start, 1000)
	first := c.run("ev") // no workers: it stays in flight
	if _, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: "ev"}); !errors.Is(err, coordinator.ErrConflict) {
		t.Fatalf("second live run while %s loads: err = %v, want a conflict", first.RunID, err)
	}
	c.addWorker()
	if st := c.wait(first.RunID); st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	// The second window is cut at now - lag; the third is empty.
	second := c.run("ev")
	if second.Window == nil || second.Window.To.After(time.Now().Add(-5*time.Minute)) {
		t.Fatalf("second window %v reaches past now - lag", second.Window)
	}
	if st := c.wait(second.RunID); st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	sameWindowRows(t, conn, src, schema+".events_inc", start, second.Window.To)
	// A pipeline that starts less than lag ago has no complete window yet.
	applyIncremental(t, c, "ev-new", dsn, src, schema+".events_new", time.Now().UTC().Add(-time.Minute).Truncate(time.Second), 1000)
	if res := c.run("ev-new"); !res.UpToDate || res.RunID != "" || res.Window == nil || res.Window.To.After(res.Window.From) {
		t.Fatalf("run of ev-new: %+v, want up to date and no run", res)
	}
}

// A backfill of 48 hourly windows, at most 4 at once, run three times
// (the second skips every window, the third replaces every window) ends
// with exactly the source rows; it never moves the live watermark.
func TestIncrementalBackfill(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)
	src := incrementalSource(t, conn, schema, start)
	target := schema + ".events_bf"
	if _, err := conn.Exec(ctx, "CREATE TABLE "+target+" (LIKE "+src+")"); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, clusterConfig{workers: 2, slots: 3})
	applyIncremental(t, c, "evbf", dsn, src, target, start, 1000)
	to := start.Add(48 * time.Hour)

	backfill := func(replace bool) protocol.BackfillStatus {
		t.Helper()
		st, err := c.client.Backfill(c.ctx(), protocol.BackfillRequest{Pipeline: "evbf", From: start, To: to, Concurrency: 4, Replace: replace})
		if err != nil {
			t.Fatal(err)
		}
		maxRunning := 0
		st, err = c.client.WaitBackfill(c.ctx(), st.ID, 100*time.Millisecond, func(s protocol.BackfillStatus) {
			maxRunning = max(maxRunning, s.Running)
		})
		if err != nil {
			t.Fatal(err)
		}
		if maxRunning > 4 {
			t.Fatalf("backfill %s ran %d windows at once, concurrency 4", st.ID, maxRunning)
		}
		if st.Total != 48 || st.Failed != 0 {
			t.Fatalf("backfill %s: %d windows, %d failed: %+v", st.ID, st.Total, st.Failed, st.Windows)
		}
		sameWindowRows(t, conn, src, target, start, to)
		return st
	}
	first := backfill(false)
	if first.Committed != 48 || first.Rows != 9600 {
		t.Fatalf("first backfill: %d windows committed, %d rows", first.Committed, first.Rows)
	}
	second := backfill(false)
	if second.Skipped != 48 || second.Committed != 0 {
		t.Fatalf("second backfill: %d skipped, %d committed; want every window skipped", second.Skipped, second.Committed)
	}
	third := backfill(true)
	if third.Committed != 48 || third.Rows != 9600 {
		t.Fatalf("backfill --replace: %d windows committed, %d rows", third.Committed, third.Rows)
	}
	if wm := watermark(t, c, "evbf"); wm != "" {
		t.Fatalf("backfills moved the watermark to %q", wm)
	}
	ws, err := postgres.Windows(ctx, dsn, target)
	if err != nil {
		t.Fatal(err)
	}
	var deleted int64
	for _, w := range ws {
		deleted += w.Deleted
	}
	if len(ws) != 96 || deleted != 9600 {
		t.Fatalf("%d windows recorded, %d rows replaced; want 96 and 9600", len(ws), deleted)
	}
}
