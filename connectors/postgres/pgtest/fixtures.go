package pgtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TypesDDL creates the table types, in the schema it is formatted with, with
// a column of every common type; TypesColumns lists its columns.
const TypesDDL = `CREATE TABLE %s.types (
	id int PRIMARY KEY,
	n numeric(20,6), t text, j jsonb, ia int[], ta text[], b bytea, ts timestamptz,
	d date, f float8, bo boolean, u uuid, iv interval, vc varchar(10), e text)`

// TypesColumns are the columns of the table TypesDDL creates.
var TypesColumns = []string{"id", "n", "t", "j", "ia", "ta", "b", "ts", "d", "f", "bo", "u", "iv", "vc", "e"}

// Exec runs sql, failing the test on an error.
func Exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Rows returns a table's rows as text lines "v1|v2|...", NULL as \N,
// sorted.
func Rows(t testing.TB, conn *pgx.Conn, table string, cols []string) []string {
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

// Checksum returns a table's row count and the md5 of its rows cast to
// text, ordered by orderBy.
func Checksum(t testing.TB, conn *pgx.Conn, table, orderBy string) (int64, string) {
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

// SameRows fails the test unless two tables of the same definition, keyed
// by id, hold the same rows, column by column (by value and by text) and
// by checksum.
func SameRows(t testing.TB, conn *pgx.Conn, a, b string, cols []string) {
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
	na, sa := Checksum(t, conn, a, "id")
	nb, sb := Checksum(t, conn, b, "id")
	if na != nb || sa != sb {
		t.Errorf("%s has %d rows (md5 %s), %s has %d (md5 %s)", a, na, sa, b, nb, sb)
	}
}

// AwkwardDDL creates, in the schema it is formatted with (every %[1]s),
// the enum type mood and the table awkward: a column of each awkward type
// (numeric with and without a modifier, jsonb, arrays, bytea,
// timestamptz, an enum, interval, varchar(n)), NOT NULL columns, constant
// defaults, a generated column and a two-column primary key.
// AwkwardColumns lists the columns a change event carries (all but the
// generated one).
const AwkwardDDL = `CREATE TYPE %[1]s.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE %[1]s.awkward (
	region int NOT NULL,
	id bigint NOT NULL,
	n numeric(20,6) DEFAULT 0,
	bare numeric,
	j jsonb NOT NULL DEFAULT '{}',
	ia int[],
	ta text[] DEFAULT '{a,b}',
	b bytea,
	ts timestamptz(3),
	m %[1]s.mood DEFAULT 'ok',
	iv interval,
	vc varchar(10) NOT NULL DEFAULT 'x',
	"Odd ""name""" text,
	twice bigint GENERATED ALWAYS AS (id * 2) STORED,
	PRIMARY KEY (region, id))`

// AwkwardColumns are the columns of AwkwardDDL's table that change events
// carry.
var AwkwardColumns = []string{"region", "id", "n", "bare", "j", "ia", "ta", "b", "ts", "m", "iv", "vc", `Odd "name"`}

// AwkwardRows inserts rows into the table of AwkwardDDL in the schema it is
// formatted with: values at the edges of their types, empty ones and NULLs.
const AwkwardRows = `INSERT INTO %[1]s.awkward (region, id, n, bare, j, ia, ta, b, ts, m, iv, vc, "Odd ""name""") VALUES
	(1, 1, 12345678901234.123456, 1e-30, '{"a": [1, 2.50, "x\"y"], "b": null}', '{1,NULL,3}', ARRAY['a,b', 'c"d', NULL, ''],
	 '\x00ff10ab', '2024-05-01 10:30:00.123+02', 'happy', '1 year 2 mons 3 days 04:05:06.789', 'ten chars!', E'line\nbreak'),
	(1, 2, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, '', NULL),
	(2, 1, -0.000001, 'NaN', '{"big": "ü"}', '{}', '{}', ''::bytea, 'infinity', 'sad', '-1 days', 'v', ''),
	(2, 2, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT)`

// Describe renders a table's definition as psql's \d shows it: one line
// per column ("name type [not null] [default expr] [generated expr]", in
// column order), then the primary key.
func Describe(t testing.TB, conn *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		|| CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		|| CASE WHEN d.oid IS NULL THEN ''
			WHEN a.attgenerated = 's' THEN ' generated ' || pg_get_expr(d.adbin, d.adrelid)
			ELSE ' default ' || pg_get_expr(d.adbin, d.adrelid) END
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, table)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var pk string
	err = conn.QueryRow(context.Background(), `SELECT coalesce((SELECT pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = $1::regclass AND contype = 'p'), 'no primary key')`, table).Scan(&pk)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, pk)
}
