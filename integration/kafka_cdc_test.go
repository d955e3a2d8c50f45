package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

// CDC into Kafka through the cluster: a table's snapshot and then its
// changes, applied by a cdc_apply pipeline into a topic in Debezium's
// envelope while transactions run on the source, the worker applying them
// killed mid-stream. Parsed back, the topic holds one read event per
// snapshot row and one event per committed change (none twice, by their
// LSN), each key's events on one partition in commit order, and replaying
// them gives the table as it ends.
func TestCDCToKafkaExactlyOnce(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	slot := strings.ToLower(schema)[:min(len(schema), 40)] + "_kslot"
	exec1 := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const initial = 500
	exec1(fmt.Sprintf(`CREATE TABLE %s.accounts (id bigint PRIMARY KEY, owner text, balance numeric(14,2), active boolean, doc jsonb)`, schema))
	exec1(fmt.Sprintf(`INSERT INTO %s.accounts SELECT g, 'owner ' || g, g * 1.25, g %% 2 = 0, jsonb_build_object('g', g) FROM generate_series(1, %d) g`, schema, initial))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for range 50 {
			if err := pgcdc.DropSlot(ctx, dsn, slot, slot); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("slot %s left behind", slot)
	})
	k := kafkatest.Start(t)
	c := newCluster(t, clusterConfig{workers: 3})
	c.applyYAML("shop", fmt.Sprintf("name: shop\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s.accounts]\ncdc:\n  slot: %s\n  publication: %s\n  heartbeat: 1s\n  lease: 3s\n", dsn, schema, slot, slot))
	c.applyYAML("to-kafka", fmt.Sprintf("name: to-kafka\npattern: cdc_apply\nsource: {kind: cdc, pipeline: shop}\nsink: {kind: kafka, brokers: [%s], topic_prefix: shop, partitions: 3}\ncdc: {lease: 3s}\n", k.Brokers[0]))
	// Transactions start once the snapshot is planned: each is then in the
	// stream, none in the snapshot.
	c.snapshotPlanned("shop")

	// Transactions of an insert, an update and a delete each.
	const txs = 600
	var done atomic.Int64
	changes := 0
	live := []int64{}
	for i := int64(1); i <= initial; i++ {
		live = append(live, i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	next := int64(initial + 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := range txs {
			upd := live[rng.IntN(len(live))]
			di := rng.IntN(len(live))
			del := live[di]
			for del == upd {
				di = rng.IntN(len(live))
				del = live[di]
			}
			live = append(live[:di], live[di+1:]...)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			_, e1 := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s.accounts VALUES ($1::bigint, 'new ' || $1::bigint, $1::bigint * 0.5, true, '{\"new\":1}')", schema), next)
			_, e2 := tx.Exec(ctx, fmt.Sprintf("UPDATE %s.accounts SET balance = balance + 1, owner = owner || '+' WHERE id = $1", schema), upd)
			_, e3 := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s.accounts WHERE id = $1", schema), del)
			if err := tx.Commit(ctx); err != nil || e1 != nil || e2 != nil || e3 != nil {
				t.Errorf("transaction %d: %v %v %v %v", i, err, e1, e2, e3)
				return
			}
			live = append(live, next)
			next++
			changes += 3
			done.Add(1)
			if i%50 == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	waitFor(t, 2*time.Minute, "a third of the transactions", func() bool {
		select {
		case <-writerDone:
			return true
		default:
		}
		return done.Load() >= txs/3
	})
	if done.Load() < txs/3 {
		t.Fatal("the writer stopped early")
	}
	holder := c.streamHolder("to-kafka")
	c.workerByID(holder).w.Kill()
	t.Logf("killed worker %s applying to Kafka at %d transactions", holder, done.Load())
	<-writerDone
	if t.Failed() {
		return
	}

	// The topic, once every change arrived.
	type event struct {
		Before, After map[string]any
		Source        struct{ LSN int64 }
		Op            string
	}
	var evs []event
	var keys []string
	var parts []int32
	var offs []int64
	want := initial + changes
	ok := waitForOK(2*time.Minute, func() bool {
		evs, keys, parts, offs = nil, nil, nil, nil
		recs, err := kafka.ReadAll(ctx, k.Config(), "shop."+schema+".accounts", true)
		if err != nil {
			return false // not created yet
		}
		for _, r := range recs {
			if r.Value == nil {
				continue // a tombstone
			}
			var e event
			if err := json.Unmarshal(r.Value, &e); err != nil {
				t.Fatalf("value %s: %v", r.Value, err)
			}
			evs, keys, parts, offs = append(evs, e), append(keys, string(r.Key)), append(parts, r.Partition), append(offs, r.Offset)
		}
		return len(evs) >= want
	})
	if !ok || len(evs) != want {
		st, err := c.client.CDCStatus(c.ctx())
		t.Errorf("%d events in the topic, want %d snapshot rows and %d changes; streams: %+v (%v)", len(evs), initial, changes, st.Streams, err)
	}
	seen := map[string]bool{}
	partOf := map[string]int32{}
	state := map[string]map[string]any{}
	reads := 0
	// Per key, in offset order (one partition), the source's positions:
	// the read event first, then every change at a later WAL position.
	lastLSN := map[string]int64{}
	lastOff := map[string]int64{}
	for i, e := range evs {
		if prev, ok := lastLSN[keys[i]]; ok {
			if offs[i] <= lastOff[keys[i]] || e.Op == "r" || e.Source.LSN <= prev {
				t.Fatalf("key %s: %s at LSN %d offset %d after an event at LSN %d offset %d: not in commit order", keys[i], e.Op, e.Source.LSN, offs[i], prev, lastOff[keys[i]])
			}
		}
		lastLSN[keys[i]], lastOff[keys[i]] = e.Source.LSN, offs[i]
		if e.Op == "r" {
			reads++
		} else {
			id := fmt.Sprint(e.Op, e.Source.LSN)
			if seen[id] {
				t.Fatalf("change %s (key %s) appears twice", id, keys[i])
			}
			seen[id] = true
		}
		if p, ok := partOf[keys[i]]; ok && p != parts[i] {
			t.Fatalf("key %s on partitions %d and %d", keys[i], p, parts[i])
		}
		partOf[keys[i]] = parts[i]
		switch e.Op {
		case "r", "c", "u":
			state[keys[i]] = e.After
		case "d":
			delete(state, keys[i])
		}
	}
	if reads != initial {
		t.Errorf("%d read events, want %d", reads, initial)
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT id, owner, balance::text, active FROM %s.accounts", schema))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var id int64
		var owner, balance string
		var active bool
		if err := rows.Scan(&id, &owner, &balance, &active); err != nil {
			t.Fatal(err)
		}
		n++
		got := state[fmt.Sprintf(`{"id":%d}`, id)]
		if got == nil || got["owner"] != owner || got["balance"] != balance || got["active"] != active || got["id"] != float64(id) {
			t.Errorf("row %d: the topic replays to %v, the table has %q %s %t", id, got, owner, balance, active)
		}
	}
	if n != len(state) {
		t.Errorf("the topic replays to %d rows, the table has %d", len(state), n)
	}
}
