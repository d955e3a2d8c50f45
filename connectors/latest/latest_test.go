package latest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/protocol"
)

func TestTokens(t *testing.T) {
	for _, v := range []protocol.Value{protocol.Text("abc-9_Z"), protocol.Text("a.b*c>d e"), protocol.Text("ünï%"), protocol.Text(""),
		protocol.NullValue, protocol.Text("%"), protocol.Text("%%"), protocol.Text("\x00")} {
		tok := Token(v)
		if strings.ContainsAny(tok, ".*> \t") || tok == "" {
			t.Errorf("Token(%+v) = %q is not a subject token", v, tok)
		}
		back, ok := Decode(tok)
		if !ok || back != v {
			t.Errorf("Decode(Token(%+v) = %q) = %+v, %v", v, tok, back, ok)
		}
	}
	long := Subject("up", "s", "t", []protocol.Value{protocol.Text(strings.Repeat("x", 600))})
	if !strings.HasPrefix(long, "sluice.latest.up.s.t.#") || len(long) > 100 {
		t.Errorf("a long key's subject: %q", long)
	}
}

// state reads every row message of the stream: subject -> the row, for
// rows whose last message is not a tombstone.
func state(t *testing.T, js jetstream.JetStream, upstream string) map[string]protocol.Row {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, StreamName(upstream))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+upstream+".>"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]protocol.Row{}
	for subj, n := range info.State.Subjects {
		if n != 1 {
			t.Errorf("%s holds %d messages", subj, n)
		}
		if strings.Contains(subj, "._applied.") {
			continue
		}
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		var ev protocol.ChangeEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(HeaderOp) != string(ev.Op) {
			t.Errorf("%s: header op %q, event %q", subj, m.Header.Get(HeaderOp), ev.Op)
		}
		if ev.Op != protocol.OpDelete {
			out[subj] = ev.After
		}
	}
	return out
}

// Inserts, updates (a TOAST value unchanged, a key changed), deletes and
// a truncate leave one message per row: its latest state, or a tombstone;
// a batch applied again is applied once.
func TestApplierKeepsLatestState(t *testing.T) {
	ctx := context.Background()
	js := cdctest.StartJS(t)
	req := connectors.StreamRequest{Pipeline: "shop-latest", Settings: protocol.StreamSettings{Upstream: "shop"}, JS: js}
	if _, err := open(ctx, req); err == nil {
		t.Fatal("an Applier opened without its stream")
	}
	createStream(t, js, req)
	// Purges go through the hook (the coordinator leader's, on a worker).
	purged := 0
	req.Purge = func(ctx context.Context, subject string) error {
		if subject != TableSubject("shop", "public", "orders")+".>" {
			t.Errorf("purge %q", subject)
		}
		purged++
		s, err := js.Stream(ctx, StreamName("shop"))
		if err != nil {
			return err
		}
		return s.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}
	a, err := open(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]protocol.Row{}
	seq := uint64(0)
	var batch []connectors.Event
	ev := func(op protocol.Op, table string, before, after protocol.Row) {
		seq++
		batch = append(batch, connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: op, Schema: "public", Table: table,
			Key: []string{"id"}, Before: before, After: after, CommitTime: time.Unix(int64(seq), 0).UTC()}})
	}
	row := func(id, name, doc string) protocol.Row {
		return protocol.Row{"id": protocol.Text(id), "name": protocol.Text(name), "doc": protocol.Text(doc)}
	}
	subj := func(table, id string) string {
		return Subject("shop", "public", table, []protocol.Value{protocol.Text(id)})
	}
	for i := range 50 {
		id := fmt.Sprint(i)
		ev(protocol.OpInsert, "customers", nil, row(id, "c"+id, "big doc "+id))
		want[subj("customers", id)] = row(id, "c"+id, "big doc "+id)
		ev(protocol.OpInsert, "orders", nil, row(id, "o"+id, ""))
	}
	// An update leaving the TOAST doc unchanged: the state keeps the doc.
	upd := row("7", "renamed", "")
	upd["doc"] = protocol.UnchangedValue
	ev(protocol.OpUpdate, "customers", nil, upd)
	want[subj("customers", "7")] = row("7", "renamed", "big doc 7")
	// A key change: 8 becomes 800.
	ev(protocol.OpUpdate, "customers", protocol.Row{"id": protocol.Text("8")}, row("800", "c8", "big doc 8"))
	delete(want, subj("customers", "8"))
	want[subj("customers", "800")] = row("800", "c8", "big doc 8")
	// Deletes, and a key with dots and spaces.
	ev(protocol.OpDelete, "customers", protocol.Row{"id": protocol.Text("9")}, nil)
	delete(want, subj("customers", "9"))
	ev(protocol.OpInsert, "customers", nil, row("a.b c", "dotted", "x"))
	want[subj("customers", "a.b c")] = row("a.b c", "dotted", "x")
	// orders truncated, then one new order.
	ev(protocol.OpTruncate, "orders", nil, nil)
	ev(protocol.OpInsert, "orders", nil, row("1", "after truncate", ""))
	want[subj("orders", "1")] = row("1", "after truncate", "")

	if err := a.Apply(ctx, batch[:60]); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, batch); err != nil { // the first 60 again, then the rest
		t.Fatal(err)
	}
	if err := a.Apply(ctx, batch); err != nil { // all again: nothing
		t.Fatal(err)
	}
	if got, err := a.Applied(ctx); err != nil || got != seq {
		t.Fatalf("applied %d, %v; want %d", got, err, seq)
	}
	if purged != 1 { // the truncate, applied once
		t.Errorf("%d purges through the hook, want 1", purged)
	}
	got := state(t, js, "shop")
	if len(got) != len(want) {
		t.Errorf("%d live rows, want %d", len(got), len(want))
	}
	for s, w := range want {
		if !maps.Equal(got[s], w) {
			t.Errorf("%s: %v, want %v", s, got[s], w)
		}
	}
	// An update of a TOAST value whose row's state is only in the stream
	// (a later batch, a restarted applier).
	b, err := open(ctx, connectors.StreamRequest{Pipeline: "shop-latest", Settings: protocol.StreamSettings{Upstream: "shop"}, JS: js})
	if err != nil {
		t.Fatal(err)
	}
	upd = row("10", "later", "")
	upd["doc"] = protocol.UnchangedValue
	seq++
	if err := b.Apply(ctx, []connectors.Event{{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpUpdate, Schema: "public", Table: "customers",
		Key: []string{"id"}, After: upd, CommitTime: time.Unix(int64(seq), 0).UTC()}}}); err != nil {
		t.Fatal(err)
	}
	if got := state(t, js, "shop")[subj("customers", "10")]; !maps.Equal(got, row("10", "later", "big doc 10")) {
		t.Errorf("row 10 after a later update: %v", got)
	}
	// A table without key columns cannot be kept by key.
	seq++
	err = b.Apply(ctx, []connectors.Event{{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpInsert, Schema: "public", Table: "logs",
		After: protocol.Row{"x": protocol.Text("1")}, CommitTime: time.Unix(int64(seq), 0).UTC()}}})
	if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "no key columns") {
		t.Errorf("an event of a table without a key: %v", err)
	}
}

// A table's snapshot starts it over: the rows it held before (a tombstone
// too) go, the snapshot's rows stay, in whichever batches its marker and
// rows come; its marker again, and reads of an earlier, failed attempt's
// snapshot, change nothing; other tables keep their rows.
func TestApplierSnapshot(t *testing.T) {
	js := cdctest.StartJS(t)
	ids := func(up, table string) []string {
		var out []string
		for subj, r := range state(t, js, up) {
			if strings.HasPrefix(subj, TableSubject(up, "src", table)+".") {
				out = append(out, r["id"].Text)
			}
		}
		slices.Sort(out)
		return out
	}
	events := conformance.ChangeEvents()
	// One batch per message, and all in one: the same rows of b.
	for _, batches := range [][][]connectors.Event{{events}, splitMessages(events)} {
		up := fmt.Sprintf("up%d", len(batches))
		a, err := newApplier(t, js, up)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range batches {
			if err := a.Apply(t.Context(), b); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := ids(up, "b"), []string{"1", "10", "11", "12", "3", "6", "7", "8", "9"}; !slices.Equal(got, want) {
			t.Errorf("%d batches: b holds %q, want %q (5, written before the snapshot, gone)", len(batches), got, want)
		}
		if got := state(t, js, up)[Subject(up, "src", "b", []protocol.Value{protocol.Text("1")})]["v"]; got != protocol.Text("snapshot") {
			t.Errorf("%d batches: b's row 1 is %v, want the snapshot's", len(batches), got)
		}
		if got := ids(up, "a"); len(got) != 13 {
			t.Errorf("%d batches: a holds %q, want 13 rows", len(batches), got)
		}
	}
	// An earlier attempt's reads, and its marker, after the snapshot.
	a, err := newApplier(t, js, "up1")
	if err != nil {
		t.Fatal(err)
	}
	last := events[len(events)-1].Seq
	early := protocol.ChangeEvent{Pipeline: "up", Schema: "src", Table: "b", Key: []string{"id"}, LSN: "0/1", CommitLSN: "0/1",
		Op: protocol.OpSnapshot}
	read := early
	read.Op, read.After = protocol.OpRead, protocol.Row{"id": protocol.Text("99"), "v": protocol.Text("old attempt")}
	if err := a.Apply(t.Context(), []connectors.Event{{Seq: last + 1, ChangeEvent: early}, {Seq: last + 2, ChangeEvent: read}}); err != nil {
		t.Fatal(err)
	}
	if got := ids("up1", "b"); len(got) != 9 || slices.Contains(got, "99") {
		t.Errorf("after an earlier attempt's marker and read b holds %q", got)
	}
}

// createStream creates the stream of the target of req, as the
// coordinator leader does (CDCTarget.Stream).
func createStream(t *testing.T, js jetstream.JetStream, req connectors.StreamRequest) {
	t.Helper()
	reg := connectors.NewRegistry()
	Register(reg)
	cfg, ok, err := reg.TargetStream(Kind, req)
	if err != nil || !ok {
		t.Fatalf("target stream: %v, %v", ok, err)
	}
	if _, err := js.CreateOrUpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
}

// newApplier creates the latest-state stream of upstream and opens an
// Applier into it that purges through js.
func newApplier(t *testing.T, js jetstream.JetStream, upstream string) (*Applier, error) {
	t.Helper()
	createStream(t, js, connectors.StreamRequest{Settings: protocol.StreamSettings{Upstream: upstream}, Config: json.RawMessage(`{}`)})
	return NewApplier(t.Context(), js, upstream, "apply", nil)
}

// splitMessages returns one batch per message (Seq) of events.
func splitMessages(events []connectors.Event) [][]connectors.Event {
	var out [][]connectors.Event
	for i, e := range events {
		if i == 0 || e.Seq != events[i-1].Seq {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], e)
	}
	return out
}

// The latest-state Applier passes the applier conformance suite: its dump
// is every subject's message (a row's state or tombstone).
func TestApplierConformance(t *testing.T) {
	js := cdctest.StartJS(t)
	// The server runs goroutines for each stream, and the client one for
	// the replies to asynchronous publications: start them before the
	// suite looks for goroutines left behind.
	for _, target := range []string{"ref", "a", "cancel"} {
		if _, err := newApplier(t, js, "up-"+target); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.PublishAsync("sluice.latest.up-ref._applied.warmup", []byte("0")); err != nil {
		t.Fatal(err)
	}
	<-js.PublishAsyncComplete()
	conformance.TestApplier(t, conformance.ApplierHarness{
		// One message per key, published one after another: a cancelled
		// batch may show in part until it is applied again.
		Partial: true,
		Open: func(t *testing.T, target string) connectors.Applier {
			a, err := newApplier(t, js, "up-"+target)
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Dump: func(t *testing.T, target string) []string {
			ctx := context.Background()
			s, err := js.Stream(ctx, StreamName("up-"+target))
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+"up-"+target+".>"))
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for subj := range info.State.Subjects {
				if strings.Contains(subj, "._applied.") {
					continue
				}
				m, err := s.GetLastMsgForSubject(ctx, subj)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, strings.TrimPrefix(subj, SubjectPrefix+"up-"+target+".")+" "+string(m.Data))
			}
			slices.Sort(out)
			return out
		},
		Events: conformance.ChangeEvents(),
	})
}
