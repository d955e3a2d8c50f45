package cdcapply_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// TestRunPackedMessages: messages of several events each, more events than
// a batch holds, applied to memory, and to PostgreSQL by Runs that fail
// before and after a batch is durable and are stopped in the middle of an
// Apply: every event reaches the target exactly once, in order, and the
// target equals what the events describe (see cdctest.Packed.RunPacked).
func TestRunPackedMessages(t *testing.T) {
	js := cdctest.StartJS(t)
	dsn, s, conn := pgtest.DB(t)
	for _, tb := range []string{"p1", "p2", "p3"} {
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %s.%s (id int PRIMARY KEY, v text)`, s, tb))
	}
	p := cdctest.PublishWorkload(t, js, s, 160, 7, 5)
	m := p.Model(t)

	// A Run from the start without failures, to an in-memory applier.
	mem := &memory{}
	r, stop, done := cdctest.Run(t, js, p.Config("mem"), mem)
	cdctest.WaitFor(t, "every message", done, func() bool { return r.Status().Applied == p.Last })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Events != uint64(len(p.Want)) || st.Applied != p.Last {
		t.Errorf("status %+v: want %d events up to sequence %d", st, len(p.Want), p.Last)
	}
	cdctest.SameSeqs(t, "in memory", mem.events, p.Want)

	// To PostgreSQL through failing Runs (the files change log goes
	// through the same in connectors/files, TestApplierPackedRuns).
	p.RunPacked(t, js, cdctest.PackedCase{
		Name: "postgres",
		Open: func(t *testing.T) connectors.Applier {
			return cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "apply_pg"})
		},
		Fails: []string{"before batch 3", "after batch 5"},
		Check: func(t *testing.T, a connectors.Applier, durable [][]connectors.Event) {
			checkTables := func(what string) {
				t.Helper()
				for _, tb := range []string{"p1", "p2", "p3"} {
					name := s + "." + tb
					got := pgtest.Rows(t, conn, name, []string{"id", "v"})
					if want := m.Rows(name, []string{"id", "v"}); !reflect.DeepEqual(got, want) {
						t.Errorf("%s: %s holds %d rows %q, want %d rows %q", what, tb, len(got), got, len(want), want)
					}
				}
			}
			checkTables("after the restarts")
			n1, sum1 := pgtest.Checksum(t, conn, s+".p1", "id")
			for _, b := range durable { // applied again: skipped
				if err := a.Apply(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			checkTables("after applying every batch again")
			if n, sum := pgtest.Checksum(t, conn, s+".p1", "id"); n != n1 || sum != sum1 {
				t.Errorf("applying again changed p1: %d rows %s, was %d rows %s", n, sum, n1, sum1)
			}
		},
	})
}

// TestRunDeliveryGapPacked: a delivery gap found while a message fetched
// earlier waits in the carry (it did not fit in the batch before): the
// waiting message is applied, then the consumer is repositioned after it,
// so every event is applied once, in order.
func TestRunDeliveryGapPacked(t *testing.T) {
	js := cdctest.StartJS(t)
	ctx := context.Background()
	msg := func(first, n int) []protocol.ChangeEvent {
		var out []protocol.ChangeEvent
		for i := range n {
			out = append(out, cdctest.Change(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(first + i))}))
		}
		return out
	}
	release := make(chan struct{})
	blocked := make(chan struct{})
	m := &memory{hook: func(batch int, events []connectors.Event) error {
		if batch == 1 {
			close(blocked)
			<-release
		}
		return nil
	}}
	// Both messages are fetched at once; the second does not fit in the
	// first batch (3 + 3 > 5) and waits.
	cdctest.PublishPacked(t, js, msg(1, 3), msg(4, 3))
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 5, BatchWait: 50 * time.Millisecond}
	r, stop, done := cdctest.Run(t, js, cfg, m)
	<-blocked // no pull request is open while the first batch is applied
	cdctest.PublishPacked(t, js, msg(7, 2))
	cons, err := js.Consumer(ctx, protocol.StreamCDC, cdcapply.ConsumerName("apply1"))
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for msg := range stolen.Messages() {
		md, _ := msg.Metadata()
		got = append(got, md.Sequence.Stream)
	}
	if !reflect.DeepEqual(got, []uint64{3}) {
		t.Fatalf("stole %v, want [3]", got)
	}
	cdctest.PublishPacked(t, js, msg(9, 4))
	close(release)
	cdctest.WaitFor(t, "all messages", done, func() bool { return r.Status().Applied == 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := m.seqs(), []uint64{1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v: every event once, in order", got, want)
	}
	if st := r.Status(); st.Events != 12 {
		t.Errorf("status %+v: want 12 events", st)
	}
}

// TestRunMalformedPacked: a message whose second event is malformed stops
// Run with an error naming the message's sequence, its subject and the
// event; the messages before it are applied, and no event of it.
func TestRunMalformedPacked(t *testing.T) {
	js := cdctest.StartJS(t)
	good := func(id int) protocol.ChangeEvent {
		return cdctest.Change(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(id))})
	}
	cdctest.PublishPacked(t, js, []protocol.ChangeEvent{good(1), good(2)})
	subject := protocol.CDCSubject("up", "s", "t")
	data, err := good(3).Encode()
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), subject, append(data, "\n{\"v\":1,\"op\":\"explode\",\"schema\":\"s\",\"table\":\"t\"}"...))
	if err != nil {
		t.Fatal(err)
	}
	cdctest.PublishPacked(t, js, []protocol.ChangeEvent{good(5)})
	m := &memory{}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 5, BatchWait: 50 * time.Millisecond}
	for i := range 2 {
		_, stop, done := cdctest.Run(t, js, cfg, m)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not stop at the malformed message")
		}
		err := stop()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", ack.Sequence)) ||
			!strings.Contains(err.Error(), subject) || !strings.Contains(err.Error(), "event 2 of the message") {
			t.Fatalf("run %d: %v, want an error naming sequence %d, %s and event 2", i+1, err, ack.Sequence, subject)
		}
		if got := m.seqs(); !slices.Equal(got, []uint64{1, 1}) {
			t.Fatalf("run %d applied %v, want [1 1]", i+1, got)
		}
	}
}
