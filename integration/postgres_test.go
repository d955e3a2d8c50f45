package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A full load from PostgreSQL through the cluster: chunked by key, all
// chunks on one exported snapshot held by the leader for the run, written
// to CSV files and to a versioned PostgreSQL table behind a view. Both
// targets hold exactly the source rows.
func TestPostgresFullLoadThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	src := schema + ".orders"
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, customer text, amount numeric(12,2), tags text[], doc jsonb, at timestamptz, note text)`, src),
		fmt.Sprintf(`INSERT INTO %s SELECT g, 'cust-' || (g %% 977), (g * 1.37)::numeric(12,2),
			CASE WHEN g %% 5 = 0 THEN NULL ELSE ARRAY['a', 'b,' || g] END, jsonb_build_object('g', g, 'ü', 'x"y'),
			'2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
			CASE WHEN g %% 7 = 0 THEN NULL ELSE E'line1\nline2 "q" ' || g END
			FROM generate_series(1, 30000) g`, src),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+src)
	if err != nil {
		t.Fatal(err)
	}

	c := newCluster(t, clusterConfig{workers: 2})
	out := t.TempDir()
	apply := func(name, sink string) {
		y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\nsink:\n%s\npartitioning:\n  target_rows: 4000\n",
			name, dsn, src, sink)
		s, err := pipeline.Load([]byte(y), name+".yaml", c.reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.client.Apply(c.ctx(), s); err != nil {
			t.Fatal(err)
		}
	}
	apply("pg-files", fmt.Sprintf("  kind: files\n  path: %s\n  format: csv\n", out))
	apply("pg-pg", fmt.Sprintf("  kind: postgres\n  dsn: %s\n  table: %s.orders_copy\n", dsn, schema))

	// Rows inserted after planning must not appear: every chunk reads the
	// run's snapshot. Stop the workers so that the insert lands between
	// the plan and the reads.
	for _, w := range c.workers {
		w.cancel()
		<-w.done
	}
	c.workers = nil
	runFiles := c.run("pg-files")
	runPG := c.run("pg-pg")
	if runFiles.Tasks < 7 {
		t.Fatalf("planned %d tasks for 30000 rows at 4000 per task", runFiles.Tasks)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, customer) SELECT g, 'late' FROM generate_series(30001, 30500) g", src)); err != nil {
		t.Fatal(err)
	}
	c.addWorker()
	c.addWorker()

	for _, id := range []string{runFiles.RunID, runPG.RunID} {
		st := c.wait(id)
		if st.State != protocol.RunCommitted {
			t.Fatalf("run %s: %s (%s)", id, st.State, st.Error)
		}
		if st.Rows != 30000 || st.Checksum != want.String() {
			t.Fatalf("run %s reported %d rows checksum %s; source snapshot has 30000 rows checksum %s", id, st.Rows, st.Checksum, want)
		}
	}

	cur, err := files.Current(out)
	if err != nil {
		t.Fatal(err)
	}
	gotFiles, err := files.ReadChecksum(cur, "csv")
	if err != nil {
		t.Fatal(err)
	}
	gotPG, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+schema+".orders_copy")
	if err != nil {
		t.Fatal(err)
	}
	if gotFiles != want || gotPG != want {
		t.Fatalf("source %d rows %s; CSV files %d rows %s; PostgreSQL view %d rows %s",
			want.Rows, want, gotFiles.Rows, gotFiles, gotPG.Rows, gotPG)
	}
	if n, _ := filepath.Glob(filepath.Join(out, "v*")); len(n) != 1 {
		t.Fatalf("versions %v", n)
	}
}

// A worker killed in the middle of a PostgreSQL chunk: the chunk is
// redelivered, read again on the run's snapshot, and the committed table
// holds every source row exactly once.
func TestPostgresWorkerKilledMidChunk(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	src := schema + ".big"
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, payload text, n numeric(14,4))`, src),
		fmt.Sprintf(`INSERT INTO %s SELECT g, repeat(md5(g::text), 4), g / 3.0 FROM generate_series(1, 240000) g`, src),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	want, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+src)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 2 * time.Second})
	y := fmt.Sprintf("name: pgkill\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\nsink:\n  kind: postgres\n  dsn: %s\n  table: %s.big_copy\npartitioning:\n  target_rows: 20000\n",
		dsn, src, dsn, schema)
	s, err := pipeline.Load([]byte(y), "pgkill.yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
	res := c.run("pgkill")
	c.killWhenBusy(0)

	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	got, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+schema+".big_copy")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("target view has %d rows checksum %s; source has %d rows checksum %s", got.Rows, got, want.Rows, want)
	}
	c.assertRedelivered(res.RunID)
}
