package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// Deleting CDC pipelines through the cluster: a cdc pipeline is not deleted
// while a cdc_apply pipeline applies its events; once both are deleted, the
// streams stop, and the leader drops the slot and the publication, purges
// the pipeline's events and deletes the applier's consumer (the slot no
// longer retains WAL); the pipeline applied again starts over with a new
// snapshot.
func TestCDCDelete(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := cdcSlot(t, dsn, schema, "_del")
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s.items (id bigint PRIMARY KEY, v text)`, schema),
		fmt.Sprintf(`INSERT INTO %s.items SELECT g, 'v' || g FROM generate_series(1, 500) g`, schema),
		fmt.Sprintf(`CREATE SCHEMA %s_r`, schema),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	slotExists := func() bool {
		var n int
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1) + (SELECT count(*) FROM pg_publication WHERE pubname = $1)`, slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	c := newCluster(t, clusterConfig{workers: 2})
	cdcYAML := fmt.Sprintf("name: items\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s.items]\ncdc:\n  slot: %s\n  publication: %s\n  lease: 2s\n",
		dsn, schema, slot, slot)
	applyYAML := fmt.Sprintf("name: items-replica\npattern: cdc_apply\nsource: {kind: cdc, pipeline: items}\nsink: {kind: postgres, dsn: %q, schema: %s_r, create_tables: true}\ncdc: {lease: 2s}\n", dsn, schema)
	apply := c.tryApply
	replicaRows := func() int {
		var n int
		_ = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s_r.items`, schema)).Scan(&n)
		return n
	}
	if err := apply(cdcYAML); err != nil {
		t.Fatal(err)
	}
	if err := apply(applyYAML); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the snapshot in the replica", func() bool { return replicaRows() == 500 })
	if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.items VALUES (501, 'late')`, schema)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the streamed insert in the replica", func() bool { return replicaRows() == 501 })

	_, err := c.client.Delete(c.ctx(), "items")
	var ae *coordinator.APIError
	if !errors.As(err, &ae) || ae.Code != "conflict" || !strings.Contains(err.Error(), "items-replica") {
		t.Fatalf("delete of a cdc pipeline with an applier: %v, want a conflict naming items-replica", err)
	}
	for _, name := range []string{"items-replica", "items"} {
		reply, err := c.client.Delete(c.ctx(), name)
		if err != nil || reply.Cleanup == "" {
			t.Fatalf("delete %s: %+v, %v", name, reply, err)
		}
		t.Logf("deleted %s: removing %s", name, reply.Cleanup)
	}
	if _, err := c.client.Delete(c.ctx(), "items"); !errors.As(err, &ae) || ae.Code != "not_found" {
		t.Fatalf("second delete: %v, want not_found", err)
	}
	// Applying it again before the slot is dropped is refused.
	if err := apply(cdcYAML); !errors.As(err, &ae) || ae.Code != "conflict" {
		t.Fatalf("apply during the cleanup: %v, want a conflict", err)
	}
	waitFor(t, 30*time.Second, "the cleanups", func() bool {
		st, err := c.client.CDCStatus(c.ctx())
		return err == nil && len(st.Cleanups) == 0 && len(st.Streams) == 0
	})
	if slotExists() {
		t.Fatalf("slot or publication %s still there after the cleanup", slot)
	}
	stream, err := c.js.Stream(c.ctx(), protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(c.ctx(), jetstream.WithSubjectFilter(protocol.CDCSubjectPrefix("items")+">"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(info.State.Subjects); n != 0 {
		t.Fatalf("%d subjects of the deleted pipeline left in %s: %v", n, protocol.StreamCDC, info.State.Subjects)
	}
	if _, err := c.js.Consumer(c.ctx(), protocol.StreamCDC, protocol.CDCApplyConsumer("items-replica")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer of the deleted applier: %v, want not found", err)
	}

	// Applied again: a new snapshot of the table as it is now.
	if err := apply(cdcYAML); err != nil {
		t.Fatal(err)
	}
	if err := apply(applyYAML); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`TRUNCATE %s_r.items`, schema)); err != nil {
		t.Fatal(err)
	}
	if !waitForOK(60*time.Second, func() bool { return replicaRows() == 501 }) {
		cst, _ := c.client.CDCStatus(c.ctx())
		st, _ := c.client.Status(c.ctx(), protocol.StatusRequest{})
		t.Fatalf("the replica holds %d rows after the new snapshot, want 501\ncdc: %+v\nruns: %+v", replicaRows(), cst, st.Runs)
	}
	for _, name := range []string{"items-replica", "items"} {
		if _, err := c.client.Delete(c.ctx(), name); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the second cleanup", func() bool { return !slotExists() })
}
