package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// chSource creates a PostgreSQL table of awkward values: numerics, NULLs,
// unicode, quotes, tabs and newlines in text, arrays with NULL elements,
// timestamptz with microseconds and before 1970.
func chSource(t *testing.T, conn *pgx.Conn, table string, rows int) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE ` + table + ` (id bigint PRIMARY KEY, amount numeric(14,4), note text,
			tags text[] NOT NULL, at timestamptz NOT NULL, f double precision)`,
		fmt.Sprintf(`INSERT INTO %s SELECT g,
			CASE WHEN g %% 7 = 0 THEN NULL ELSE (g * 1.3701)::numeric(14,4) - 5000 END,
			CASE WHEN g %% 9 = 0 THEN NULL WHEN g %% 9 = 1 THEN '' ELSE E'l1\nl2\t"q" ü€ ''s,' || repeat(md5(g::text), 3) END,
			ARRAY['a b', NULL, E'c,"d"\n' || g],
			timestamptz '1965-06-01 00:00:00+00' + g * interval '1 hour 1.000001 second',
			CASE WHEN g %% 11 = 0 THEN NULL ELSE g / 16.0 END
			FROM generate_series(1, %d) g`, table, rows),
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// chExpect compares the ClickHouse table with the PostgreSQL one: row
// count, and the checksum of every row rendered by the test from both
// sides. Without a schema (the coordinator not yet passing the plan's
// schema to tasks) every column is Nullable(String) holding PostgreSQL's
// text, and the target's rows rendered as PostgreSQL CSV must checksum
// like the source's COPY output; with typed columns each value is rendered
// from its stored type and compared with the source's value rendered the
// same way.
func chExpect(t *testing.T, conn *pgx.Conn, cl *clickhouse.Client, src, target string) (typed bool) {
	t.Helper()
	ctx := context.Background()
	cols := "id, amount, note, tags, at, f"
	types, err := cl.Rows(ctx, "SELECT type FROM system.columns WHERE database = '"+strings.Split(target, ".")[0]+
		"' AND table = '"+strings.Split(target, ".")[1]+"' AND name = 'at'")
	if err != nil || len(types) != 1 {
		t.Fatalf("type of %s.at: %v %v", target, types, err)
	}
	if string(types[0][0]) == "Nullable(String)" {
		want, err := postgres.TableChecksum(ctx, conn, "SELECT "+cols+" FROM "+src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := clickhouse.TextChecksum(ctx, cl, "SELECT "+cols+" FROM "+target)
		if err != nil {
			t.Fatal(err)
		}
		if got != want || want.Rows == 0 {
			t.Fatalf("%s holds %d rows checksum %s; source %s has %d rows checksum %s", target, got.Rows, got, src, want.Rows, want)
		}
		return false
	}
	// Typed: amount Decimal, note String, tags Array(Nullable(String)), at
	// Int64 microseconds (or DateTime64), f Float64.
	at := "toString(at)"
	if strings.HasPrefix(string(types[0][0]), "DateTime64") {
		at = "toString(toUnixTimestamp64Micro(at))"
	}
	gotRows, err := cl.Rows(ctx, "SELECT toString(id), toString(amount), note, arrayStringConcat(arrayMap(x -> ifNull(x, 'NULL'), tags), '|'), "+
		at+", toString(f) FROM "+target)
	if err != nil {
		t.Fatal(err)
	}
	rr := conn.PgConn().ExecParams(ctx, `SELECT id::text, amount::text, note, array_to_string(tags, '|', 'NULL'),
		(extract(epoch FROM at) * 1000000)::bigint::text, f::text FROM `+src, nil, nil, nil, nil)
	var want, got connectors.Checksum
	line := func(vals [][]byte) []byte {
		var b []byte
		for _, v := range vals {
			if v == nil {
				b = append(b, `\N`...)
			} else {
				b = fmt.Appendf(b, "%q", v)
			}
			b = append(b, 0x1f)
		}
		return b
	}
	for rr.NextRow() {
		want.Add(line(rr.Values()))
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	for _, r := range gotRows {
		got.Add(line(r))
	}
	if got != want || want.Rows == 0 {
		t.Fatalf("%s holds %d rows checksum %s; source %s has %d rows checksum %s (values rendered by type)", target, got.Rows, got, src, want.Rows, want)
	}
	return true
}

func applyCH(t *testing.T, c *cluster, name, dsn, src, url, target, extra string) {
	t.Helper()
	y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\n%ssink:\n  kind: clickhouse\n  url: %s\n  table: %s\n  null_arrays: empty\npartitioning:\n  target_rows: 2500\n",
		name, dsn, src, extra, url, target)
	s, err := pipeline.Load([]byte(y), name+".yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
}

// A full load of awkward PostgreSQL types into ClickHouse through the
// cluster in 4 tasks, with a worker killed mid-task: the target holds
// exactly the source's rows (count and checksum), the run's checksum is
// the source's; a later run that fails leaves that version exposed and no
// staging table behind.
func TestClickHouseFullLoadThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	url, db := chtest.DB(t)
	ctx := context.Background()
	src := schema + ".awk"
	chSource(t, conn, src, 10_000)
	cl, err := clickhouse.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	c := newCluster(t, clusterConfig{workers: 2, slots: 1, ackWait: 2 * time.Second})
	applyCH(t, c, "pg-ch", dsn, src, url, db+".awk", "")
	res := c.run("pg-ch")
	if res.Tasks != 4 {
		t.Fatalf("planned %d tasks for 10000 rows at 2500 a task, want 4", res.Tasks)
	}
	c.killWhenBusy(0)
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+src)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != want.Rows || st.Checksum != want.String() {
		t.Fatalf("run reported %d rows checksum %s; the source has %d rows checksum %s", st.Rows, st.Checksum, want.Rows, want)
	}
	c.assertRedelivered(res.RunID)
	typed := chExpect(t, conn, cl, src, db+".awk")
	t.Logf("columns typed from the source's schema: %v", typed)

	// The next run fails (a chunk's filter divides by zero): version 1
	// stays exposed, its staging is removed.
	applyCH(t, c, "pg-ch", dsn, src, url, db+".awk", "  where: \"1 / (id - 6000) IS NOT NULL\"\n")
	bad := c.run("pg-ch")
	if st := c.wait(bad.RunID); st.State != protocol.RunFailed {
		t.Fatalf("run %s with a failing chunk: %s", st.RunID, st.State)
	}
	chExpect(t, conn, cl, src, db+".awk")
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := cl.Strings(ctx, "SELECT name FROM system.tables WHERE database = '"+db+"' AND position(name, '__') > 0")
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging tables left after the failed run: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	vs, err := clickhouse.Versions(ctx, clickhouse.SinkConfig{URL: url, Table: db + ".awk"})
	if err != nil || len(vs) != 1 || !vs[0].Current || vs[0].Run != res.RunID {
		t.Fatalf("versions %+v %v, want the first run's alone", vs, err)
	}
}

// Incremental windows into ClickHouse through the cluster: each window
// lands once, a re-run of a window with new rows in it replaces exactly
// that window's rows.
func TestClickHouseIncrementalThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	url, db := chtest.DB(t)
	ctx := context.Background()
	start := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC) // the third window crosses midnight
	src := incrementalSource(t, conn, schema, start)
	cl, err := clickhouse.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := newCluster(t, clusterConfig{workers: 2})
	y := fmt.Sprintf(`name: ev
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: clickhouse, url: %q, table: %s.events}
partitioning: {target_rows: 60}
incremental: {delta_column: updated_at, window: 90m, lag: 5m, start: %s}
`, dsn, src, url, db, start.Format(time.RFC3339))
	s, err := pipeline.Load([]byte(y), "ev.yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
	at := func(m int) time.Time { return start.Add(time.Duration(m) * time.Minute) }
	sameRows := func(to time.Time) {
		t.Helper()
		want, err := postgres.TableChecksum(ctx, conn, fmt.Sprintf("SELECT id FROM %s WHERE updated_at < '%s'", src, to.Format(time.RFC3339)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := clickhouse.TextChecksum(ctx, cl, "SELECT toString(id) FROM "+db+".events")
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("target ids: %d rows checksum %s; source ids before %s: %d rows checksum %s", got.Rows, got, to, want.Rows, want)
		}
	}
	for i := range 3 {
		res := c.run("ev")
		if st := c.wait(res.RunID); st.State != protocol.RunCommitted || st.Rows != 300 {
			t.Fatalf("run %s: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
		}
		sameRows(at(90 * (i + 1)))
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+src+" (id, updated_at, customer) SELECT 100000 + g, $1::timestamptz + g * interval '1 second', 'late' FROM generate_series(1, 30) g", at(190)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the same window twice: no doubled row
		res, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: "ev", Window: &protocol.Window{From: at(180), To: at(270)}})
		if err != nil {
			t.Fatal(err)
		}
		if st := c.wait(res.RunID); st.State != protocol.RunCommitted || st.Rows != 330 {
			t.Fatalf("re-run %s: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
		}
		sameRows(at(270))
	}
	ws, err := clickhouse.Windows(ctx, clickhouse.SinkConfig{URL: url, Table: db + ".events"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 5 || ws[3].Deleted != 300 || ws[4].Deleted != 330 || ws[4].Rows != 330 {
		t.Fatalf("windows %+v", ws)
	}
}
