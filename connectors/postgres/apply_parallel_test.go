package postgres_test

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// parallelTables creates the tables (id, v, note) of a replica in schema,
// each with a trigger that logs every row written (table, id, v) in
// schema.applied, in the order written.
func parallelTables(t *testing.T, conn *pgx.Conn, schema string, tables []string) {
	t.Helper()
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %s.applied (n bigserial PRIMARY KEY, tbl text NOT NULL, id bigint NOT NULL, v bigint NOT NULL)`, schema))
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE FUNCTION %[1]s.log_applied() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO %[1]s.applied (tbl, id, v) VALUES (TG_TABLE_NAME, NEW.id, NEW.v); RETURN NULL; END$$`, schema))
	for _, tb := range tables {
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %[1]s.%[2]s (id bigint PRIMARY KEY, v bigint NOT NULL, note text)`, schema, tb))
		pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TRIGGER applied AFTER INSERT OR UPDATE ON %[1]s.%[2]s FOR EACH ROW EXECUTE FUNCTION %[1]s.log_applied()`, schema, tb))
	}
}

// checkAppliedOnce fails the test when the log of schema.applied holds a
// row version (table, id, v) twice, or one older than the version of the
// same row written before it.
func checkAppliedOnce(t testing.TB, conn *pgx.Conn, schema string) {
	t.Helper()
	var n, twice, back int64
	err := conn.QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*),
		count(*) - count(DISTINCT (tbl, id, v)), count(*) FILTER (WHERE v < prev)
		FROM (SELECT tbl, id, v, lag(v) OVER (PARTITION BY tbl, id ORDER BY n) AS prev FROM %s.applied) l`, schema)).Scan(&n, &twice, &back)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || twice > 0 || back > 0 {
		t.Errorf("%s.applied: %d rows written, %d of them a version written before, %d older than the row's version before", schema, n, twice, back)
	}
}

// parallelWorkload returns batches of events on the tables of schema
// "src": inserts, updates (v counts each row's versions) and deletes,
// the tables taking turns event by event.
func parallelWorkload(tables []string, batches, perTable int) [][]protocol.ChangeEvent {
	ver := map[string]int{}
	next := 1
	var out [][]protocol.ChangeEvent
	for b := range batches {
		var evs []protocol.ChangeEvent
		for i := range perTable {
			for ti, tb := range tables {
				id := next + i*len(tables) + ti
				row := func(id, v int) protocol.Row {
					return protocol.Row{"id": T(strconv.Itoa(id)), "v": T(strconv.Itoa(v)), "note": T(fmt.Sprintf("%s %d v%d", tb, id, v))}
				}
				key := fmt.Sprintf("%s/%d", tb, id)
				evs = append(evs, cdctest.Change(protocol.OpInsert, "src", tb, nil, row(id, 0)))
				ver[key] = 0
				if b > 0 {
					// An update of a row of the batch before, twice for some.
					old := id - perTable*len(tables)
					okey := fmt.Sprintf("%s/%d", tb, old)
					for range 1 + i%2 {
						ver[okey]++
						evs = append(evs, cdctest.Change(protocol.OpUpdate, "src", tb, nil, row(old, ver[okey])))
					}
					if i%5 == 4 {
						evs = append(evs, cdctest.Change(protocol.OpDelete, "src", tb, protocol.Row{"id": T(strconv.Itoa(old))}, nil))
					}
				}
			}
		}
		next += perTable * len(tables)
		out = append(out, evs)
	}
	return out
}

// TestPostgresParallel: a Parallel applier applies 4 tables on 3
// connections (two tables share one) and gives the replica a model of the
// events computes. A crash that left two tables' transactions committed
// and two not, and the pipeline's offset behind (made by hand: the other
// two tables' rows, log and applied sequence removed), has the batch
// delivered again applied to the two tables that lack it only; an applier
// switched back to one transaction skips the tables ahead of the offset
// too. No row version is ever written twice (a trigger's log).
func TestPostgresParallel(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	ctx := context.Background()
	tables := []string{"p1", "p2", "p3", "p4"}
	parallelTables(t, conn, s, tables)
	batches := parallelWorkload(tables, 3, 30)
	var seq uint64 = 1
	var numbered [][]connectors.Event
	m := cdctest.Model{}
	for _, b := range batches {
		numbered = append(numbered, cdctest.Numbered(seq, b...))
		seq += uint64(len(b))
		m.Apply(t, b...)
	}
	cfg := postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "par", Parallel: postgres.ParallelTables, Connections: 3}
	pa := cdctest.PostgresApplier(t, cfg)
	if err := pa.Apply(ctx, numbered[0]); err != nil {
		t.Fatal(err)
	}
	if got, want := cdctest.Applied(t, pa), numbered[0][len(numbered[0])-1].Seq; got != want {
		t.Fatalf("applied %d, want %d", got, want)
	}
	pa.Close()

	// The crash: p3 and p4 never applied batch 0, the offset did not move.
	crash := func() {
		for _, tb := range []string{"p3", "p4"} {
			pgtest.Exec(t, conn, fmt.Sprintf(`DELETE FROM %[1]s.%[2]s; DELETE FROM %[1]s.applied WHERE tbl = '%[2]s'`, s, tb))
		}
		pgtest.Exec(t, conn, fmt.Sprintf(`UPDATE %s.sluice_cdc_tables SET applied_seq = 0 WHERE pipeline = 'par' AND source_table IN ('p3', 'p4')`, s))
		pgtest.Exec(t, conn, fmt.Sprintf(`UPDATE %s.sluice_cdc_offsets SET seq = 0 WHERE pipeline = 'par'`, s))
	}
	crash()
	pa = cdctest.PostgresApplier(t, cfg)
	if got := cdctest.Applied(t, pa); got != 0 {
		t.Fatalf("applied %d after the crash, want 0", got)
	}
	// The batch delivered again as it was, then the next one.
	for _, b := range numbered[:2] {
		if err := pa.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	pa.Close()

	// The same crash after batch 1, taken up by an applier of one
	// transaction: p1 and p2 are ahead of the offset.
	crash()
	serial := cfg
	serial.Parallel, serial.Connections = "", 0
	one := cdctest.PostgresApplier(t, serial)
	for _, b := range numbered {
		if err := one.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := cdctest.Applied(t, one), seq-1; got != want {
		t.Errorf("applied %d, want %d", got, want)
	}
	for _, tb := range tables {
		cols := []string{"id", "v", "note"}
		if got, want := pgtest.Rows(t, conn, s+"."+tb, cols), m.Rows("src."+tb, cols); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %d rows, want %d:\n got %q\nwant %q", tb, len(got), len(want), got, want)
		}
	}
	checkAppliedOnce(t, conn, s)
	if st := one.TableStatus(); len(st) != 0 {
		t.Errorf("stopped tables %+v", st)
	}
}
