package pgcdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// The snapshot source passes the source conformance suite: its plan
// creates the slot with an exported snapshot, and every chunk reads the
// same rows on it each time.
func TestConformanceSnapshotSource(t *testing.T) {
	e := setup(t)
	for _, tb := range []string{"a", "b"} {
		e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.%[2]s (id int PRIMARY KEY, v text, n numeric);
			INSERT INTO %[1]s.%[2]s SELECT g, repeat('x', g %% 50) || ' "q" ü', g / 3.0 FROM generate_series(1, 3000) g`, e.schema, tb))
	}
	conformance.TestSource(t, conformance.SourceHarness{
		Open: func(t *testing.T) connectors.Source {
			s, err := pgcdc.NewSnapshotSource(pgcdc.SnapshotConfig{
				DSN: e.dsn, Tables: []string{e.schema + ".a", e.schema + ".b"}, Slot: e.cfg.Slot, Publication: e.cfg.Publication, TargetRows: 700,
			})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Request: connectors.PlanRequest{RunID: "conf", Pipeline: "p1"},
		// The rows and each chunk's begin line: 3000 rows a table, in
		// 5 chunks of about 700.
		WantRows: 6000 + 10,
		// The rows as a SELECT reads them, each chunk's begin line; not
		// the slot's position, the time or the chunks' names.
		Columns: []string{"schema", "table", "key", "row", "begin"},
		Want: func(t *testing.T) conformance.Table {
			want := conformance.Table{Columns: []string{"schema", "table", "key", "row", "begin"}}
			for _, tb := range []string{"a", "b"} {
				cols, rows, err := pgtest.Select(t.Context(), e.conn, fmt.Sprintf("SELECT id, v, n FROM %s.%s", e.schema, tb), conformance.Null)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					obj := map[string]any{}
					for j, c := range cols {
						obj[c] = r[j]
						if r[j] == conformance.Null {
							obj[c] = nil
						}
					}
					row, err := json.Marshal(obj)
					if err != nil {
						t.Fatal(err)
					}
					want.Rows = append(want.Rows, []string{e.schema, tb, `["id"]`, string(row), conformance.Null})
				}
				for range 5 {
					want.Rows = append(want.Rows, []string{e.schema, tb, `["id"]`, conformance.Null, "true"})
				}
			}
			return want
		},
	})
}

// The read-event sink passes the sink conformance suite as a sink that
// publishes as it writes: a retried task's events are in SLUICE_CDC once,
// a commit or an abort changes nothing. What it published is read back
// from the stream as the SnapshotRow lines it was given: each message's id
// names its chunk and first row.
func TestConformanceEventsSink(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	// The connection's reply subscriptions, which live as long as it does,
	// start before the suite counts goroutines.
	warm, err := e.js.PublishAsync("sluice.conformance.warm", nil) // no stream: no responders
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-warm.Ok():
	case <-warm.Err():
	}
	stream, err := e.js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	const slot, lsn = "conf_slot", "0/16B3748"
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	conformance.TestSink(t, conformance.SinkHarness{
		Published: true,
		Open: func(t *testing.T) connectors.Sink {
			s, err := pgcdc.NewEventsSink(pgcdc.EventsConfig{Pipeline: "p1", Slot: slot, MessageEvents: 2}, e.js)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Batches: func() []connectors.Batch {
			var bs []connectors.Batch
			for c := range 6 {
				var raw []byte
				for n := int64(1); n <= 3; n++ {
					line, err := json.Marshal(pgcdc.SnapshotRow{
						Database: "db", Schema: "s", Table: "t", Key: []string{"id"}, LSN: lsn, Time: at, Chunk: fmt.Sprintf("c%d", c), N: n,
						Row: protocol.Row{"id": protocol.Text(fmt.Sprint(10*c + int(n))), "v": protocol.Text("ü \"q\"\n"), "n": protocol.NullValue},
					})
					if err != nil {
						t.Fatal(err)
					}
					raw = append(append(raw, line...), '\n')
				}
				bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatJSONL, Rows: 3, Position: fmt.Sprintf("c%d", c)})
			}
			return bs
		},
		// Each row a read event of s.t at the snapshot's position.
		Want: func() []conformance.Table {
			var ts []conformance.Table
			for c := range 6 {
				tb := conformance.Table{Columns: []string{"op", "database", "table", "key", "lsn", "commit_time", "after"}}
				for n := 1; n <= 3; n++ {
					tb.Rows = append(tb.Rows, []string{string(protocol.OpRead), "db", "s.t", `["id"]`, lsn, at.Format(time.RFC3339Nano),
						fmt.Sprintf(`{"id":"%d","n":null,"v":"ü \"q\"\n"}`, 10*c+n)})
				}
				ts = append(ts, tb)
			}
			return ts
		},
		ReadBack: func(t *testing.T) (conformance.Table, error) { return publishedEvents(ctx, stream) },
		ReadCommitted: func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
			return publishedRows(ctx, stream, slot)
		},
	})
}

// publishedEvents reads every event of SLUICE_CDC with the protocol's
// decoder.
func publishedEvents(ctx context.Context, stream jetstream.Stream) (conformance.Table, error) {
	tb := conformance.Table{Columns: []string{"op", "database", "table", "key", "lsn", "commit_time", "after"}}
	info, err := stream.Info(ctx)
	if err != nil {
		return tb, err
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return tb, fmt.Errorf("message %d: %w", seq, err)
		}
		evs, err := protocol.DecodeChangeEvents(m.Data)
		if err != nil {
			return tb, fmt.Errorf("message %d: %w", seq, err)
		}
		for _, ev := range evs {
			key, err := json.Marshal(ev.Key)
			if err != nil {
				return tb, err
			}
			after, err := json.Marshal(ev.After)
			if err != nil {
				return tb, err
			}
			// The row's JSON in the Table's form: keys sorted.
			var obj map[string]any
			if err := json.Unmarshal(after, &obj); err != nil {
				return tb, err
			}
			if after, err = json.Marshal(obj); err != nil {
				return tb, err
			}
			tb.Rows = append(tb.Rows, []string{string(ev.Op), ev.Database, ev.Schema + "." + ev.Table, string(key), ev.LSN,
				ev.CommitTime.UTC().Format(time.RFC3339Nano), string(after)})
		}
	}
	return tb, nil
}

// publishedRows reads every message of SLUICE_CDC back into the
// SnapshotRow lines its events were published from, and sums them as the
// sink sums its tasks' lines.
func publishedRows(ctx context.Context, stream jetstream.Stream, slot string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	info, err := stream.Info(ctx)
	if err != nil {
		return sum, err
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return sum, fmt.Errorf("message %d: %w", seq, err)
		}
		id := nats.Header(m.Header).Get(jetstream.MsgIDHeader)
		parts := strings.Split(id, ":") // <slot>:snapshot:<lsn>:<schema>.<table>:<chunk>:<first row>
		if len(parts) != 6 || parts[0] != slot || parts[1] != "snapshot" {
			return sum, fmt.Errorf("message %d: id %q is not a snapshot message id", seq, id)
		}
		first, err := strconv.ParseInt(parts[5], 10, 64)
		if err != nil {
			return sum, fmt.Errorf("message %d: id %q: %w", seq, id, err)
		}
		evs, err := protocol.DecodeChangeEvents(m.Data)
		if err != nil {
			return sum, fmt.Errorf("message %d: %w", seq, err)
		}
		for i, ev := range evs {
			if ev.Op != protocol.OpRead || ev.LSN != parts[2] || ev.CommitLSN != parts[2] || ev.Schema+"."+ev.Table != parts[3] {
				return sum, fmt.Errorf("message %d (%s): event %d is %s at %s of %s.%s", seq, id, i+1, ev.Op, ev.LSN, ev.Schema, ev.Table)
			}
			line, err := json.Marshal(pgcdc.SnapshotRow{
				Database: ev.Database, Schema: ev.Schema, Table: ev.Table, Key: ev.Key, LSN: ev.LSN, Time: ev.CommitTime,
				Chunk: parts[4], N: first + int64(i), Row: ev.After,
			})
			if err != nil {
				return sum, err
			}
			sum.Add(line)
		}
	}
	return sum, nil
}
