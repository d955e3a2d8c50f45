package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

func TestConformanceSource(t *testing.T) {
	dsn, schema, conn := testDB(t)
	table := schema + ".src"
	createAllTypes(t, conn, table, 20_000, true)
	exec(t, conn, "CREATE TABLE "+schema+".nopk AS SELECT * FROM "+table)
	for _, tc := range []struct{ name, table string }{{"key ranges", table}, {"ctid ranges", schema + ".nopk"}} {
		t.Run(tc.name, func(t *testing.T) {
			conformance.TestSource(t, conformance.SourceHarness{
				Open: func(t *testing.T) connectors.Source {
					cfg := SourceConfig{DSN: dsn, Table: tc.table}
					s, err := NewSource(cfg)
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				Request:  connectors.PlanRequest{RunID: "conf", Partitioning: connectors.Partitioning{TargetRows: 4000}},
				WantRows: 20_000,
				Want:     func(t *testing.T) conformance.Table { return selectTable(t, conn, "SELECT * FROM "+tc.table) },
			})
		})
	}
}

func TestConformanceSink(t *testing.T) {
	dsn, schema, conn := testDB(t)
	conformance.TestSink(t, confHarness(dsn, schema+".conf", conn))
}

// The sink keeps versions for rollback: a table per version behind the
// view.
func TestConformanceVersioned(t *testing.T) {
	dsn, schema, conn := testDB(t)
	conformance.TestVersioned(t, confHarness(dsn, schema+".conf", conn))
}

// confHarness is the conformance harness of a sink loading view.
func confHarness(dsn, view string, conn *pgx.Conn) conformance.SinkHarness {
	return conformance.SinkHarness{
		Open: func(t *testing.T) connectors.Sink {
			s, err := NewSink(SinkConfig{DSN: dsn, Table: view})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Batches: func() []connectors.Batch {
			var bs []connectors.Batch
			for i := range 6 {
				raw := fmt.Appendf(nil, "%d,\"multi\nline, %d\"\n%d,\n%d,\"\"\n", 3*i, i, 3*i+1, 3*i+2)
				bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "v"}, Rows: 3})
			}
			return bs
		},
		// Each batch: a text with a newline and a comma, a NULL (an
		// unquoted empty field) and an empty text (a quoted one).
		Want: func() []conformance.Table {
			var ts []conformance.Table
			for i := range 6 {
				ts = append(ts, conformance.Table{Columns: []string{"id", "v"}, Rows: [][]string{
					{fmt.Sprint(3 * i), fmt.Sprintf("multi\nline, %d", i)}, {fmt.Sprint(3*i + 1), conformance.Null}, {fmt.Sprint(3*i + 2), ""}}})
			}
			return ts
		},
		ReadBack: func(t *testing.T) (conformance.Table, error) {
			cols, rows, err := pgtest.Select(t.Context(), conn, "SELECT id, v FROM "+view, conformance.Null)
			return conformance.Table{Columns: cols, Rows: rows}, err
		},
		ReadCommitted: func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
			return TableChecksum(context.Background(), conn, "SELECT id, v FROM "+view)
		},
	}
}

// selectTable reads the rows of query with the test's own code, every
// value in the server's text form.
func selectTable(t *testing.T, conn *pgx.Conn, query string) conformance.Table {
	t.Helper()
	cols, rows, err := pgtest.Select(t.Context(), conn, query, conformance.Null)
	if err != nil {
		t.Fatal(err)
	}
	return conformance.Table{Columns: cols, Rows: rows}
}

// The replica Applier passes the applier conformance suite, each target a
// schema of its own with tables created on demand; its dump is every row
// of every table but the offsets (and the time a table's state changed).
func TestConformanceApplier(t *testing.T) {
	dsn, base, conn := testDB(t)
	schema := func(target string) string { return base + "_" + target }
	t.Cleanup(func() {
		for _, target := range []string{"ref", "a", "cancel"} {
			conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema(target)+" CASCADE")
		}
	})
	conformance.TestApplier(t, conformance.ApplierHarness{
		Open: func(t *testing.T, target string) connectors.Applier {
			a, err := NewApplier(context.Background(), ApplierConfig{DSN: dsn, Schema: schema(target), Pipeline: "conformance", CreateTables: true})
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Dump: func(t *testing.T, target string) []string {
			rows, err := conn.Query(context.Background(), `SELECT table_name FROM information_schema.tables
				WHERE table_schema = $1 AND table_name <> $2 ORDER BY 1`, schema(target), OffsetsTable)
			if err != nil {
				t.Fatal(err)
			}
			tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, tb := range tables {
				rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT %[1]s || ' ' || (to_jsonb(x) - 'updated_at')::text FROM %[2]s.%[3]s x ORDER BY 1`,
					quoteLiteral(tb), pgx.Identifier{schema(target)}.Sanitize(), pgx.Identifier{tb}.Sanitize()))
				if err != nil {
					t.Fatal(err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, lines...)
			}
			return out
		},
		Events: conformance.ChangeEvents(),
	})
}
