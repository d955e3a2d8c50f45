package conformance

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// ApplierHarness tells TestApplier how to open the Applier of a cdc_apply
// target and read what the target holds.
type ApplierHarness struct {
	// Open opens an Applier over the target named target (a schema, a
	// directory, ...): an empty one on the first Open of a name, as the
	// Appliers opened before left it on later ones, as a restarted stream
	// opens it. TestApplier closes each.
	Open func(t *testing.T, target string) connectors.Applier
	// Dump returns what the target holds (its rows, its lines), equal for
	// equal contents whatever the order and size of the batches that made
	// them.
	Dump func(t *testing.T, target string) []string
	// Partial declares a target without a transaction across a batch's
	// writes (a latest-state stream: one message per key): a call that
	// fails may leave part of its batch visible. Applied still does not
	// move, and applying the batch again completes it.
	Partial bool
	// Events are the events to apply, in stream order: Seq never
	// decreases and the events of one Seq are one message. At least four
	// messages. ChangeEvents returns a workload every target takes.
	Events []connectors.Event
}

// TestApplier checks an Applier's contract (connectors.Applier): a fresh
// target has applied nothing; a batch applied twice is applied once;
// events with Seq <= Applied are skipped, also within a batch reaching past
// them; an Applier opened again on the target resumes after Applied; a
// batch applied with a cancelled context is applied whole or not at all
// (or, for a Partial target, leaves Applied where it was), and the Applier
// goes on; and whatever the batches, repeats and reopens,
// the target ends equal to one that took every event in one batch. No
// goroutine is left behind.
func TestApplier(t *testing.T, h ApplierHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	msgs := messages(h.Events)
	if len(msgs) < 4 {
		t.Fatalf("the harness gives %d messages, want at least 4", len(msgs))
	}
	last := func(ms [][]connectors.Event) uint64 { return ms[len(ms)-1][0].Seq }
	apply := func(a connectors.Applier, what string, evs []connectors.Event) {
		t.Helper()
		if err := a.Apply(ctx, evs); err != nil {
			t.Fatalf("Apply %s: %v", what, err)
		}
	}
	applied := func(a connectors.Applier) uint64 {
		t.Helper()
		seq, err := a.Applied(ctx)
		if err != nil {
			t.Fatalf("Applied: %v", err)
		}
		return seq
	}
	closeApplier := func(a connectors.Applier) {
		t.Helper()
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}

	// The reference: every event in one batch.
	ref := h.Open(t, "ref")
	empty := h.Dump(t, "ref")
	if got := applied(ref); got != 0 {
		t.Errorf("a fresh target has Applied %d, want 0", got)
	}
	apply(ref, "every event", h.Events)
	want := h.Dump(t, "ref")
	if got := applied(ref); got != last(msgs) {
		t.Errorf("after every event Applied = %d, want the last sequence %d", got, last(msgs))
	}
	if slices.Equal(want, empty) {
		t.Fatalf("the events left the target as it was empty: %q", want)
	}
	closeApplier(ref)

	// Batches of whole messages, one applied twice, one reaching back over
	// what is applied; then a new Applier on the target goes on.
	a := h.Open(t, "a")
	half := len(msgs) / 2
	first := flatten(msgs[:half])
	apply(a, "the first half", first)
	once := h.Dump(t, "a")
	if got := applied(a); got != last(msgs[:half]) {
		t.Errorf("after the first half Applied = %d, want %d", got, last(msgs[:half]))
	}
	apply(a, "the first half again", first)
	if got := h.Dump(t, "a"); !slices.Equal(got, once) {
		t.Errorf("a batch applied twice changed the target:\n got %q\nwant %q", got, once)
	}
	if got := applied(a); got != last(msgs[:half]) {
		t.Errorf("after a batch applied twice Applied = %d, want %d", got, last(msgs[:half]))
	}
	apply(a, "a batch reaching back", flatten(msgs[half/2:half+1]))
	if got := applied(a); got != last(msgs[:half+1]) {
		t.Errorf("after a batch reaching back Applied = %d, want %d", got, last(msgs[:half+1]))
	}
	closeApplier(a)
	a = h.Open(t, "a")
	if got := applied(a); got != last(msgs[:half+1]) {
		t.Errorf("an Applier opened again reports Applied %d, want %d", got, last(msgs[:half+1]))
	}
	apply(a, "every event after a reopen", h.Events)
	if got := h.Dump(t, "a"); !slices.Equal(got, want) {
		t.Errorf("after batches, repeats and a reopen the target differs from one that took every event at once:\n got %q\nwant %q", got, want)
	}
	closeApplier(a)

	// Cancelled contexts, before and during the call: whole or nothing.
	c := h.Open(t, "cancel")
	two := flatten(msgs[:2])
	for i, deadline := range []time.Duration{0, 50 * time.Microsecond} {
		before, held := applied(c), h.Dump(t, "cancel")
		cctx, cancel := context.WithTimeout(ctx, deadline)
		err := c.Apply(cctx, two)
		cancel()
		switch got := applied(c); {
		case err == nil && got != last(msgs[:2]):
			t.Errorf("cancelled Apply %d returned nil but Applied = %d, want %d", i+1, got, last(msgs[:2]))
		case err != nil && got != before:
			t.Errorf("cancelled Apply %d failed (%v) but moved Applied from %d to %d", i+1, err, before, got)
		case err != nil && !h.Partial && !slices.Equal(h.Dump(t, "cancel"), held):
			t.Errorf("cancelled Apply %d failed (%v) but changed the target", i+1, err)
		}
	}
	apply(c, "every event after cancelled calls", h.Events)
	if got := h.Dump(t, "cancel"); !slices.Equal(got, want) {
		t.Errorf("after cancelled calls the target differs from one that took every event at once:\n got %q\nwant %q", got, want)
	}
	closeApplier(c)
	verifyNoLeaks(t, leaks)
}

// messages splits events into their messages, by Seq.
func messages(evs []connectors.Event) [][]connectors.Event {
	var out [][]connectors.Event
	for i, e := range evs {
		if i == 0 || e.Seq != evs[i-1].Seq {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], e)
	}
	return out
}

func flatten(msgs [][]connectors.Event) []connectors.Event {
	var out []connectors.Event
	for _, m := range msgs {
		out = append(out, m...)
	}
	return out
}

// ChangeEvents returns a workload for TestApplier: messages of one to three
// events on the tables src.a and src.b (key column id, text columns v and
// w), committed a minute apart over two hours: inserts, updates (one
// leaving w unchanged, as a TOASTed value), a key change, deletes, and
// inserts after the deletes, as PostgreSQL logical replication sends them
// with REPLICA IDENTITY DEFAULT; and a snapshot of src.b (its marker,
// protocol.OpSnapshot, sent again by its second chunk, and read events at
// its position) that leaves out a row b held before it.
func ChangeEvents() []connectors.Event {
	at := time.Date(2024, 5, 1, 10, 30, 0, 0, time.UTC)
	var out []connectors.Event
	seq := uint64(0)
	msgAt := func(lsn string, evs ...protocol.ChangeEvent) {
		seq++
		at = at.Add(7 * time.Minute)
		for i, e := range evs {
			e.Pipeline, e.Database, e.Schema, e.Key = "up", "db", "src", []string{"id"}
			e.CommitTime, e.CommitLSN, e.LSN, e.Index, e.Xid = at, lsn, lsn, i, uint32(seq)
			out = append(out, connectors.Event{Seq: seq, ChangeEvent: e})
		}
	}
	msg := func(evs ...protocol.ChangeEvent) { msgAt(fmt.Sprintf("0/%X", 0x1000*(seq+1)), evs...) }
	row := func(id int, v string) protocol.Row {
		return protocol.Row{"id": protocol.Text(fmt.Sprint(id)), "v": protocol.Text(v), "w": protocol.Text(fmt.Sprintf("w%d ünï \"q\"", id))}
	}
	key := func(id int) protocol.Row { return protocol.Row{"id": protocol.Text(fmt.Sprint(id))} }
	ins := func(tb string, id int, v string) protocol.ChangeEvent {
		return protocol.ChangeEvent{Op: protocol.OpInsert, Table: tb, After: row(id, v)}
	}
	for i := 1; i <= 6; i++ {
		msg(ins("a", 2*i-1, "new"), ins("a", 2*i, "new"))
	}
	msg(ins("b", 1, "b"), ins("b", 2, "b"), ins("b", 3, "b"))
	upd := protocol.ChangeEvent{Op: protocol.OpUpdate, Table: "a", After: row(1, "updated")}
	unchanged := protocol.ChangeEvent{Op: protocol.OpUpdate, Table: "a", After: protocol.Row{"id": protocol.Text("2"), "v": protocol.Text("w kept"), "w": protocol.UnchangedValue}}
	msg(upd, unchanged)
	msg(protocol.ChangeEvent{Op: protocol.OpUpdate, Table: "a", Before: key(3), After: row(30, "moved")})
	msg(protocol.ChangeEvent{Op: protocol.OpDelete, Table: "a", Before: key(4)}, protocol.ChangeEvent{Op: protocol.OpDelete, Table: "b", Before: key(2)})
	msg(ins("a", 4, "again"))
	msg(protocol.ChangeEvent{Op: protocol.OpUpdate, Table: "b", After: protocol.Row{"id": protocol.Text("3"), "v": protocol.NullValue, "w": protocol.Text("")}})
	// A snapshot of b: it starts b over at its position (row 5, which it
	// does not read, goes), its rows come in two chunks, each sending the
	// marker again, the second after a change to a.
	msg(ins("b", 5, "before the snapshot"))
	snap := fmt.Sprintf("0/%X", 0x1000*(seq+1))
	read := func(id int, v string) protocol.ChangeEvent {
		return protocol.ChangeEvent{Op: protocol.OpRead, Table: "b", After: row(id, v)}
	}
	marker := protocol.ChangeEvent{Op: protocol.OpSnapshot, Table: "b"}
	msgAt(snap, marker)
	msgAt(snap, read(1, "snapshot"), read(3, "snapshot"))
	msg(ins("a", 50, "during the snapshot"))
	msgAt(snap, marker)
	msgAt(snap, read(6, "snapshot"))
	for i := 7; i <= 12; i++ {
		msg(ins("b", i, "late"))
	}
	return out
}
