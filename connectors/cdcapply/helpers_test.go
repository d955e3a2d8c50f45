package cdcapply_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/protocol"
)

// startJS starts an embedded JetStream server with the SLUICE_CDC stream.
func startJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv, err := embednats.Start(embednats.Config{StoreDir: t.TempDir()})
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
	if err := pgcdc.EnsureStream(context.Background(), js, pgcdc.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// publish publishes events on their CDC subjects, one message each, and
// returns their stream sequences.
func publish(t testing.TB, js jetstream.JetStream, evs ...protocol.ChangeEvent) []uint64 {
	t.Helper()
	msgs := make([][]protocol.ChangeEvent, len(evs))
	for i := range evs {
		msgs[i] = evs[i : i+1]
	}
	return publishPacked(t, js, msgs...)
}

// publishPacked publishes each group of events as one message on the CDC
// subject of its first event, packed as the pgcdc Reader packs them (the
// encoded events joined by '\n', their count in the Sluice-Events header),
// and returns the messages' stream sequences.
func publishPacked(t testing.TB, js jetstream.JetStream, msgs ...[]protocol.ChangeEvent) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var futs []jetstream.PubAckFuture
	for _, evs := range msgs {
		var data []byte
		for i, ev := range evs {
			b, err := ev.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				data = append(data, '\n')
			}
			data = append(data, b...)
		}
		m := nats.NewMsg(protocol.CDCSubject(evs[0].Pipeline, evs[0].Schema, evs[0].Table))
		m.Data = data
		m.Header.Set(protocol.HeaderEvents, strconv.Itoa(len(evs)))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	seqs := make([]uint64, len(futs))
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("no publish ack")
		}
	}
	return seqs
}

// run runs a Runner until stop is called; stop returns Run's error, done is
// closed when Run returns.
func run(t *testing.T, js jetstream.JetStream, cfg cdcapply.Config, a cdcapply.Applier) (r *cdcapply.Runner, stop func() error, done <-chan struct{}) {
	t.Helper()
	r, err := cdcapply.NewRunner(js, cfg, a, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	return r, stop, ch
}

// waitFor polls cond until it holds; it fails when done closes first or
// after 30s.
func waitFor(t *testing.T, what string, done <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		select {
		case <-done:
			t.Fatalf("Run ended while waiting for %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memory is an in-memory Applier recording what it applied.
type memory struct {
	mu      sync.Mutex
	events  []cdcapply.Event
	batches int
	// hook, when set, runs before a batch is applied; an error fails it.
	hook func(batch int, events []cdcapply.Event) error
}

func (m *memory) Applied(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return 0, nil
	}
	return m.events[len(m.events)-1].Seq, nil
}

func (m *memory) Apply(_ context.Context, events []cdcapply.Event) error {
	m.mu.Lock()
	hook := m.hook
	m.batches++
	n := m.batches
	m.mu.Unlock()
	if hook != nil {
		if err := hook(n, events); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var applied uint64 // the offset: events of one message share their Seq
	if len(m.events) > 0 {
		applied = m.events[len(m.events)-1].Seq
	}
	for _, ev := range events {
		if ev.Seq > applied {
			m.events = append(m.events, ev)
		}
	}
	return nil
}

func (m *memory) Close() error { return nil }

func (m *memory) seqs() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for _, ev := range m.events {
		out = append(out, ev.Seq)
	}
	return out
}

// model applies change events to rows of text values: the expected state
// of a target, computed without SQL. Rows are keyed by "schema.table" and
// the key values.
type model map[string]map[string]protocol.Row

func (m model) apply(t *testing.T, evs ...protocol.ChangeEvent) {
	t.Helper()
	for _, ev := range evs {
		name := ev.Schema + "." + ev.Table
		if m[name] == nil {
			m[name] = map[string]protocol.Row{}
		}
		rows := m[name]
		key := func(r protocol.Row) string {
			var parts []string
			for _, k := range ev.Key {
				parts = append(parts, r[k].Text)
			}
			return strings.Join(parts, "\x00")
		}
		switch ev.Op {
		case protocol.OpTruncate:
			m[name] = map[string]protocol.Row{}
		case protocol.OpDelete:
			delete(rows, key(ev.Before))
		default:
			old := key(ev.After)
			if ev.Before != nil {
				old = key(ev.Before)
			}
			prev := rows[old]
			row := protocol.Row{}
			for c, v := range ev.After {
				if v.Unchanged {
					if prev == nil {
						t.Fatalf("model: unchanged value of %s without a row", c)
					}
					v = prev[c]
				}
				row[c] = v
			}
			delete(rows, old)
			rows[key(ev.After)] = row
		}
	}
}

// rows returns the model's rows of a table as text lines "v1|v2|...", NULL
// as \N, sorted.
func (m model) rows(name string, cols []string) []string {
	var out []string
	for _, r := range m[name] {
		var vals []string
		for _, c := range cols {
			v, ok := r[c]
			if !ok || v.Null {
				vals = append(vals, `\N`)
			} else {
				vals = append(vals, v.Text)
			}
		}
		out = append(out, strings.Join(vals, "|"))
	}
	slices.Sort(out)
	return out
}

// tableRows returns a table's rows as text lines "v1|v2|...", NULL as \N,
// sorted.
func tableRows(t *testing.T, conn *pgx.Conn, table string, cols []string) []string {
	t.Helper()
	var sel []string
	for _, c := range cols {
		sel = append(sel, fmt.Sprintf(`coalesce(%s::text, '\N')`, pgx.Identifier{c}.Sanitize()))
	}
	rows, err := conn.Query(context.Background(), "SELECT "+strings.Join(sel, " || '|' || ")+" FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// checksum returns a table's row count and the md5 of its rows cast to text,
// ordered by the key.
func checksum(t *testing.T, conn *pgx.Conn, table, orderBy string) (int64, string) {
	t.Helper()
	var n int64
	var sum string
	err := conn.QueryRow(context.Background(),
		fmt.Sprintf(`SELECT count(*), md5(coalesce(string_agg(x::text, E'\n' ORDER BY %s), '')) FROM %s x`, orderBy, table)).Scan(&n, &sum)
	if err != nil {
		t.Fatal(err)
	}
	return n, sum
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// ev builds a change event of pipeline "up".
func ev(op protocol.Op, schema, table string, before, after protocol.Row) protocol.ChangeEvent {
	return protocol.ChangeEvent{Op: op, Pipeline: "up", Database: "db", Schema: schema, Table: table,
		Key: []string{"id"}, Before: before, After: after, CommitTime: time.Date(2024, 5, 1, 10, 30, 0, 0, time.UTC)}
}

// withSeqs numbers events 1, 2, ... from first.
func withSeqs(first uint64, evs ...protocol.ChangeEvent) []cdcapply.Event {
	out := make([]cdcapply.Event, len(evs))
	for i, e := range evs {
		out[i] = cdcapply.Event{Seq: first + uint64(i), ChangeEvent: e}
	}
	return out
}

var (
	T = protocol.Text
	N = protocol.NullValue
	U = protocol.UnchangedValue
)
