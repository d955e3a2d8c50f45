package cdcapply_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// packedWorkload makes messages of 1 to 7 change events, at least n events
// in all, as the pgcdc Reader packs them: each message holds events of one
// of the tables p1, p2 and p3 of schema s and of one transaction (one commit
// LSN and time, indexes in change order). The events are inserts, updates,
// key changes, deletes and, at n/3, a truncate followed by inserts in the
// same message. Commit times advance 3 minutes a message, so the messages
// span several hours.
func packedWorkload(s string, n int, seed uint64) [][]protocol.ChangeEvent {
	rnd := rand.New(rand.NewPCG(seed, 2))
	live := map[string][]int{}
	next := map[string]int{}
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	var out [][]protocol.ChangeEvent
	total, truncated := 0, false
	for total < n {
		tb := []string{"p1", "p2", "p3"}[rnd.IntN(3)]
		at = at.Add(3 * time.Minute)
		lsn := fmt.Sprintf("0/%X", 0x1000*(len(out)+1))
		row := func(id int) protocol.Row {
			v := protocol.Text(fmt.Sprintf("v%d 'q' \"d\" \\ \n %d", id, total))
			if rnd.IntN(8) == 0 {
				v = N
			}
			return protocol.Row{"id": T(fmt.Sprint(id)), "v": v}
		}
		var msg []protocol.ChangeEvent
		for i := range 1 + rnd.IntN(7) {
			var e protocol.ChangeEvent
			pick := -1
			if len(live[tb]) > 0 {
				pick = rnd.IntN(len(live[tb]))
			}
			switch r := rnd.IntN(100); {
			case !truncated && total >= n/3 && i == 0:
				truncated = true
				live[tb] = nil
				e = ev(protocol.OpTruncate, s, tb, nil, nil)
			case r < 40 || pick < 0:
				next[tb]++
				live[tb] = append(live[tb], next[tb])
				e = ev(protocol.OpInsert, s, tb, nil, row(next[tb]))
			case r < 65:
				e = ev(protocol.OpUpdate, s, tb, nil, row(live[tb][pick]))
			case r < 78:
				next[tb]++
				old := live[tb][pick]
				live[tb][pick] = next[tb]
				e = ev(protocol.OpUpdate, s, tb, protocol.Row{"id": T(fmt.Sprint(old))}, row(next[tb]))
			default:
				old := live[tb][pick]
				live[tb] = slices.Delete(live[tb], pick, pick+1)
				e = ev(protocol.OpDelete, s, tb, protocol.Row{"id": T(fmt.Sprint(old))}, nil)
			}
			e.CommitTime, e.CommitLSN, e.LSN, e.Index, e.Xid = at, lsn, lsn, i, uint32(len(out)+1)
			msg = append(msg, e)
			total++
		}
		out = append(out, msg)
	}
	return out
}

// TestRunPackedMessages: messages of several events each, more events than
// a batch holds, applied to PostgreSQL and to files by Runs that fail
// before and after a batch is durable, crash between the part files and
// the offset (files), and are stopped in the middle of an Apply: every
// event reaches the target exactly once, in order, and the target equals
// what the events describe. Each Apply holds whole messages, at most
// BatchSize events unless one message alone holds more; the offset is the
// last message's sequence; Status.Events counts events, not messages.
func TestRunPackedMessages(t *testing.T) {
	js := startJS(t)
	dsn, s, conn := pgtest.DB(t)
	for _, tb := range []string{"p1", "p2", "p3"} {
		exec(t, conn, fmt.Sprintf(`CREATE TABLE %s.%s (id int PRIMARY KEY, v text)`, s, tb))
	}
	const batchSize = 5
	msgs := packedWorkload(s, 160, 7)
	seqs := publishPacked(t, js, msgs...)
	last := seqs[len(seqs)-1]
	var want []cdcapply.Event // every event with the sequence of its message
	size := map[uint64]int{}  // events per message
	var large int             // messages of more events than BatchSize
	for i, msg := range msgs {
		for _, e := range msg {
			want = append(want, cdcapply.Event{Seq: seqs[i], ChangeEvent: e})
		}
		size[seqs[i]] = len(msg)
		if len(msg) > batchSize {
			large++
		}
	}
	if large == 0 {
		t.Fatalf("the workload has no message of more than %d events", batchSize)
	}
	m := model{}
	for _, msg := range msgs {
		m.apply(t, msg...)
	}
	newCfg := func(pipeline string) cdcapply.Config {
		return cdcapply.Config{Pipeline: pipeline, Upstream: "up", BatchSize: batchSize, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
	}

	// A Run from the start without failures, to an in-memory applier.
	mem := &memory{}
	r, stop, done := run(t, js, newCfg("mem"), mem)
	waitFor(t, "every message", done, func() bool { return r.Status().Applied == last })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Events != uint64(len(want)) || st.Applied != last {
		t.Errorf("status %+v: want %d events up to sequence %d", st, len(want), last)
	}
	sameSeqs(t, "in memory", mem.events, want)

	crash := errors.New("crash between the parts and the offset")
	root := filepath.Join(t.TempDir(), "out") // the files target
	for _, c := range []struct {
		name  string
		open  func(t *testing.T) cdcapply.Applier
		fails []string // the errors the failing Runs end with, in order
		check func(t *testing.T, a cdcapply.Applier, durable [][]cdcapply.Event)
	}{{
		name: "postgres",
		open: func(t *testing.T) cdcapply.Applier {
			return newPostgres(t, cdcapply.PostgresConfig{DSN: dsn, Schema: s, Pipeline: "apply_pg"})
		},
		fails: []string{"before batch 3", "after batch 5"},
		check: func(t *testing.T, a cdcapply.Applier, durable [][]cdcapply.Event) {
			checkTables := func(what string) {
				t.Helper()
				for _, tb := range []string{"p1", "p2", "p3"} {
					name := s + "." + tb
					got := tableRows(t, conn, name, []string{"id", "v"})
					if want := m.rows(name, []string{"id", "v"}); !reflect.DeepEqual(got, want) {
						t.Errorf("%s: %s holds %d rows %q, want %d rows %q", what, tb, len(got), got, len(want), want)
					}
				}
			}
			checkTables("after the restarts")
			n1, sum1 := checksum(t, conn, s+".p1", "id")
			for _, b := range durable { // applied again: skipped
				if err := a.Apply(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			checkTables("after applying every batch again")
			if n, sum := checksum(t, conn, s+".p1", "id"); n != n1 || sum != sum1 {
				t.Errorf("applying again changed p1: %d rows %s, was %d rows %s", n, sum, n1, sum1)
			}
		},
	}, {
		name: "files",
		open: func(t *testing.T) cdcapply.Applier {
			f, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			cdcapply.SetBeforeOffset(f, func() error {
				if calls++; calls == 5 {
					return crash
				}
				return nil
			})
			return f
		},
		fails: []string{"before batch 3", "after batch 5", crash.Error()},
		check: func(t *testing.T, _ cdcapply.Applier, _ [][]cdcapply.Event) {
			lines, _, files := readTree(t, root)
			sameEvents(t, lines, byHour(want))
			if got := files[cdcapply.OffsetFile]; got != fmt.Sprintf("%d\n", last) {
				t.Errorf("offset file %q, want %d", got, last)
			}
			// Applied again, by a new applier on the same directory:
			// nothing changes.
			f2, err := cdcapply.NewFiles(cdcapply.FilesConfig{Path: root})
			if err != nil {
				t.Fatal(err)
			}
			if err := f2.Apply(context.Background(), want); err != nil {
				t.Fatal(err)
			}
			if _, _, files2 := readTree(t, root); !reflect.DeepEqual(files2, files) {
				t.Error("applying the events again changed the files")
			}
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			inner := c.open(t)
			f := &flaky{Applier: inner, failBefore: map[int]bool{3: true}, failAfter: map[int]bool{5: true}, stopping: make(chan struct{})}
			cfg := newCfg("apply_" + c.name)
			for i, want := range c.fails {
				_, stop, done := run(t, js, cfg, f)
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Fatalf("run %d did not fail", i+1)
				}
				if err := stop(); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("run %d: %v, want %q", i+1, err, want)
				}
			}
			// A Run stopped in the middle of an Apply.
			f.stopAt = f.calls + 2
			_, stop, _ := run(t, js, cfg, f)
			select {
			case <-f.stopping:
			case <-time.After(30 * time.Second):
				t.Fatalf("no call to Apply number %d", f.stopAt)
			}
			if err := stop(); err != nil {
				t.Fatalf("Run stopped during Apply: %v, want nil", err)
			}
			// A Run to the end counts the events it applied.
			from := applied(t, inner)
			if from == 0 || from >= last {
				t.Fatalf("the failing Runs applied up to %d, want some of 1..%d", from, last)
			}
			var rest uint64
			for _, e := range want {
				if e.Seq > from {
					rest++
				}
			}
			r, stop, done := run(t, js, cfg, f)
			waitFor(t, "every message", done, func() bool { return r.Status().Applied == last })
			waitFor(t, "caught up", done, func() bool { st := r.Status(); return st.CaughtUp && st.Pending == 0 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if st := r.Status(); st.Events != rest {
				t.Errorf("the last Run counted %d events, want the %d after sequence %d", st.Events, rest, from)
			}
			if got := applied(t, inner); got != last {
				t.Errorf("offset %d, want the last sequence %d", got, last)
			}

			// Every Apply held whole messages, at most batchSize events
			// unless one message alone holds more.
			var packed, alone int
			for i, b := range f.given {
				count := map[uint64]int{}
				for _, e := range b {
					count[e.Seq]++
				}
				for seq, n := range count {
					if n != size[seq] {
						t.Errorf("Apply %d holds %d of the %d events of message %d", i+1, n, size[seq], seq)
					}
				}
				switch {
				case len(count) > 1 && len(b) > batchSize:
					t.Errorf("Apply %d holds %d events of %d messages, more than BatchSize %d", i+1, len(b), len(count), batchSize)
				case len(count) > 1:
					packed++
				case len(b) > batchSize:
					alone++
				}
			}
			if packed == 0 || alone == 0 {
				t.Errorf("%d batches of several messages and %d of one message over BatchSize: want some of each", packed, alone)
			}
			// Every event was made durable once, in order.
			var durable []cdcapply.Event
			for _, b := range f.lastBatches {
				durable = append(durable, b...)
			}
			sameSeqs(t, "made durable", durable, want)
			c.check(t, inner, f.lastBatches)
			t.Logf("%d events in %d messages: %d calls to Apply, %d durable", len(want), len(msgs), len(f.given), len(f.lastBatches))
		})
	}
}

// sameSeqs checks that got is want event for event: the same sequences,
// positions (commit LSN and index) and operations, in the same order.
func sameSeqs(t *testing.T, what string, got, want []cdcapply.Event) {
	t.Helper()
	key := func(evs []cdcapply.Event) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = fmt.Sprintf("%d/%s/%d/%s", e.Seq, e.CommitLSN, e.Index, e.Op)
		}
		return out
	}
	if g, w := key(got), key(want); !slices.Equal(g, w) {
		t.Errorf("%s: %d events, want the %d published once each in order\ngot  %v\nwant %v", what, len(g), len(w), g, w)
	}
}

// TestRunDeliveryGapPacked: a delivery gap found while a message fetched
// earlier waits in the carry (it did not fit in the batch before): the
// waiting message is applied, then the consumer is repositioned after it,
// so every event is applied once, in order.
func TestRunDeliveryGapPacked(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	msg := func(first, n int) []protocol.ChangeEvent {
		var out []protocol.ChangeEvent
		for i := range n {
			out = append(out, ev(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(first + i))}))
		}
		return out
	}
	release := make(chan struct{})
	blocked := make(chan struct{})
	m := &memory{hook: func(batch int, events []cdcapply.Event) error {
		if batch == 1 {
			close(blocked)
			<-release
		}
		return nil
	}}
	// Both messages are fetched at once; the second does not fit in the
	// first batch (3 + 3 > 5) and waits.
	publishPacked(t, js, msg(1, 3), msg(4, 3))
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 5, BatchWait: 50 * time.Millisecond}
	r, stop, done := run(t, js, cfg, m)
	<-blocked // no pull request is open while the first batch is applied
	publishPacked(t, js, msg(7, 2))
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
	publishPacked(t, js, msg(9, 4))
	close(release)
	waitFor(t, "all messages", done, func() bool { return r.Status().Applied == 4 })
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
	js := startJS(t)
	good := func(id int) protocol.ChangeEvent {
		return ev(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(id))})
	}
	publishPacked(t, js, []protocol.ChangeEvent{good(1), good(2)})
	subject := protocol.CDCSubject("up", "s", "t")
	data, err := good(3).Encode()
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), subject, append(data, "\n{\"v\":1,\"op\":\"explode\",\"schema\":\"s\",\"table\":\"t\"}"...))
	if err != nil {
		t.Fatal(err)
	}
	publishPacked(t, js, []protocol.ChangeEvent{good(5)})
	m := &memory{}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 5, BatchWait: 50 * time.Millisecond}
	for i := range 2 {
		_, stop, done := run(t, js, cfg, m)
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
