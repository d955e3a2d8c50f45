package pgcdc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/protocol"
)

func TestConfigValidate(t *testing.T) {
	good := pgcdc.Config{DSN: "postgres://u@h/db", Slot: "s1", Publication: "p1", Tables: []string{"public.t"}, Pipeline: "cdc1"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*pgcdc.Config){
		"no dsn":      func(c *pgcdc.Config) { c.DSN = "" },
		"bad slot":    func(c *pgcdc.Config) { c.Slot = "Bad-Slot" },
		"bad pub":     func(c *pgcdc.Config) { c.Publication = "x'y" },
		"no tables":   func(c *pgcdc.Config) { c.Tables = nil },
		"unqualified": func(c *pgcdc.Config) { c.Tables = []string{"t"} },
		"pipeline":    func(c *pgcdc.Config) { c.Pipeline = "a.b" },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

type env struct {
	dsn, schema string
	conn        *pgx.Conn
	js          jetstream.JetStream
	cfg         pgcdc.Config
}

func setup(t *testing.T, tables ...string) *env {
	t.Helper()
	return setupNATS(t, embednats.Config{StoreDir: t.TempDir()}, tables...)
}

func setupNATS(t *testing.T, ncfg embednats.Config, tables ...string) *env {
	t.Helper()
	dsn, schema, conn := pgtest.DB(t)
	srv, err := embednats.Start(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pgcdc.EnsureStream(ctx, js, pgcdc.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := pgcdc.EnsureStream(ctx, js, pgcdc.StreamConfig{}); err != nil {
		t.Fatalf("EnsureStream is not idempotent: %v", err)
	}
	e := &env{dsn: dsn, schema: schema, conn: conn, js: js}
	var qualified []string
	for _, tb := range tables {
		qualified = append(qualified, schema+"."+tb)
	}
	e.cfg = pgcdc.Config{
		DSN: dsn, Slot: schema + "_slot", Publication: schema + "_pub", Tables: qualified, Pipeline: "p1",
		Heartbeat: 200 * time.Millisecond, StatusInterval: 100 * time.Millisecond,
	}
	e.cleanupSlot(t)
	return e
}

// cleanupSlot drops the slot and publication; registered after the Readers
// stop, it runs before the schema is dropped.
func (e *env) cleanupSlot(t *testing.T) {
	t.Cleanup(func() {
		var err error
		for i := 0; i < 50; i++ { // the walsender may still be exiting
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = pgcdc.DropSlot(ctx, e.dsn, e.cfg.Slot, e.cfg.Publication)
			cancel()
			if err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("drop slot: %v", err)
	})
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// holdTx opens a transaction on a connection of its own and returns its
// id, for a Reader told it delivered its commit (SeedDelivered) while it is
// still invisible; end rolls it back. The connection closes with the test.
func (e *env) holdTx(t *testing.T) (xid uint32, end func()) {
	t.Helper()
	ctx := context.Background()
	hold, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Close(context.Background()) })
	tx, err := hold.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := tx.QueryRow(ctx, "SELECT txid_current()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return uint32(id), func() {
		t.Helper()
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs a Reader until the returned stop is called; stop returns Run's
// error. done is closed when Run returns. start returns once the slot streams.
func (e *env) start(t *testing.T) (r *pgcdc.Reader, stop func() error, done <-chan struct{}) {
	t.Helper()
	r, err := pgcdc.NewReader(e.cfg, e.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop, done = e.run(t, r)
	return r, stop, done
}

// run runs r as start does.
func (e *env) run(t *testing.T, r *pgcdc.Reader) (stop func() error, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	var result error
	go func() { result = r.Run(ctx); close(ch) }()
	stop = func() error {
		cancel()
		<-ch
		return result
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(30 * time.Second)
	for r.Status().ConfirmedLSN == "" {
		select {
		case <-ch:
			t.Fatalf("Run ended early: %v", result)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("reader did not start streaming in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return stop, ch
}

// stored is one event of the stream and the message that carried it.
type stored struct {
	id    string // the message's Nats-Msg-Id
	seq   uint64 // the message's stream sequence
	first bool   // the first event of its message
	ev    protocol.ChangeEvent
}

// waitEvents waits until the stream holds n events and returns them in
// stream order (see events).
func (e *env) waitEvents(t *testing.T, n int) []stored {
	t.Helper()
	return e.events(t, n)
}

// events waits until the stream holds n events and returns them in stream
// order, read with an ordered consumer. It checks every message: its
// Sluice-Events header counts its events, which share its subject, table
// and commit LSN; and that the stream holds nothing more.
func (e *env) events(t *testing.T, n int) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]stored, 0, n)
	var lastSeq uint64
	for len(out) < n {
		batch, err := cons.Fetch(5000, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			lastSeq = md.Sequence.Stream
			out = append(out, decodeMsg(t, m.Subject(), m.Headers(), m.Data(), lastSeq)...)
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("stream holds %d events, want %d", len(out), n)
		}
	}
	if len(out) != n {
		t.Fatalf("stream holds %d events (or more), want %d", len(out), n)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != lastSeq {
		t.Fatalf("stream holds messages past the %d events wanted (last sequence %d, read to %d)", n, info.State.LastSeq, lastSeq)
	}
	return out
}

// decodeMsg decodes the events of one message and checks it is well formed.
func decodeMsg(t *testing.T, subject string, h nats.Header, data []byte, seq uint64) []stored {
	t.Helper()
	evs, err := protocol.DecodeChangeEvents(data)
	if err != nil {
		t.Fatalf("message %d: %v", seq, err)
	}
	if got := h.Get(protocol.HeaderEvents); got != fmt.Sprint(len(evs)) {
		t.Errorf("message %d: %s header %q, holds %d events", seq, protocol.HeaderEvents, got, len(evs))
	}
	id := h.Get(jetstream.MsgIDHeader)
	out := make([]stored, 0, len(evs))
	for i, ev := range evs {
		if want := protocol.CDCSubject("p1", ev.Schema, ev.Table); subject != want {
			t.Errorf("message %d: event %d on %s, want %s", seq, i, subject, want)
		}
		if ev.CommitLSN != evs[0].CommitLSN {
			t.Errorf("message %d: events of commits %s and %s", seq, evs[0].CommitLSN, ev.CommitLSN)
		}
		out = append(out, stored{id: id, seq: seq, first: i == 0, ev: ev})
	}
	return out
}

// checkIDs checks that every message of change events has the id of its
// first event, and no id is used twice.
func checkIDs(t *testing.T, slot string, evs []stored) {
	t.Helper()
	ids := map[string]bool{}
	for i, s := range evs {
		if !s.first {
			continue
		}
		if want := protocol.CDCMsgID(slot, s.ev.CommitLSN, s.ev.Index); s.id != want {
			t.Errorf("event %d: first of message %d with id %q, want %q", i, s.seq, s.id, want)
		}
		if ids[s.id] {
			t.Errorf("msg id %s twice", s.id)
		}
		ids[s.id] = true
	}
}

func lsn(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *env) confirmedFlush(t *testing.T) pglogrepl.LSN {
	t.Helper()
	lag, err := pgcdc.SlotLag(context.Background(), e.dsn, e.cfg.Slot)
	if err != nil {
		t.Fatal(err)
	}
	return lsn(t, lag.ConfirmedFlushLSN)
}

func TestChangesTOASTAndSchemaChange(t *testing.T) {
	e := setup(t, "a", "b")
	s := e.schema
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text, big text);
		ALTER TABLE %[1]s.a REPLICA IDENTITY FULL;
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text)`, s))
	_, stop, _ := e.start(t)

	const bigSQL = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i)"
	var big string
	if err := e.conn.QueryRow(context.Background(), "SELECT "+bigSQL).Scan(&big); err != nil {
		t.Fatal(err)
	}
	e.exec(t, fmt.Sprintf(`BEGIN;
		INSERT INTO %[1]s.a VALUES (1, 'x', %[2]s);
		INSERT INTO %[1]s.b VALUES (1, 'y'), (2, 'z');
		COMMIT`, s, bigSQL))
	e.exec(t, fmt.Sprintf(`UPDATE %s.a SET v = 'x2' WHERE id = 1`, s))
	e.exec(t, fmt.Sprintf(`BEGIN; UPDATE %[1]s.b SET v = 'y2' WHERE id = 1; DELETE FROM %[1]s.b WHERE id = 2; COMMIT`, s))
	e.exec(t, fmt.Sprintf(`ALTER TABLE %s.a ADD COLUMN c int`, s))
	e.exec(t, fmt.Sprintf(`BEGIN; INSERT INTO %[1]s.a VALUES (2, 'w', 'small', 7); UPDATE %[1]s.a SET c = 8 WHERE id = 1; COMMIT`, s))
	e.exec(t, fmt.Sprintf(`TRUNCATE %s.b`, s))

	evs := e.waitEvents(t, 9)
	type want struct {
		table  string
		op     protocol.Op
		index  int
		before protocol.Row
		after  protocol.Row
	}
	T, N, U := protocol.Text, protocol.NullValue, protocol.UnchangedValue
	wants := []want{
		{"a", protocol.OpInsert, 0, nil, protocol.Row{"id": T("1"), "v": T("x"), "big": T(big)}},
		{"b", protocol.OpInsert, 1, nil, protocol.Row{"id": T("1"), "v": T("y")}},
		{"b", protocol.OpInsert, 2, nil, protocol.Row{"id": T("2"), "v": T("z")}},
		// FULL: the whole old row; the untouched TOAST value is marked unchanged in the new row.
		{"a", protocol.OpUpdate, 0, protocol.Row{"id": T("1"), "v": T("x"), "big": T(big)}, protocol.Row{"id": T("1"), "v": T("x2"), "big": U}},
		// DEFAULT: no old row on an update that keeps the key, only the key on delete.
		{"b", protocol.OpUpdate, 0, nil, protocol.Row{"id": T("1"), "v": T("y2")}},
		{"b", protocol.OpDelete, 1, protocol.Row{"id": T("2")}, nil},
		// The column added mid-stream shows up.
		{"a", protocol.OpInsert, 0, nil, protocol.Row{"id": T("2"), "v": T("w"), "big": T("small"), "c": T("7")}},
		{"a", protocol.OpUpdate, 1, protocol.Row{"id": T("1"), "v": T("x2"), "big": T(big), "c": N}, protocol.Row{"id": T("1"), "v": T("x2"), "big": U, "c": T("8")}},
		{"b", protocol.OpTruncate, 0, nil, nil},
	}
	var prevCommit pglogrepl.LSN
	for i, w := range wants {
		got := evs[i].ev
		if got.Table != w.table || got.Schema != s || got.Op != w.op || got.Index != w.index {
			t.Errorf("event %d: %s.%s %s #%d, want %s.%s %s #%d", i, got.Schema, got.Table, got.Op, got.Index, s, w.table, w.op, w.index)
		}
		if !rowsEqual(got.Before, w.before) || !rowsEqual(got.After, w.after) {
			t.Errorf("event %d (%s %s): before %v after %v, want before %v after %v", i, w.table, w.op, short(got.Before), short(got.After), short(w.before), short(w.after))
		}
		if got.Pipeline != "p1" || got.Database == "" || got.Xid == 0 || got.CommitTime.IsZero() || len(got.Key) != 1 || got.Key[0] != "id" {
			t.Errorf("event %d: pipeline %q database %q xid %d commit time %v key %v", i, got.Pipeline, got.Database, got.Xid, got.CommitTime, got.Key)
		}
		commit, at := lsn(t, got.CommitLSN), lsn(t, got.LSN)
		if commit < prevCommit || at == 0 || at > commit {
			t.Errorf("event %d: lsn %s commit lsn %s after commit lsn %s", i, got.LSN, got.CommitLSN, prevCommit)
		}
		prevCommit = commit
	}
	// Consecutive events of one table in one transaction share a message.
	checkIDs(t, e.cfg.Slot, evs)
	var msgs []int
	for i, ev := range evs {
		if ev.first {
			msgs = append(msgs, i)
		}
	}
	if want := []int{0, 1, 3, 4, 6, 8}; fmt.Sprint(msgs) != fmt.Sprint(want) {
		t.Errorf("messages start at events %v, want %v", msgs, want)
	}

	// An idle slot advances with the heartbeat: its confirmed position
	// passes the WAL position taken now, with no change to the tables.
	var now string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.confirmedFlush(t) < lsn(t, now) {
		if time.Now().After(deadline) {
			t.Fatalf("confirmed flush %s stayed behind %s with the heartbeat on", e.confirmedFlush(t), now)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lag, err := pgcdc.SlotLag(context.Background(), e.dsn, e.cfg.Slot)
	if err != nil || !lag.Active || lag.Bytes < 0 {
		t.Fatalf("SlotLag = %+v, %v", lag, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func rowsEqual(a, b protocol.Row) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func short(r protocol.Row) string {
	if r == nil {
		return "nil"
	}
	var parts []string
	for k, v := range r {
		b, _ := v.MarshalJSON()
		s := string(b)
		if len(s) > 20 {
			s = s[:20] + "..."
		}
		parts = append(parts, k+"="+s)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// TestNoLossNoDuplicates: a Reader whose publishes are refused stops
// without confirming past the last acknowledged transaction; the next
// Reader re-publishes the tail (JetStream drops what was stored); a Reader
// cancelled mid-stream hands over to the next with no event missing or
// duplicated.
func TestNoLossNoDuplicates(t *testing.T) {
	e := setup(t, "a")
	e.cfg.MessageEvents = 2 // a transaction of 3 rows is 2 messages
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.a (id int PRIMARY KEY, v text)`, e.schema))
	ctx := context.Background()
	// Refuse messages past the 33rd (events past the 50th): the 17th
	// transaction is stored in part.
	setLimit := func(max int64) {
		_, err := e.js.UpdateStream(ctx, jetstream.StreamConfig{
			Name: protocol.StreamCDC, Subjects: []string{protocol.SubjectCDCAll}, Storage: jetstream.FileStorage,
			Duplicates: pgcdc.DuplicateWindow, MaxMsgs: max, Discard: jetstream.DiscardNew,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setLimit(33)
	_, stop1, done1 := e.start(t)
	insertTx := func(from, to int) { // one transaction of 3 rows per id triple
		for i := from; i < to; i += 3 {
			e.exec(t, fmt.Sprintf(`INSERT INTO %s.a SELECT g, 'v' FROM generate_series($1::int, $2::int) g`, e.schema), i, i+2)
		}
	}
	insertTx(0, 120) // 40 transactions, 120 events
	select {
	case <-done1:
		err := stop1()
		if err == nil {
			t.Fatal("Run returned nil after JetStream refused events")
		}
		t.Logf("first reader stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("first reader did not fail when JetStream refused events")
	}
	evs := e.waitEvents(t, 50)
	partial := evs[48].ev // first event of the 17th transaction, which was not wholly stored
	if partial.Index != 0 || evs[47].ev.Index != 2 || evs[49].ev.Index != 1 || evs[49].seq != evs[48].seq {
		t.Fatalf("events 47, 48, 49 have indexes %d, %d, %d", evs[47].ev.Index, evs[48].ev.Index, evs[49].ev.Index)
	}
	confirmed := e.confirmedFlush(t)
	if confirmed >= lsn(t, partial.CommitLSN) {
		t.Fatalf("slot confirmed %s, past the unacknowledged transaction committed at %s", confirmed, partial.CommitLSN)
	}
	t.Logf("confirmed flush %s, last fully acked commit %s, partial commit %s", confirmed, evs[47].ev.CommitLSN, partial.CommitLSN)

	setLimit(-1)
	_, stop2, _ := e.start(t)
	e.waitEvents(t, 120)
	// Cancel the second Reader while transactions keep coming.
	errc := make(chan error, 1)
	go func() {
		c, err := pgx.Connect(ctx, e.dsn)
		if err != nil {
			errc <- err
			return
		}
		defer c.Close(ctx)
		for i := 120; i < 420; i += 3 {
			if _, err := c.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.a SELECT g, 'v' FROM generate_series($1::int, $2::int) g`, e.schema), i, i+2); err != nil {
				errc <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		errc <- nil
	}()
	s, _ := e.js.Stream(ctx, protocol.StreamCDC)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= 140 { // about 210 events
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := stop2(); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	_, stop3, _ := e.start(t)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	evs = e.waitEvents(t, 420)
	for i, ev := range evs {
		if want := fmt.Sprint(i); ev.ev.After["id"] != protocol.Text(want) || ev.ev.Op != protocol.OpInsert {
			t.Fatalf("event %d: %s id %v, want insert id %s", i, ev.ev.Op, ev.ev.After["id"], want)
		}
	}
	checkIDs(t, e.cfg.Slot, evs)
	if err := stop3(); err != nil {
		t.Fatalf("third Run: %v", err)
	}
	// Nothing more arrives: Run returned after the acks of everything it
	// published (its shutdown waits for them), so a stray duplicate would
	// already be in the stream.
	e.waitEvents(t, 420)
	if confirmed := e.confirmedFlush(t); confirmed < lsn(t, evs[419].ev.CommitLSN) {
		t.Errorf("after a clean stop the slot confirmed %s, before the last commit %s", confirmed, evs[419].ev.CommitLSN)
	}
}

func TestChangeEventCodec(t *testing.T) {
	ev := protocol.ChangeEvent{Op: protocol.OpUpdate, Schema: "s", Table: "t",
		Before: protocol.Row{"a": protocol.NullValue}, After: protocol.Row{"a": protocol.Text("1"), "b": protocol.UnchangedValue, "c": protocol.Text("")}}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.DecodeChangeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.V != protocol.Version || !rowsEqual(got.Before, ev.Before) || !rowsEqual(got.After, ev.After) {
		t.Fatalf("round trip: %s -> %+v", b, got)
	}
	if _, err := protocol.DecodeChangeEvent([]byte(`{"op":"insert","schema":"s","table":"t"}`)); !errors.Is(err, protocol.ErrVersion) {
		t.Fatalf("no version: %v", err)
	}
}

// TestLargeTransactionBounded: one transaction of 100k rows streams
// completely with MaxInFlight far below its size: the Reader waits for the
// transaction's own messages, one in flight at a time, instead of
// publishing without bound, and confirms the slot only past the commit.
func TestLargeTransactionBounded(t *testing.T) {
	e := setup(t, "big")
	e.cfg.MaxInFlight = 1000
	e.cfg.MessageEvents = 100
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.big (id int PRIMARY KEY, v text)`, e.schema))
	js := &pendingJS{JetStream: e.js}
	e.js = js
	_, stop, _ := e.start(t)
	e.js = js.JetStream
	const n = 100_000
	began := time.Now()
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.big SELECT g, 'v' || g FROM generate_series(1, %d) g`, e.schema, n))
	evs := e.events(t, n)
	t.Logf("%d events of one transaction in the stream after %s", n, time.Since(began).Round(time.Millisecond))
	first, last := evs[0].ev, evs[n-1].ev
	commit := first.CommitLSN
	if first.Op != protocol.OpInsert || first.After["id"] != protocol.Text("1") || last.After["id"] != protocol.Text(fmt.Sprint(n)) || last.CommitLSN != commit {
		t.Fatalf("first event %s id %v commit %s, last id %v commit %s", first.Op, first.After["id"], commit, last.After["id"], last.CommitLSN)
	}
	// The events are the transaction's n indexes in order, 100 a message:
	// no event is missing or repeated.
	for i, s := range evs {
		if s.ev.Index != i || s.first != (i%100 == 0) || s.ev.After["id"] != protocol.Text(fmt.Sprint(i+1)) {
			t.Fatalf("event %d: index %d, id %v, first of its message %v", i, s.ev.Index, s.ev.After["id"], s.first)
		}
	}
	checkIDs(t, e.cfg.Slot, evs)
	// One message in flight at a time (what keeps the slot's messages in
	// order across a failover of the stream's leader): no publish starts
	// while another awaits its ack.
	if got := js.maxPending.Load(); got != 0 {
		t.Errorf("a publish started while %d others awaited their ack, want none", got)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.confirmedFlush(t) <= lsn(t, commit) {
		if time.Now().After(deadline) {
			t.Fatalf("confirmed flush %s did not pass the commit at %s", e.confirmedFlush(t), commit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// pendingJS records the largest number of async publishes awaiting their
// ack when another one is published.
type pendingJS struct {
	jetstream.JetStream
	maxPending atomic.Int64
}

func (j *pendingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	n := int64(j.PublishAsyncPending())
	for {
		old := j.maxPending.Load()
		if n <= old || j.maxPending.CompareAndSwap(old, n) {
			break
		}
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// TestMessagesBoundedByBytes: with a server's max_payload of 64 KiB the
// Reader packs at most 32 KiB of events into a message, a larger event goes
// alone, and every event arrives once, in order, across the split.
func TestMessagesBoundedByBytes(t *testing.T) {
	e := setupNATS(t, embednats.Config{StoreDir: t.TempDir(), MaxPayload: 64 << 10}, "w")
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.w (id int PRIMARY KEY, v text)`, e.schema))
	_, stop, _ := e.start(t)
	// 20 rows of 10,000 characters, one of 40,000 as the 8th, in one
	// transaction; then a small transaction.
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.w SELECT g, repeat(md5(g::text), CASE WHEN g = 8 THEN 1250 ELSE 312 END) FROM generate_series(1, 20) g`, e.schema))
	e.exec(t, fmt.Sprintf(`INSERT INTO %s.w VALUES (21, 'small')`, e.schema))
	evs := e.events(t, 21)
	checkIDs(t, e.cfg.Slot, evs)
	sizes := map[uint64]int{}
	counts := map[uint64]int{}
	for i, s := range evs {
		if s.ev.After["id"] != protocol.Text(fmt.Sprint(i+1)) {
			t.Fatalf("event %d: id %v", i, s.ev.After["id"])
		}
		b, _ := s.ev.Encode()
		sizes[s.seq] += len(b) + 1
		counts[s.seq]++
	}
	for seq, size := range sizes {
		if size-1 > 32<<10 && counts[seq] > 1 {
			t.Errorf("message %d: %d events in %d bytes, above 32 KiB", seq, counts[seq], size-1)
		}
	}
	if s := evs[7]; !s.first || evs[8].seq == s.seq || counts[s.seq] != 1 {
		t.Errorf("the 40,000-character row shares message %d (%d events)", s.seq, counts[s.seq])
	}
	if len(counts) < 8 || len(counts) > 12 {
		t.Errorf("21 events in %d messages, want 3 of 10,000 characters a message", len(counts))
	}
	t.Logf("21 events in %d messages", len(counts))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestKeylessTableRefused: a table with neither a primary key nor a replica
// identity is refused before it joins the publication, by the Reader and by
// the snapshot alike, with a permanent error naming it and the fix; the
// publication is left as it was, so the source application's UPDATE and
// DELETE on the table keep working. A table with REPLICA IDENTITY FULL or
// USING INDEX, and one whose identity index exists, are taken.
func TestKeylessTableRefused(t *testing.T) {
	e := setup(t, "keyed", "keyless")
	s := e.schema
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.keyed (id int PRIMARY KEY, v text);
		CREATE TABLE %[1]s.keyless (id int, v text);
		CREATE TABLE %[1]s.full_ident (id int, v text); ALTER TABLE %[1]s.full_ident REPLICA IDENTITY FULL;
		CREATE TABLE %[1]s.by_index (id int NOT NULL, v text); CREATE UNIQUE INDEX by_index_id ON %[1]s.by_index (id);
		ALTER TABLE %[1]s.by_index REPLICA IDENTITY USING INDEX by_index_id;
		CREATE TABLE %[1]s.nothing (id int PRIMARY KEY, v text); ALTER TABLE %[1]s.nothing REPLICA IDENTITY NOTHING;
		INSERT INTO %[1]s.keyless VALUES (1, 'a'), (2, 'b')`, s))
	ctx := context.Background()
	r, err := pgcdc.NewReader(e.cfg, e.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	if !errors.Is(err, pgcdc.ErrNoReplicaIdentity) || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), s+".keyless") ||
		!strings.Contains(err.Error(), "REPLICA IDENTITY FULL") || strings.Contains(err.Error(), s+".keyed") {
		t.Fatalf("Run with a keyless table: %v, want a permanent error naming it alone and the fix", err)
	}
	var pubs int
	if err := e.conn.QueryRow(ctx, "SELECT count(*) FROM pg_publication WHERE pubname = $1", e.cfg.Publication).Scan(&pubs); err != nil || pubs != 0 {
		t.Fatalf("publication created anyway (%d, %v)", pubs, err)
	}
	e.exec(t, fmt.Sprintf(`UPDATE %[1]s.keyless SET v = 'c' WHERE id = 1; DELETE FROM %[1]s.keyless WHERE id = 2`, s))

	snap, err := pgcdc.NewSnapshotSource(pgcdc.SnapshotConfig{DSN: e.dsn, Tables: []string{s + ".nothing"}, Slot: e.cfg.Slot, Publication: e.cfg.Publication})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if _, err := snap.Plan(ctx, connectors.PlanRequest{RunID: "r"}); !errors.Is(err, pgcdc.ErrNoReplicaIdentity) || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), s+".nothing") {
		t.Fatalf("snapshot of a table with REPLICA IDENTITY NOTHING: %v, want a permanent refusal naming it", err)
	}
	var slots int
	if err := e.conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("the refused snapshot created its slot (%d, %v)", slots, err)
	}

	e.cfg.Tables = []string{s + ".keyed", s + ".full_ident", s + ".by_index"}
	_, stop, _ := e.start(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestIncrementalSnapshotThrottled: a reader asked for an incremental
// snapshot while its slot is far behind (a backlog of writes) holds the
// chunks back until the slot's lag is under MaxLagBytes, says so in its
// status, and then takes the whole table.
func TestIncrementalSnapshotThrottled(t *testing.T) {
	e := setup(t, "a", "b")
	s := e.schema
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text);
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s.b SELECT g, 'b' || g FROM generate_series(1, 3000) g`, s))
	_, stop, _ := e.start(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A backlog far over the bound.
	e.exec(t, fmt.Sprintf(`INSERT INTO %[1]s.a SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g`, s))
	e.cfg.Snapshots = []protocol.TableSnapshot{{ID: "s1", Table: s + ".b"}}
	e.cfg.MaxLagBytes, e.cfg.ChunkRows = 100_000, 1000
	r, stop, done := e.start(t)
	deadline := time.Now().Add(60 * time.Second)
	var st protocol.TableStatus
	for {
		if sn := r.Status().Snapshots; len(sn) == 1 {
			st = sn[0]
		}
		if st.State == protocol.TableSnapshotted {
			break
		}
		select {
		case <-done:
			t.Fatalf("reader stopped: %v", stop())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot not taken in 60s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st.Throttled < 1 || st.LastThrottled.IsZero() || st.Rows != 3000 || st.Snapshot != "s1" {
		t.Fatalf("snapshot status %+v, want it throttled at least once and 3000 rows", st)
	}
}
