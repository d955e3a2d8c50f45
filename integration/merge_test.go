package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// Merge by key through the cluster: a source whose rows carry a version
// from one sequence, bumped by every insert, update and soft delete
// (is_deleted), loaded by windows of versions merged into the target by
// id. Updates cross windows (a row's newer version lands in a later
// window), deletes arrive as flags; after every run the target equals the
// source's current state: one row per live id, by count and checksum.
func TestMergeByKeyThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	src, target := schema+".accounts", schema+".accounts_cur"
	pgtest.Exec(t, conn, "CREATE SEQUENCE "+schema+".versions")
	pgtest.Exec(t, conn, fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, owner text, balance numeric(14,2),
		is_deleted boolean NOT NULL DEFAULT false, version bigint NOT NULL DEFAULT nextval('%s.versions'))`, src, schema))
	pgtest.Exec(t, conn, "CREATE INDEX ON "+src+" (version)")
	pgtest.Exec(t, conn, "CREATE TABLE "+target+" (LIKE "+src+" INCLUDING INDEXES)")
	c := newCluster(t, clusterConfig{workers: 2})
	y := fmt.Sprintf(`name: accounts
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: postgres, dsn: %q, table: %s}
partitioning: {target_rows: 200}
incremental:
  delta_column: version
  window: 500
  start: 1
  merge: {key: id, deleted: is_deleted}
`, dsn, src, dsn, target)
	c.applyYAML("accounts", y)
	rng := rand.New(rand.NewPCG(7, 21))
	nextID := int64(1)
	work := func(n int) {
		t.Helper()
		for range n {
			switch k := rng.IntN(10); {
			case k < 5 || nextID < 50:
				pgtest.Exec(t, conn, "INSERT INTO "+src+" (id, owner, balance) VALUES ($1, $2, $3)", nextID, fmt.Sprintf("owner \"%d\", ü", nextID), rng.IntN(100000))
				nextID++
			case k < 8:
				pgtest.Exec(t, conn, "UPDATE "+src+" SET balance = balance + 1.25, owner = owner || '+', version = nextval('"+schema+".versions') WHERE id = $1", rng.Int64N(nextID-1)+1)
			default:
				pgtest.Exec(t, conn, "UPDATE "+src+" SET is_deleted = true, version = nextval('"+schema+".versions') WHERE id = $1 AND NOT is_deleted", rng.Int64N(nextID-1)+1)
			}
		}
	}
	cols := "SELECT id, owner, balance, is_deleted, version FROM "
	same := func(when string) {
		t.Helper()
		want, err := postgres.TableChecksum(ctx, conn, cols+src+" WHERE NOT is_deleted")
		if err != nil {
			t.Fatal(err)
		}
		got, err := postgres.TableChecksum(ctx, conn, cols+target)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: target %d rows checksum %s; source's live rows %d checksum %s", when, got.Rows, got, want.Rows, want)
		}
	}
	for round := range 6 {
		work(700)
		// Catch up: runs until the watermark reaches the last version.
		for range 20 {
			st := c.wait(c.run("accounts").RunID)
			if st.State != protocol.RunCommitted {
				t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
			}
			if st.Window.Hi <= st.Window.Lo {
				break
			}
		}
		same(fmt.Sprintf("after round %d", round+1))
	}
	var deleted int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+src+" WHERE is_deleted").Scan(&deleted); err != nil || deleted == 0 {
		t.Fatalf("the workload deleted %d rows (%v): the test did not exercise deletes", deleted, err)
	}
}
