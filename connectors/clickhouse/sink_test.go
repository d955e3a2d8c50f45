package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// AwkwardTable creates a PostgreSQL table of awkward values: numerics,
// NULLs, unicode, tabs and newlines in text, arrays with NULL elements,
// NULL and empty arrays, timestamps with microseconds and before 1970,
// bytes, JSON, UUIDs, intervals.
func awkwardTable(t *testing.T, conn *pgx.Conn, table string, rows int) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE ` + table + ` (
			id bigint PRIMARY KEY, amount numeric(12,2), bare numeric, f double precision, note text,
			ok boolean NOT NULL, day date, ts timestamp, at timestamptz NOT NULL, doc jsonb, u uuid,
			blob bytea, ints int[] NOT NULL, tags text[], span interval, tod time)`,
		`INSERT INTO ` + table + ` SELECT g,
			CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 1.37)::numeric(12,2) - 500 END,
			CASE WHEN g % 5 = 0 THEN NULL ELSE g::numeric / 3 END,
			CASE g % 11 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' WHEN 3 THEN NULL ELSE g / 8.0 END,
			CASE WHEN g % 9 = 0 THEN NULL WHEN g % 9 = 1 THEN '' ELSE E'line1\nline2\t"q" ü€ \\ ''s,' || g END,
			g % 2 = 0,
			CASE WHEN g % 13 = 0 THEN NULL ELSE date '2000-01-01' + g END,
			timestamp '1999-12-31 23:59:59.5' + g * interval '1 hour 1.000001 second',
			timestamptz '1960-01-01 00:00:00+00' + g * interval '7 days 1.123457 second',
			CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'ü', E'x"y\n') END,
			CASE WHEN g % 6 = 0 THEN NULL ELSE md5(g::text)::uuid END,
			CASE WHEN g % 8 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0') || '000a09ff5c', 'hex') END,
			ARRAY[g, NULL, -g],
			CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN ARRAY[]::text[] ELSE ARRAY['a b', NULL, E'c,"d"\n\t', 'x''y\\z'] END,
			g * interval '1 minute 3 seconds',
			time '00:00:00.5' + g * interval '17 seconds'
			FROM generate_series(1, ` + fmt.Sprint(rows) + `) g`,
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// ExpectedSQL renders each row of the awkward table as ClickHouse 18.x
// shows what the sink stored (see the package documentation): NaN and
// infinities renamed, booleans 0 or 1, timestamps as microseconds, bytes
// as hex, arrays joined, a NULL array empty.
const expectedSQL = `SELECT id::text, amount::text, bare::text,
	CASE WHEN f = 'NaN' THEN 'nan' WHEN f = 'Infinity' THEN 'inf' WHEN f = '-Infinity' THEN '-inf' ELSE f::text END,
	note, CASE WHEN ok THEN '1' ELSE '0' END, day::text,
	(extract(epoch FROM ts) * 1000000)::bigint::text, (extract(epoch FROM at) * 1000000)::bigint::text,
	doc::text, u::text, encode(blob, 'hex'), array_to_string(ints, ',', 'NULL'),
	coalesce(array_to_string(tags, '|', 'NULL'), ''), span::text, tod::text FROM `

const gotSQL = `SELECT toString(id), toString(amount), bare, toString(f), note, toString(ok), toString(day),
	toString(ts), toString(at), doc, toString(u), lower(hex(blob)),
	arrayStringConcat(arrayMap(x -> ifNull(toString(x), 'NULL'), ints), ','),
	arrayStringConcat(arrayMap(x -> ifNull(x, 'NULL'), tags), '|'), span, tod FROM `

// pgRows returns a query's rows as text, NULL as nil, sorted.
func pgRows(t *testing.T, conn *pgx.Conn, query string) []string {
	t.Helper()
	rr := conn.PgConn().ExecParams(context.Background(), query, nil, nil, nil, nil)
	var out []string
	for rr.NextRow() {
		out = append(out, rowString(rr.Values()))
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func rowString(vals [][]byte) string {
	fs := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			fs[i] = `\N`
		} else {
			fs[i] = fmt.Sprintf("%q", v)
		}
	}
	return strings.Join(fs, " | ")
}

func chRows(t *testing.T, cl *Client, query string) []string {
	t.Helper()
	rows, err := cl.Rows(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = rowString(r)
	}
	slices.Sort(out)
	return out
}

func sameRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
	}
	bad := 0
	for i := range want {
		if got[i] != want[i] {
			if bad < 3 {
				t.Errorf("%s: row %d\n got %s\nwant %s", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d rows differ", what, bad, len(want))
	}
}

// loadRun plans src, writes every partition through sink with the plan's
// schema, and returns the task outputs.
func loadRun(t *testing.T, src connectors.Source, sink *Sink, run string, req connectors.PlanRequest) ([]connectors.TaskOutput, *protocol.Schema) {
	t.Helper()
	ctx := context.Background()
	req.RunID = run
	plan, err := src.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.CheckSchema(ctx, plan.Schema); err != nil {
		t.Fatalf("CheckSchema: %v", err)
	}
	var outs []connectors.TaskOutput
	for i, p := range plan.Partitions {
		w, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%05d", i+1), Attempt: 1, Schema: plan.Schema})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Read(ctx, p, w.Write); err != nil {
			t.Fatalf("read %s: %v", p.Key, err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	if rh, ok := src.(connectors.RunHolder); ok {
		rh.ReleaseRun(run)
	}
	return outs, plan.Schema
}

func sumOf(outs []connectors.TaskOutput) connectors.Checksum {
	var s connectors.Checksum
	for _, o := range outs {
		s.Merge(o.Checksum)
	}
	return s
}

// A full load of awkward PostgreSQL types, typed from the source's schema:
// every value stored as the package documentation says, the run's checksum
// that of the source's rows, the columns of the types the server has.
func TestTypedFullLoad(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	url, db := chtest.DB(t)
	ctx := context.Background()
	table := schema + ".awk"
	awkwardTable(t, conn, table, 3000)
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: dsn, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sink := testSink(t, url, db, "awk", func(c *SinkConfig) { c.NullArrays = NullArraysEmpty })
	defer sink.Close()
	c, err := sink.serverCaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.dateTime64 {
		t.Skipf("the expected values are those of a server without DateTime64; this is %s", c.version)
	}

	// Nullable arrays are refused by default, naming the column.
	strict := testSink(t, url, db, "awk", nil)
	outs, sc := loadRun(t, src, sink, "run-1", connectors.PlanRequest{Partitioning: connectors.Partitioning{TargetRows: 700}})
	if err := strict.CheckSchema(ctx, sc); err == nil || !strings.Contains(err.Error(), `"tags"`) || !connectors.IsPermanent(err) {
		t.Errorf("CheckSchema with a nullable array = %v, want a permanent error naming tags", err)
	}
	if len(outs) < 4 {
		t.Fatalf("%d tasks, want at least 4", len(outs))
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: outs, Schema: sc}); err != nil {
		t.Fatal(err)
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	if got := sumOf(outs); got != want {
		t.Errorf("the run's checksum %s (%d rows), the source's %s (%d rows)", got, got.Rows, want, want.Rows)
	}
	sameRows(t, "typed load", chRows(t, sink.cl, gotSQL+db+".awk"), pgRows(t, conn, expectedSQL+table))

	types, err := sink.cl.Rows(ctx, "SELECT name, type FROM system.columns WHERE database = '"+db+"' AND table = 'awk'")
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := map[string]string{
		"id": "Int64", "amount": "Nullable(Decimal(12, 2))", "bare": "Nullable(String)", "f": "Nullable(Float64)",
		"note": "Nullable(String)", "ok": "UInt8", "day": "Nullable(Date)", "ts": "Nullable(Int64)", "at": "Int64",
		"doc": "Nullable(String)", "u": "Nullable(UUID)", "blob": "Nullable(String)", "ints": "Array(Nullable(Int32))",
		"tags": "Array(Nullable(String))", "span": "Nullable(String)", "tod": "Nullable(String)",
	}
	for _, r := range types {
		if w := wantTypes[string(r[0])]; w != string(r[1]) {
			t.Errorf("column %s is %s, want %s", r[0], r[1], w)
		}
	}
	key, err := sink.cl.Strings(ctx, "SELECT sorting_key FROM system.tables WHERE database = '"+db+"' AND name = 'awk'")
	if err == nil && len(key) == 1 && key[0] != "id" {
		t.Errorf("sorting key %q, want id (the primary key)", key[0])
	}
}

// Values a ClickHouse column cannot hold are refused with the row and the
// column, permanently: an out-of-range date (which 18.x would silently
// store as 0000-00-00), a numeric NaN.
func TestUnholdableValues(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	sink := testSink(t, url, db, "bad", nil)
	defer sink.Close()
	sc := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "day", Type: protocol.TypeDate},
		{Name: "n", Type: protocol.TypeDecimal, Precision: 10, Scale: 2},
	}}
	for _, tc := range []struct{ raw, field string }{
		{"1,2026-01-01,1.00\n2,2200-01-01,2.00\n", "day"},
		{"1,1969-12-31,1.00\n", "day"},
		{"1,,1.00\n2,,NaN\n", "n"},
	} {
		w, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t1", Attempt: 1, Schema: sc})
		if err != nil {
			t.Fatal(err)
		}
		err = w.Write(ctx, connectors.Batch{Raw: []byte(tc.raw), Format: connectors.FormatCSV, Columns: sc.Names(), Rows: int64(strings.Count(tc.raw, "\n")), Position: "src"})
		var re *connectors.RowError
		if !errors.As(err, &re) || re.Field != tc.field || !connectors.IsPermanent(err) {
			t.Errorf("Write %q = %v, want a permanent row error on %s", tc.raw, err, tc.field)
		}
		w.Abort(ctx)
	}
	// Types the server cannot hold are refused at plan time.
	for _, col := range []protocol.Column{
		{Name: "huge", Type: protocol.TypeDecimal, Precision: 60, Scale: 2, Native: "numeric(60,2)"},
		{Name: "nested", Type: protocol.TypeList, NotNull: true, Elem: &protocol.Column{Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeInt32}}},
	} {
		err := sink.CheckSchema(ctx, &protocol.Schema{Columns: []protocol.Column{col}})
		if err == nil || !strings.Contains(err.Error(), `"`+col.Name+`"`) {
			t.Errorf("CheckSchema of %s = %v, want an error naming it", col.String(), err)
		}
	}
}
