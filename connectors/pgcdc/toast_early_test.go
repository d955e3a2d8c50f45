package pgcdc_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// TestIncrementalSnapshotTOASTBeforeFirstChunk: a table added to a
// streaming pipeline is written to before the first chunk of its
// incremental snapshot is read (held back here: a transaction held open
// that the Reader is told it delivered, so the chunk starts again and
// again). Updates that leave its big TOASTed column unchanged reach the
// PostgreSQL applier before any chunk brings their rows: the table's
// snapshot event, published before any of its changes, tells the applier
// to leave them to the chunks instead of stopping the table. The replica
// of both tables then equals the source by count and checksum of every
// column, with no table stopped.
func TestIncrementalSnapshotTOASTBeforeFirstChunk(t *testing.T) {
	e := setup(t, "a")
	_, dst, _ := pgtest.DB(t)
	// big is stored out of line, uncompressed: an update of v leaves it
	// unchanged (TOAST) in the stream.
	e.exec(t, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text);
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text, big text);
		ALTER TABLE %[1]s.b ALTER COLUMN big SET STORAGE EXTERNAL;
		INSERT INTO %[1]s.b SELECT g, 'v' || g, repeat(md5(g::text), 100) FROM generate_series(1, 300) g`, e.schema))
	a, b := e.schema+".a", e.schema+".b"

	// a streams to the replica; then b is added.
	_, first, _ := e.start(t)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: e.dsn, Schema: dst, Pipeline: "rep", CreateTables: true})
	run, _, done := cdctest.Run(t, e.js, cdcapply.Config{Pipeline: "rep", Upstream: "p1", BatchWait: 20 * time.Millisecond}, pg)
	e.exec(t, fmt.Sprintf(`INSERT INTO %s SELECT g, 'a' || g FROM generate_series(1, 100) g`, a))
	if err := first(); err != nil {
		t.Fatal(err)
	}
	e.cfg.Tables = []string{a, b}
	e.cfg.Snapshots = []protocol.TableSnapshot{{ID: "s1", Table: b, Reason: protocol.SnapshotAdded}}
	e.cfg.ChunkRows = 70
	applied := func(r *pgcdc.Reader, what string) {
		t.Helper()
		last := published(t, e, r)
		cdctest.WaitFor(t, what, done, func() bool { return run.Status().Applied == last })
	}
	// held runs a Reader of b's snapshot whose first chunk is held back
	// while b is written to (updates that leave big unchanged, of rows no
	// chunk read yet, an insert and a delete), and checks that no table
	// stopped on the replica; then it lets the chunks be read.
	held := func(r *pgcdc.Reader, round int) (stop func() error) {
		t.Helper()
		xid, endHeld := e.holdTx(t)
		pgcdc.SeedDelivered(r, xid)
		stop, _ = e.run(t, r)
		for i := range 5 {
			e.exec(t, fmt.Sprintf(`UPDATE %[1]s SET v = v || '+' WHERE id %% 5 = %[2]d;
				INSERT INTO %[1]s VALUES (%[3]d, 'new', repeat('x', 3000));
				DELETE FROM %[1]s WHERE id = %[4]d;
				UPDATE %[5]s SET v = v || '+' WHERE id %% 7 = %[2]d`, b, i, 1000*round+i, 10*round+i, a))
		}
		applied(r, fmt.Sprintf("the changes before b's first chunk (round %d)", round))
		if st := r.Status().Snapshots; len(st) != 1 || st[0].Rows != 0 {
			t.Fatalf("round %d: snapshot status %+v: want no row read yet (the first chunk held back)", round, st)
		}
		if st := pg.TableStatus(); len(st) != 0 {
			t.Fatalf("round %d: tables stopped on the replica by changes before b's first chunk: %+v", round, st)
		}
		endHeld()
		return stop
	}
	r, err := pgcdc.NewReader(e.cfg, e.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := held(r, 1)
	// Stopped once a chunk was read, and written to meanwhile: the next
	// Reader takes the snapshot again from its start.
	cdctest.WaitFor(t, "a chunk of b", done, func() bool { return r.Status().Snapshots[0].Rows > 0 })
	e.exec(t, fmt.Sprintf(`UPDATE %[1]s SET v = v || '-' WHERE id %% 3 = 0`, b))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.exec(t, fmt.Sprintf(`UPDATE %[1]s SET v = v || '~' WHERE id %% 3 = 1`, b))
	if r, err = pgcdc.NewReader(e.cfg, e.js, nil); err != nil {
		t.Fatal(err)
	}
	held(r, 2)
	for i := range 3 {
		e.exec(t, fmt.Sprintf(`UPDATE %[1]s SET v = v || '*' WHERE id %% 3 = %[2]d`, b, i))
	}
	cdctest.WaitFor(t, "the snapshot of b", done, func() bool {
		st := r.Status().Snapshots
		return len(st) == 1 && st[0].State == protocol.TableSnapshotted
	})
	e.exec(t, fmt.Sprintf(`UPDATE %[1]s SET v = v || '!' WHERE id %% 4 = 0`, b))
	applied(r, "every change")
	for _, tb := range []string{"a", "b"} {
		wn, wsum := pgtest.Checksum(t, e.conn, e.schema+"."+tb, "id")
		gn, gsum := pgtest.Checksum(t, e.conn, dst+"."+tb, "id")
		if wn != gn || wsum != gsum {
			t.Errorf("replica %s holds %d rows (md5 %s), the source %d (md5 %s)", tb, gn, gsum, wn, wsum)
		}
	}
	if wn, _ := pgtest.Checksum(t, e.conn, b, "id"); wn != 300 {
		t.Errorf("the source b holds %d rows, want 300", wn)
	}
	if st := pg.TableStatus(); len(st) != 0 {
		t.Errorf("tables stopped on the replica: %+v", st)
	}
	// b's first event in the stream is its snapshot event; each Reader
	// published one (the second may also have published the first's
	// again, dropped by JetStream as a duplicate), and the first may have
	// ended its snapshot before it was stopped.
	var head protocol.Op
	var marks []protocol.Op
	for _, ev := range cdctest.StreamEvents(t, e.js) {
		if ev.Table != "b" {
			continue
		}
		if head == "" {
			head = ev.Op
		}
		if ev.Op == protocol.OpSnapshot || ev.Op == protocol.OpSnapshotDone {
			marks = append(marks, ev.Op)
		}
	}
	want := []protocol.Op{protocol.OpSnapshot, protocol.OpSnapshot, protocol.OpSnapshotDone}
	if len(marks) == 4 {
		want = slices.Insert(want, 1, protocol.OpSnapshotDone)
	}
	if head != protocol.OpSnapshot || !slices.Equal(marks, want) {
		t.Errorf("b's first event is a %s event, its snapshot events are %v; want a snapshot event first, and %v", head, marks, want)
	}
}

// published waits until r confirmed everything committed on the source so
// far, and returns the last sequence of SLUICE_CDC.
func published(t *testing.T, e *env, r *pgcdc.Reader) uint64 {
	t.Helper()
	var now string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	want, err := pglogrepl.ParseLSN(now)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, _ := pglogrepl.ParseLSN(r.Status().ConfirmedLSN); got >= want {
			return cdctest.LastSeq(t, e.js)
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader confirmed %s, not %s", r.Status().ConfirmedLSN, now)
		}
	}
}
