package cdcapply_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

func newPostgres(t *testing.T, cfg cdcapply.PostgresConfig) *cdcapply.Postgres {
	t.Helper()
	p, err := cdcapply.NewPostgres(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func applied(t *testing.T, a cdcapply.Applier) uint64 {
	t.Helper()
	seq, err := a.Applied(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

const typesDDL = `CREATE TABLE %s.types (
	id int PRIMARY KEY,
	n numeric(20,6), t text, j jsonb, ia int[], ta text[], b bytea, ts timestamptz,
	d date, f float8, bo boolean, u uuid, iv interval, vc varchar(10), e text)`

var typesCols = []string{"id", "n", "t", "j", "ia", "ta", "b", "ts", "d", "f", "bo", "u", "iv", "vc", "e"}

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
		out = append(out, ev(op, schema, table, nil, row))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameRows fails unless two tables of the same definition hold the same rows,
// column by column (by value and by text) and by checksum.
func sameRows(t *testing.T, conn *pgx.Conn, a, b string, cols []string) {
	t.Helper()
	var checks []string
	for _, c := range cols {
		q := pgx.Identifier{c}.Sanitize()
		checks = append(checks, fmt.Sprintf("count(*) FILTER (WHERE x.%[1]s IS DISTINCT FROM y.%[1]s OR x.%[1]s::text IS DISTINCT FROM y.%[1]s::text)", q))
	}
	diffs := make([]int64, len(cols))
	ptrs := make([]any, len(cols))
	for i := range diffs {
		ptrs[i] = &diffs[i]
	}
	err := conn.QueryRow(context.Background(), fmt.Sprintf("SELECT %s FROM %s x FULL JOIN %s y USING (id)", strings.Join(checks, ", "), a, b)).Scan(ptrs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		if diffs[i] != 0 {
			t.Errorf("column %s differs in %d rows between %s and %s", c, diffs[i], a, b)
		}
	}
	na, sa := checksum(t, conn, a, "id")
	nb, sb := checksum(t, conn, b, "id")
	if na != nb || sa != sb {
		t.Errorf("%s has %d rows (md5 %s), %s has %d (md5 %s)", a, na, sa, b, nb, sb)
	}
}

// TestPostgresTypes: every common type round-trips through the text format
// and the target column type's input, on insert and on update.
func TestPostgresTypes(t *testing.T) {
	_, src, conn := pgtest.DB(t)
	dsn, dst, _ := pgtest.DB(t)
	exec(t, conn, fmt.Sprintf(typesDDL, src))
	exec(t, conn, fmt.Sprintf(typesDDL, dst))
	exec(t, conn, fmt.Sprintf(`INSERT INTO %s.types VALUES
		(1, 12345678901234.123456, E'unicode \u00fc \u65e5\u672c "double" ''single'' a,b\nnew line \\ back\\\\slash \t tab', 
		 '{"a": [1, 2.50, "x\"y"], "b": null, "c": {"d": "\u00e9"}}', '{1,NULL,3}', ARRAY['a,b', 'c"d', NULL, '', E'back\\slash', '{x}'],
		 '\x00ff10ab'::bytea, '2024-05-01 10:30:00.123456+02', '2024-02-29', 1.5e-300, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '1 year 2 mons 3 days 04:05:06.789', 'abc', ''),
		(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(3, -0.000001, '', '[]', '{}', '{}', ''::bytea, 'infinity', '-infinity', 'NaN', false, NULL, '-1 days', '', NULL),
		(4, 99999999999999.999999, repeat('x', 100000), ('{"big": "'||repeat('y', 5000)||'"}')::jsonb, ARRAY(SELECT generate_series(1, 1000)), NULL,
		 decode(repeat('deadbeef', 5000), 'hex'), '1999-12-31 23:59:59.999999-12:30', '0001-01-01', '-0', NULL, NULL, NULL, NULL, 'x')`, src))

	p := newPostgres(t, cdcapply.PostgresConfig{DSN: dsn, Schema: dst, Pipeline: "types"})
	ctx := context.Background()
	if err := p.Apply(ctx, withSeqs(1, sourceEvents(t, conn, src, "types", typesCols, "true", protocol.OpInsert)...)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, conn, src+".types", dst+".types", typesCols)
	var empty, null bool
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT (SELECT e = '' FROM %[1]s.types WHERE id = 1), (SELECT e IS NULL FROM %[1]s.types WHERE id = 2)", dst)).Scan(&empty, &null); err != nil || !empty || !null {
		t.Errorf("empty string kept: %v, NULL kept: %v (%v)", empty, null, err)
	}

	// Update every column of one row, delete another, in one batch.
	exec(t, conn, fmt.Sprintf(`UPDATE %s.types SET n = n / 3, t = t || E'\r\n', j = j || '{"z": 1}', ia = ia || 4, ta = ta || 'more'::text,
		b = b || '\x01'::bytea, ts = ts + interval '1 microsecond', vc = 'changed', e = NULL WHERE id = 1`, src))
	evs := sourceEvents(t, conn, src, "types", typesCols, "id = 1", protocol.OpUpdate)
	exec(t, conn, fmt.Sprintf(`DELETE FROM %s.types WHERE id = 3`, src))
	evs = append(evs, ev(protocol.OpDelete, src, "types", protocol.Row{"id": T("3")}, nil))
	if err := p.Apply(ctx, withSeqs(5, evs...)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, conn, src+".types", dst+".types", typesCols)
	if got := applied(t, p); got != 6 {
		t.Errorf("Applied = %d, want 6", got)
	}
}

// TestPostgresTOASTKeyChangeTruncate: unchanged (TOAST) values keep the
// target's value, also across a key change and within one batch; truncates
// keep their place; a batch applied again changes nothing; a failing batch
// leaves nothing behind.
func TestPostgresTOASTKeyChangeTruncate(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.a (id int PRIMARY KEY, v text, big text);
		CREATE TABLE %[1]s.b (id int PRIMARY KEY, v text)`, s))
	// No Schema: the target is the source schema and the offset row is in
	// public.sluice_cdc_offsets, under a pipeline name of this test's own.
	p := newPostgres(t, cdcapply.PostgresConfig{DSN: dsn, Pipeline: s})
	ctx := context.Background()
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DELETE FROM public."+cdcapply.OffsetsTable+" WHERE pipeline = $1", s)
	})
	big := strings.Repeat("0123456789abcdef", 4000)
	m := model{}
	cols := map[string][]string{"a": {"id", "v", "big"}, "b": {"id", "v"}}
	var seq uint64 = 1
	var batches [][]cdcapply.Event
	step := func(what string, evs ...protocol.ChangeEvent) {
		t.Helper()
		batch := withSeqs(seq, evs...)
		seq += uint64(len(evs))
		if err := p.Apply(ctx, batch); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		batches = append(batches, batch)
		m.apply(t, evs...)
		for _, tb := range []string{"a", "b"} {
			got := tableRows(t, conn, s+"."+tb, cols[tb])
			if want := m.rows(s+"."+tb, cols[tb]); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %s.%s holds %d rows, want %d\n got %.200q\nwant %.200q", what, s, tb, len(got), len(want), got, want)
			}
		}
	}
	I, Up, D := protocol.OpInsert, protocol.OpUpdate, protocol.OpDelete
	step("inserts",
		ev(I, s, "a", nil, protocol.Row{"id": T("1"), "v": T("x"), "big": T(big)}),
		ev(I, s, "a", nil, protocol.Row{"id": T("2"), "v": T("y"), "big": T("small")}),
		ev(I, s, "b", nil, protocol.Row{"id": T("1"), "v": T("b1")}))
	step("update leaving big unchanged",
		ev(Up, s, "a", nil, protocol.Row{"id": T("1"), "v": T("x2"), "big": U}))
	step("key change leaving big unchanged",
		ev(Up, s, "a", protocol.Row{"id": T("1")}, protocol.Row{"id": T("10"), "v": T("x3"), "big": U}),
		ev(Up, s, "b", nil, protocol.Row{"id": T("1"), "v": T("b1'")}))
	step("one batch: chains, key changes, truncate, deletes",
		ev(I, s, "a", nil, protocol.Row{"id": T("3"), "v": T("z"), "big": T(big + "3")}),
		ev(Up, s, "a", nil, protocol.Row{"id": T("3"), "v": T("z2"), "big": U}),
		ev(Up, s, "a", protocol.Row{"id": T("3")}, protocol.Row{"id": T("30"), "v": T("z3"), "big": U}),
		ev(I, s, "b", nil, protocol.Row{"id": T("2"), "v": T("gone by the truncate")}),
		ev(protocol.OpTruncate, s, "b", nil, nil),
		ev(I, s, "b", nil, protocol.Row{"id": T("5"), "v": T("after truncate")}),
		ev(Up, s, "a", nil, protocol.Row{"id": T("10"), "v": T("x4"), "big": U}),
		ev(Up, s, "a", protocol.Row{"id": T("10")}, protocol.Row{"id": T("11"), "v": T("x5"), "big": U}),
		ev(I, s, "a", nil, protocol.Row{"id": T("10"), "v": T("reused key"), "big": N}),
		ev(D, s, "a", protocol.Row{"id": T("2")}, nil),
		ev(I, s, "a", nil, protocol.Row{"id": T("2"), "v": T("back"), "big": T("")}))
	var bigKept bool
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT big = $1 FROM %s.a WHERE id = 11", s), big).Scan(&bigKept); err != nil || !bigKept {
		t.Fatalf("the unchanged TOAST value was not kept across updates and key changes: %v %v", bigKept, err)
	}
	n, sum := checksum(t, conn, s+".a", "id")

	// Applied again (a redelivered batch, whole or in part): skipped.
	for _, b := range [][]cdcapply.Event{batches[3], batches[1], append(batches[2], batches[3]...)} {
		if err := p.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n2, sum2 := checksum(t, conn, s+".a", "id"); n2 != n || sum2 != sum {
		t.Errorf("re-applied batches changed a: %d rows %s, before %d rows %s", n2, sum2, n, sum)
	}
	if got := applied(t, p); got != seq-1 {
		t.Errorf("Applied = %d, want %d", got, seq-1)
	}

	// An unchanged value with no row to keep it from fails the whole batch.
	err := p.Apply(ctx, withSeqs(seq,
		ev(I, s, "a", nil, protocol.Row{"id": T("40"), "v": T("w"), "big": T("b")}),
		ev(Up, s, "a", nil, protocol.Row{"id": T("99"), "v": T("w"), "big": U})))
	if err == nil || !strings.Contains(err.Error(), `id="99"`) || !strings.Contains(err.Error(), "TOAST") {
		t.Fatalf("unchanged value without a target row: %v", err)
	}
	if n2, sum2 := checksum(t, conn, s+".a", "id"); n2 != n || sum2 != sum {
		t.Errorf("a failed batch changed a: %d rows, before %d", n2, n)
	}
	if got := applied(t, p); got != seq-1 {
		t.Errorf("after a failed batch Applied = %d, want %d", got, seq-1)
	}
	// The applier reconnects after a failure.
	step("after a failure", ev(I, s, "a", nil, protocol.Row{"id": T("40"), "v": T("w"), "big": T("b")}))
}

// TestPostgresSchema: a missing table fails the batch naming it (or is
// created on request), new columns are added as text, an image without a
// newer column keeps the target's value, and tables the applier cannot key
// fail with the table's name.
func TestPostgresSchema(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	ctx := context.Background()
	exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.c (id int PRIMARY KEY, v text); CREATE TABLE %[1]s.nopk (id int, v text)`, s))
	p := newPostgres(t, cdcapply.PostgresConfig{DSN: dsn, Schema: s, Pipeline: "schema"})
	I, Up := protocol.OpInsert, protocol.OpUpdate

	err := p.Apply(ctx, withSeqs(1,
		ev(I, "src", "c", nil, protocol.Row{"id": T("1"), "v": T("ok")}),
		ev(I, "src", "missing", nil, protocol.Row{"id": T("1"), "v": T("x")})))
	if err == nil || !strings.Contains(err.Error(), s+".missing") || !strings.Contains(err.Error(), "create") {
		t.Fatalf("missing table: %v, want an error naming %s.missing and saying to create it", err, s)
	}
	if rows := tableRows(t, conn, s+".c", []string{"id"}); len(rows) != 0 || applied(t, p) != 0 {
		t.Fatalf("a failed batch left rows %v, offset %d", rows, applied(t, p))
	}

	err = p.Apply(ctx, withSeqs(1, ev(I, "src", "nopk", nil, protocol.Row{"id": T("1"), "v": T("x")})))
	if err == nil || !strings.Contains(err.Error(), s+".nopk") || !strings.Contains(err.Error(), "primary key") {
		t.Errorf("target without a key: %v", err)
	}
	noKey := ev(I, "src", "c", nil, protocol.Row{"id": T("1")})
	noKey.Key = nil
	if err := p.Apply(ctx, withSeqs(1, noKey)); err == nil || !strings.Contains(err.Error(), "src.c") || !strings.Contains(err.Error(), "key") {
		t.Errorf("event without key: %v", err)
	}

	// A new column is added; a later image without it keeps its value.
	if err := p.Apply(ctx, withSeqs(1, ev(I, "src", "c", nil, protocol.Row{"id": T("1"), "v": T("a"), "extra": T("E1")}))); err != nil {
		t.Fatal(err)
	}
	var typ string
	if err := conn.QueryRow(ctx, `SELECT data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'c' AND column_name = 'extra'`, s).Scan(&typ); err != nil || typ != "text" {
		t.Fatalf("added column: type %q, %v", typ, err)
	}
	if err := p.Apply(ctx, withSeqs(2,
		ev(Up, "src", "c", nil, protocol.Row{"id": T("1"), "v": T("b")}),
		ev(I, "src", "c", nil, protocol.Row{"id": T("2"), "v": T("c"), "extra": N}),
		ev(I, "src", "c", nil, protocol.Row{"id": T("3"), "v": T("d")}))); err != nil {
		t.Fatal(err)
	}
	if got, want := tableRows(t, conn, s+".c", []string{"id", "v", "extra"}), []string{`1|b|E1`, `2|c|\N`, `3|d|\N`}; !reflect.DeepEqual(got, want) {
		t.Errorf("c holds %q, want %q", got, want)
	}

	// With CreateTables a missing table is created: text columns, the key
	// as primary key.
	pc := newPostgres(t, cdcapply.PostgresConfig{DSN: dsn, Schema: s, Pipeline: "create", CreateTables: true})
	if err := pc.Apply(ctx, withSeqs(1,
		ev(I, "src", "made", nil, protocol.Row{"id": T("7"), "v": T("x"), "n": N}),
		ev(Up, "src", "made", nil, protocol.Row{"id": T("7"), "v": T("y"), "n": T("1.50")}))); err != nil {
		t.Fatal(err)
	}
	if got, want := tableRows(t, conn, s+".made", []string{"id", "v", "n"}), []string{"7|y|1.50"}; !reflect.DeepEqual(got, want) {
		t.Errorf("created table holds %q, want %q", got, want)
	}
	var pk string
	if err := conn.QueryRow(ctx, `SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',') FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1::regclass AND i.indisprimary`, s+".made").Scan(&pk); err != nil || pk != "id:text" {
		t.Errorf("created table's primary key: %q, %v", pk, err)
	}
	if applied(t, pc) != 2 || applied(t, p) != 4 {
		t.Errorf("offsets of two pipelines in one schema: %d and %d, want 2 and 4", applied(t, pc), applied(t, p))
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
	p, err := cdcapply.NewPostgres(context.Background(), cdcapply.PostgresConfig{DSN: dsn, Schema: s, Pipeline: "bench"})
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
				evs = append(evs, ev(protocol.OpInsert, "src", "bench", nil, row(next)))
			case i%10 < 9:
				evs = append(evs, ev(protocol.OpUpdate, "src", "bench", nil, row(next-i%10)))
			default:
				evs = append(evs, ev(protocol.OpDelete, "src", "bench", protocol.Row{"id": T(fmt.Sprint(next - 5))}, nil))
			}
		}
		if err := p.Apply(context.Background(), withSeqs(seq+1, evs...)); err != nil {
			b.Fatal(err)
		}
		seq += uint64(len(evs))
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
}
