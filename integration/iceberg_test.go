package integration

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	icebergsql "github.com/apache/iceberg-go/catalog/sql"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/iceberg/s3test"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// iceSource creates a PostgreSQL table of awkward values of every type
// the iceberg sink maps: numerics, NULLs, unicode, quotes and newlines in
// text, arrays with NULL elements, timestamptz before 1970, NaN and
// infinities, bytea, jsonb, uuid.
func iceSource(t *testing.T, conn *pgx.Conn, table string, rows int) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE ` + table + ` (id bigint PRIMARY KEY, amount numeric(14,4), note text, tags text[] NOT NULL,
			at timestamptz NOT NULL, f double precision, d date, ok boolean, raw bytea, doc jsonb, u uuid)`,
		fmt.Sprintf(`INSERT INTO %s SELECT g,
			CASE WHEN g %% 7 = 0 THEN NULL ELSE (g * 1.3701)::numeric(14,4) - 5000 END,
			CASE WHEN g %% 9 = 0 THEN NULL WHEN g %% 9 = 1 THEN '' ELSE E'l1\nl2\t"q" ü€ ''s,' || md5(g::text) END,
			ARRAY['a b', NULL, E'c,"d"\n' || g],
			timestamptz '1965-06-01 00:00:00+00' + g * interval '1 hour 1.000001 second',
			CASE g %% 13 WHEN 0 THEN NULL WHEN 1 THEN 'NaN' WHEN 2 THEN '-Infinity' ELSE g / 16.0 + 0.1 END,
			date '1969-12-25' + g %% 400,
			CASE WHEN g %% 5 = 0 THEN NULL ELSE g %% 2 = 0 END,
			CASE WHEN g %% 4 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
			jsonb_build_object('g', g, 's', 'x "y"', 'a', jsonb_build_array(1, 'z')),
			md5(g::text)::uuid
			FROM generate_series(1, %d) g`, table, rows),
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// iceSourceSQL renders a row of iceSource's table in the canonical text
// the test compares: numbers and text as PostgreSQL writes them, an array
// joined by '|', timestamps in microseconds, dates in days since 1970,
// floats as their IEEE bits, bytes in hex.
const iceSourceSQL = `SELECT id::text, amount::text, note, array_to_string(tags, '|', 'NULL'),
	((extract(epoch FROM at) * 1000000)::bigint)::text,
	CASE WHEN f = 'NaN' THEN 'NaN' WHEN f = '-Infinity' THEN '-Infinity' ELSE encode(float8send(f), 'hex') END,
	(d - date '1970-01-01')::text, CASE WHEN ok THEN 't' WHEN NOT ok THEN 'f' END, encode(raw, 'hex'), doc::text, u::text FROM `

// canonical renders one value of an Iceberg table's column as iceSourceSQL
// renders the source's; ok is false for NULL.
func canonical(a arrow.Array, i int) (string, bool) {
	if a.IsNull(i) {
		return "", false
	}
	switch c := a.(type) {
	case *array.Decimal128:
		return c.Value(i).ToString(c.DataType().(*arrow.Decimal128Type).Scale), true
	case *array.List:
		vals := c.ListValues().(*array.String)
		lo, hi := c.ValueOffsets(i)
		parts := make([]string, 0, hi-lo)
		for j := lo; j < hi; j++ {
			if vals.IsNull(int(j)) {
				parts = append(parts, "NULL")
			} else {
				parts = append(parts, vals.Value(int(j)))
			}
		}
		return strings.Join(parts, "|"), true
	case *array.Timestamp:
		return strconv.FormatInt(int64(c.Value(i)), 10), true
	case *array.Float64:
		switch f := c.Value(i); {
		case math.IsNaN(f):
			return "NaN", true
		case math.IsInf(f, -1):
			return "-Infinity", true
		default:
			return fmt.Sprintf("%016x", math.Float64bits(f)), true
		}
	case *array.Date32:
		return strconv.Itoa(int(c.Value(i))), true
	case *array.Boolean:
		if c.Value(i) {
			return "t", true
		}
		return "f", true
	case *array.Binary:
		return hex.EncodeToString(c.Value(i)), true
	case *extensions.UUIDArray:
		return c.Value(i).String(), true
	}
	return a.ValueStr(i), true
}

func canonicalLine(vals []string, valid []bool) []byte {
	var b []byte
	for i, v := range vals {
		if !valid[i] {
			b = append(b, `\N`...)
		} else {
			b = strconv.AppendQuote(b, v)
		}
		b = append(b, 0x1f)
	}
	return b
}

// sourceChecksum is the count and checksum of the source's rows in the
// canonical text.
func sourceChecksum(t *testing.T, conn *pgx.Conn, from string) connectors.Checksum {
	t.Helper()
	rr := conn.PgConn().ExecParams(context.Background(), iceSourceSQL+from, nil, nil, nil, nil)
	var sum connectors.Checksum
	for rr.NextRow() {
		raw := rr.Values()
		vals, valid := make([]string, len(raw)), make([]bool, len(raw))
		for i, v := range raw {
			vals[i], valid[i] = string(v), v != nil
		}
		sum.Add(canonicalLine(vals, valid))
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// readIceberg opens the table with iceberg-go's own SQL catalog (not
// Sluice's code), scans it at the snapshot (the current one when 0), and
// returns the count and checksum of its rows in the canonical text, and
// the table.
func readIceberg(t *testing.T, catalogPath, warehouse, endpoint, name string, snapshot int64) (connectors.Checksum, *table.Table) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+catalogPath+"?_pragma=busy_timeout(30000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	props := map[string]string{"warehouse": warehouse}
	if endpoint != "" {
		props["s3.endpoint"], props["s3.region"], props["s3.force-virtual-addressing"] = endpoint, s3test.Region, "false"
	}
	cat, err := icebergsql.NewCatalog("sluice", db, icebergsql.SQLite, props)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := cat.LoadTable(ctx, strings.Split(name, "."))
	if err != nil {
		t.Fatal(err)
	}
	if snapshot == 0 {
		snapshot = tbl.CurrentSnapshot().SnapshotID
	}
	scan := tbl.Scan(table.WithSnapshotID(snapshot))
	defer scan.Close()
	at, err := scan.ToArrowTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer at.Release()
	var sum connectors.Checksum
	tr := array.NewTableReader(at, 4096)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		vals, valid := make([]string, rec.NumCols()), make([]bool, rec.NumCols())
		for r := 0; r < int(rec.NumRows()); r++ {
			for c := range vals {
				vals[c], valid[c] = canonical(rec.Column(c), r)
			}
			sum.Add(canonicalLine(vals, valid))
		}
	}
	return sum, tbl
}

func applyYAML(t *testing.T, c *cluster, y string) {
	t.Helper()
	s, err := pipeline.Load([]byte(y), "spec.yaml", c.reg, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		t.Fatal(err)
	}
}

// A full load of awkward PostgreSQL types into an Iceberg table on S3
// (versitygw) through the cluster, 2 workers and 8 tasks, a worker killed
// mid-task: the table, read back by iceberg-go at the snapshot, holds
// exactly the source's rows (count and checksum of every value by type),
// with the mapped types; the bucket holds the snapshot's data files and
// nothing else of the run. A second version, then a rollback to the first
// through the cluster; then the Iceberg source reads the table back.
func TestIcebergFullLoadS3ThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	endpoint, bucket := s3test.SharedBucket(t)
	ctx := context.Background()
	src := schema + ".awk"
	iceSource(t, conn, src, 20_000)
	want := sourceChecksum(t, conn, src)
	catalogPath := filepath.Join(t.TempDir(), "catalog.db")
	warehouse := "s3://" + bucket + "/wh"

	c := newCluster(t, clusterConfig{workers: 2, slots: 1, ackWait: 2 * time.Second})
	spec := fmt.Sprintf(`name: pg-ice
pattern: full_load
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: iceberg, table: lake.awk, warehouse: %q, catalog: "sqlite:%s", s3: {endpoint: %q}}
partitioning: {target_rows: 2500}
`, dsn, src, warehouse, catalogPath, endpoint)
	applyYAML(t, c, spec)
	res := c.run("pg-ice")
	if res.Tasks != 8 {
		t.Fatalf("planned %d tasks for 20000 rows at 2500 a task, want 8", res.Tasks)
	}
	c.killWhenBusy(0)
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	c.assertRedelivered(res.RunID)
	got, tbl := readIceberg(t, catalogPath, warehouse, endpoint, "lake.awk", 0)
	if got != want || want.Rows != 20_000 || st.Rows != want.Rows {
		t.Fatalf("the table holds %d rows checksum %s (run reported %d); the source has %d rows checksum %s", got.Rows, got, st.Rows, want.Rows, want)
	}
	types := map[string]string{}
	for _, f := range tbl.Schema().Fields() {
		types[f.Name] = f.Type.String()
		if f.Required != (f.Name == "id" || f.Name == "tags" || f.Name == "at") {
			t.Errorf("column %s required: %t", f.Name, f.Required)
		}
	}
	wantTypes := map[string]string{"id": "long", "amount": "decimal(14, 4)", "note": "string", "tags": "list<string>", "at": "timestamptz",
		"f": "double", "d": "date", "ok": "boolean", "raw": "binary", "doc": "string", "u": "uuid"}
	if fmt.Sprint(types) != fmt.Sprint(wantTypes) {
		t.Errorf("column types %v, want %v", types, wantTypes)
	}
	// No orphan: the run's objects are exactly the snapshot's data files,
	// one a task, and no upload is left.
	cl := s3test.Client()
	keys, err := s3test.Keys(ctx, cl, bucket, "wh/lake.db/awk/data/")
	if err != nil {
		t.Fatal(err)
	}
	live := liveKeys(t, tbl, bucket)
	if len(keys) != 8 || !slices.Equal(keys, live) {
		t.Fatalf("data objects %v; the snapshot's files %v; want the same 8", keys, live)
	}
	if ups, err := s3test.Uploads(ctx, cl, bucket, "wh/"); err != nil || len(ups) != 0 {
		t.Errorf("uploads left: %v %v", ups, err)
	}
	v1 := tbl.CurrentSnapshot().SnapshotID

	// Version 2 holds fewer rows; a rollback exposes version 1 again.
	if _, err := conn.Exec(ctx, "DELETE FROM "+src+" WHERE id > 15000"); err != nil {
		t.Fatal(err)
	}
	res2 := c.run("pg-ice")
	if st := c.wait(res2.RunID); st.State != protocol.RunCommitted || st.Rows != 15_000 || st.Version != 2 {
		t.Fatalf("run %s: %s, %d rows, version %d (%s)", st.RunID, st.State, st.Rows, st.Version, st.Error)
	}
	if got, _ := readIceberg(t, catalogPath, warehouse, endpoint, "lake.awk", 0); got != sourceChecksum(t, conn, src) {
		t.Fatalf("version 2: %d rows checksum %s, want the source's 15000", got.Rows, got)
	}
	rb, err := c.client.Rollback(c.ctx(), protocol.RollbackRequest{Pipeline: "pg-ice", To: 1})
	if err != nil || rb.Version != 1 || rb.From != 2 {
		t.Fatalf("rollback to 1: %+v %v", rb, err)
	}
	got, tbl = readIceberg(t, catalogPath, warehouse, endpoint, "lake.awk", 0)
	if got != want || tbl.CurrentSnapshot().SnapshotID != v1 {
		t.Fatalf("after the rollback the table holds %d rows checksum %s at snapshot %d; want version 1's %d rows %s at %d",
			got.Rows, got, tbl.CurrentSnapshot().SnapshotID, want.Rows, want, v1)
	}

	// The Iceberg source reads the table back into JSONL files.
	out := filepath.Join(t.TempDir(), "out")
	applyYAML(t, c, fmt.Sprintf(`name: ice-files
pattern: full_load
source: {kind: iceberg, table: lake.awk, warehouse: %q, catalog: "sqlite:%s", s3: {endpoint: %q}}
sink: {kind: files, path: %s, format: jsonl}
`, warehouse, catalogPath, endpoint, out))
	res3 := c.run("ice-files")
	if st := c.wait(res3.RunID); st.State != protocol.RunCommitted || st.Rows != 20_000 {
		t.Fatalf("run %s: %s, %d rows (%s)", st.RunID, st.State, st.Rows, st.Error)
	}
	cur, err := files.Current(out)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := files.ReadChecksum(cur, "jsonl"); err != nil || sum.Rows != 20_000 {
		t.Fatalf("the files read from the table: %d rows, %v", sum.Rows, err)
	}
}

// liveKeys lists the bucket keys of a table's current data files.
func liveKeys(t *testing.T, tbl *table.Table, bucket string) []string {
	t.Helper()
	scan := tbl.Scan()
	defer scan.Close()
	tasks, err := scan.PlanFiles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, task := range tasks {
		k := strings.TrimPrefix(task.File.FilePath(), "s3://"+bucket+"/")
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Incremental windows into an Iceberg table through the cluster, with the
// SQL catalog in PostgreSQL: each window lands once, a re-run of a window
// with late rows in it replaces exactly that window's rows.
func TestIcebergIncrementalThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	endpoint, bucket := s3test.SharedBucket(t)
	ctx := context.Background()
	start := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)
	src := incrementalSource(t, conn, schema, start)
	catalog := dsn + "&search_path=" + schema
	c := newCluster(t, clusterConfig{workers: 2})
	applyYAML(t, c, fmt.Sprintf(`name: ev
pattern: incremental
source: {kind: postgres, dsn: %q, table: %s}
sink: {kind: iceberg, table: lake.events, warehouse: "s3://%s/wh", catalog: %q, s3: {endpoint: %q}}
partitioning: {target_rows: 60}
incremental: {delta_column: updated_at, window: 90m, lag: 5m, start: %s}
`, dsn, src, bucket, catalog, endpoint, start.Format(time.RFC3339)))
	at := func(m int) time.Time { return start.Add(time.Duration(m) * time.Minute) }
	sameRows := func(to time.Time) {
		t.Helper()
		want := map[int64]bool{}
		rows, err := conn.Query(ctx, "SELECT id FROM "+src+" WHERE updated_at < $1", to)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			want[id] = true
		}
		sn, err := icebergTableIDs(t, catalog, "lake.events")
		if err != nil {
			t.Fatal(err)
		}
		if len(sn) != len(want) {
			t.Fatalf("the table holds %d rows; the source %d before %s", len(sn), len(want), to)
		}
		for _, id := range sn {
			if !want[id] {
				t.Fatalf("id %d is in the table, not in the source before %s (or twice)", id, to)
			}
			delete(want, id)
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
}

// icebergTableIDs reads the ids of a table whose SQL catalog is in
// PostgreSQL, with iceberg-go's own catalog; a duplicate id appears twice.
func icebergTableIDs(t *testing.T, catalogDSN, name string) ([]int64, error) {
	t.Helper()
	db, err := sql.Open("pgx", catalogDSN)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	cat, err := icebergsql.NewCatalog("sluice", db, icebergsql.Postgres, map[string]string{
		"s3.endpoint": s3test.Endpoint(), "s3.region": s3test.Region, "s3.force-virtual-addressing": "false"})
	if err != nil {
		return nil, err
	}
	tbl, err := cat.LoadTable(context.Background(), strings.Split(name, "."))
	if err != nil {
		return nil, err
	}
	scan := tbl.Scan(table.WithSelectedFields("id"))
	defer scan.Close()
	at, err := scan.ToArrowTable(context.Background())
	if err != nil {
		return nil, err
	}
	defer at.Release()
	var ids []int64
	for _, ch := range at.Column(0).Data().Chunks() {
		ids = append(ids, ch.(*array.Int64).Int64Values()...)
	}
	return ids, nil
}

// Two pipelines loading the same table at once: both runs commit (the
// one that loses the race reloads and commits on top), the table holds
// exactly the rows of the one committed last, and both snapshots are in
// its history.
func TestIcebergConcurrentRunsThroughCluster(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	for _, tb := range []string{"a", "b"} {
		iceSource(t, conn, schema+"."+tb, 3000)
	}
	if _, err := conn.Exec(ctx, "DELETE FROM "+schema+".b WHERE id % 2 = 0"); err != nil {
		t.Fatal(err)
	}
	warehouse := t.TempDir()
	c := newCluster(t, clusterConfig{workers: 2, slots: 2})
	for _, tb := range []string{"a", "b"} {
		applyYAML(t, c, fmt.Sprintf(`name: load-%s
pattern: full_load
source: {kind: postgres, dsn: %q, table: %s.%s}
sink: {kind: iceberg, table: lake.both, warehouse: %q}
partitioning: {target_rows: 1000}
`, tb, dsn, schema, tb, warehouse))
	}
	var wg sync.WaitGroup
	states := make([]protocol.RunStatus, 2)
	for i, p := range []string{"load-a", "load-b"} {
		wg.Go(func() {
			res, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: p})
			if err != nil {
				t.Error(err)
				return
			}
			states[i], err = c.client.WaitRun(c.ctx(), res.RunID, 50*time.Millisecond, nil)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, st := range states {
		if st.State != protocol.RunCommitted {
			t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}
	got, tbl := readIceberg(t, filepath.Join(warehouse, "catalog.db"), warehouse, "", "lake.both", 0)
	last := tbl.CurrentSnapshot().Summary.Properties["sluice.run"]
	src := schema + ".a"
	if strings.HasPrefix(last, "load-b") {
		src = schema + ".b"
	}
	if want := sourceChecksum(t, conn, src); got != want {
		t.Fatalf("the table holds %d rows checksum %s; %s (committed last) has %d rows %s", got.Rows, got, src, want.Rows, want)
	}
	runs := map[string]bool{}
	for _, sn := range tbl.Metadata().Snapshots() {
		runs[sn.Summary.Properties["sluice.run"]] = true
	}
	if !runs[states[0].RunID] || !runs[states[1].RunID] {
		t.Fatalf("snapshots of runs %v, want %s and %s", runs, states[0].RunID, states[1].RunID)
	}
}
