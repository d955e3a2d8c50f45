package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/clickhouse"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// Windows of integer values into ClickHouse through the cluster: an id
// delta column, each window loaded once; a row written late into a loaded
// window is found by `sluice check` (by count: ClickHouse's sums are
// counts), --repair replaces that window, and the target then holds the
// source's ids exactly once.
func TestClickHouseValueWindowsThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	url, db := chtest.DB(t)
	ctx := context.Background()
	src := schema + ".ids"
	pgtest.Exec(t, conn, "CREATE TABLE "+src+" (id bigint PRIMARY KEY, note text)")
	pgtest.Exec(t, conn, "INSERT INTO "+src+" SELECT g, 'n' || g FROM generate_series(1, 300) g WHERE g % 40 <> 0")
	cl, err := clickhouse.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := newCluster(t, clusterConfig{workers: 2})
	y := fmt.Sprintf(`name: ids
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: clickhouse, url: %q, table: %s.ids}
incremental: {delta_column: id, window: 100, start: 1}
`, dsn, src, url, db)
	s, err := pipeline.Load([]byte(y), "ids.yaml", c.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
	sameRows := func(step string) {
		t.Helper()
		want, err := postgres.TableChecksum(ctx, conn, "SELECT id, note FROM "+src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := clickhouse.TextChecksum(ctx, cl, "SELECT toString(id), note FROM "+db+".ids")
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			ws, _ := clickhouse.Windows(ctx, clickhouse.SinkConfig{URL: url, Table: db + ".ids"})
			t.Logf("windows %+v", ws)
			t.Fatalf("%s: target %d rows checksum %s; source %d rows checksum %s", step, got.Rows, got, want.Rows, want)
		}
	}
	// Each live run ends where the ids end below its cap (200 is missing:
	// the second run ends there), so the fourth loads id 300.
	for range 4 {
		if st := c.wait(c.run("ids").RunID); st.State != protocol.RunCommitted {
			t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}
	sameRows("after four runs")
	pgtest.Exec(t, conn, "INSERT INTO "+src+" VALUES (120, 'late')")
	check := func(repair bool) protocol.CheckReply {
		t.Helper()
		rg := protocol.ValueWindow(1, 301)
		res, err := c.client.Check(c.ctx(), protocol.CheckRequest{Pipeline: "ids", Range: &rg, Repair: repair})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := check(false)
	if len(res.Windows) != 3 || res.Differ != 1 || res.Windows[1].Same || res.Windows[1].SourceRows != res.Windows[1].TargetRows+1 || res.Windows[1].ChecksumsCompared {
		t.Fatalf("check: %+v; want window [101, 201) of 3 different by one row, by count", res)
	}
	res = check(true)
	st, err := c.client.WaitBackfill(c.ctx(), res.Backfill, 100*time.Millisecond, nil)
	if err != nil || st.Committed != 1 || !st.Windows[0].Window.Equal(protocol.ValueWindow(101, 201)) {
		t.Fatalf("repair backfill: %+v, %v; want window [101, 201) committed, alone", st, err)
	}
	if res = check(false); res.Differ != 0 {
		t.Fatalf("check after the repair: %+v", res)
	}
	sameRows("after the repair")
}

// Windows of integer values into an Iceberg table on local disk through
// the cluster: each window's rows overwrite [lo, hi); a row written late
// into a loaded window is found by `sluice check` (by count) and --repair
// replaces that window: the table then holds the source's rows once
// each, read with iceberg-go's own catalog.
func TestIcebergValueWindowsThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src := schema + ".ice_ids"
	iceSource(t, conn, src, 300)
	pgtest.Exec(t, conn, "CREATE TABLE "+schema+".held AS SELECT * FROM "+src+" WHERE id = 120")
	pgtest.Exec(t, conn, "DELETE FROM "+src+" WHERE id = 120")
	dir := t.TempDir()
	catalogPath, warehouse := filepath.Join(dir, "catalog.db"), filepath.Join(dir, "wh")
	c := newCluster(t, clusterConfig{workers: 2})
	applyYAML(t, c, fmt.Sprintf(`name: iceids
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: iceberg, table: lake.ids, warehouse: %q, catalog: "sqlite:%s"}
incremental: {delta_column: id, window: 100, start: 1}
`, dsn, src, warehouse, catalogPath))
	same := func(step string) {
		t.Helper()
		got, _ := readIceberg(t, catalogPath, warehouse, "", "lake.ids", 0)
		if want := sourceChecksum(t, conn, src); got != want {
			t.Fatalf("%s: table %d rows checksum %s; source %d rows checksum %s", step, got.Rows, got, want.Rows, want)
		}
	}
	for range 3 {
		if st := c.wait(c.run("iceids").RunID); st.State != protocol.RunCommitted {
			t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}
	same("after three runs")
	pgtest.Exec(t, conn, "INSERT INTO "+src+" SELECT * FROM "+schema+".held")
	check := func(repair bool) protocol.CheckReply {
		t.Helper()
		rg := protocol.ValueWindow(1, 301)
		res, err := c.client.Check(c.ctx(), protocol.CheckRequest{Pipeline: "iceids", Range: &rg, Repair: repair})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := check(false)
	if len(res.Windows) != 3 || res.Differ != 1 || res.Windows[1].Same || res.Windows[1].SourceRows != res.Windows[1].TargetRows+1 || res.Windows[1].ChecksumsCompared {
		t.Fatalf("check: %+v; want window [101, 201) of 3 different by one row, by count", res)
	}
	res = check(true)
	st, err := c.client.WaitBackfill(c.ctx(), res.Backfill, 100*time.Millisecond, nil)
	if err != nil || st.Committed != 1 || !st.Windows[0].Window.Equal(protocol.ValueWindow(101, 201)) {
		t.Fatalf("repair backfill: %+v, %v; want window [101, 201) committed, alone", st, err)
	}
	if res = check(false); res.Differ != 0 {
		t.Fatalf("check after the repair: %+v", res)
	}
	same("after the repair")
}
