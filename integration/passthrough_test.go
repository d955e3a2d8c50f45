package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A PostgreSQL table of numeric, jsonb, arrays, bytea, timestamptz, an
// enum, a generated column and NULLs copied by a passthrough through the
// cluster, a worker killed in the middle of a chunk: the exposed view has
// the source's column types, defaults, NOT NULL, generation and
// primary key, and its rows by a checksum of every column,
// and a second run replaces them with the source's new rows.
func TestPostgresPassthroughThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	src := schema + ".awkward"
	for _, q := range []string{
		"CREATE TYPE " + schema + ".mood AS ENUM ('sad', 'ok', 'happy')",
		`CREATE TABLE ` + src + ` (id bigint PRIMARY KEY, amount numeric(20,6) NOT NULL DEFAULT 0, big numeric,
			doc jsonb, ints int[], tags text[], blob bytea, at timestamptz, mood ` + schema + `.mood,
			payload text, total numeric GENERATED ALWAYS AS (amount * 2) STORED)`,
		`INSERT INTO ` + src + ` (id, amount, big, doc, ints, tags, blob, at, mood, payload)
			SELECT g, g * 1.5, CASE WHEN g % 7 = 0 THEN NULL ELSE (g::numeric ^ 3) / 7 END,
				CASE WHEN g % 3 = 0 THEN NULL ELSE jsonb_build_object('g', g, 's', E'é"\n' || g) END,
				CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY[g, NULL, -g] END,
				CASE WHEN g % 6 = 0 THEN NULL ELSE ARRAY['a,b', NULL, E'new\nline'] END,
				CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\x00'::bytea END,
				CASE WHEN g % 8 = 0 THEN NULL ELSE timestamptz '1969-07-20 20:17:40.123456+00' + g * interval '1 second' END,
				(ARRAY['sad', 'ok', 'happy', NULL])[1 + g % 4]::` + schema + `.mood, repeat(md5(g::text), 4)
			FROM generate_series(1, 160000) g`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(table string) string {
		c, err := postgres.TableChecksum(ctx, conn, "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d rows %s", c.Rows, c)
	}
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 2 * time.Second})
	y := fmt.Sprintf("name: pgpass\npattern: passthrough\nsource: {kind: postgres, dsn: %q, table: %s}\nsink: {kind: postgres, dsn: %q, table: %s.copy}\npartitioning: {target_rows: 20000}\n",
		dsn, src, dsn, schema)
	s, err := pipeline.Load([]byte(y), "pgpass.yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
	res := c.run("pgpass")
	c.killWhenBusy(0)
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	c.assertRedelivered(res.RunID)
	if got, want := sum(schema+".copy"), sum(src); got != want {
		t.Fatalf("target view %s; source %s", got, want)
	}
	if got, want := fmt.Sprint(pgtest.Describe(t, conn, schema+".copy_v1")), fmt.Sprint(pgtest.Describe(t, conn, src)); got != want {
		t.Errorf("the target's columns\n%s\nthe source's\n%s", got, want)
	}

	if _, err := conn.Exec(ctx, "DELETE FROM "+src+" WHERE id % 10 = 0; UPDATE "+src+" SET doc = NULL, amount = amount + 1 WHERE id % 7 = 0"); err != nil {
		t.Fatal(err)
	}
	st2 := c.wait(c.run("pgpass").RunID)
	if st2.State != protocol.RunCommitted {
		t.Fatalf("second run %s: %s (%s)", st2.RunID, st2.State, st2.Error)
	}
	if got, want := sum(schema+".copy"), sum(src); got != want {
		t.Fatalf("after the second run: target view %s; source %s", got, want)
	}
}
