package cdcapply_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

func TestConfigValidate(t *testing.T) {
	good := cdcapply.Config{Pipeline: "apply1", Upstream: "cdc1"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]cdcapply.Config{
		"no pipeline":    {Upstream: "cdc1"},
		"bad upstream":   {Pipeline: "apply1", Upstream: "a.b"},
		"wildcard":       {Pipeline: "apply1", Upstream: ">"},
		"negative batch": {Pipeline: "apply1", Upstream: "cdc1", BatchSize: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

// workload makes n valid change events on tables r1 and r2 of schema s:
// inserts, updates, key changes, deletes and one truncate of r2 (at n/6),
// as a source would emit them (REPLICA IDENTITY DEFAULT: the old key only on
// a delete or a key change).
func workload(s string, n int, seed uint64) []protocol.ChangeEvent {
	rnd := rand.New(rand.NewPCG(seed, 1))
	live := map[string]map[int]bool{"r1": {}, "r2": {}}
	next := map[string]int{}
	var out []protocol.ChangeEvent
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	anyLive := func(tb string) (int, bool) {
		for id := range live[tb] {
			return id, true
		}
		return 0, false
	}
	for len(out) < n {
		tb := []string{"r1", "r2"}[rnd.IntN(2)]
		at = at.Add(time.Second)
		row := func(id int) protocol.Row {
			v := protocol.Text(fmt.Sprintf("v%d 'q' \"d\" \\ %d", id, len(out)))
			if rnd.IntN(10) == 0 {
				v = N
			}
			return protocol.Row{"id": T(fmt.Sprint(id)), "v": v}
		}
		var e protocol.ChangeEvent
		id, ok := anyLive(tb)
		switch r := rnd.IntN(100); {
		case len(out) == n/6:
			tb = "r2"
			live[tb] = map[int]bool{}
			e = cdctest.Change(protocol.OpTruncate, s, tb, nil, nil)
		case r < 40 || !ok:
			next[tb]++
			id = next[tb]
			live[tb][id] = true
			e = cdctest.Change(protocol.OpInsert, s, tb, nil, row(id))
		case r < 70:
			e = cdctest.Change(protocol.OpUpdate, s, tb, nil, row(id))
		case r < 80:
			next[tb]++
			nid := next[tb]
			delete(live[tb], id)
			live[tb][nid] = true
			e = cdctest.Change(protocol.OpUpdate, s, tb, protocol.Row{"id": T(fmt.Sprint(id))}, row(nid))
		default:
			delete(live[tb], id)
			e = cdctest.Change(protocol.OpDelete, s, tb, protocol.Row{"id": T(fmt.Sprint(id))}, nil)
		}
		e.CommitTime = at
		out = append(out, e)
	}
	return out
}

// TestRunExactlyOnce: Runs that fail before and after a batch is durable,
// and a Run stopped mid-way, hand over to the next Run with no event lost or
// applied twice: the target equals the expected state, computed without SQL.
// Batches applied again are skipped.
func TestRunExactlyOnce(t *testing.T) {
	js := cdctest.StartJS(t)
	dsn, s, conn := pgtest.DB(t)
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.r1 (id int PRIMARY KEY, v text); CREATE TABLE %[1]s.r2 (id int PRIMARY KEY, v text)`, s))
	// Events of another upstream in the same stream must be left alone.
	other := cdctest.Change(protocol.OpInsert, s, "r1", nil, protocol.Row{"id": T("999999"), "v": T("other")})
	other.Pipeline = "other"
	evs := workload(s, 600, 1)
	var seqs []uint64
	for i := 0; i < len(evs); i += 100 {
		seqs = append(seqs, cdctest.Publish(t, js, evs[i:min(i+100, len(evs))]...)...)
		cdctest.Publish(t, js, other)
	}
	m := cdctest.Model{}
	m.Apply(t, evs...)

	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "apply1"})
	f := &cdctest.Flaky{Applier: pg, FailBefore: map[int]bool{3: true}, FailAfter: map[int]bool{6: true}, StopAt: 12, Stopping: make(chan struct{})}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 25, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}

	lastApplied := func() uint64 {
		b := f.LastBatches[len(f.LastBatches)-1]
		return b[len(b)-1].Seq
	}
	for i, want := range []struct {
		err     string
		batches int
	}{{"before batch 3", 2}, {"after batch 6", 5}} {
		_, stop, done := cdctest.Run(t, js, cfg, f)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("run %d did not fail", i+1)
		}
		if err := stop(); err == nil || !strings.Contains(err.Error(), want.err) {
			t.Fatalf("run %d: %v, want the injected failure %s", i+1, err, want.err)
		}
		if len(f.LastBatches) != want.batches || cdctest.Applied(t, pg) != lastApplied() {
			t.Fatalf("run %d: %d batches durable, Applied %d, want %d batches up to %d", i+1, len(f.LastBatches), cdctest.Applied(t, pg), want.batches, lastApplied())
		}
	}

	// A Run stopped mid-way, in the middle of an Apply, then one to the end.
	_, stop, _ := cdctest.Run(t, js, cfg, f)
	select {
	case <-f.Stopping:
	case <-time.After(30 * time.Second):
		t.Fatal("no call to Apply number 12")
	}
	before := cdctest.Applied(t, pg)
	if err := stop(); err != nil {
		t.Fatalf("Run stopped during Apply: %v, want nil", err)
	}
	if got := cdctest.Applied(t, pg); got != before || got != lastApplied() {
		t.Fatalf("the cancelled Apply moved the offset from %d to %d", before, got)
	}
	r, stop, done := cdctest.Run(t, js, cfg, f)
	last := seqs[len(seqs)-1]
	cdctest.WaitFor(t, "all events", done, func() bool { return r.Status().Applied == last })
	// Live events after catching up.
	var more []protocol.ChangeEvent
	for i := range 40 {
		e := cdctest.Change(protocol.OpInsert, s, "r1", nil, protocol.Row{"id": T(fmt.Sprint(100000 + i)), "v": T("live")})
		e.CommitTime = time.Date(2024, 5, 2, 0, 0, i, 0, time.UTC)
		more = append(more, e)
	}
	moreSeqs := cdctest.Publish(t, js, more...)
	m.Apply(t, more...)
	cdctest.WaitFor(t, "live events", done, func() bool { return r.Status().Applied == moreSeqs[len(moreSeqs)-1] })
	cdctest.WaitFor(t, "caught up", done, func() bool { st := r.Status(); return st.CaughtUp && st.Pending == 0 })
	if st := r.Status(); !st.CommitTime.Equal(more[len(more)-1].CommitTime) || st.Events == 0 {
		t.Errorf("status %+v: want commit time %v", st, more[len(more)-1].CommitTime)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	check := func(what string) {
		t.Helper()
		for _, tb := range []string{"r1", "r2"} {
			got := pgtest.Rows(t, conn, s+"."+tb, []string{"id", "v"})
			if want := m.Rows(s+"."+tb, []string{"id", "v"}); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %s holds %d rows, want %d", what, tb, len(got), len(want))
			}
		}
	}
	check("after restarts")
	// Every event reached the target once, in stream order.
	var got []uint64
	for _, b := range f.LastBatches {
		for _, e := range b {
			got = append(got, e.Seq)
		}
	}
	if want := append(slices.Clone(seqs), moreSeqs...); !slices.Equal(got, want) {
		t.Fatalf("the applier was given %d events, want the %d published once each in order", len(got), len(want))
	}
	n1, sum1 := pgtest.Checksum(t, conn, s+".r1", "id")
	// Every batch applied again: nothing changes.
	for _, b := range f.LastBatches {
		if err := pg.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	check("after re-applying every batch")
	if n, sum := pgtest.Checksum(t, conn, s+".r1", "id"); n != n1 || sum != sum1 {
		t.Errorf("re-applying changed r1: %d rows %s, was %d rows %s", n, sum, n1, sum1)
	}
	t.Logf("%d events in %d batches after 2 injected failures and a stop; r1 holds %d rows", len(evs)+len(more), len(f.LastBatches), n1)
}

// TestRunMalformed: a message that is not a change event stops Run with an
// error naming its sequence and subject, after the events before it; the
// next Run stops at it again.
func TestRunMalformed(t *testing.T) {
	js := cdctest.StartJS(t)
	good := func(id int) protocol.ChangeEvent {
		return cdctest.Change(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(id))})
	}
	cdctest.Publish(t, js, good(1), good(2), good(3))
	subject := protocol.CDCSubject("up", "s", "t")
	ack, err := js.Publish(context.Background(), subject, []byte(`{"v":1,"op":"explode","schema":"s","table":"t"}`))
	if err != nil {
		t.Fatal(err)
	}
	cdctest.Publish(t, js, good(5), good(6))
	m := &memory{}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchWait: 50 * time.Millisecond}
	for i := range 2 {
		_, stop, done := cdctest.Run(t, js, cfg, m)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not stop at the malformed event")
		}
		err := stop()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", ack.Sequence)) || !strings.Contains(err.Error(), subject) {
			t.Fatalf("run %d: %v, want an error naming sequence %d and %s", i+1, err, ack.Sequence, subject)
		}
		if got := m.seqs(); !reflect.DeepEqual(got, []uint64{1, 2, 3}) {
			t.Fatalf("run %d applied %v, want [1 2 3]", i+1, got)
		}
	}
}

// TestRunDeliveryGap: a message delivered to someone else (a pull request
// Run did not read) is not lost: Run sees the gap in the delivery sequence
// and repositions the consumer, so every event is applied once, in order.
func TestRunDeliveryGap(t *testing.T) {
	js := cdctest.StartJS(t)
	ctx := context.Background()
	one := func(id int) protocol.ChangeEvent {
		return cdctest.Change(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(id))})
	}
	release := make(chan struct{})
	blocked := make(chan struct{})
	m := &memory{hook: func(_ int, events []connectors.Event) error {
		if events[0].Seq == 4 {
			close(blocked)
			<-release
		}
		return nil
	}}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchWait: 50 * time.Millisecond}
	r, stop, done := cdctest.Run(t, js, cfg, m)
	cdctest.Publish(t, js, one(1), one(2), one(3))
	cdctest.WaitFor(t, "first batch", done, func() bool { return r.Status().Applied == 3 })
	cdctest.Publish(t, js, one(4))
	<-blocked // Run's pull request ended before Apply
	cdctest.Publish(t, js, one(5), one(6), one(7))
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
	if !reflect.DeepEqual(got, []uint64{5}) {
		t.Fatalf("stole %v, want [5]", got)
	}
	close(release)
	cdctest.WaitFor(t, "all events", done, func() bool { return r.Status().Applied == 7 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := m.seqs(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("applied %v, want 1..7 once each, in order", got)
	}
}

// TestRunStopsOnContext: Run returns nil soon after its context ends, also
// while idle.
func TestRunStopsOnContext(t *testing.T) {
	js := cdctest.StartJS(t)
	r, stop, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "apply1", Upstream: "up"}, &memory{})
	// Idle: it found nothing to apply and waits for more.
	cdctest.WaitFor(t, "the runner caught up", done, func() bool { return r.Status().CaughtUp })
	start := time.Now()
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %s to stop", d)
	}
}

// BenchmarkRunPostgres publishes 20000 inserts and updates and times one
// Run applying them to PostgreSQL in batches of 1000; it reports events/s.
func BenchmarkRunPostgres(b *testing.B) {
	dsn, s, conn := pgtest.DB(b)
	if _, err := conn.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE %s.r1 (id int PRIMARY KEY, v text); CREATE TABLE %s.r2 (id int PRIMARY KEY, v text)`, s, s)); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var events int
	for i := range b.N {
		js := cdctest.StartJS(b)
		evs := workload(s, 20000, uint64(i))
		var last uint64
		for j := 0; j < len(evs); j += 5000 {
			seqs := cdctest.Publish(b, js, evs[j:min(j+5000, len(evs))]...)
			last = seqs[len(seqs)-1]
		}
		pg, err := postgres.NewApplier(context.Background(), postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: fmt.Sprintf("bench%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(context.Background(), fmt.Sprintf(`TRUNCATE %s.r1, %s.r2`, s, s)); err != nil {
			b.Fatal(err)
		}
		r, err := cdcapply.NewRunner(js, cdcapply.Config{Pipeline: fmt.Sprintf("bench%d", i), Upstream: "up"}, pg, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- r.Run(ctx) }()
		for r.Status().Applied < last {
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		events += len(evs)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		pg.Close()
	}
	b.ReportMetric(float64(events)/total.Seconds(), "events/s")
}

// reporting is an Applier that reports a stopped table.
type reporting struct{ memory }

func (*reporting) TableStatus() []protocol.TableStatus {
	return []protocol.TableStatus{{Table: "s.t", State: protocol.TableStopped, Seq: 7, Error: "bad value"}}
}

// The stream of an Applier that reports tables carries them in its status.
func TestStreamStatusTables(t *testing.T) {
	js := cdctest.StartJS(t)
	s, err := cdcapply.NewStream(js, cdcapply.Config{Pipeline: "a", Upstream: "up"}, &reporting{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Status(context.Background())
	if len(st.Tables) != 1 || st.Tables[0].Table != "s.t" || st.Tables[0].Seq != 7 {
		t.Errorf("status tables %+v, want the applier's", st.Tables)
	}
	plain, err := cdcapply.NewStream(js, cdcapply.Config{Pipeline: "b", Upstream: "up"}, &memory{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := plain.Status(context.Background()); st.Tables != nil {
		t.Errorf("status tables %+v of an applier that reports none", st.Tables)
	}
}

// TestRunTransform: a Transform (a pipeline's data contract) stands
// between the stream and the Applier: the target holds what it makes of
// the events, a batch it leaves empty is acknowledged without an Apply,
// and its error stops Run.
func TestRunTransform(t *testing.T) {
	js := cdctest.StartJS(t)
	dsn, s, conn := pgtest.DB(t)
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.r1 (id int PRIMARY KEY, v text)`, s))
	var evs []protocol.ChangeEvent
	for i := range 60 {
		evs = append(evs, cdctest.Change(protocol.OpInsert, s, "r1", nil, protocol.Row{"id": T(fmt.Sprint(i)), "v": T(fmt.Sprintf("secret %d", i))}))
	}
	seqs := cdctest.Publish(t, js, evs...)
	keep := func(e protocol.ChangeEvent) bool {
		id := e.After["id"].Text
		return id < "20" || id >= "40" || len(id) == 1
	}
	var kept []protocol.ChangeEvent
	for _, e := range evs {
		if keep(e) {
			e.After = protocol.Row{"id": e.After["id"], "v": T("hidden")}
			kept = append(kept, e)
		}
	}
	m := cdctest.Model{}
	m.Apply(t, kept...)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "apply1"})
	f := &cdctest.Flaky{Applier: pg}
	fail := false
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 10, BatchWait: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond,
		Transform: func(in []connectors.Event) ([]connectors.Event, error) {
			if fail {
				return nil, errors.New("column x is not classified")
			}
			out := in[:0]
			for _, e := range in {
				if keep(e.ChangeEvent) {
					e.After = protocol.Row{"id": e.After["id"], "v": T("hidden")}
					out = append(out, e)
				}
			}
			return out, nil
		}}
	r, stop, done := cdctest.Run(t, js, cfg, f)
	cdctest.WaitFor(t, "all events", done, func() bool { return r.Status().Applied == seqs[len(seqs)-1] })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := pgtest.Rows(t, conn, s+".r1", []string{"id", "v"}), m.Rows(s+".r1", []string{"id", "v"}); !reflect.DeepEqual(got, want) {
		t.Fatalf("target holds %v, want %v", got, want)
	}
	for _, b := range f.LastBatches {
		if len(b) == 0 {
			t.Fatal("the Applier was given an empty batch")
		}
	}
	fail = true
	cdctest.Publish(t, js, cdctest.Change(protocol.OpInsert, s, "r1", nil, protocol.Row{"id": T("99"), "v": T("x")}))
	_, stop, done = cdctest.Run(t, js, cfg, f)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a failing Transform did not stop Run")
	}
	if err := stop(); err == nil || !strings.Contains(err.Error(), "not classified") {
		t.Fatalf("Run = %v", err)
	}
}

// eager is an in-memory Applier that asks for eager batches.
type eager struct{ *memory }

func (eager) ApplyEagerly() bool { return true }

// TestRunEager: an EagerApplier gets the messages waiting in one batch (a
// backlog in full batches) and a message arriving while the runner is idle
// at once, never after a wait for a batch to fill (BatchWait, here longer
// than the test waits).
func TestRunEager(t *testing.T) {
	js := cdctest.StartJS(t)
	one := func(id int) protocol.ChangeEvent {
		return cdctest.Change(protocol.OpInsert, "s", "t", nil, protocol.Row{"id": T(fmt.Sprint(id))})
	}
	for i := 1; i <= 7; i++ {
		cdctest.Publish(t, js, one(i))
	}
	m := &memory{}
	cfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 5, BatchWait: 8 * time.Second}
	r, stop, done := cdctest.Run(t, js, cfg, eager{m})
	applied := func(what string, seq uint64) {
		t.Helper()
		deadline := time.Now().Add(4 * time.Second) // half of BatchWait
		for r.Status().Applied != seq {
			select {
			case <-done:
				t.Fatalf("%s: Run stopped: %v", what, stop())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: applied %d after 4s, want %d", what, r.Status().Applied, seq)
			}
		}
	}
	applied("the backlog", 7)
	m.mu.Lock()
	batches := m.batches
	m.mu.Unlock()
	if batches != 2 {
		t.Errorf("the backlog of 7 messages came in %d batches, want 2 (5 and 2)", batches)
	}
	cdctest.Publish(t, js, one(8))
	applied("a message while idle", 8)
	cdctest.Publish(t, js, one(9), one(10))
	applied("two more", 10)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := m.seqs(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Errorf("applied %v, want 1..10 once each, in order", got)
	}
}
