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
