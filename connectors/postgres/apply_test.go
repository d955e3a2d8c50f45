package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

var (
	T = protocol.Text
	N = protocol.NullValue
	U = protocol.UnchangedValue
)

// sourceEvents reads rows of a source table as PostgreSQL text output, the
// format pgoutput sends, and makes them events of op.
func sourceEvents(t *testing.T, conn *pgx.Conn, schema, table string, cols []string, where string, op protocol.Op) []protocol.ChangeEvent {
	t.Helper()
	var sel []string
	for _, c := range cols {
		sel = append(sel, pgx.Identifier{c}.Sanitize()+"::text")
	}
	rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT %s FROM %s.%s WHERE %s ORDER BY 1", strings.Join(sel, ", "), schema, table, where))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []protocol.ChangeEvent
	for rows.Next() {
		vals := make([]*string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := protocol.Row{}
		for i, c := range cols {
			if vals[i] == nil {
				row[c] = N
			} else {
				row[c] = T(*vals[i])
			}
		}
		out = append(out, cdctest.Change(op, schema, table, nil, row))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostgresTypes: every common type round-trips through the text format
// and the target column type's input, on insert and on update.
func TestPostgresTypes(t *testing.T) {
	_, src, conn := pgtest.DB(t)
	dsn, dst, _ := pgtest.DB(t)
	pgtest.Exec(t, conn, fmt.Sprintf(pgtest.TypesDDL, src))
	pgtest.Exec(t, conn, fmt.Sprintf(pgtest.TypesDDL, dst))
	pgtest.Exec(t, conn, fmt.Sprintf(`INSERT INTO %s.types VALUES
		(1, 12345678901234.123456, E'unicode \u00fc \u65e5\u672c "double" ''single'' a,b\nnew line \\ back\\\\slash \t tab', 
		 '{"a": [1, 2.50, "x\"y"], "b": null, "c": {"d": "\u00e9"}}', '{1,NULL,3}', ARRAY['a,b', 'c"d', NULL, '', E'back\\slash', '{x}'],
		 '\x00ff10ab'::bytea, '2024-05-01 10:30:00.123456+02', '2024-02-29', 1.5e-300, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '1 year 2 mons 3 days 04:05:06.789', 'abc', ''),
		(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(3, -0.000001, '', '[]', '{}', '{}', ''::bytea, 'infinity', '-infinity', 'NaN', false, NULL, '-1 days', '', NULL),
		(4, 99999999999999.999999, repeat('x', 100000), ('{"big": "'||repeat('y', 5000)||'"}')::jsonb, ARRAY(SELECT generate_series(1, 1000)), NULL,
		 decode(repeat('deadbeef', 5000), 'hex'), '1999-12-31 23:59:59.999999-12:30', '0001-01-01', '-0', NULL, NULL, NULL, NULL, 'x')`, src))

	p := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: dst, Pipeline: "types"})
	ctx := context.Background()
	if err := p.Apply(ctx, cdctest.Numbered(1, sourceEvents(t, conn, src, "types", pgtest.TypesColumns, "true", protocol.OpInsert)...)); err != nil {
		t.Fatal(err)
	}
	pgtest.SameRows(t, conn, src+".types", dst+".types", pgtest.TypesColumns)
	var empty, null bool
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT (SELECT e = '' FROM %[1]s.types WHERE id = 1), (SELECT e IS NULL FROM %[1]s.types WHERE id = 2)", dst)).Scan(&empty, &null); err != nil || !empty || !null {
		t.Errorf("empty string kept: %v, NULL kept: %v (%v)", empty, null, err)
	}

	// Update every column of one row, delete another, in one batch.
	pgtest.Exec(t, conn, fmt.Sprintf(`UPDATE %s.types SET n = n / 3, t = t || E'\r\n', j = j || '{"z": 1}', ia = ia || 4, ta = ta || 'more'::text,
		b = b || '\x01'::bytea, ts = ts + interval '1 microsecond', vc = 'changed', e = NULL WHERE id = 1`, src))
	evs := sourceEvents(t, conn, src, "types", pgtest.TypesColumns, "id = 1", protocol.OpUpdate)
	pgtest.Exec(t, conn, fmt.Sprintf(`DELETE FROM %s.types WHERE id = 3`, src))
	evs = append(evs, cdctest.Change(protocol.OpDelete, src, "types", protocol.Row{"id": T("3")}, nil))
	if err := p.Apply(ctx, cdctest.Numbered(5, evs...)); err != nil {
		t.Fatal(err)
	}
	pgtest.SameRows(t, conn, src+".types", dst+".types", pgtest.TypesColumns)
	if got := cdctest.Applied(t, p); got != 6 {
		t.Errorf("Applied = %d, want 6", got)
	}
}

// TestPostgresTOASTKeyChangeTruncate: unchanged (TOAST) values keep the
// target's value, also across a key change and within one batch; truncates
// keep their place; a batch applied again changes nothing; a failing batch
// leaves nothing behind.
func TestPostgresTOASTKeyChangeTruncate(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text, big text);
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text)`, s))
	// No Schema: the target is the source schema and the offset row is in
	// public.sluice_cdc_offsets, under a pipeline name of this test's own.
	p := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Pipeline: s})
	ctx := context.Background()
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DELETE FROM public."+postgres.OffsetsTable+" WHERE pipeline = $1", s)
		conn.Exec(context.Background(), "DELETE FROM public."+postgres.TablesTable+" WHERE pipeline = $1", s)
	})
	big := strings.Repeat("0123456789abcdef", 4000)
	m := cdctest.Model{}
	cols := map[string][]string{"a": {"id", "v", "big"}, "b": {"id", "v"}}
	var seq uint64 = 1
	var batches [][]connectors.Event
	step := func(what string, evs ...protocol.ChangeEvent) {
		t.Helper()
		batch := cdctest.Numbered(seq, evs...)
		seq += uint64(len(evs))
		if err := p.Apply(ctx, batch); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		batches = append(batches, batch)
		m.Apply(t, evs...)
		for _, tb := range []string{"a", "b"} {
			got := pgtest.Rows(t, conn, s+"."+tb, cols[tb])
			if want := m.Rows(s+"."+tb, cols[tb]); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %s.%s holds %d rows, want %d\n got %.200q\nwant %.200q", what, s, tb, len(got), len(want), got, want)
			}
		}
	}
	I, Up, D := protocol.OpInsert, protocol.OpUpdate, protocol.OpDelete
	step("inserts",
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("1"), "v": T("x"), "big": T(big)}),
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("2"), "v": T("y"), "big": T("small")}),
		cdctest.Change(I, s, "b", nil, protocol.Row{"id": T("1"), "v": T("b1")}))
	step("update leaving big unchanged",
		cdctest.Change(Up, s, "a", nil, protocol.Row{"id": T("1"), "v": T("x2"), "big": U}))
	step("key change leaving big unchanged",
		cdctest.Change(Up, s, "a", protocol.Row{"id": T("1")}, protocol.Row{"id": T("10"), "v": T("x3"), "big": U}),
		cdctest.Change(Up, s, "b", nil, protocol.Row{"id": T("1"), "v": T("b1'")}))
	step("one batch: chains, key changes, truncate, deletes",
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("3"), "v": T("z"), "big": T(big + "3")}),
		cdctest.Change(Up, s, "a", nil, protocol.Row{"id": T("3"), "v": T("z2"), "big": U}),
		cdctest.Change(Up, s, "a", protocol.Row{"id": T("3")}, protocol.Row{"id": T("30"), "v": T("z3"), "big": U}),
		cdctest.Change(I, s, "b", nil, protocol.Row{"id": T("2"), "v": T("gone by the truncate")}),
		cdctest.Change(protocol.OpTruncate, s, "b", nil, nil),
		cdctest.Change(I, s, "b", nil, protocol.Row{"id": T("5"), "v": T("after truncate")}),
		cdctest.Change(Up, s, "a", nil, protocol.Row{"id": T("10"), "v": T("x4"), "big": U}),
		cdctest.Change(Up, s, "a", protocol.Row{"id": T("10")}, protocol.Row{"id": T("11"), "v": T("x5"), "big": U}),
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("10"), "v": T("reused key"), "big": N}),
		cdctest.Change(D, s, "a", protocol.Row{"id": T("2")}, nil),
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("2"), "v": T("back"), "big": T("")}))
	var bigKept bool
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT big = $1 FROM %s.a WHERE id = 11", s), big).Scan(&bigKept); err != nil || !bigKept {
		t.Fatalf("the unchanged TOAST value was not kept across updates and key changes: %v %v", bigKept, err)
	}
	n, sum := pgtest.Checksum(t, conn, s+".a", "id")

	// Applied again (a redelivered batch, whole or in part): skipped.
	for _, b := range [][]connectors.Event{batches[3], batches[1], append(batches[2], batches[3]...)} {
		if err := p.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n2, sum2 := pgtest.Checksum(t, conn, s+".a", "id"); n2 != n || sum2 != sum {
		t.Errorf("re-applied batches changed a: %d rows %s, before %d rows %s", n2, sum2, n, sum)
	}
	if got := cdctest.Applied(t, p); got != seq-1 {
		t.Errorf("Applied = %d, want %d", got, seq-1)
	}

	// A failed batch (here: cancelled) leaves nothing behind, and the
	// applier reconnects after it.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Apply(cctx, cdctest.Numbered(seq, cdctest.Change(I, s, "b", nil, protocol.Row{"id": T("77"), "v": T("w")}))); err == nil {
		t.Fatal("a cancelled batch: no error")
	}
	if got := cdctest.Applied(t, p); got != seq-1 {
		t.Errorf("after a failed batch Applied = %d, want %d", got, seq-1)
	}
	step("after a failure", cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("40"), "v": T("w"), "big": T("b")}))
	n, sum = pgtest.Checksum(t, conn, s+".a", "id")

	// An unchanged value with no row to keep it from stops the table: none
	// of its events of the batch is applied, the other tables' are.
	if err := p.Apply(ctx, cdctest.Numbered(seq,
		cdctest.Change(I, s, "a", nil, protocol.Row{"id": T("41"), "v": T("w"), "big": T("b")}),
		cdctest.Change(I, s, "b", nil, protocol.Row{"id": T("41"), "v": T("w")}),
		cdctest.Change(Up, s, "a", nil, protocol.Row{"id": T("99"), "v": T("w"), "big": U}))); err != nil {
		t.Fatal(err)
	}
	if st := p.TableStatus(); len(st) != 1 || st[0].Table != s+".a" || st[0].Seq != seq || !strings.Contains(st[0].Error, `id="99"`) || !strings.Contains(st[0].Error, "TOAST") {
		t.Fatalf("unchanged value without a target row: stopped tables %+v, want %s.a at %d with an error naming the key", st, s, seq)
	}
	if n2, sum2 := pgtest.Checksum(t, conn, s+".a", "id"); n2 != n || sum2 != sum {
		t.Errorf("a stopped table's batch changed it: %d rows, before %d", n2, n)
	}
	if got := pgtest.Rows(t, conn, s+".b", []string{"id"}); !slices.Contains(got, "41") {
		t.Errorf("b holds %q, want 41 applied beside the stopped table", got)
	}
}

// TestPostgresTableStops: a table whose events cannot be applied for good
// (its target missing, without a key, refusing a value; events without a
// key) stops alone: the batch applies the other tables, the stopped
// tables' later events are skipped, and the stops, with the sequence of
// the first event not applied and the error, are reported and kept across
// a reopen.
// The same holds with parallel: tables (5 tables on 2 connections).
func TestPostgresTableStops(t *testing.T) {
	for _, parallel := range []string{"", postgres.ParallelTables} {
		t.Run("parallel="+parallel, func(t *testing.T) { testTableStops(t, parallel) })
	}
}

func testTableStops(t *testing.T, parallel string) {
	dsn, s, conn := pgtest.DB(t)
	ctx := context.Background()
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.c (id int PRIMARY KEY, v text); CREATE TABLE %[1]s.nopk (id int, v text);
		CREATE TABLE %[1]s.num (id int PRIMARY KEY, v int)`, s))
	cfg := postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "stops", Parallel: parallel}
	if parallel != "" {
		cfg.Connections = 2
	}
	p := cdctest.PostgresApplier(t, cfg)
	I := protocol.OpInsert
	row := func(id, v string) protocol.Row { return protocol.Row{"id": T(id), "v": T(v)} }
	noKey := cdctest.Change(I, "src", "nokey", nil, row("1", "x"))
	noKey.Key = nil
	err := p.Apply(ctx, cdctest.Numbered(1,
		cdctest.Change(I, "src", "c", nil, row("1", "ok")),
		cdctest.Change(I, "src", "missing", nil, row("1", "x")),
		cdctest.Change(I, "src", "nopk", nil, row("1", "x")),
		cdctest.Change(I, "src", "num", nil, row("1", "7")),
		cdctest.Change(I, "src", "num", nil, row("2", "not a number")),
		noKey,
		cdctest.Change(I, "src", "c", nil, row("2", "ok"))))
	if err != nil {
		t.Fatalf("a batch with tables that cannot be applied: %v, want the others applied", err)
	}
	want := map[string]struct {
		seq  uint64
		word string
	}{
		"src.missing": {2, "create_tables"}, "src.nopk": {3, "primary key"}, "src.num": {4, "invalid input syntax"}, "src.nokey": {6, "key"},
	}
	check := func(p *postgres.Applier, when string) {
		t.Helper()
		got := p.TableStatus()
		if len(got) != len(want) {
			t.Fatalf("%s: stopped tables %+v, want %d", when, got, len(want))
		}
		for _, st := range got {
			w, ok := want[st.Table]
			if !ok || st.State != protocol.TableStopped || st.Seq != w.seq || !strings.Contains(st.Error, w.word) || st.Since.IsZero() {
				t.Errorf("%s: %+v, want %s stopped at %d with an error saying %q", when, st, st.Table, w.seq, w.word)
			}
		}
	}
	check(p, "after the batch")
	if got, want := pgtest.Rows(t, conn, s+".c", []string{"id", "v"}), []string{"1|ok", "2|ok"}; !reflect.DeepEqual(got, want) {
		t.Errorf("c holds %q, want %q", got, want)
	}
	if rows := pgtest.Rows(t, conn, s+".num", []string{"id"}); len(rows) != 0 {
		t.Errorf("the stopped table num holds %q: nothing of its batch may be applied", rows)
	}
	// Later events of stopped tables are skipped, even good ones.
	if err := p.Apply(ctx, cdctest.Numbered(8,
		cdctest.Change(I, "src", "num", nil, row("3", "3")),
		cdctest.Change(I, "src", "c", nil, row("3", "ok")))); err != nil {
		t.Fatal(err)
	}
	if rows := pgtest.Rows(t, conn, s+".num", []string{"id"}); len(rows) != 0 || cdctest.Applied(t, p) != 9 {
		t.Errorf("num holds %q, offset %d: want nothing and 9", rows, cdctest.Applied(t, p))
	}
	// The stops are kept.
	again := cdctest.PostgresApplier(t, cfg)
	cdctest.Applied(t, again)
	check(again, "reopened")

	// A snapshot of a stopped table (a resnapshot) starts it over: empty,
	// then its read events and changes; a read event of an earlier
	// snapshot is left out, a repeated snapshot event changes nothing.
	snap := func(lsn string) protocol.ChangeEvent {
		e := cdctest.Change(protocol.OpSnapshot, "src", "num", nil, nil)
		e.LSN, e.CommitLSN = lsn, lsn
		return e
	}
	read := func(lsn, id, v string) protocol.ChangeEvent {
		e := cdctest.Change(protocol.OpRead, "src", "num", nil, row(id, v))
		e.LSN, e.CommitLSN = lsn, lsn
		return e
	}
	if err := again.Apply(ctx, cdctest.Numbered(10, snap("1/0"), read("1/0", "5", "5"), read("0/FF", "6", "6"),
		cdctest.Change(I, "src", "num", nil, row("7", "7")))); err != nil {
		t.Fatal(err)
	}
	if err := again.Apply(ctx, cdctest.Numbered(14, snap("1/0"), read("1/0", "8", "8"))); err != nil {
		t.Fatal(err)
	}
	if rows := pgtest.Rows(t, conn, s+".num", []string{"id", "v"}); !reflect.DeepEqual(rows, []string{"5|5", "7|7", "8|8"}) {
		t.Errorf("num after its snapshot holds %q, want 5, 7 and 8", rows)
	}
	delete(want, "src.num")
	check(again, "after the snapshot of num")
}

// TestPostgresSchema: new columns are added as text, an image without a
// newer column keeps the target's value, and a missing table is created on
// request.
func TestPostgresSchema(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	ctx := context.Background()
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.c (id int PRIMARY KEY, v text)`, s))
	p := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "schema"})
	I, Up := protocol.OpInsert, protocol.OpUpdate

	// A new column is added; a later image without it keeps its value.
	if err := p.Apply(ctx, cdctest.Numbered(1, cdctest.Change(I, "src", "c", nil, protocol.Row{"id": T("1"), "v": T("a"), "extra": T("E1")}))); err != nil {
		t.Fatal(err)
	}
	var typ string
	if err := conn.QueryRow(ctx, `SELECT data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'c' AND column_name = 'extra'`, s).Scan(&typ); err != nil || typ != "text" {
		t.Fatalf("added column: type %q, %v", typ, err)
	}
	if err := p.Apply(ctx, cdctest.Numbered(2,
		cdctest.Change(Up, "src", "c", nil, protocol.Row{"id": T("1"), "v": T("b")}),
		cdctest.Change(I, "src", "c", nil, protocol.Row{"id": T("2"), "v": T("c"), "extra": N}),
		cdctest.Change(I, "src", "c", nil, protocol.Row{"id": T("3"), "v": T("d")}))); err != nil {
		t.Fatal(err)
	}
	if got, want := pgtest.Rows(t, conn, s+".c", []string{"id", "v", "extra"}), []string{`1|b|E1`, `2|c|\N`, `3|d|\N`}; !reflect.DeepEqual(got, want) {
		t.Errorf("c holds %q, want %q", got, want)
	}

	// With CreateTables a missing table is created: text columns, the key
	// as primary key.
	pc := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "create", CreateTables: true})
	if err := pc.Apply(ctx, cdctest.Numbered(1,
		cdctest.Change(I, "src", "made", nil, protocol.Row{"id": T("7"), "v": T("x"), "n": N}),
		cdctest.Change(Up, "src", "made", nil, protocol.Row{"id": T("7"), "v": T("y"), "n": T("1.50")}))); err != nil {
		t.Fatal(err)
	}
	if got, want := pgtest.Rows(t, conn, s+".made", []string{"id", "v", "n"}), []string{"7|y|1.50"}; !reflect.DeepEqual(got, want) {
		t.Errorf("created table holds %q, want %q", got, want)
	}
	var pk string
	if err := conn.QueryRow(ctx, `SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',') FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1::regclass AND i.indisprimary`, s+".made").Scan(&pk); err != nil || pk != "id:text" {
		t.Errorf("created table's primary key: %q, %v", pk, err)
	}
	if cdctest.Applied(t, pc) != 2 || cdctest.Applied(t, p) != 4 {
		t.Errorf("offsets of two pipelines in one schema: %d and %d, want 2 and 4", cdctest.Applied(t, pc), cdctest.Applied(t, p))
	}
}

// BenchmarkPostgresApply applies batches of 1000 events (70% inserts, 20%
// updates, 10% deletes) to one table and reports events/s.
func BenchmarkPostgresApply(b *testing.B) {
	dsn, s, conn := pgtest.DB(b)
	exec2 := func(sql string) {
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
	exec2(fmt.Sprintf(`CREATE TABLE %s.bench (id int PRIMARY KEY, v text, n numeric(20,6), j jsonb, ts timestamptz)`, s))
	p, err := postgres.NewApplier(context.Background(), postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	row := func(id int) protocol.Row {
		return protocol.Row{"id": T(fmt.Sprint(id)), "v": T(fmt.Sprintf("value %d with some text", id)), "n": T(fmt.Sprintf("%d.123456", id)),
			"j": T(fmt.Sprintf(`{"id": %d, "tags": ["a", "b"]}`, id)), "ts": T("2024-05-01 10:30:00.123456+00")}
	}
	var seq uint64
	next := 0
	b.ResetTimer()
	for range b.N {
		evs := make([]protocol.ChangeEvent, 0, 1000)
		for i := range 1000 {
			switch {
			case i%10 < 7 || next < 10:
				next++
				evs = append(evs, cdctest.Change(protocol.OpInsert, "src", "bench", nil, row(next)))
			case i%10 < 9:
				evs = append(evs, cdctest.Change(protocol.OpUpdate, "src", "bench", nil, row(next-i%10)))
			default:
				evs = append(evs, cdctest.Change(protocol.OpDelete, "src", "bench", protocol.Row{"id": T(fmt.Sprint(next - 5))}, nil))
			}
		}
		if err := p.Apply(context.Background(), cdctest.Numbered(seq+1, evs...)); err != nil {
			b.Fatal(err)
		}
		seq += uint64(len(evs))
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
}

// The sink of a cdc_apply pipeline is {dsn, schema, create_tables,
// parallel, connections}: the
// dsn is required, anything else is refused naming the field; the kind is
// registered as a cdc target.
func TestApplierConfig(t *testing.T) {
	if err := (postgres.ApplierConfig{DSN: "postgres://u@h/db", Pipeline: "p"}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (postgres.ApplierConfig{Pipeline: "p"}).Validate(); err == nil {
		t.Error("ApplierConfig without DSN accepted")
	}
	c, err := postgres.ParseApplierConfig(json.RawMessage(`{"dsn":"postgres://u@h/db","schema":"replica","create_tables":true}`))
	if err != nil || c.DSN != "postgres://u@h/db" || c.Schema != "replica" || !c.CreateTables {
		t.Errorf("ParseApplierConfig = %+v, %v", c, err)
	}
	for raw, field := range map[string]string{
		`{}`: "dsn",
		`{"dsn":"postgres://u@h/db","schemaa":"x"}`:                        "schemaa",
		`{"dsn":"postgres://u@h/db","create_tables":"yes"}`:                "create_tables",
		`{"dsn":"postgres://u@h/db","schema":""}`:                          "",
		`{"dsn":"postgres://u@h/db","parallel":"tables","connections":8}`:  "",
		`{"dsn":"postgres://u@h/db","parallel":"rows"}`:                    "parallel",
		`{"dsn":"postgres://u@h/db","connections":2}`:                      "connections",
		`{"dsn":"postgres://u@h/db","parallel":"tables","connections":-1}`: "connections",
	} {
		err := postgres.ValidateApplier(json.RawMessage(raw))
		var fe *connectors.FieldError
		switch {
		case field == "" && err != nil:
			t.Errorf("%s: %v", raw, err)
		case field != "" && (!errors.As(err, &fe) || fe.Field != field):
			t.Errorf("%s: %v, want an error on field %s", raw, err, field)
		}
	}
	reg := connectors.NewRegistry()
	postgres.Register(reg)
	if !reg.Has(postgres.Kind, connectors.RoleCDCTarget) {
		t.Error("postgres is not registered as a cdc target")
	}
}
