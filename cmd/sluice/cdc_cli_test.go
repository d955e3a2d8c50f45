package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// Item 9: cdc status shows the snapshot's progress by table, chunk and
// row; cdc wait returns once the replica holds what the source committed,
// so a count right after it is the source's. cdc resnapshot repairs a
// replica table that diverged.
func TestCDCStatusAndWait(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s.customers (id bigint PRIMARY KEY, name text);
		CREATE TABLE %[1]s.orders (id bigint PRIMARY KEY, customer bigint, amount numeric(12,2));
		INSERT INTO %[1]s.customers SELECT g, 'c' || g FROM generate_series(1, 2000) g;
		INSERT INTO %[1]s.orders SELECT g, g %% 2000, g * 0.5 FROM generate_series(1, 5000) g`, schema)); err != nil {
		t.Fatal(err)
	}
	slot, replica := schema+"_cdc", schema+"_r"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgcdc.DropSlot(ctx, dsn, slot, slot); err != nil {
			t.Errorf("drop the test's slot: %v", err)
		}
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+replica+" CASCADE"); err != nil {
			t.Errorf("drop the replica schema: %v", err)
		}
	})
	t.Setenv("SLUICE_CLI_TEST_DSN", dsn)
	withDev(t, func(ctx context.Context, l *local, root string) {
		url := l.NATSURL
		spec := writeSpec(t, root, "cdc.yaml", fmt.Sprintf(`name: cdc
pattern: cdc
source: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', tables: [%[1]s.customers, %[1]s.orders]}
cdc: {slot: %[2]s, publication: %[2]s, target_rows: 1000, lease: 3s}
---
name: replica
pattern: cdc_apply
source: {kind: cdc, pipeline: cdc}
sink: {kind: postgres, dsn: '${SLUICE_CLI_TEST_DSN}', schema: %[3]s, create_tables: true}
cdc: {lease: 3s}
`, schema, slot, replica))
		if out, _, err := sluice(ctx, "apply", "-f", spec, "--check", "--nats", url); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
		out, _, err := sluice(ctx, "cdc", "wait", "replica", "--nats", url)
		if err != nil || !strings.Contains(out, "replica is caught up") {
			t.Fatalf("cdc wait replica: %v\n%s", err, out)
		}
		count := func(table string) int64 {
			t.Helper()
			sum, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+table)
			if err != nil {
				t.Fatal(err)
			}
			return sum.Rows
		}
		equal := func() {
			t.Helper()
			for _, tb := range []string{"customers", "orders"} {
				src, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+schema+"."+tb)
				if err != nil {
					t.Fatal(err)
				}
				dst, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+replica+"."+tb)
				if err != nil {
					t.Fatal(err)
				}
				if src.Rows != dst.Rows {
					t.Errorf("%s right after cdc wait: replica %d rows, source %d", tb, dst.Rows, src.Rows)
				}
			}
		}
		equal()
		if n := count(replica + ".orders"); n != 5000 {
			t.Errorf("replica orders: %d rows, want 5000", n)
		}
		st, _, err := sluice(ctx, "cdc", "status", "cdc", "-o", "json", "--nats", url)
		var reply protocol.CDCStatusReply
		if err != nil || json.Unmarshal([]byte(st), &reply) != nil || len(reply.Streams) != 1 {
			t.Fatalf("cdc status -o json: %v\n%s", err, st)
		}
		sp := reply.Streams[0].Snapshot
		if sp == nil || sp.State != protocol.RunCommitted || sp.Tables != 2 || sp.TablesDone != 2 || sp.Rows != 7000 || sp.ChunksDone != sp.Chunks || sp.Chunks < 3 {
			t.Errorf("snapshot progress %+v; want 2/2 tables, every chunk, 7000 rows", sp)
		}
		table, _, err := sluice(ctx, "cdc", "status", "--nats", url)
		if err != nil || !strings.Contains(table, "snapshot done: 2/2 tables") || !strings.Contains(table, "7000 rows") {
			t.Errorf("cdc status: %v\n%s", err, table)
		}

		// Changes committed before the wait are applied when it returns.
		if _, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE %[1]s.customers SET name = 'x' WHERE id <= 500;
			DELETE FROM %[1]s.orders WHERE id %% 10 = 0;
			INSERT INTO %[1]s.customers SELECT g, 'new' FROM generate_series(2001, 2300) g`, schema)); err != nil {
			t.Fatal(err)
		}
		if out, _, err := sluice(ctx, "cdc", "wait", "replica", "--nats", url); err != nil {
			t.Fatalf("cdc wait after changes: %v\n%s", err, out)
		}
		equal()
		if n := count(replica + ".orders"); n != 4500 {
			t.Errorf("replica orders after the deletes: %d rows, want 4500", n)
		}

		// A replica table that diverged (rows lost behind the stream's back)
		// is repaired by sluice cdc resnapshot, which reads the table again
		// while it streams.
		if _, err := conn.Exec(ctx, fmt.Sprintf(`DELETE FROM %[1]s.orders WHERE id <= 1000; UPDATE %[1]s.orders SET amount = 0 WHERE id > 4000`, replica)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sluice(ctx, "cdc", "resnapshot", "cdc", schema+".nosuch", "--nats", url); err == nil || !strings.Contains(err.Error(), "not one of cdc's tables") {
			t.Errorf("cdc resnapshot of a table the pipeline lacks: %v", err)
		}
		out, _, err = sluice(ctx, "cdc", "resnapshot", "cdc", schema+".orders", "--nats", url)
		if err != nil || !strings.Contains(out, "queued for cdc") {
			t.Fatalf("cdc resnapshot: %v\n%s", err, out)
		}
		id := strings.Fields(out)[1]
		deadline := time.Now().Add(2 * time.Minute)
		for taken := false; !taken; {
			if time.Now().After(deadline) {
				t.Fatalf("snapshot %s not taken within 2 minutes", id)
			}
			time.Sleep(200 * time.Millisecond)
			st, _, err := sluice(ctx, "cdc", "status", "cdc", "-o", "json", "--nats", url)
			var reply protocol.CDCStatusReply
			if err != nil || json.Unmarshal([]byte(st), &reply) != nil || len(reply.Streams) != 1 {
				t.Fatalf("cdc status -o json: %v\n%s", err, st)
			}
			for _, tb := range reply.Streams[0].Snapshotted {
				if tb.Snapshot == id {
					if tb.State != protocol.TableSnapshotted || tb.Rows != 4500 {
						t.Fatalf("snapshot %s: %+v, want %s with 4500 rows", id, tb, protocol.TableSnapshotted)
					}
					taken = true
				}
			}
		}
		if out, _, err := sluice(ctx, "cdc", "wait", "replica", "--nats", url); err != nil {
			t.Fatalf("cdc wait after the resnapshot: %v\n%s", err, out)
		}
		src, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+schema+".orders")
		if err != nil {
			t.Fatal(err)
		}
		dst, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+replica+".orders")
		if err != nil {
			t.Fatal(err)
		}
		if src != dst {
			t.Errorf("replica orders after the resnapshot %+v, the source's %+v", dst, src)
		}
		if _, _, err := sluice(ctx, "cdc", "wait", "nosuch", "--nats", url); err == nil || !strings.Contains(err.Error(), `no cdc or cdc_apply pipeline "nosuch"`) {
			t.Errorf("cdc wait nosuch: %v", err)
		}
		for _, p := range []string{"replica", "cdc"} {
			if _, _, err := sluice(ctx, "delete", p, "--nats", url); err != nil {
				t.Errorf("delete %s: %v", p, err)
			}
		}
	})
}

// TestThrottledText: cdc status says how often and how long cdc.max_lag
// held a snapshot back, and whether it still does.
func TestThrottledText(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	for _, c := range []struct {
		tb   protocol.TableStatus
		want string
	}{
		{protocol.TableStatus{Throttled: 2, ThrottledSeconds: 12.43, LastThrottled: at}, "throttled 2 times for 12.4s in all by cdc.max_lag, last at 2026-12-06T01:02:03Z"},
		{protocol.TableStatus{Throttled: 1, ThrottledSeconds: 0.5, LastThrottled: at, Throttling: true}, "throttled 1 times for 500ms in all by cdc.max_lag, held back now"},
	} {
		if got := throttledText(c.tb); got != c.want {
			t.Errorf("throttledText(%+v) = %q, want %q", c.tb, got, c.want)
		}
	}
}

// TestPrintCDCStatusTaken: cdc status shows the last snapshot taken of
// each table that the stream's holder no longer reports (it restarted),
// with its throttling, and a table added to a pipeline of snapshot: never
// as not snapshotted, saying how to read its rows, until a resnapshot of
// it is asked for.
func TestPrintCDCStatusTaken(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	st := protocol.CDCStatusReply{Streams: []protocol.StreamInfo{{Pipeline: "shop", Pattern: protocol.PatternCDC, Phase: "streaming",
		Snapshotted: []protocol.TableStatus{
			{Table: "s.b", State: protocol.TableSnapshotted, Snapshot: "x0", Rows: 7, Since: at},
			{Table: "s.b", State: protocol.TableSnapshotted, Snapshot: "x1", Rows: 42, Since: at, Throttled: 2, ThrottledSeconds: 3, LastThrottled: at},
			{Table: "s.c", State: protocol.TableNotSnapshotted, Snapshot: "n1", Since: at},
			{Table: "s.d", State: protocol.TableSnapshotted, Snapshot: "x2", Rows: 5, Since: at},
		},
		Status: protocol.StreamStatus{Tables: []protocol.TableStatus{{Table: "s.d", State: protocol.TableSnapshotted, Snapshot: "x2", Rows: 5}}},
	}}}
	var b strings.Builder
	printCDCStatus(&b, st, at)
	out := b.String()
	for _, want := range []string{
		"table s.b snapshotted (x1, 42 rows) at 2026-12-06T01:02:03Z; throttled 2 times for 3s in all by cdc.max_lag, last at 2026-12-06T01:02:03Z",
		"table s.c not snapshotted: added 2026-12-06T01:02:03Z to a pipeline of cdc.snapshot: never, streamed from then on without its rows from before (sluice cdc resnapshot shop s.c reads them)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "x0") || strings.Count(out, "s.d") != 1 {
		t.Errorf("status shows an earlier snapshot of s.b, or s.d twice:\n%s", out)
	}
	st.Streams[0].Snapshots = []protocol.TableSnapshot{{ID: "r1", Table: "s.c", Reason: protocol.SnapshotResnapshot}}
	b.Reset()
	printCDCStatus(&b, st, at)
	if out := b.String(); strings.Contains(out, "not snapshotted") || !strings.Contains(out, "table s.c snapshot pending (r1, resnapshot)") {
		t.Errorf("status with a resnapshot of s.c pending:\n%s", out)
	}
}
