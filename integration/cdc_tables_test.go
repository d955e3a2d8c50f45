package integration

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// Tables added to a running cdc pipeline through the cluster: the spec is
// applied again with one more table while the source is written to; the
// leader queues an incremental snapshot of it, the reader restarts with it
// (no new slot, the first table streaming on) and the typed replica of
// both tables equals the source. Then a replica table that diverged is
// made equal again with a resnapshot asked for through the control API,
// and cdc status shows the snapshots taken.
func TestCDCTablesAdded(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := cdcSlot(t, dsn, schema, "_add")
	for _, tb := range []string{"a", "b"} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s.%[2]s (id int PRIMARY KEY, v text, n numeric(10,2) NOT NULL DEFAULT 0);
			INSERT INTO %[1]s.%[2]s SELECT g, 'v' || g, g / 4.0 FROM generate_series(1, 5000) g`, schema, tb)); err != nil {
			t.Fatal(err)
		}
	}
	c := newCluster(t, clusterConfig{workers: 2})
	apply := func(y string) { t.Helper(); c.applyYAML("spec", y) }
	cdcYAML := func(tables ...string) string {
		return fmt.Sprintf("name: shop\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s]\ncdc:\n  slot: %s\n  publication: %s\n  lease: 2s\n  heartbeat: 1s\n  snapshot_chunk_rows: 700\n  max_lag: 8MB\n",
			dsn, strings.Join(tables, ", "), slot, slot)
	}
	apply(cdcYAML(schema + ".a"))
	apply(fmt.Sprintf("name: replica\npattern: cdc_apply\nsource: {kind: cdc, pipeline: shop}\nsink: {kind: postgres, dsn: %q, schema: %s_r, create_tables: true}\ncdc: {lease: 2s}\n", dsn, schema))
	count := func(table string) int {
		var n int
		_ = conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n
	}
	waitFor(t, 60*time.Second, "the initial snapshot in the replica", func() bool { return count(schema+"_r.a") == 5000 })

	// Writes to both tables while b is added.
	wctx, stopWrites := context.WithCancel(ctx)
	var writes atomic.Int64
	writesDone := make(chan error, 1)
	go func() {
		wc, err := pgx.Connect(wctx, dsn)
		if err != nil {
			writesDone <- err
			return
		}
		defer wc.Close(context.Background())
		for i := 0; wctx.Err() == nil; i++ {
			_, err := wc.Exec(wctx, fmt.Sprintf(`BEGIN;
				INSERT INTO %[1]s.a (id, v) VALUES (%[2]d, 'new'); INSERT INTO %[1]s.b (id, v, n) VALUES (%[2]d, 'new', 1.5);
				UPDATE %[1]s.b SET v = v || '+' WHERE id = %[3]d; DELETE FROM %[1]s.b WHERE id = %[4]d;
				UPDATE %[1]s.a SET n = n + 1 WHERE id = %[3]d;
				COMMIT`, schema, 100000+i, 1+i%5000, 2500+i%2500))
			if err != nil && wctx.Err() == nil {
				writesDone <- err
				return
			}
			writes.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
		writesDone <- nil
	}()
	defer stopWrites()
	waitFor(t, 30*time.Second, "writes", func() bool { return writes.Load() > 50 })
	apply(cdcYAML(schema+".a", schema+".b"))
	taken := func(table string) (protocol.TableStatus, bool) {
		st, err := c.client.CDCStatus(c.ctx())
		if err != nil {
			return protocol.TableStatus{}, false
		}
		var out protocol.TableStatus
		for _, s := range st.Streams {
			for _, tb := range s.Snapshotted {
				if s.Pipeline == "shop" && tb.Table == table && tb.State == protocol.TableSnapshotted {
					out = tb
				}
			}
		}
		return out, out.Snapshot != ""
	}
	waitFor(t, 3*time.Minute, "the incremental snapshot of b", func() bool { _, ok := taken(schema + ".b"); return ok })
	stopWrites()
	if err := <-writesDone; err != nil {
		t.Fatal(err)
	}
	same := func(tb string) bool {
		wn, wsum := pgtest.Checksum(t, conn, schema+"."+tb, "id")
		gn, gsum := pgtest.Checksum(t, conn, schema+"_r."+tb, "id")
		return wn == gn && wsum == gsum
	}
	waitFor(t, 60*time.Second, "the replica equal to the source", func() bool { return same("a") && same("b") })
	var typ string
	if err := conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'n'`, schema+"_r.b").Scan(&typ); err != nil || typ != "numeric(10,2)" {
		t.Errorf("replica b.n is %q (%v), want numeric(10,2)", typ, err)
	}
	tb, _ := taken(schema + ".b")
	t.Logf("b: %d rows snapshotted beside %d write transactions; throttled %d times", tb.Rows, writes.Load(), tb.Throttled)

	// A diverged replica table, made equal again by a resnapshot.
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DELETE FROM %[1]s_r.a WHERE id %% 7 = 0; UPDATE %[1]s_r.a SET v = 'wrong' WHERE id %% 11 = 0`, schema)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Resnapshot(c.ctx(), "replica", schema+".a"); err == nil || !strings.Contains(err.Error(), "shop") {
		t.Errorf("resnapshot of a cdc_apply pipeline: %v, want a refusal naming its cdc pipeline", err)
	}
	if _, err := c.client.Resnapshot(c.ctx(), "shop", schema+".nope"); err == nil {
		t.Error("resnapshot of a table not in the pipeline: no error")
	}
	reply, err := c.client.Resnapshot(c.ctx(), "shop", schema+".a")
	if err != nil || reply.Snapshot.ID == "" || reply.Snapshot.Reason != protocol.SnapshotResnapshot {
		t.Fatalf("resnapshot: %+v, %v", reply, err)
	}
	waitFor(t, 3*time.Minute, "the resnapshot of a", func() bool {
		st, ok := taken(schema + ".a")
		return ok && st.Snapshot == reply.Snapshot.ID
	})
	waitFor(t, 60*time.Second, "the replica of a equal again", func() bool { return same("a") })
}
