package cdcapply_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// TestPgcdcToPostgres: real DML on a source schema, captured by a pgcdc
// Reader into SLUICE_CDC, applied by Runs that are stopped and restarted in
// between, leaves target tables equal to the source tables: inserts,
// updates leaving TOASTed values unchanged (REPLICA IDENTITY DEFAULT and
// FULL), key changes, deletes and a truncate, on every common type.
func TestPgcdcToPostgres(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	ctx := context.Background()
	const ordersDDL = `CREATE TABLE %s.orders (id int PRIMARY KEY, k text, v text, big text)`
	for _, s := range []string{src, dst} {
		pgtest.Exec(t, conn, fmt.Sprintf(pgtest.TypesDDL, s))
		pgtest.Exec(t, conn, fmt.Sprintf(ordersDDL, s))
		pgtest.Exec(t, conn, fmt.Sprintf(`ALTER TABLE %s.types ADD COLUMN big text`, s))
	}
	pgtest.Exec(t, conn, fmt.Sprintf(`ALTER TABLE %s.orders REPLICA IDENTITY FULL`, src))
	cols := append(append([]string{}, pgtest.TypesColumns...), "big")

	rd := cdctest.StartReader(t, js, pgcdc.Config{
		DSN: dsn, Slot: src + "_slot", Publication: src + "_pub", Tables: []string{src + ".types", src + ".orders"}, Pipeline: "up",
	})
	published := rd.Published

	const bigSQL = "(SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 300) i)"
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %[1]s.types SELECT g, g * 1000.000001, E'row ''%%s'' "q" \\ \n ü ' || g, jsonb_build_object('g', g, 'a', ARRAY[g, g+1]),
		ARRAY[g, NULL, -g], ARRAY['a,b', NULL, '', E'x\\y', g::text], decode(md5(g::text), 'hex'), '2024-05-01 10:00:00.5+02'::timestamptz + g * interval '1 hour',
		'2024-01-01'::date + g, g / 7.0, g %% 2 = 0, md5(g::text)::uuid, g * interval '1 minute', 'vc' || g, CASE WHEN g %% 3 = 0 THEN '' END,
		CASE WHEN g %% 10 = 0 THEN %[2]s END
		FROM generate_series(1, 300) g`, src, bigSQL))
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %[1]s.orders SELECT g, 'k' || g, 'v', %[2]s FROM generate_series(1, 40) g`, src, bigSQL))
	phase1 := published()

	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "apply1"})
	acfg := cdcapply.Config{Pipeline: "apply1", Upstream: "up", BatchSize: 40, BatchWait: 50 * time.Millisecond}
	r, stop, done := cdctest.Run(t, js, acfg, pg)
	cdctest.WaitFor(t, "some batches", done, func() bool { return r.Status().Events >= 120 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.Status().Applied; got >= phase1 {
		t.Logf("the first Run applied everything (%d) before it was stopped", got)
	}

	// Changes while no Run applies them.
	for _, sql := range []string{
		// Updates leaving the TOASTed big unchanged (DEFAULT identity).
		`UPDATE %[1]s.types SET n = n * 3, j = j || '{"u": 1}' WHERE id %% 10 = 0`,
		// Key changes, with big unchanged.
		`UPDATE %[1]s.types SET id = id + 1000 WHERE id %% 20 = 0`,
		`DELETE FROM %[1]s.types WHERE id %% 7 = 0`,
		`BEGIN; UPDATE %[1]s.orders SET v = 'v2' WHERE id <= 20; DELETE FROM %[1]s.orders WHERE id > 35; COMMIT`,
		`UPDATE %[1]s.orders SET id = id + 100 WHERE id <= 5`,
		`UPDATE %[1]s.types SET t = NULL, e = '' WHERE id %% 11 = 0`,
	} {
		pgtest.Exec(t, conn, fmt.Sprintf(sql, src))
	}
	published()
	r, stop, done = cdctest.Run(t, js, acfg, pg)
	cdctest.WaitFor(t, "some more", done, func() bool { return r.Status().Applied > phase1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`TRUNCATE %[1]s.orders`,
		`INSERT INTO %[1]s.orders SELECT g, 'k' || g, 'again', %[2]s FROM generate_series(1, 10) g`,
		`UPDATE %[1]s.orders SET v = 'again2' WHERE id %% 2 = 0`,
		`BEGIN; DELETE FROM %[1]s.types WHERE id = 1; INSERT INTO %[1]s.types (id, t) VALUES (1, 'reinserted'); UPDATE %[1]s.types SET id = 5000 WHERE id = 1; COMMIT`,
	} {
		pgtest.Exec(t, conn, fmt.Sprintf(sql, src, bigSQL))
	}
	last := published()
	r, stop, done = cdctest.Run(t, js, acfg, pg)
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	pgtest.SameRows(t, conn, src+".types", dst+".types", cols)
	pgtest.SameRows(t, conn, src+".orders", dst+".orders", []string{"id", "k", "v", "big"})
	var bigs int
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s.types WHERE length(big) > 8000`, dst)).Scan(&bigs); err != nil || bigs == 0 {
		t.Errorf("no big value survived in the target (%d, %v)", bigs, err)
	}
	// The stream did exercise unchanged TOAST values and key changes.
	st, err := js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		t.Fatal(err)
	}
	var unchanged, keyChanges, truncates, events int
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := protocol.DecodeChangeEvents(msg.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		events += len(evs)
		for _, e := range evs {
			if e.After["big"].Unchanged {
				unchanged++
			}
			if e.Op == protocol.OpUpdate && e.Before != nil && e.Before["id"] != e.After["id"] {
				keyChanges++
			}
			if e.Op == protocol.OpTruncate {
				truncates++
			}
		}
	}
	if unchanged == 0 || keyChanges == 0 || truncates == 0 {
		t.Errorf("the source sent %d unchanged TOAST values, %d key changes, %d truncates: want some of each", unchanged, keyChanges, truncates)
	}
	n, sum := pgtest.Checksum(t, conn, dst+".types", "id")
	t.Logf("%d events in %d messages (%d with an unchanged TOAST value, %d key changes); types %d rows md5 %s", events, last, unchanged, keyChanges, n, sum)
}

// TestTypedReplica: a table of awkward types (numeric with and without a
// modifier, jsonb, arrays, bytea, timestamptz(3), an enum, interval,
// varchar(n), NULLs, NOT NULL columns, constant defaults, a generated
// column, a two-column key), snapshotted and streamed into SLUICE_CDC and
// applied with create_tables, gets a replica with the source's definition
// (equal by \d) holding the same rows (by a checksum of every column),
// after the snapshot and after changes.
func TestTypedReplica(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	pgtest.Exec(t, conn, fmt.Sprintf(pgtest.AwkwardDDL, src))
	pgtest.Exec(t, conn, fmt.Sprintf(pgtest.AwkwardRows, src))
	slot, tables := src+"_slot", []string{src + ".awkward"}
	cdctest.Snapshot(t, js, pgcdc.SnapshotConfig{DSN: dsn, Tables: tables, Slot: slot, Publication: slot}, "up")
	rd := cdctest.StartReader(t, js, pgcdc.Config{DSN: dsn, Slot: slot, Publication: slot, Tables: tables, Pipeline: "up"})
	for _, sql := range []string{
		`INSERT INTO %[1]s.awkward (region, id, n, j, ia, ta, b, ts, m, iv, vc) SELECT 3, g, g / 3.0, jsonb_build_object('g', g),
			ARRAY[g, NULL], ARRAY['x' || g], decode(md5(g::text), 'hex'), '2026-01-01Z'::timestamptz + g * interval '1.5 ms', 'sad', g * interval '1 s', 'v' || g
			FROM generate_series(1, 200) g`,
		`UPDATE %[1]s.awkward SET n = NULL, m = 'happy', ta = ta || NULL::text WHERE id %% 3 = 0`,
		`UPDATE %[1]s.awkward SET id = id + 1000 WHERE region = 3 AND id %% 10 = 0`,
		`DELETE FROM %[1]s.awkward WHERE region = 3 AND id %% 7 = 0`,
	} {
		pgtest.Exec(t, conn, fmt.Sprintf(sql, src))
	}
	last := rd.Published()

	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "typed", CreateTables: true})
	r, stop, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "typed", Upstream: "up"}, pg)
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want, got := pgtest.Describe(t, conn, src+".awkward"), pgtest.Describe(t, conn, dst+".awkward")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("replica:\n%s\nwant the source's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wn, wsum := pgtest.Checksum(t, conn, src+".awkward", "region, id")
	gn, gsum := pgtest.Checksum(t, conn, dst+".awkward", "region, id")
	if wn != gn || wsum != gsum || wn < 150 {
		t.Errorf("replica holds %d rows (md5 %s), the source %d (md5 %s)", gn, gsum, wn, wsum)
	}
}

// TestSchemaChangesMidStream: schema changes made on the source while it
// streams reach a typed replica: a column added with a constant default
// (PostgreSQL writes no row change for it: the replica's rows get the
// default from the replica's own ALTER, even though the default changed
// before the reader met the change), a column dropped, one renamed (its
// values kept), one retyped, NOT NULL and a default set, all replayed as
// a backlog; the replica ends equal to the source by \d and by a checksum
// of every column. A
// retype the replica's values cannot take then stops the table, naming
// it and the column in sluice cdc status, while another table goes on.
func TestSchemaChangesMidStream(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.t (id int PRIMARY KEY, a text, b int, c varchar(5));
		CREATE TABLE %[1]s.other (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s.t SELECT g, 'a' || g, g, 'c' || g %% 100 FROM generate_series(1, 2000) g`, src))
	slot, tables := src+"_slot", []string{src + ".t", src + ".other"}
	cdctest.Snapshot(t, js, pgcdc.SnapshotConfig{DSN: dsn, Tables: tables, Slot: slot, Publication: slot}, "up")
	rcfg := pgcdc.Config{DSN: dsn, Slot: slot, Publication: slot, Tables: tables, Pipeline: "up"}
	rd := cdctest.StartReader(t, js, rcfg)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "shapes", CreateTables: true})
	r, _, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "shapes", Upstream: "up", BatchWait: 20 * time.Millisecond}, pg)
	// The hardest case: the reader meets each change when the catalog has
	// every later one already (it replays them as a backlog).
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`ALTER TABLE %[1]s.t ADD COLUMN d text DEFAULT 'dflt'`,
		`UPDATE %[1]s.t SET a = 'changed' WHERE id = 1`,
		`ALTER TABLE %[1]s.t DROP COLUMN b`,
		`INSERT INTO %[1]s.t (id, a, c) VALUES (5000, 'new', 'n')`,
		`ALTER TABLE %[1]s.t RENAME COLUMN a TO a2`,
		`UPDATE %[1]s.t SET a2 = a2 || '!' WHERE id %% 100 = 0`,
		`ALTER TABLE %[1]s.t ALTER COLUMN c TYPE text`,
		`UPDATE %[1]s.t SET c = 'longer than five' WHERE id = 2`,
		`ALTER TABLE %[1]s.t ALTER COLUMN d SET NOT NULL, ALTER COLUMN d SET DEFAULT 'x2', ADD COLUMN e numeric(8,2) DEFAULT 1.5`,
		`INSERT INTO %[1]s.t (id, a2, c) VALUES (5001, 'newer', 'n')`,
		`INSERT INTO %[1]s.other VALUES (1, 'one')`,
	} {
		pgtest.Exec(t, conn, fmt.Sprintf(sql, src))
	}
	rd = cdctest.StartReader(t, js, rcfg)
	last := rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	want, got := pgtest.Describe(t, conn, src+".t"), pgtest.Describe(t, conn, dst+".t")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("replica:\n%s\nwant the source's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wn, wsum := pgtest.Checksum(t, conn, src+".t", "id")
	gn, gsum := pgtest.Checksum(t, conn, dst+".t", "id")
	if wn != gn || wsum != gsum {
		t.Errorf("replica holds %d rows (md5 %s), the source %d (md5 %s)", gn, gsum, wn, wsum)
	}

	// A retype that the replica's values cannot take: the table stops.
	pgtest.Exec(t, conn, fmt.Sprintf(`ALTER TABLE %[1]s.t ALTER COLUMN a2 TYPE int USING length(a2);
		UPDATE %[1]s.t SET c = 'after' WHERE id = 3; INSERT INTO %[1]s.other VALUES (2, 'two')`, src))
	last = rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	st := pg.TableStatus()
	if len(st) != 1 || st[0].Table != src+".t" || !strings.Contains(st[0].Error, `column "a2"`) || !strings.Contains(st[0].Error, dst+".t") {
		t.Fatalf("stopped tables %+v, want %s.t with an error naming %s.t and column a2", st, src, dst)
	}
	if rows := pgtest.Rows(t, conn, dst+".other", []string{"id"}); !reflect.DeepEqual(rows, []string{"1", "2"}) {
		t.Errorf("other table holds %q, want both rows", rows)
	}
}

// TestFailedSnapshotRetried: a snapshot that failed part way, whose read
// events a replica applied, is taken again on a new slot after rows were
// deleted and changed (one table emptied): the second attempt's snapshot
// events start each table over, a late read event of the first attempt is
// left out, and the replica ends equal to the source.
func TestFailedSnapshotRetried(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text);
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s.a SELECT g, 'a' || g FROM generate_series(1, 3000) g;
		INSERT INTO %[1]s.b SELECT g, 'b' || g FROM generate_series(1, 300) g`, src))
	slot, tables := src+"_slot", []string{src + ".a", src + ".b"}
	scfg := pgcdc.SnapshotConfig{DSN: dsn, Tables: tables, Slot: slot, Publication: slot, TargetRows: 500, ReplaceSlot: true}
	// The first attempt publishes every other chunk, then fails.
	first := cdctest.SnapshotChunks(t, js, scfg, "up", func(i int) bool { return i%2 == 0 })
	stale := cdctest.StreamEvents(t, js)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "rep", CreateTables: true})
	r, _, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "rep", Upstream: "up", BatchWait: 20 * time.Millisecond}, pg)
	last := cdctest.LastSeq(t, js)
	cdctest.WaitFor(t, "the first attempt's events", done, func() bool { return r.Status().Applied == last })
	if n, _ := pgtest.Checksum(t, conn, dst+".a", "id"); n == 0 {
		t.Fatal("the first attempt left no rows on the replica")
	}

	pgtest.Exec(t, conn, fmt.Sprintf(`DELETE FROM %[1]s.a WHERE id %% 3 = 0; UPDATE %[1]s.a SET v = 'changed' WHERE id %% 5 = 0;
		DELETE FROM %[1]s.b`, src))
	second := cdctest.Snapshot(t, js, scfg, "up")
	if first == second {
		t.Fatalf("both attempts at %s", first)
	}
	// A late read event of the first attempt (a task of it still running).
	var late protocol.ChangeEvent
	for _, ev := range stale {
		if ev.Op == protocol.OpRead && ev.Table == "a" {
			late = ev.ChangeEvent
			late.After = protocol.Row{"id": ev.After["id"], "v": T("from the failed attempt")}
			late.Relation = nil
		}
	}
	cdctest.Publish(t, js, late)
	rd := cdctest.StartReader(t, js, pgcdc.Config{DSN: dsn, Slot: slot, Publication: slot, Tables: tables, Pipeline: "up"})
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %[1]s.b VALUES (1, 'again'); DELETE FROM %[1]s.a WHERE id = 1`, src))
	last = rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	for _, tb := range []string{"a", "b"} {
		wn, wsum := pgtest.Checksum(t, conn, src+"."+tb, "id")
		gn, gsum := pgtest.Checksum(t, conn, dst+"."+tb, "id")
		if wn != gn || wsum != gsum {
			t.Errorf("replica %s holds %d rows (md5 %s), the source %d (md5 %s)", tb, gn, gsum, wn, wsum)
		}
	}
	if st := pg.TableStatus(); len(st) != 0 {
		t.Errorf("stopped tables %+v", st)
	}
}

// churn runs transactions of inserts (of keys from base on), updates (some
// leaving a TOASTed value unchanged, some changing the key) and deletes on
// the tables (id int key, v text, big text) until stop is called; stop
// returns the first error. Each transaction runs to its end: when stop
// returns, none is left to commit later (a cancelled query's transaction
// may still commit on the server after its client gave up). It waits
// while slot is more than 1 MB behind, so that its reader keeps up
// however loaded the machine (a chunk of an incremental snapshot needs
// the stream to reach its watermarks).
func churn(t *testing.T, dsn, slot string, base int, tables ...string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			tb := tables[i%len(tables)]
			_, err := conn.Exec(context.Background(), fmt.Sprintf(`BEGIN;
				INSERT INTO %[1]s (id, v, big) SELECT %[5]d + %[2]d * 10 + g, 'new', CASE WHEN g = 1 THEN repeat(md5(g::text), 300) END FROM generate_series(1, 5) g;
				UPDATE %[1]s SET v = v || '+' WHERE id IN (SELECT id FROM %[1]s WHERE id %% 97 = %[3]d);
				UPDATE %[1]s SET id = -id WHERE id = %[4]d;
				DELETE FROM %[1]s WHERE id IN (SELECT id FROM %[1]s WHERE id %% 89 = %[3]d LIMIT 3);
				COMMIT`, tb, i, i%89, 500+i, base))
			if err != nil {
				done <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
			for ctx.Err() == nil {
				var lag int64
				if err := conn.QueryRow(context.Background(), `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
					FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag); err != nil {
					done <- err
					return
				}
				if lag < 1<<20 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		done <- nil
	}()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestIncrementalSnapshot: a table added to a streaming reader is
// snapshotted in chunks interleaved with the stream (watermarks), under
// write load on it and on the table streaming before, without a new slot;
// the replica of both equals the source. A replica table that diverged
// is made equal again by a resnapshot, and a table stopped on the replica
// goes on after one.
func TestIncrementalSnapshot(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	for _, tb := range []string{"a", "b"} {
		// big stored out of line, uncompressed: an update of v leaves it
		// unchanged (TOAST) in the stream, inside a chunk's window too.
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.%[2]s (id int PRIMARY KEY, v text, big text);
			ALTER TABLE %[1]s.%[2]s ALTER COLUMN big SET STORAGE EXTERNAL;
			INSERT INTO %[1]s.%[2]s SELECT g, 'v' || g, CASE WHEN g %% 50 = 0 THEN repeat(md5(g::text), 300) END FROM generate_series(1, 10000) g`, src, tb))
	}
	slot := src + "_slot"
	a, b := src+".a", src+".b"
	cdctest.Snapshot(t, js, pgcdc.SnapshotConfig{DSN: dsn, Tables: []string{a}, Slot: slot, Publication: slot}, "up")
	rcfg := pgcdc.Config{DSN: dsn, Slot: slot, Publication: slot, Tables: []string{a}, Pipeline: "up", ChunkRows: 2000}
	rd := cdctest.StartReader(t, js, rcfg)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "rep", CreateTables: true})
	r, _, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "rep", Upstream: "up", BatchWait: 20 * time.Millisecond}, pg)
	stopChurn := churn(t, dsn, slot, 100_000, a)
	// Churn reaches the stream before the reader stops.
	first := cdctest.LastSeq(t, js)
	cdctest.WaitFor(t, "churn in the stream", done, func() bool { return cdctest.LastSeq(t, js) >= first+20 })

	// b is added: the reader restarts with its snapshot to take.
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	stopChurn()
	rcfg.Tables = []string{a, b}
	rcfg.Snapshots = []protocol.TableSnapshot{{ID: "s1", Table: b, Reason: protocol.SnapshotAdded}}
	rd = cdctest.StartReader(t, js, rcfg)
	// b written to from the start: before its first chunk too (its
	// snapshot event comes before its first change), an update of v
	// leaving big unchanged of a row no chunk brought yet.
	stopChurn = churn(t, dsn, slot, 10_000_000, a, b)
	snapshot := func(id string) (st protocol.TableStatus) {
		for _, st := range rd.Status().Snapshots {
			if st.Snapshot == id {
				return st
			}
		}
		return st
	}
	snapped := func(id string) bool { return snapshot(id).State == protocol.TableSnapshotted }
	// b written to once its first chunk is out: an update of v leaves big
	// unchanged, and a chunk's row of a key updated between its
	// watermarks must stay (the applier leaves such an update out).
	cdctest.WaitFor(t, "the snapshot of b under way", done, func() bool { st := snapshot("s1"); return st.State == protocol.TableSnapshotting && st.Rows > 0 })
	if err := stopChurn(); err != nil {
		t.Fatal(err)
	}
	stopChurn = churn(t, dsn, slot, 20_000_000, a, b)
	cdctest.WaitFor(t, "the snapshot of b", done, func() bool { return snapped("s1") })
	// Churn on both tables after the snapshot.
	after := cdctest.LastSeq(t, js)
	cdctest.WaitFor(t, "churn after the snapshot", done, func() bool { return cdctest.LastSeq(t, js) >= after+20 })
	if err := stopChurn(); err != nil {
		t.Fatal(err)
	}
	last := rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	same := func(when string, tables ...string) {
		t.Helper()
		for _, tb := range tables {
			wn, wsum := pgtest.Checksum(t, conn, src+"."+tb, "id")
			gn, gsum := pgtest.Checksum(t, conn, dst+"."+tb, "id")
			if wn != gn || wsum != gsum {
				t.Errorf("%s: replica %s holds %d rows (md5 %s), the source %d (md5 %s); rows that differ: %s",
					when, tb, gn, gsum, wn, wsum, rowDiff(t, conn, src+"."+tb, dst+"."+tb))
			}
		}
	}
	same("after b was added", "a", "b")
	evs := cdctest.StreamEvents(t, js)
	checkKeyOrder(t, evs)
	var marks, dones, reads int
	for _, ev := range evs {
		if ev.Table != "b" {
			continue
		}
		switch ev.Op {
		case protocol.OpSnapshot:
			marks++
		case protocol.OpSnapshotDone:
			dones++
		case protocol.OpRead:
			reads++
		}
	}
	st := rd.Status().Snapshots[0]
	if marks != 1 || dones != 1 || int64(reads) != st.Rows || reads < 8000 {
		t.Errorf("b's events: %d snapshot, %d snapshot_done, %d read (the reader reports %d rows)", marks, dones, reads, st.Rows)
	}
	t.Logf("b: %d rows read in %d chunks beside %d changes", reads, (reads+1999)/2000, r.Status().Events)

	// The replica of a diverges; a stops on the replica (a value its
	// column refuses); a resnapshot of each makes them equal again.
	pgtest.Exec(t, conn, fmt.Sprintf(`DELETE FROM %[1]s.a WHERE id %% 10 = 0; INSERT INTO %[1]s.a (id, v) VALUES (-999999, 'junk');
		ALTER TABLE %[1]s.b ADD CONSTRAINT short CHECK (v <> 'much too long')`, dst))
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %[1]s.b (id, v) VALUES (-12345, 'much too long')`, src))
	last = rd.Published()
	cdctest.WaitFor(t, "b stopped", done, func() bool { return r.Status().Applied == last })
	if st := pg.TableStatus(); len(st) != 1 || st[0].Table != b {
		t.Fatalf("stopped tables %+v, want %s", st, b)
	}
	pgtest.Exec(t, conn, fmt.Sprintf(`ALTER TABLE %[1]s.b DROP CONSTRAINT short`, dst))
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	rcfg.Snapshots = []protocol.TableSnapshot{{ID: "s2", Table: a, Reason: protocol.SnapshotResnapshot}, {ID: "s3", Table: b, Reason: protocol.SnapshotResnapshot}}
	rd = cdctest.StartReader(t, js, rcfg)
	cdctest.WaitFor(t, "the resnapshots", done, func() bool { return snapped("s2") && snapped("s3") })
	last = rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	same("after the resnapshots", "a", "b")
	checkKeyOrder(t, cdctest.StreamEvents(t, js))
	if st := pg.TableStatus(); len(st) != 0 {
		t.Errorf("stopped tables after the resnapshot %+v", st)
	}
}

// checkKeyOrder checks the events of churn's tables in stream order: per
// key, v never gets shorter (churn only appends to it) and nothing but
// the same again follows the key's delete or its move to another key. A chunk of an incremental
// snapshot that read a row older than a change published before it (its
// select missing a transaction the stream had delivered) breaks it, even
// when a later change repairs the replica.
func checkKeyOrder(t *testing.T, evs []connectors.Event) {
	t.Helper()
	type state struct {
		n    int // v's length
		gone bool
		seq  uint64
		op   protocol.Op
	}
	last := map[string]state{}
	bad := 0
	check := func(k string, ev connectors.Event, n int, gone bool) {
		if p, ok := last[k]; ok && !gone && (p.gone || n < p.n) {
			if bad++; bad <= 5 {
				t.Errorf("key %s: %s event (seq %d, v of %d bytes) after its %s event (seq %d, v of %d bytes, gone %v): the stream went back",
					k, ev.Op, ev.Seq, n, p.op, p.seq, p.n, p.gone)
			}
		}
		last[k] = state{n: n, gone: gone, seq: ev.Seq, op: ev.Op}
	}
	for _, ev := range evs {
		tb := ev.Schema + "." + ev.Table + " "
		switch ev.Op {
		case protocol.OpDelete:
			check(tb+ev.Before["id"].Text, ev, 0, true)
		case protocol.OpInsert, protocol.OpUpdate, protocol.OpRead:
			if old, ok := ev.Before["id"]; ok && old.Text != ev.After["id"].Text {
				check(tb+old.Text, ev, 0, true)
			}
			check(tb+ev.After["id"].Text, ev, len(ev.After["v"].Text), false)
		case protocol.OpTruncate:
			t.Fatalf("a truncate in the stream (seq %d): churn never truncates", ev.Seq)
		}
	}
	if bad > 0 {
		t.Errorf("%d events out of their key's order", bad)
	}
}

// rowDiff lists up to 5 rows (id, v and big's md5) that differ between two
// tables (id, v, big).
func rowDiff(t *testing.T, conn *pgx.Conn, a, b string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT coalesce(x.id::text, y.id::text), x.v, y.v, md5(x.big), md5(y.big)
		FROM %s x FULL JOIN %s y ON x.id::text = y.id::text
		WHERE x.id IS NULL OR y.id IS NULL OR x.v IS DISTINCT FROM y.v OR x.big IS DISTINCT FROM y.big ORDER BY 1 LIMIT 5`, a, b))
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		var xv, yv, xb, yb *string
		if err := rows.Scan(&id, &xv, &yv, &xb, &yb); err != nil {
			return err.Error()
		}
		show := func(p *string) string {
			if p == nil {
				return "NULL"
			}
			return fmt.Sprintf("%q", *p)
		}
		out = append(out, fmt.Sprintf("id %s: source v %s big %s, replica v %s big %s", id, show(xv), show(xb), show(yv), show(yb)))
	}
	return strings.Join(out, "; ")
}

// TestIncrementalSnapshotThrottled: a table added while its reader is
// held back (stopped while a writer filled the slot with a backlog far
// over the lag bound) is snapshotted only once the reader caught up: the
// snapshot waits, with the writer still writing, then resumes on its own;
// its status counts the wait and how long it lasted, and the replica of
// both tables equals the source.
func TestIncrementalSnapshotThrottled(t *testing.T) {
	dsn, src, conn := pgtest.DB(t)
	_, dst, _ := pgtest.DB(t)
	js := cdctest.StartJS(t)
	for _, tb := range []string{"a", "b"} {
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.%[2]s (id int PRIMARY KEY, v text, big text);
			INSERT INTO %[1]s.%[2]s SELECT g, 'v' || g, NULL FROM generate_series(1, 5000) g`, src, tb))
	}
	slot := src + "_slot"
	a, b := src+".a", src+".b"
	cdctest.Snapshot(t, js, pgcdc.SnapshotConfig{DSN: dsn, Tables: []string{a}, Slot: slot, Publication: slot}, "up")
	const maxLag = 1 << 20
	rcfg := pgcdc.Config{DSN: dsn, Slot: slot, Publication: slot, Tables: []string{a}, Pipeline: "up", ChunkRows: 1000, MaxLagBytes: maxLag}
	rd := cdctest.StartReader(t, js, rcfg)
	pg := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "rep", CreateTables: true})
	r, _, done := cdctest.Run(t, js, cdcapply.Config{Pipeline: "rep", Upstream: "up", BatchWait: 20 * time.Millisecond}, pg)
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}

	// Held back: the reader is stopped while about 4 MB of WAL is written.
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %[1]s.a (id, v) SELECT 1000000 + g, md5(g::text) || md5((-g)::text) FROM generate_series(1, 25000) g`, src))
	var lag int64
	if err := conn.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag); err != nil || lag <= maxLag {
		t.Fatalf("the slot lags %d bytes (%v), want over %d", lag, err, maxLag)
	}
	stopChurn := trickle(t, dsn, a)
	rcfg.Tables = []string{a, b}
	rcfg.Snapshots = []protocol.TableSnapshot{{ID: "s1", Table: b, Reason: protocol.SnapshotAdded}}
	rd = cdctest.StartReader(t, js, rcfg)
	var st protocol.TableStatus
	var heldRows int64 = -1 // rows published while seen held back
	cdctest.WaitFor(t, "the snapshot of b", done, func() bool {
		sn := rd.Status().Snapshots
		if len(sn) != 1 {
			return false
		}
		st = sn[0]
		if st.Throttling && heldRows < 0 {
			heldRows = st.Rows
		}
		return st.State == protocol.TableSnapshotted
	})
	if err := stopChurn(); err != nil {
		t.Fatal(err)
	}
	last := rd.Published()
	cdctest.WaitFor(t, "every event", done, func() bool { return r.Status().Applied == last })
	for _, tb := range []string{"a", "b"} {
		wn, wsum := pgtest.Checksum(t, conn, src+"."+tb, "id")
		gn, gsum := pgtest.Checksum(t, conn, dst+"."+tb, "id")
		if wn != gn || wsum != gsum {
			t.Errorf("replica %s holds %d rows (md5 %s), the source %d (md5 %s)", tb, gn, gsum, wn, wsum)
		}
	}
	if st.Throttled < 1 || st.ThrottledSeconds <= 0 || st.LastThrottled.IsZero() || st.Throttling || st.Rows != 5000 {
		t.Errorf("snapshot status %+v: want it throttled at least once, for some time, resumed, and 5000 rows", st)
	}
	if heldRows < 0 {
		t.Error("the snapshot was never seen held back")
	} else if heldRows > 1000 {
		t.Errorf("%d rows published before the snapshot was first seen held back, want at most one chunk", heldRows)
	}
	t.Logf("b: %d rows; held back %d times for %.1fs in all beside %d applied events", st.Rows, st.Throttled, st.ThrottledSeconds, r.Status().Events)
}

// trickle writes a small transaction to table (id int PRIMARY KEY, v
// text) every 20 ms until stop is called: an insert, an update and a
// delete, a few hundred bytes of WAL, so that a reader catches up with it
// even on a loaded machine. Like churn's, each transaction runs to its
// end.
func trickle(t *testing.T, dsn, table string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			_, err := conn.Exec(context.Background(), fmt.Sprintf(`BEGIN;
				INSERT INTO %[1]s (id, v) VALUES (%[2]d, 'w');
				UPDATE %[1]s SET v = v || '+' WHERE id = %[3]d;
				DELETE FROM %[1]s WHERE id = %[4]d;
				COMMIT`, table, 20_000_000+i, i%5000+1, 1_000_000+i+1))
			if err != nil {
				done <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		done <- nil
	}()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() { stop() })
	return stop
}
