package cdctest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/protocol"
)

// PackedWorkload makes messages of 1 to 7 change events, at least n events
// in all, as the pgcdc Reader packs them: each message holds events of one
// of the tables p1, p2 and p3 of schema s and of one transaction (one commit
// LSN and time, indexes in change order). The events are inserts, updates,
// key changes, deletes and, at n/3, a truncate followed by inserts in the
// same message. Commit times advance 3 minutes a message, so the messages
// span several hours.
func PackedWorkload(s string, n int, seed uint64) [][]protocol.ChangeEvent {
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
				v = protocol.NullValue
			}
			return protocol.Row{"id": protocol.Text(fmt.Sprint(id)), "v": v}
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
				e = Change(protocol.OpTruncate, s, tb, nil, nil)
			case r < 40 || pick < 0:
				next[tb]++
				live[tb] = append(live[tb], next[tb])
				e = Change(protocol.OpInsert, s, tb, nil, row(next[tb]))
			case r < 65:
				e = Change(protocol.OpUpdate, s, tb, nil, row(live[tb][pick]))
			case r < 78:
				next[tb]++
				old := live[tb][pick]
				live[tb][pick] = next[tb]
				e = Change(protocol.OpUpdate, s, tb, protocol.Row{"id": protocol.Text(fmt.Sprint(old))}, row(next[tb]))
			default:
				old := live[tb][pick]
				live[tb] = slices.Delete(live[tb], pick, pick+1)
				e = Change(protocol.OpDelete, s, tb, protocol.Row{"id": protocol.Text(fmt.Sprint(old))}, nil)
			}
			e.CommitTime, e.CommitLSN, e.LSN, e.Index, e.Xid = at, lsn, lsn, i, uint32(len(out)+1)
			msg = append(msg, e)
			total++
		}
		out = append(out, msg)
	}
	return out
}

// Flaky fails chosen calls of Apply, before or after the inner Applier
// made the batch durable (a crash before the ack). At call StopAt it closes
// Stopping and waits for ctx to end before applying. Given records every
// call's batch, LastBatches the batches made durable.
type Flaky struct {
	connectors.Applier
	Calls       int
	FailBefore  map[int]bool
	FailAfter   map[int]bool
	StopAt      int
	Stopping    chan struct{}
	Given       [][]connectors.Event
	LastBatches [][]connectors.Event
}

// Apply counts the call and fails, stops or applies as configured.
func (f *Flaky) Apply(ctx context.Context, events []connectors.Event) error {
	f.Calls++
	f.Given = append(f.Given, events)
	if f.Calls == f.StopAt {
		close(f.Stopping)
		<-ctx.Done()
	}
	if f.FailBefore[f.Calls] {
		return fmt.Errorf("injected failure before batch %d", f.Calls)
	}
	if err := f.Applier.Apply(ctx, events); err != nil {
		return err
	}
	f.LastBatches = append(f.LastBatches, events)
	if f.FailAfter[f.Calls] {
		return fmt.Errorf("injected failure after batch %d", f.Calls)
	}
	return nil
}

// Packed is a workload of packed messages published to SLUICE_CDC, which
// Runners apply in batches of at most BatchSize events.
type Packed struct {
	Msgs [][]protocol.ChangeEvent
	// Seqs are the messages' stream sequences, Last the last of them.
	Seqs []uint64
	Last uint64
	// Want is every event with the sequence of its message, Size the
	// events of each message.
	Want []connectors.Event
	Size map[uint64]int
	// BatchSize is the runners' BatchSize, which some messages exceed.
	BatchSize int
}

// PublishWorkload publishes PackedWorkload(schema, n, seed) for runners of
// batchSize events. The workload must hold a message of more events than
// batchSize.
func PublishWorkload(t testing.TB, js jetstream.JetStream, schema string, n int, seed uint64, batchSize int) *Packed {
	t.Helper()
	p := &Packed{Msgs: PackedWorkload(schema, n, seed), Size: map[uint64]int{}, BatchSize: batchSize}
	p.Seqs = PublishPacked(t, js, p.Msgs...)
	p.Last = p.Seqs[len(p.Seqs)-1]
	large := 0
	for i, msg := range p.Msgs {
		for _, e := range msg {
			p.Want = append(p.Want, connectors.Event{Seq: p.Seqs[i], ChangeEvent: e})
		}
		p.Size[p.Seqs[i]] = len(msg)
		if len(msg) > batchSize {
			large++
		}
	}
	if large == 0 {
		t.Fatalf("the workload has no message of more than %d events", batchSize)
	}
	return p
}

// Config is the configuration of a Runner of pipeline applying the
// workload.
func (p *Packed) Config(pipeline string) cdcapply.Config {
	return cdcapply.Config{Pipeline: pipeline, Upstream: "up", BatchSize: p.BatchSize, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
}

// Model returns the state the workload leaves.
func (p *Packed) Model(t testing.TB) Model {
	m := Model{}
	for _, msg := range p.Msgs {
		m.Apply(t, msg...)
	}
	return m
}

// PackedCase is a target the workload is applied to by RunPacked.
type PackedCase struct {
	Name string
	// Open opens the Applier of the target.
	Open func(t *testing.T) connectors.Applier
	// Fails are the errors the failing Runs end with, in order: the first
	// fails before its third Apply, the second after its fifth, and any
	// further one by a failure the Applier injects itself.
	Fails []string
	// Check checks the target once every event is applied; durable are
	// the batches made durable.
	Check func(t *testing.T, a connectors.Applier, durable [][]connectors.Event)
}

// RunPacked applies the workload to the target of c by Runs that fail
// before and after a batch is durable (and as c.Open's Applier injects),
// then one stopped in the middle of an Apply, then one to the end: every
// event reaches the target exactly once, in order; each Apply holds whole
// messages, at most BatchSize events unless one message alone holds more;
// the offset is the last message's sequence; Status.Events counts events,
// not messages. c.Check then checks the target.
func (p *Packed) RunPacked(t *testing.T, js jetstream.JetStream, c PackedCase) {
	msgs, last, want, size, batchSize := p.Msgs, p.Last, p.Want, p.Size, p.BatchSize
	newCfg := p.Config
	t.Run(c.Name, func(t *testing.T) {
		inner := c.Open(t)
		f := &Flaky{Applier: inner, FailBefore: map[int]bool{3: true}, FailAfter: map[int]bool{5: true}, Stopping: make(chan struct{})}
		cfg := newCfg("apply_" + c.Name)
		for i, want := range c.Fails {
			_, stop, done := Run(t, js, cfg, f)
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
		f.StopAt = f.Calls + 2
		_, stop, _ := Run(t, js, cfg, f)
		select {
		case <-f.Stopping:
		case <-time.After(30 * time.Second):
			t.Fatalf("no call to Apply number %d", f.StopAt)
		}
		if err := stop(); err != nil {
			t.Fatalf("Run stopped during Apply: %v, want nil", err)
		}
		// A Run to the end counts the events it applied.
		from := Applied(t, inner)
		if from == 0 || from >= last {
			t.Fatalf("the failing Runs applied up to %d, want some of 1..%d", from, last)
		}
		var rest uint64
		for _, e := range want {
			if e.Seq > from {
				rest++
			}
		}
		r, stop, done := Run(t, js, cfg, f)
		WaitFor(t, "every message", done, func() bool { return r.Status().Applied == last })
		WaitFor(t, "caught up", done, func() bool { st := r.Status(); return st.CaughtUp && st.Pending == 0 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if st := r.Status(); st.Events != rest {
			t.Errorf("the last Run counted %d events, want the %d after sequence %d", st.Events, rest, from)
		}
		if got := Applied(t, inner); got != last {
			t.Errorf("offset %d, want the last sequence %d", got, last)
		}

		// Every Apply held whole messages, at most batchSize events
		// unless one message alone holds more.
		var packed, alone int
		for i, b := range f.Given {
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
		var durable []connectors.Event
		for _, b := range f.LastBatches {
			durable = append(durable, b...)
		}
		SameSeqs(t, "made durable", durable, want)
		c.Check(t, inner, f.LastBatches)
		t.Logf("%d events in %d messages: %d calls to Apply, %d durable", len(want), len(msgs), len(f.Given), len(f.LastBatches))
	})
}

// SameSeqs checks that got is want event for event: the same sequences,
// positions (commit LSN and index) and operations, in the same order.
func SameSeqs(t testing.TB, what string, got, want []connectors.Event) {
	t.Helper()
	key := func(evs []connectors.Event) []string {
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
