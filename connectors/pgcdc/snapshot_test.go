package pgcdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// withOptions returns dsn with server settings in its options parameter.
func withOptions(t *testing.T, dsn, options string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		// In CI every integration test runs: a DSN this cannot use is a
		// broken setup, not a reason to pass.
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatalf("the test DSN (SLUICE_TEST_PG) is not a URL: cannot add options to it")
		}
		t.Skipf("the test DSN (SLUICE_TEST_PG) is not a URL: cannot add options to it")
	}
	// pgx does not read '+' as a space in a URL.
	esc := strings.ReplaceAll(url.QueryEscape(options), "+", "%20")
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += "options=" + esc
	return u.String()
}

// writers runs n goroutines that insert, update (some changing the key) and
// delete rows of the three tables until the returned stop is called; stop
// returns the first error and how many transactions committed.
func writers(t *testing.T, dsn, schema string, n, rows int) (stop func() (int64, error), committed *atomic.Int64) {
	t.Helper()
	// Writers stop between transactions, never by cancelling one: a
	// COMMIT cancelled on the client may still commit on the server after
	// stop returned, past the end position the test waits for.
	stopped := new(atomic.Bool)
	committed = new(atomic.Int64)
	nextID := new(atomic.Int64)
	nextID.Store(int64(rows) * 10)
	g, gctx := errgroup.WithContext(context.Background())
	for w := range n {
		g.Go(func() error {
			conn, err := pgx.Connect(gctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			names := []string{"''", "NULL", "'x'", "'ünï 日本 " + fmt.Sprint(w) + "'", `E'q"\\t\n'`}
			for gctx.Err() == nil && !stopped.Load() {
				id := rnd.IntN(rows) + 1
				name := names[rnd.IntN(len(names))]
				var sqls []string
				switch rnd.IntN(9) {
				case 0, 1:
					sqls = []string{fmt.Sprintf(`INSERT INTO %s.a VALUES (%d, %s, 'w')`, schema, nextID.Add(1), name)}
				case 2, 3:
					sqls = []string{fmt.Sprintf(`UPDATE %s.a SET name = %s, note = note || '+' WHERE id = %d`, schema, name, id)}
				case 4:
					sqls = []string{fmt.Sprintf(`UPDATE %s.a SET id = %d WHERE id = %d`, schema, nextID.Add(1), id)}
				case 5:
					sqls = []string{
						fmt.Sprintf(`DELETE FROM %s.a WHERE id = %d`, schema, id),
						fmt.Sprintf(`DELETE FROM %s.c WHERE id = %d AND k = 'k1'`, schema, id),
					}
				case 6:
					sqls = []string{
						fmt.Sprintf(`UPDATE %s.b SET ts = ts + interval '1 hour', f = f * 3, blob = NULL, iv = iv * 2 WHERE id = %d`, schema, id),
						fmt.Sprintf(`INSERT INTO %s.b VALUES (%d, now(), 1e-7, '\x00ff'::bytea, 12.5, interval '1 day 2 hours')`, schema, nextID.Add(1)),
					}
				case 7:
					sqls = []string{fmt.Sprintf(`DELETE FROM %s.b WHERE id = %d`, schema, id)}
				case 8:
					sqls = []string{
						fmt.Sprintf(`UPDATE %s.c SET v = %s WHERE id = %d`, schema, name, id),
						fmt.Sprintf(`INSERT INTO %s.c VALUES (%d, 'k2', 'new')`, schema, nextID.Add(1)),
					}
				}
				if _, err := conn.Exec(context.Background(), "BEGIN; "+strings.Join(sqls, "; ")+"; COMMIT"); err != nil {
					return fmt.Errorf("%v: %w", sqls, err)
				}
				committed.Add(1)
				time.Sleep(time.Millisecond)
			}
			return nil
		})
	}
	return func() (int64, error) {
		stopped.Store(true)
		err := g.Wait()
		return committed.Load(), err
	}, committed
}

// truth reads a table as it is now, or as snapshot sees it when not empty,
// without its generated columns (which logical replication does not send),
// rendered under the postgres package's session settings, keyed like the
// rebuilt tables.
func truth(t *testing.T, dsn, table string, key []string, snapshot string) map[string]protocol.Row {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range postgres.SessionParams() {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if snapshot != "" {
		if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
			t.Fatal(err)
		}
	}
	var cols string
	err = conn.QueryRow(ctx, `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`, table).Scan(&cols)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]protocol.Row{}
	rr := conn.PgConn().ExecParams(ctx, "SELECT "+cols+" FROM "+table, nil, nil, nil, nil)
	fields := rr.FieldDescriptions()
	for rr.NextRow() {
		row := protocol.Row{}
		for i, v := range rr.Values() {
			if v == nil {
				row[fields[i].Name] = protocol.NullValue
			} else {
				row[fields[i].Name] = protocol.Text(string(v))
			}
		}
		out[keyOf(t, row, key)] = row
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyOf(t *testing.T, row protocol.Row, key []string) string {
	t.Helper()
	parts := make([]string, len(key))
	for i, k := range key {
		v, ok := row[k]
		if !ok || v.Null || v.Unchanged {
			t.Fatalf("row %v has no value for key column %s", short(row), k)
		}
		parts[i] = v.Text
	}
	return strings.Join(parts, "\x00")
}

// task runs one partition as a worker does: OpenTask, Read into Write,
// Close (or Abort on a failed read).
func task(ctx context.Context, src connectors.Source, sink connectors.Sink, run string, attempt int, p protocol.Partition) (connectors.TaskOutput, error) {
	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: p.Key, Pipeline: "snap", Attempt: attempt})
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	if err := src.Read(ctx, p, func(ctx context.Context, b connectors.Batch) error { return tw.Write(ctx, b) }); err != nil {
		tw.Abort(ctx)
		return connectors.TaskOutput{}, err
	}
	return tw.Close(ctx)
}

// streamEvents counts the events and messages of SLUICE_CDC (by their
// Sluice-Events headers).
func streamEvents(t *testing.T, js jetstream.JetStream) (events, msgs uint64) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return 0, 0
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for msgs < info.State.Msgs {
		batch, err := cons.Fetch(int(min(info.State.Msgs-msgs, 5000)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			n, err := strconv.Atoi(m.Headers().Get(protocol.HeaderEvents))
			if err != nil || n != protocol.CountChangeEvents(m.Data()) {
				t.Fatalf("message on %s: %s header %q, holds %d events", m.Subject(), protocol.HeaderEvents, m.Headers().Get(protocol.HeaderEvents), protocol.CountChangeEvents(m.Data()))
			}
			events += uint64(n)
			msgs++
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages", msgs, info.State.Msgs)
		}
	}
	return events, msgs
}

// TestSnapshotThenStream: three tables (NULL and the empty string, unicode,
// timestamps, floats, bytea, intervals, a generated column, replica identities
// DEFAULT, FULL and USING INDEX on a composite key) are snapshotted in chunk
// tasks through the snapshot source and the sluice_cdc sink while writers keep
// changing them; then a Reader streams the same slot. Applying the stream in
// order rebuilds every table exactly; per table every read event comes before
// every change event, and every change committed after the snapshot's
// consistent LSN. A chunk read again publishes nothing new; a second slot with
// the same name is refused; once released, the snapshot is gone for good. Every
// connection runs with server settings (options) that would render values
// differently, which both sides must override alike.
func TestSnapshotThenStream(t *testing.T) {
	e := setup(t, "a", "b", "c")
	s := e.schema
	ctx := context.Background()
	const rows = 3000
	e.exec(t, fmt.Sprintf(`
		CREATE TABLE %[1]s.a (id int PRIMARY KEY, name text, note text, shout text GENERATED ALWAYS AS (upper(name)) STORED);
		CREATE TABLE %[1]s.b (id bigint PRIMARY KEY, ts timestamptz, f float8, blob bytea, amount numeric(20,6), iv interval);
		ALTER TABLE %[1]s.b REPLICA IDENTITY FULL;
		CREATE TABLE %[1]s.c (id int, k text, v text, PRIMARY KEY (id, k));
		CREATE UNIQUE INDEX c_ident ON %[1]s.c (k, id);
		ALTER TABLE %[1]s.c REPLICA IDENTITY USING INDEX c_ident;
		INSERT INTO %[1]s.a SELECT g, CASE g %% 4 WHEN 0 THEN '' WHEN 1 THEN NULL WHEN 2 THEN 'héllo 日本語 ' || g ELSE E'tab\there "q" \\ ' || g END, md5(g::text)
			FROM generate_series(1, %[2]d) g;
		INSERT INTO %[1]s.b SELECT g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1.5 s', g / 7.0,
			CASE WHEN g %% 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END, g * 1.000001, g * interval '1 min 1.5 s'
			FROM generate_series(1, %[2]d) g;
		INSERT INTO %[1]s.c SELECT g / 2, 'k' || g %% 2, CASE g %% 5 WHEN 0 THEN '' WHEN 1 THEN NULL ELSE 'ü' || g END
			FROM generate_series(2, %[2]d + 1) g;
		ANALYZE %[1]s.a; ANALYZE %[1]s.b; ANALYZE %[1]s.c`, s, rows))
	keys := map[string][]string{"a": {"id"}, "b": {"id"}, "c": {"id", "k"}}

	// Settings that would change how values render, on every connection of
	// the snapshot and the Reader.
	dsn := withOptions(t, e.dsn, "-c TimeZone=Asia/Tokyo -c DateStyle=SQL,DMY -c IntervalStyle=sql_standard -c extra_float_digits=0 -c bytea_output=escape")
	e.cfg.DSN = dsn

	stopWriters, committed := writers(t, e.dsn, s, 3, rows)
	writersStopped := false
	defer func() {
		if !writersStopped {
			stopWriters()
		}
	}()
	for wait := time.Now().Add(10 * time.Second); committed.Load() < 30; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(wait) {
			_, err := stopWriters()
			writersStopped = true
			t.Fatalf("writers committed %d transactions in 10s: %v", committed.Load(), err)
		}
	}

	reg := connectors.NewRegistry()
	pgcdc.Register(reg, e.js)
	srcConfig, _ := json.Marshal(pgcdc.SnapshotConfig{
		DSN: dsn, Tables: e.cfg.Tables, Slot: e.cfg.Slot, Publication: e.cfg.Publication, TargetRows: rows / 4,
	})
	sinkConfig, _ := json.Marshal(pgcdc.EventsConfig{Pipeline: "p1", Slot: e.cfg.Slot})
	for _, v := range []struct {
		kind   string
		role   connectors.Role
		config json.RawMessage
	}{{pgcdc.SnapshotKind, connectors.RoleSource, srcConfig}, {pgcdc.EventsKind, connectors.RoleSink, sinkConfig}} {
		if err := reg.Validate(v.kind, v.role, v.config, nil); err != nil {
			t.Fatalf("validate %s: %v", v.kind, err)
		}
	}
	leaderSrc, err := reg.OpenSource(ctx, pgcdc.SnapshotKind, srcConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer leaderSrc.Close()
	workerSrc, err := reg.OpenSource(ctx, pgcdc.SnapshotKind, srcConfig)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := reg.OpenSink(ctx, pgcdc.EventsKind, sinkConfig)
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	plan, err := leaderSrc.Plan(ctx, connectors.PlanRequest{RunID: "snap1", Pipeline: "snap"})
	if err != nil {
		t.Fatal(err)
	}
	consistent := lsn(t, plan.Watermark)
	chunks := map[string]int{}
	for _, p := range plan.Partitions {
		table, chunk, ok := strings.Cut(p.Key, " ")
		if !ok || !slices.Contains(e.cfg.Tables, table) || chunk == "" {
			t.Fatalf("partition key %q, want <schema>.<table> <chunk>", p.Key)
		}
		chunks[table]++
	}
	for _, table := range e.cfg.Tables {
		if chunks[table] < 2 {
			t.Fatalf("table %s has %d chunks, want several (partitions %d)", table, chunks[table], len(plan.Partitions))
		}
	}
	t.Logf("planned %d chunks at consistent LSN %s in %s", len(plan.Partitions), plan.Watermark, time.Since(began).Round(time.Millisecond))

	// A snapshot starts only with its slot.
	if _, err := pgcdc.CreateSlotWithSnapshot(ctx, dsn, e.cfg.Slot); !errors.Is(err, pgcdc.ErrSlotExists) {
		t.Fatalf("second CreateSlotWithSnapshot: %v, want ErrSlotExists", err)
	}
	if _, err := workerSrc.Plan(ctx, connectors.PlanRequest{RunID: "snap2"}); !errors.Is(err, pgcdc.ErrSlotExists) || !connectors.IsPermanent(err) {
		t.Fatalf("Plan on an existing slot: %v, want a permanent ErrSlotExists", err)
	}

	// The tasks, four at a time, as workers would run them.
	began = time.Now()
	var mu sync.Mutex
	var outs []connectors.TaskOutput
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, p := range plan.Partitions {
		g.Go(func() error {
			out, err := task(gctx, workerSrc, sink, "snap1", 1, p)
			if err != nil {
				return fmt.Errorf("task %s: %w", p.Key, err)
			}
			mu.Lock()
			outs = append(outs, out)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var snapRows int64
	for _, o := range outs {
		snapRows += o.Rows
	}
	// Every chunk published its table's snapshot event first, which the
	// task's rows do not count; the stream keeps one per table.
	t.Logf("snapshot: %d read events in %s", snapRows, time.Since(began).Round(time.Millisecond))
	snapEvents, snapMsgs := streamEvents(t, e.js)
	if snapEvents != uint64(snapRows)+uint64(len(e.cfg.Tables)) {
		t.Fatalf("stream holds %d events after the snapshot tasks reported %d rows and %d chunks of %d tables", snapEvents, snapRows, len(plan.Partitions), len(e.cfg.Tables))
	}
	t.Logf("%d read events in %d messages", snapEvents, snapMsgs)
	// A chunk read again (a retried task) publishes nothing new.
	again, err := task(ctx, workerSrc, sink, "snap1", 2, plan.Partitions[1])
	if err != nil {
		t.Fatal(err)
	}
	if again.Rows == 0 {
		t.Fatalf("chunk %s read no rows", plan.Partitions[1].Key)
	}
	if got, gotMsgs := streamEvents(t, e.js); got != snapEvents || gotMsgs != snapMsgs {
		t.Fatalf("stream holds %d events in %d messages after a chunk was read again, want %d in %d", got, gotMsgs, snapEvents, snapMsgs)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "snap1", Tasks: outs, Watermark: plan.Watermark}); err != nil {
		t.Fatal(err)
	}

	// What the exported snapshot holds, read while the run holds it (the
	// snapshot's name is in every partition, by the postgres source).
	var spec struct {
		Inner struct {
			Snapshot string `json:"snapshot"`
		} `json:"inner"`
	}
	if err := json.Unmarshal(plan.Partitions[0].Spec, &spec); err != nil || spec.Inner.Snapshot == "" {
		t.Fatalf("no snapshot in partition spec %s: %v", plan.Partitions[0].Spec, err)
	}
	atSnapshot := map[string]map[string]protocol.Row{}
	for table, key := range keys {
		atSnapshot[table] = truth(t, e.dsn, s+"."+table, key, spec.Inner.Snapshot)
	}

	// The run ends: its snapshot is gone for good.
	if err := leaderSrc.(connectors.RunHolder).ReleaseRun("snap1"); err != nil {
		t.Fatal(err)
	}
	err = workerSrc.Read(ctx, plan.Partitions[0], func(context.Context, connectors.Batch) error { return nil })
	if !errors.Is(err, postgres.ErrSnapshotGone) || !connectors.IsPermanent(err) {
		t.Fatalf("Read after release: %v, want a permanent ErrSnapshotGone", err)
	}

	// Stream the slot while the writers go on, then stop them and wait for
	// the Reader to pass the last change.
	r, stopReader, _ := e.start(t)
	time.Sleep(300 * time.Millisecond)
	n, err := stopWriters()
	writersStopped = true
	if err != nil {
		t.Fatal(err)
	}
	var end string
	if err := e.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for st := r.Status(); st.ConfirmedLSN == "" || lsn(t, st.ConfirmedLSN) < lsn(t, end); st = r.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("reader confirmed %s, not past %s, after 60s", st.ConfirmedLSN, end)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stopReader(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	totalEvents, _ := streamEvents(t, e.js)
	total := int(totalEvents)
	msgs := e.events(t, total)
	checkIDs(t, e.cfg.Slot, slices.DeleteFunc(slices.Clone(msgs), func(s stored) bool { return s.ev.Op == protocol.OpRead || s.ev.Op == protocol.OpSnapshot }))
	t.Logf("%d transactions by the writers; stream: %d read events then %d change events", n, snapRows, total-int(snapEvents))

	// Apply the stream in order.
	rebuilt := map[string]map[string]protocol.Row{"a": {}, "b": {}, "c": {}}
	read := map[string]map[string]protocol.Row{"a": {}, "b": {}, "c": {}}
	changed := map[string]bool{}
	begun := map[string]bool{}
	ids := map[string]bool{}
	reads, changes, readMsgs := 0, 0, 0
	for i, m := range msgs {
		ev := m.ev
		if m.first && ids[m.id] {
			t.Fatalf("message %d: msg id %s twice", i, m.id)
		}
		ids[m.id] = true
		tab, ok := rebuilt[ev.Table]
		if !ok || ev.Schema != s {
			t.Fatalf("message %d: event of %s.%s", i, ev.Schema, ev.Table)
		}
		key := keys[ev.Table]
		if !slices.Equal(ev.Key, key) {
			t.Fatalf("message %d: %s event of %s with key %v, want %v", i, ev.Op, ev.Table, ev.Key, key)
		}
		switch ev.Op {
		case protocol.OpSnapshot:
			if begun[ev.Table] || changed[ev.Table] || len(read[ev.Table]) > 0 || lsn(t, ev.LSN) != consistent ||
				m.id != pgcdc.SnapshotBeginMsgID(e.cfg.Slot, ev.LSN, s, ev.Table) {
				t.Fatalf("message %d (%s): snapshot event of %s at %s, want one per table, before its rows, at %s", i, m.id, ev.Table, ev.LSN, plan.Watermark)
			}
			begun[ev.Table] = true
		case protocol.OpRead:
			reads++
			if !begun[ev.Table] {
				t.Fatalf("message %d: read event of %s before its snapshot event", i, ev.Table)
			}
			if changed[ev.Table] {
				t.Fatalf("message %d: read event of %s after a change event of it", i, ev.Table)
			}
			if lsn(t, ev.LSN) != consistent || lsn(t, ev.CommitLSN) != consistent || ev.Pipeline != "p1" || ev.Database == "" {
				t.Fatalf("message %d: read event lsn %s commit %s pipeline %q database %q, want lsn %s", i, ev.LSN, ev.CommitLSN, ev.Pipeline, ev.Database, plan.Watermark)
			}
			if !strings.HasPrefix(m.id, e.cfg.Slot+":snapshot:"+ev.LSN+":"+s+"."+ev.Table+":") {
				t.Fatalf("message %d: read event msg id %q", i, m.id)
			}
			if m.first {
				readMsgs++
			}
			k := keyOf(t, ev.After, key)
			if _, dup := read[ev.Table][k]; dup {
				t.Fatalf("message %d: row %q of %s read twice", i, k, ev.Table)
			}
			read[ev.Table][k] = ev.After
			tab[k] = ev.After
		case protocol.OpInsert, protocol.OpUpdate, protocol.OpDelete:
			changes++
			changed[ev.Table] = true
			if lsn(t, ev.CommitLSN) <= consistent {
				t.Fatalf("message %d: %s of %s committed at %s, not after the snapshot's %s", i, ev.Op, ev.Table, ev.CommitLSN, plan.Watermark)
			}
			if ev.Before != nil && ev.Op != protocol.OpInsert {
				delete(tab, keyOf(t, ev.Before, key))
			}
			if ev.After != nil {
				tab[keyOf(t, ev.After, key)] = ev.After
			}
		default:
			t.Fatalf("message %d: unexpected %s event", i, ev.Op)
		}
	}
	if int64(reads) != snapRows || changes == 0 {
		t.Fatalf("%d read events (the tasks reported %d) and %d change events", reads, snapRows, changes)
	}
	if readMsgs+len(begun) != int(snapMsgs) || readMsgs >= reads/10 {
		t.Errorf("%d read events in %d messages (%d before the stream): want rows of a chunk packed together", reads, readMsgs, snapMsgs)
	}
	for _, table := range []string{"a", "b", "c"} {
		// The read events are exactly the snapshot's rows, and the stream
		// applied over them gives exactly the table as it is now.
		sameRows(t, "read events of "+table, read[table], "the snapshot", atSnapshot[table])
		sameRows(t, "rebuilt "+table, rebuilt[table], "the table", truth(t, e.dsn, s+"."+table, keys[table], ""))
	}
}

func sameRows(t *testing.T, what string, got map[string]protocol.Row, of string, want map[string]protocol.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d rows, %s holds %d", what, len(got), of, len(want))
	}
	bad := 0
	for k, w := range want {
		if g, ok := got[k]; !ok || !rowsEqual(g, w) {
			if bad++; bad <= 3 {
				t.Errorf("%s, key %q: %v, %s holds %v", what, k, short(g), of, short(w))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d rows differ from %s", what, bad, of)
	}
}

// TestSnapshotPlanChecksTables: a table that does not exist fails the plan
// with a field error before any slot is created.
func TestSnapshotPlanChecksTables(t *testing.T) {
	e := setup(t, "a", "missing")
	e.exec(t, fmt.Sprintf(`CREATE TABLE %s.a (id int PRIMARY KEY)`, e.schema))
	src, err := pgcdc.NewSnapshotSource(pgcdc.SnapshotConfig{DSN: e.dsn, Tables: e.cfg.Tables, Slot: e.cfg.Slot, Publication: e.cfg.Publication})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = src.Plan(context.Background(), connectors.PlanRequest{RunID: "r1"})
	var fe *connectors.FieldError
	if !errors.As(err, &fe) || fe.Field != "tables[1]" {
		t.Fatalf("Plan with a missing table: %v, want a field error on tables[1]", err)
	}
	var exists bool
	if err := e.conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", e.cfg.Slot).Scan(&exists); err != nil || exists {
		t.Fatalf("slot exists after a failed plan: %v %v", exists, err)
	}
}

func TestSnapshotConfigValidate(t *testing.T) {
	good := pgcdc.SnapshotConfig{DSN: "postgres://u@h/db", Tables: []string{"public.t", "s.u"}, Slot: "s1", Publication: "p1", TargetRows: 10}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*pgcdc.SnapshotConfig)
	}{
		{"dsn", func(c *pgcdc.SnapshotConfig) { c.DSN = "" }},
		{"dsn", func(c *pgcdc.SnapshotConfig) { c.DSN = "nonsense" }},
		{"tables", func(c *pgcdc.SnapshotConfig) { c.Tables = nil }},
		{"tables[1]", func(c *pgcdc.SnapshotConfig) { c.Tables = []string{"public.t", "t"} }},
		{"tables[1]", func(c *pgcdc.SnapshotConfig) { c.Tables = []string{"public.t", "public.t"} }},
		{"tables[0]", func(c *pgcdc.SnapshotConfig) { c.Tables = []string{"a.b.c"} }},
		{"slot", func(c *pgcdc.SnapshotConfig) { c.Slot = "Bad-Slot" }},
		{"publication", func(c *pgcdc.SnapshotConfig) { c.Publication = "" }},
		{"target_rows", func(c *pgcdc.SnapshotConfig) { c.TargetRows = -1 }},
	} {
		c := good
		tc.mut(&c)
		checkField(t, c.Validate(), tc.field)
	}
	checkField(t, pgcdc.ValidateSnapshotConfig(json.RawMessage(`{"dsn":"postgres://h/d","tables":["s.t"],"slot":"s","publication":"p","snapshot":"x"}`)), "snapshot")
	checkField(t, pgcdc.ValidateSnapshotConfig(json.RawMessage(`{"dsn":"postgres://h/d","tables":"s.t","slot":"s","publication":"p"}`)), "tables")
}

func TestEventsConfigValidate(t *testing.T) {
	good := pgcdc.EventsConfig{Pipeline: "p1", Slot: "s1"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*pgcdc.EventsConfig)
	}{
		{"pipeline", func(c *pgcdc.EventsConfig) { c.Pipeline = "a.b" }},
		{"slot", func(c *pgcdc.EventsConfig) { c.Slot = "" }},
		{"max_in_flight", func(c *pgcdc.EventsConfig) { c.MaxInFlight = -1 }},
	} {
		c := good
		tc.mut(&c)
		checkField(t, c.Validate(), tc.field)
	}
	checkField(t, pgcdc.ValidateEventsConfig(json.RawMessage(`{"pipeline":"p1","slot":"s1","stream":"X"}`)), "stream")
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	var fe *connectors.FieldError
	if !errors.As(err, &fe) || fe.Field != field {
		t.Errorf("error %v, want a field error on %q", err, field)
	}
}

// TestEventsSinkWithoutJetStream: a process that registered the sink
// without JetStream can validate and commit, but not run a task.
func TestEventsSinkWithoutJetStream(t *testing.T) {
	reg := connectors.NewRegistry()
	pgcdc.Register(reg, nil)
	sink, err := reg.OpenSink(context.Background(), pgcdc.EventsKind, json.RawMessage(`{"pipeline":"p1","slot":"s1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.OpenTask(context.Background(), connectors.TaskRef{RunID: "r", TaskID: "t"}); err == nil || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("OpenTask without JetStream: %v", err)
	}
	if _, err := sink.Commit(context.Background(), connectors.CommitRequest{RunID: "r"}); err != nil {
		t.Fatal(err)
	}
	if !reg.HasSource(pgcdc.SnapshotKind) || !reg.HasSink(pgcdc.EventsKind) {
		t.Fatalf("kinds registered: %v", reg.Kinds())
	}
}
