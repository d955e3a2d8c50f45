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
// so a count right after it is the source's.
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
