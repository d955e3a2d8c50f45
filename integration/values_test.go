package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// applyValues stores an incremental pipeline from src to target by the
// integer column id: windows of span values, at most maxRows rows a run,
// lookback windows read again.
func applyValues(t *testing.T, c *cluster, name, dsn, src, target string, span, maxRows int64, lookback int) {
	t.Helper()
	y := fmt.Sprintf(`name: %s
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: postgres, dsn: %q, table: %s}
partitioning: {target_rows: 150}
incremental:
  delta_column: id
  window: %d
  start: 1
  max_rows_per_run: %d
  lookback: %d
`, name, dsn, src, dsn, target, span, maxRows, lookback)
	c.applyYAML(name, y)
}

// insertRows inserts rows into table from conn, in transactions of batch
// rows, until stop is closed, counting them in n.
func insertRows(t *testing.T, conn *pgx.Conn, table string, batch int, stop <-chan struct{}, n *atomic.Int64) {
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (note, amount) SELECT 'row ' || g || E' "ü"\n', g * 1.5 FROM generate_series(1, %d) g`, table, batch)); err != nil {
			t.Error(err)
			return
		}
		n.Add(int64(batch))
		time.Sleep(5 * time.Millisecond)
	}
}

// An integer delta column over a table growing under load, through the
// cluster: each live run loads the ids written since the watermark (at
// most max_rows_per_run rows, never past the greatest id when it is
// planned), and in the end the target holds every source row exactly
// once. One writer commits ids in order; with two writers an id may
// commit after a greater one was loaded, which lookback finds: the second
// pipeline re-reads 3 windows each run and also ends equal to the source.
func TestValueWindowsUnderLoad(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	c := newCluster(t, clusterConfig{workers: 2})
	for _, tt := range []struct {
		name     string
		writers  int
		lookback int
	}{{"ordered", 1, 0}, {"late", 2, 3}} {
		t.Run(tt.name, func(t *testing.T) {
			src, target := schema+".src_"+tt.name, schema+".dst_"+tt.name
			pgtest.Exec(t, conn, "CREATE TABLE "+src+" (id bigserial PRIMARY KEY, note text, amount numeric(12,2))")
			pgtest.Exec(t, conn, "CREATE TABLE "+target+" (LIKE "+src+")")
			applyValues(t, c, "ids-"+tt.name, dsn, src, target, 2000, 500, tt.lookback)
			stop := make(chan struct{})
			var n atomic.Int64
			var wg sync.WaitGroup
			for range tt.writers {
				w, err := pgx.Connect(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close(ctx)
				wg.Go(func() { insertRows(t, w, src, 7, stop, &n) })
			}
			stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
			defer stopWriters() // before the connections close
			runs, last := 0, ""
			for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline) || runs < 5; runs++ {
				st := c.wait(c.run("ids-" + tt.name).RunID)
				if st.State != protocol.RunCommitted {
					t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
				}
				if st.Window == nil || !st.Window.Values || (tt.lookback == 0 && st.Rows > 500) {
					t.Fatalf("run %s: window %v, %d rows: want a window of values, at most 500 rows", st.RunID, st.Window, st.Rows)
				}
				last = watermark(t, c, "ids-"+tt.name)
			}
			stopWriters()
			// The writers stopped: runs catch up until nothing is new.
			for {
				st := c.wait(c.run("ids-" + tt.name).RunID)
				if st.State != protocol.RunCommitted {
					t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
				}
				wm := watermark(t, c, "ids-"+tt.name)
				if wm == last {
					break
				}
				last = wm
			}
			cols := "SELECT id, note, amount FROM "
			want, err := postgres.TableChecksum(ctx, conn, cols+src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := postgres.TableChecksum(ctx, conn, cols+target)
			if err != nil {
				t.Fatal(err)
			}
			if want.Rows != n.Load() || got != want {
				t.Fatalf("target %d rows checksum %s; source %d rows (%d written) checksum %s, after %d runs", got.Rows, got, want.Rows, n.Load(), want, runs)
			}
			t.Logf("%d rows in %d runs under load, watermark %s", want.Rows, runs, last)
		})
	}
}
