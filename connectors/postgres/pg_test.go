package postgres

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// testDB gives the test a schema of its own on the test server.
func testDB(t *testing.T) (dsn, schema string, conn *pgx.Conn) {
	t.Helper()
	return pgtest.DB(t)
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// allTypesColumns is the column list of the all-types table.
const allTypesColumns = "id, amount, name, doc, ints, tags, blob, at, note"

// createAllTypes creates table <schema>.<name> with every common type and
// n rows: numeric(20,6), unicode text with commas, quotes and newlines,
// empty strings and NULLs, jsonb, int[] and text[] arrays, bytea,
// timestamptz, and the value `\.`.
func createAllTypes(t *testing.T, conn *pgx.Conn, table string, n int, primaryKey bool) {
	t.Helper()
	pk := ""
	if primaryKey {
		pk = " PRIMARY KEY"
	}
	exec(t, conn, `CREATE TABLE `+table+` (
		id bigint`+pk+`,
		amount numeric(20,6),
		name text,
		doc jsonb,
		ints int[],
		tags text[],
		blob bytea,
		at timestamptz,
		note text)`)
	exec(t, conn, `INSERT INTO `+table+` SELECT g,
		CASE WHEN g % 17 = 0 THEN NULL ELSE round((g * 1234.5678912345)::numeric, 6) END,
		CASE g % 5 WHEN 0 THEN 'héllo wörld ' || g WHEN 1 THEN '日本語, "quoted" ' || g
			WHEN 2 THEN E'multi\nline\r\n' || g WHEN 3 THEN '' ELSE NULL END,
		CASE WHEN g % 11 = 0 THEN NULL ELSE jsonb_build_object('k', g, 's', 'v"' || g, 'arr', jsonb_build_array(g, 'x, y')) END,
		ARRAY[g::int, g::int + 1, NULL],
		ARRAY['a,b', 'c"d', NULL, E'e\nf', 'ü' || g],
		CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
		'2024-01-01 00:00:00+00'::timestamptz + g * interval '67.123456 seconds',
		CASE WHEN g % 7 = 0 THEN '\.' WHEN g % 7 = 1 THEN ' lead' ELSE 'x' END
		FROM generate_series(1, $1::int) g`, n)
	exec(t, conn, "ANALYZE "+table)
}

func checksumOf(t *testing.T, conn *pgx.Conn, query string) connectors.Checksum {
	t.Helper()
	sum, err := TableChecksum(context.Background(), conn, query)
	if err != nil {
		t.Fatalf("checksum of %s: %v", query, err)
	}
	return sum
}

func newSource(t *testing.T, config map[string]any) *Source {
	t.Helper()
	raw, _ := json.Marshal(config)
	cfg, err := ParseSourceConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads every partition, four at a time, checking that each batch
// holds whole CSV records of the right width, and returns the checksum of
// every record read.
func readAll(t *testing.T, src *Source, plan connectors.Plan, width int) connectors.Checksum {
	t.Helper()
	var mu sync.Mutex
	var sum connectors.Checksum
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(4)
	for _, p := range plan.Partitions {
		g.Go(func() error {
			return src.Read(ctx, p, func(ctx context.Context, b connectors.Batch) error {
				if err := checkBatch(b, width); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				return forEachRecord(b.Raw, func(rec []byte) error { sum.Add(rec); return nil })
			})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("read: %v", err)
	}
	return sum
}

func checkBatch(b connectors.Batch, width int) error {
	if b.Format != connectors.FormatCSV || len(b.Columns) != width {
		return fmt.Errorf("batch format %q with %d columns, want csv with %d", b.Format, len(b.Columns), width)
	}
	r := csv.NewReader(bytes.NewReader(b.Raw))
	r.FieldsPerRecord = width
	recs, err := r.ReadAll()
	if err != nil {
		return fmt.Errorf("batch at %s is not whole CSV records: %w", b.Position, err)
	}
	if int64(len(recs)) != b.Rows {
		return fmt.Errorf("batch at %s holds %d records, says %d", b.Position, len(recs), b.Rows)
	}
	// The checksum the source computed while splitting is the one a sink
	// would compute from the bytes.
	var sum connectors.Checksum
	forEachRecord(b.Raw, func(rec []byte) error { sum.Add(rec); return nil })
	if b.Rows > 0 && (b.Checksum == nil || *b.Checksum != sum) {
		return fmt.Errorf("batch at %s: checksum %v, its records sum to %d rows %s", b.Position, b.Checksum, sum.Rows, sum)
	}
	return nil
}

func TestSourceFullLoad(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	table := schema + ".src"
	createAllTypes(t, conn, table, 50_000, true)
	want := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+table)
	if want.Rows != 50_000 {
		t.Fatalf("source checksum over %d rows", want.Rows)
	}

	src := newSource(t, map[string]any{"dsn": dsn, "table": table})
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r1", Partitioning: connectors.Partitioning{TargetRows: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Partitions) < 5 {
		t.Fatalf("planned %d chunks for 50000 rows of 8000, want about 7", len(plan.Partitions))
	}
	if !plan.Holds {
		t.Fatal("a plan on an exported snapshot does not say it holds it")
	}
	for _, p := range plan.Partitions {
		// A full load on an exported snapshot reads block ranges, even
		// with an integer primary key.
		if !strings.HasPrefix(p.Key, "ctid[") {
			t.Fatalf("chunk %q: want ctid block ranges", p.Key)
		}
	}
	// A configured key, or no snapshot, splits on the key.
	for _, cfg := range []map[string]any{
		{"dsn": dsn, "table": table, "key": "id"},
		{"dsn": dsn, "table": table, "snapshot": "none"},
	} {
		ksrc := newSource(t, cfg)
		kplan, err := ksrc.Plan(ctx, connectors.PlanRequest{RunID: "k", Partitioning: connectors.Partitioning{TargetRows: 8000}})
		if err != nil {
			t.Fatal(err)
		}
		if kplan.Holds != (cfg["snapshot"] == nil) {
			t.Fatalf("%v: plan holds %v", cfg, kplan.Holds)
		}
		for _, p := range kplan.Partitions {
			if !strings.HasPrefix(p.Key, "id[") {
				t.Fatalf("%v: chunk %q: want primary-key ranges", cfg, p.Key)
			}
		}
		if got := readAll(t, ksrc, kplan, 9); got != want {
			t.Fatalf("%v: key chunks read %d rows %s, want %d rows %s", cfg, got.Rows, got, want.Rows, want)
		}
		ksrc.ReleaseRun("k")
	}

	// Changes after the plan must not show: every chunk reads the run's
	// snapshot (the last chunk is open-ended, so new keys would land in it).
	exec(t, conn, "INSERT INTO "+table+" (id, name) SELECT g, 'late' FROM generate_series(50001, 50500) g")
	exec(t, conn, "DELETE FROM "+table+" WHERE id % 1000 = 5")
	exec(t, conn, "UPDATE "+table+" SET name = 'changed' WHERE id % 1000 = 7")

	got := readAll(t, src, plan, 9)
	if got != want {
		t.Fatalf("chunks read %d rows, checksum %s; source had %d rows, checksum %s", got.Rows, got, want.Rows, want)
	}
	// A retried chunk reads the same rows again.
	again := readAll(t, src, connectors.Plan{Partitions: plan.Partitions[:1]}, 9)
	first := readAll(t, src, connectors.Plan{Partitions: plan.Partitions[:1]}, 9)
	if again != first || again.Rows == 0 {
		t.Fatalf("first chunk read twice: %d rows %s, then %d rows %s", first.Rows, first, again.Rows, again)
	}

	// Once the run is released, its chunks fail, say why, and ask for a
	// new plan of the run.
	if held := src.HeldRuns(); len(held) != 1 || held[0] != "r1" {
		t.Fatalf("held runs %v, want [r1]", held)
	}
	if err := src.ReleaseRun("r1"); err != nil {
		t.Fatal(err)
	}
	err = src.Read(ctx, plan.Partitions[0], func(context.Context, connectors.Batch) error { return nil })
	if !errors.Is(err, ErrSnapshotGone) || !connectors.IsReplan(err) || !connectors.IsPermanent(err) {
		t.Fatalf("read after release: %v; want a Replan (and permanent) ErrSnapshotGone", err)
	}
	if len(src.HeldRuns()) != 0 {
		t.Fatalf("held runs after release: %v", src.HeldRuns())
	}
}

func TestSourceCtidChunks(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	table := schema + ".nopk"
	createAllTypes(t, conn, table, 30_000, false)
	// Holes and moved rows: deleted rows leave free space, updated rows
	// move to other blocks.
	exec(t, conn, "DELETE FROM "+table+" WHERE id % 10 = 3")
	exec(t, conn, "UPDATE "+table+" SET note = 'moved' WHERE id % 100 = 9")
	want := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+table)

	src := newSource(t, map[string]any{"dsn": dsn, "table": table})
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Partitioning: connectors.Partitioning{TargetRows: 5000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Partitions) < 4 || !strings.HasPrefix(plan.Partitions[0].Key, "ctid[") {
		t.Fatalf("planned %d chunks, first %q; want several ctid ranges", len(plan.Partitions), plan.Partitions[0].Key)
	}
	exec(t, conn, "INSERT INTO "+table+" (id) SELECT g FROM generate_series(1, 1000) g")
	if got := readAll(t, src, plan, 9); got != want {
		t.Fatalf("ctid chunks read %d rows %s, want %d rows %s", got.Rows, got, want.Rows, want)
	}
}

func TestSourceSparseKeyFilterColumns(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	table := schema + ".sparse"
	// Keys crowd at the low end, with a few huge ones: even ranges would
	// put nearly every row in the first chunk.
	exec(t, conn, "CREATE TABLE "+table+" (k bigint, v text, w int)")
	exec(t, conn, "INSERT INTO "+table+" SELECT g, 'v' || g, g % 4 FROM generate_series(1, 20000) g")
	exec(t, conn, "INSERT INTO "+table+" SELECT g * 1000000000::bigint, 'big', 1 FROM generate_series(1, 10) g")
	exec(t, conn, "INSERT INTO "+table+" VALUES (NULL, 'null key', 1)")
	want := checksumOf(t, conn, "SELECT v, k FROM "+table+" WHERE w = 1")

	src := newSource(t, map[string]any{"dsn": dsn, "table": table, "key": "k", "columns": []string{"v", "k"}, "where": "w = 1"})
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "r", Partitioning: connectors.Partitioning{TargetRows: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Partitions) < 3 {
		t.Fatalf("planned %d chunks", len(plan.Partitions))
	}
	var maxRows int64
	for _, p := range plan.Partitions {
		var n int64
		err := src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error { n += b.Rows; return nil })
		if err != nil {
			t.Fatal(err)
		}
		maxRows = max(maxRows, n)
	}
	if maxRows > 3*1000 {
		t.Errorf("largest chunk holds %d rows of a 1000-row target: key ranges not balanced", maxRows)
	}
	if got := readAll(t, src, plan, 2); got != want {
		t.Fatalf("read %d rows %s, want %d rows %s", got.Rows, got, want.Rows, want)
	}

	// A non-integer key and an unknown column are configuration errors.
	for _, cfg := range []map[string]any{
		{"dsn": dsn, "table": table, "key": "v"},
		{"dsn": dsn, "table": table, "columns": []string{"nope"}},
	} {
		_, err := newSource(t, cfg).Plan(ctx, connectors.PlanRequest{RunID: "bad"})
		if !connectors.IsPermanent(err) {
			t.Errorf("plan with %v: %v, want a permanent error", cfg, err)
		}
	}
}

func newSink(t *testing.T, config map[string]any) *Sink {
	t.Helper()
	raw, _ := json.Marshal(config)
	cfg, err := ParseSinkConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// load plans a run of src and writes every chunk to sink, four tasks at a
// time, the way workers do, and returns the task outputs in task order.
func load(t *testing.T, src *Source, sink *Sink, run string, targetRows int64) []connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: run, Partitioning: connectors.Partitioning{TargetRows: targetRows}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.ReleaseRun(run) })
	outs := make([]connectors.TaskOutput, len(plan.Partitions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, p := range plan.Partitions {
		g.Go(func() error {
			out, err := writeTask(gctx, src, sink, run, fmt.Sprintf("t%03d", i), 1, p)
			outs[i] = out
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The run's reads are over: let go of the snapshot, whose transaction
	// holds a share lock on the source table (DDL on it would wait).
	if err := src.ReleaseRun(run); err != nil {
		t.Fatal(err)
	}
	return outs
}

func writeTask(ctx context.Context, src *Source, sink *Sink, run, task string, attempt int, p protocol.Partition) (connectors.TaskOutput, error) {
	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: task, Attempt: attempt})
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	if err := src.Read(ctx, p, tw.Write); err != nil {
		tw.Abort(ctx)
		return connectors.TaskOutput{}, err
	}
	return tw.Close(ctx)
}

func runSum(outs []connectors.TaskOutput) connectors.Checksum {
	var sum connectors.Checksum
	for _, o := range outs {
		sum.Merge(o.Checksum)
	}
	return sum
}

func versionNumbers(t *testing.T, dsn, table string) (nums []int64, current int64) {
	t.Helper()
	vs, err := Versions(context.Background(), dsn, table)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		nums = append(nums, v.Version)
		if v.Current {
			current = v.Version
		}
	}
	return nums, current
}

func TestSinkFullLoader(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	srcTable := schema + ".src"
	view := schema + ".dst"
	createAllTypes(t, conn, srcTable, 50_000, true)
	// Version tables copy the template's typed definition.
	exec(t, conn, "CREATE TABLE "+view+"_template (LIKE "+srcTable+")")
	src := newSource(t, map[string]any{"dsn": dsn, "table": srcTable})
	sink := newSink(t, map[string]any{"dsn": dsn, "table": view, "keep_versions": 3})
	srcQuery := "SELECT " + allTypesColumns + " FROM " + srcTable
	viewQuery := "SELECT " + allTypesColumns + " FROM " + view

	// Run 1, with one task written twice (a retry) and a third attempt
	// aborted after writing: the view must hold each row once.
	sum1 := checksumOf(t, conn, srcQuery)
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "run-1", Partitioning: connectors.Partitioning{TargetRows: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	outs := make([]connectors.TaskOutput, len(plan.Partitions))
	for i, p := range plan.Partitions {
		if outs[i], err = writeTask(ctx, src, sink, "run-1", fmt.Sprintf("t%03d", i), 1, p); err != nil {
			t.Fatal(err)
		}
	}
	retried, err := writeTask(ctx, src, sink, "run-1", "t002", 2, plan.Partitions[2])
	if err != nil {
		t.Fatal(err)
	}
	if retried != outs[2] {
		t.Fatalf("retried task output %+v, first attempt %+v", retried, outs[2])
	}
	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "run-1", TaskID: "t003", Attempt: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Read(ctx, plan.Partitions[3], tw.Write); err != nil {
		t.Fatal(err)
	}
	if err := tw.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	src.ReleaseRun("run-1")
	if got := runSum(outs); got != sum1 {
		t.Fatalf("task outputs sum to %d rows %s, source %d rows %s", got.Rows, got, sum1.Rows, sum1)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-1", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	if got := checksumOf(t, conn, viewQuery); got != sum1 {
		t.Fatalf("view after run 1: %d rows %s, want %d rows %s", got.Rows, got, sum1.Rows, sum1)
	}
	var typ string
	if err := conn.QueryRow(ctx, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'amount'", view).Scan(&typ); err != nil || typ != "numeric(20,6)" {
		t.Fatalf("view column amount is %q (%v), want numeric(20,6) from the template", typ, err)
	}

	// Run 2 on a changed source, committed while a reader counts the view
	// in a loop: every count is run 1's or run 2's, never a mix.
	exec(t, conn, "DELETE FROM "+srcTable+" WHERE id % 4 = 0")
	exec(t, conn, "UPDATE "+srcTable+" SET name = 'run 2' WHERE id % 10 = 1")
	sum2 := checksumOf(t, conn, srcQuery)
	outs2 := load(t, src, sink, "run-2", 8000)
	counts := map[int64]int{}
	var stop atomic.Bool
	reader := make(chan error, 1)
	// The reader says when it has counted run 1's version a few times,
	// then run 2's: the commit lands between reads, not before the first
	// or after the last.
	sawOld, sawNew := make(chan struct{}), make(chan struct{})
	go func() {
		rc, err := pgx.Connect(ctx, dsn)
		if err != nil {
			reader <- err
			return
		}
		defer rc.Close(ctx)
		for !stop.Load() {
			var n int64
			if err := rc.QueryRow(ctx, "SELECT count(*) FROM "+view).Scan(&n); err != nil {
				reader <- err
				return
			}
			counts[n]++
			if n == sum1.Rows && counts[n] == 3 {
				close(sawOld)
			}
			if n == sum2.Rows && counts[n] == 3 {
				close(sawNew)
			}
		}
		reader <- nil
	}()
	waitReader := func(what string, ch chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case err := <-reader:
			t.Fatalf("reader stopped before it saw %s: %v", what, err)
		case <-time.After(time.Minute):
			t.Fatalf("reader did not see %s within a minute", what)
		}
	}
	waitReader("run 1's version", sawOld)
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-2", Version: 2, Tasks: outs2}); err != nil {
		t.Fatal(err)
	}
	waitReader("run 2's version", sawNew)
	stop.Store(true)
	if err := <-reader; err != nil {
		t.Fatalf("reader: %v", err)
	}
	for n, times := range counts {
		if n != sum1.Rows && n != sum2.Rows {
			t.Errorf("reader counted %d rows %d times; versions hold %d and %d", n, times, sum1.Rows, sum2.Rows)
		}
	}
	if counts[sum1.Rows] == 0 || counts[sum2.Rows] == 0 {
		t.Errorf("reader saw counts %v; want both versions (%d, %d)", counts, sum1.Rows, sum2.Rows)
	}
	if got := checksumOf(t, conn, viewQuery); got != sum2 {
		t.Fatalf("view after run 2: %d rows %s, want %d rows %s", got.Rows, got, sum2.Rows, sum2)
	}

	// Run 3 fails: written, then aborted. The view still shows run 2 and
	// the staging tables are gone.
	load(t, src, sink, "run-3", 8000)
	if err := sink.Abort(ctx, "run-3"); err != nil {
		t.Fatal(err)
	}
	if got := checksumOf(t, conn, viewQuery); got != sum2 {
		t.Fatalf("view after aborted run 3: %d rows, want run 2's %d", got.Rows, sum2.Rows)
	}
	var staging int
	conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'dst\\_\\_stg\\_%'", schema).Scan(&staging)
	if staging != 0 {
		t.Fatalf("%d staging tables left after commits and abort", staging)
	}

	// Commit of run 2 repeated (a leader crashed after committing): harmless.
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-2", Version: 2, Tasks: outs2}); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	if nums, cur := versionNumbers(t, dsn, view); fmt.Sprint(nums) != "[1 2]" || cur != 2 {
		t.Fatalf("versions %v current %d after repeated commit, want [1 2] current 2", nums, cur)
	}
	// Another run claiming version 2 is refused.
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-x", Version: 2}); !connectors.IsPermanent(err) {
		t.Fatalf("commit of another run as version 2: %v, want a permanent error", err)
	}

	// Rollback to run 1; version 0 is no version.
	if err := sink.Expose(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := checksumOf(t, conn, viewQuery); got != sum1 {
		t.Fatalf("view after rollback: %d rows, want run 1's %d", got.Rows, sum1.Rows)
	}
	if _, cur := versionNumbers(t, dsn, view); cur != 1 {
		t.Fatalf("current version %d after rollback, want 1", cur)
	}
	if err := sink.Expose(ctx, 0); err == nil {
		t.Fatal("rollback to version 0 succeeded")
	}

	// keep_versions 3: runs 4 and 5 push version 1 out.
	outs4 := load(t, src, sink, "run-4", 20000)
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-4", Version: 3, Tasks: outs4}); err != nil {
		t.Fatal(err)
	}
	if nums, cur := versionNumbers(t, dsn, view); fmt.Sprint(nums) != "[1 2 3]" || cur != 3 {
		t.Fatalf("versions %v current %d, want [1 2 3] current 3", nums, cur)
	}
	outs5 := load(t, src, sink, "run-5", 20000)
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-5", Version: 4, Tasks: outs5}); err != nil {
		t.Fatal(err)
	}
	if nums, cur := versionNumbers(t, dsn, view); fmt.Sprint(nums) != "[2 3 4]" || cur != 4 {
		t.Fatalf("versions %v current %d, want [2 3 4] current 4", nums, cur)
	}
	var v1 *string
	conn.QueryRow(ctx, "SELECT to_regclass($1)::text", view+"_v1").Scan(&v1)
	if v1 != nil {
		t.Fatalf("table %s still exists after pruning", *v1)
	}
	if err := sink.Expose(ctx, 1); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "version 1 was dropped on") || !strings.Contains(err.Error(), "kept: 2, 3, 4; exposed: 4") {
		t.Fatalf("rollback to a pruned version: %v, want a permanent error saying it was dropped, listing the kept versions", err)
	}
	if got := checksumOf(t, conn, viewQuery); got != sum2 {
		t.Fatalf("view after run 5: %d rows, want %d", got.Rows, sum2.Rows)
	}
	if err := sink.Expose(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, cur := versionNumbers(t, dsn, view); cur != 3 {
		t.Fatalf("current %d after rollback to 3, want 3", cur)
	}
}

func TestSinkTextColumnsAndEmptyRun(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	srcTable := schema + ".src"
	createAllTypes(t, conn, srcTable, 3000, true)
	exec(t, conn, "CREATE TABLE "+schema+".empty (a int PRIMARY KEY, b text)")

	// No template, no columns: text columns from the CSV header, and the
	// CSV text round-trips exactly.
	src := newSource(t, map[string]any{"dsn": dsn, "table": srcTable})
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".copy"})
	outs := load(t, src, sink, "r1", 1000)
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r1", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	want := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+srcTable)
	if got := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+schema+".copy"); got != want {
		t.Fatalf("text copy: %d rows %s, want %d rows %s", got.Rows, got, want.Rows, want)
	}

	// An empty source table still commits an empty version with its columns.
	esrc := newSource(t, map[string]any{"dsn": dsn, "table": schema + ".empty"})
	esink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".ecopy"})
	eouts := load(t, esrc, esink, "e1", 1000)
	if _, err := esink.Commit(ctx, connectors.CommitRequest{RunID: "e1", Version: 1, Tasks: eouts}); err != nil {
		t.Fatal(err)
	}
	if got := checksumOf(t, conn, "SELECT a, b FROM "+schema+".ecopy"); got.Rows != 0 {
		t.Fatalf("empty copy holds %d rows", got.Rows)
	}

	// Changed columns between versions: the view is recreated.
	exec(t, conn, "ALTER TABLE "+schema+".empty ADD COLUMN c text")
	exec(t, conn, "INSERT INTO "+schema+".empty VALUES (1, 'x', 'y')")
	eouts = load(t, esrc, esink, "e2", 1000)
	if _, err := esink.Commit(ctx, connectors.CommitRequest{RunID: "e2", Version: 2, Tasks: eouts}); err != nil {
		t.Fatal(err)
	}
	var c string
	if err := conn.QueryRow(ctx, "SELECT c FROM "+schema+".ecopy").Scan(&c); err != nil || c != "y" {
		t.Fatalf("new column through the view: %q, %v", c, err)
	}
	// A commit whose task outputs disagree with staging is refused.
	outs = load(t, src, sink, "r2", 1000)
	outs[0].Rows++
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r2", Version: 2, Tasks: outs}); !connectors.IsPermanent(err) {
		t.Fatalf("commit with a wrong row count: %v, want a permanent error", err)
	}
}

// A view of the user's of the sink's name is never replaced: the commit
// is refused (permanently) and the view keeps its definition; the view a
// load made is replaced by the next load's.
func TestSinkRefusesUsersView(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	srcTable := schema + ".src"
	createAllTypes(t, conn, srcTable, 100, true)
	exec(t, conn, "CREATE VIEW "+schema+".mine AS SELECT 42 AS answer")
	src := newSource(t, map[string]any{"dsn": dsn, "table": srcTable})
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".mine"})
	outs := load(t, src, sink, "r1", 1000)
	_, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r1", Version: 1, Tasks: outs})
	if !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "is a view that no load made") {
		t.Fatalf("commit onto a view of the user's: %v; want a permanent refusal", err)
	}
	var answer int
	if err := conn.QueryRow(ctx, "SELECT answer FROM "+schema+".mine").Scan(&answer); err != nil || answer != 42 {
		t.Fatalf("the user's view after the refused commit: %d, %v; want 42", answer, err)
	}
	sink.Abort(ctx, "r1")

	// A view a load made is the sink's own: the next load replaces it.
	own := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".copy"})
	for i, run := range []string{"c1", "c2"} {
		outs := load(t, src, own, run, 1000)
		if _, err := own.Commit(ctx, connectors.CommitRequest{RunID: run, Version: int64(i + 1), Tasks: outs}); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	want := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+srcTable)
	if got := checksumOf(t, conn, "SELECT "+allTypesColumns+" FROM "+schema+".copy"); got != want {
		t.Fatalf("copy after two loads: %d rows %s, want %d rows %s", got.Rows, got, want.Rows, want)
	}
}
