package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

func TestSinkArrowRecords(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".typed", "columns": []map[string]string{
		{"name": "id", "type": "bigint"}, {"name": "name", "type": "text"}, {"name": "blob", "type": "bytea"},
		{"name": "at", "type": "timestamptz"}, {"name": "f", "type": "double precision"},
	}})
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "blob", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
		{Name: "f", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"a,\"b\"\nc", "", ""}, []bool{true, true, false})
	b.Field(2).(*array.BinaryBuilder).AppendValues([][]byte{{0, 1, 255}, {}, nil}, []bool{true, true, false})
	b.Field(3).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{arrow.Timestamp(at.UnixMicro()), 0, 0}, nil)
	b.Field(4).(*array.Float64Builder).AppendValues([]float64{0.1, -2.5e300, 3}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()

	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "a1", TaskID: "t0", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Write(ctx, connectors.Batch{Record: rec, Rows: 3}); err != nil {
		t.Fatal(err)
	}
	out, err := tw.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "a1", Version: 1, Tasks: []connectors.TaskOutput{out}}); err != nil {
		t.Fatal(err)
	}
	var name, empty, null *string
	var blob []byte
	var gotAt time.Time
	var f float64
	err = conn.QueryRow(ctx, "SELECT (SELECT name FROM "+schema+".typed WHERE id = 1), (SELECT name FROM "+schema+".typed WHERE id = 2), (SELECT name FROM "+schema+".typed WHERE id = 3), blob, at, f FROM "+schema+".typed WHERE id = 1").
		Scan(&name, &empty, &null, &blob, &gotAt, &f)
	if err != nil {
		t.Fatal(err)
	}
	if *name != "a,\"b\"\nc" || *empty != "" || null != nil || string(blob) != "\x00\x01\xff" || !gotAt.Equal(at) || f != 0.1 {
		t.Fatalf("got name %q, empty %v, null %v, blob %x, at %v, f %v", *name, empty, null, blob, gotAt, f)
	}
	// The output's checksum is the view's.
	if got := checksumOf(t, conn, "SELECT id, name, blob, at, f FROM "+schema+".typed"); got.Rows != 3 {
		t.Fatalf("view holds %d rows", got.Rows)
	}
}

// Two attempts of one task at once (a redelivery while the first still
// runs) leave one copy of the rows.
func TestSinkConcurrentAttempts(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".c"})
	batch := connectors.Batch{Raw: []byte("1,a\n2,b\n"), Format: connectors.FormatCSV, Columns: []string{"k", "v"}, Rows: 2}
	first, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	second, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "r", TaskID: "t", Attempt: 2})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if err := second.Write(ctx, batch); err != nil {
			done <- err
			return
		}
		_, err := second.Close(ctx)
		done <- err
	}()
	// The second attempt waits on the first's lock: a server process of
	// this test's schema waits for a lock.
	waitLockWaiter(t, conn, schema, done)
	out, err := first.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r", Version: 1, Tasks: []connectors.TaskOutput{out}}); err != nil {
		t.Fatal(err)
	}
	var n int
	conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".c").Scan(&n)
	if n != 2 {
		t.Fatalf("view holds %d rows, want 2", n)
	}
}

// waitLockWaiter waits until a server process runs a statement naming
// schema and waits for a lock; it fails the test if done (the waiting
// side's end) is ready first.
func waitLockWaiter(t *testing.T, conn *pgx.Conn, schema string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND position($1 in query) > 0`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the second attempt ended (%v) without waiting for the first", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no server process of the test waits for a lock after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSourceReadCancelled(t *testing.T) {
	dsn, schema, conn := testDB(t)
	table := schema + ".big"
	exec(t, conn, "CREATE TABLE "+table+" AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
	src := newSource(t, map[string]any{"dsn": dsn, "table": table, "snapshot": "none"})
	plan, err := src.Plan(context.Background(), connectors.PlanRequest{RunID: "r"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = src.Read(ctx, plan.Partitions[0], func(context.Context, connectors.Batch) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read cancelled: %v, want context.Canceled", err)
	}
	if held := src.HeldRuns(); len(held) != 0 {
		t.Fatalf("snapshot none holds runs %v", held)
	}
}

// A retried task replaces exactly its own rows, also when other tasks
// staged rows before and after its first attempt, and when the retry
// writes fewer rows or none.
func TestSinkRetryReplacesOwnRows(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".r"})
	write := func(task string, attempt int, csv string) connectors.TaskOutput {
		t.Helper()
		return stageCSV(t, sink, "run", task, attempt, csv)
	}
	write("a", 1, "1,a\n")
	b1 := write("b", 1, "2,b\n3,b\n")
	write("a", 2, "1,a\n4,a\n")
	c := write("c", 1, "5,c\n")
	a := write("a", 3, "6,a\n")
	write("b", 2, "")
	b := write("b", 3, "2,b\n3,b\n")
	if b != b1 {
		t.Fatalf("retried output %+v, first %+v", b, b1)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run", Version: 1, Tasks: []connectors.TaskOutput{a, b, c}}); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT string_agg(k || v, ' ' ORDER BY k) FROM "+schema+".r").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "2b 3b 5c 6a" {
		t.Fatalf("view holds %q, want %q", got, "2b 3b 5c 6a")
	}
}

// A run staged by an earlier release (rows marked in _sluice_task) is
// staged and committed the way it began.
func TestSinkLegacyStaging(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".l"})
	rowsT, tasksT := sink.staging("run")
	exec(t, conn, "CREATE TABLE "+rowsT.Sanitize()+" (k text, v text, "+stagingTaskColumn+" bigint NOT NULL)")
	exec(t, conn, "ALTER TABLE "+rowsT.Sanitize()+" ALTER COLUMN "+stagingTaskColumn+" SET DEFAULT current_setting('sluice.task')::bigint")
	exec(t, conn, "CREATE TABLE "+tasksT.Sanitize()+" (task text PRIMARY KEY, rows bigint NOT NULL, bytes bigint NOT NULL, checksum text NOT NULL, attempt int NOT NULL)")
	var outs []connectors.TaskOutput
	for i, w := range []struct{ task, csv string }{{"a", "1,a\n"}, {"b", "2,b\n"}, {"a", "3,a\n4,a\n"}} {
		tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "run", TaskID: w.task, Attempt: i + 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.Write(ctx, connectors.Batch{Raw: []byte(w.csv), Format: connectors.FormatCSV, Columns: []string{"k", "v"}, Rows: int64(strings.Count(w.csv, "\n"))}); err != nil {
			t.Fatal(err)
		}
		out, err := tw.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			outs = append(outs, out)
		}
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run", Version: 1, Tasks: outs}); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT string_agg(k || v, ' ' ORDER BY k) FROM "+schema+".l").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "2b 3a 4a" {
		t.Fatalf("view holds %q, want %q", got, "2b 3a 4a")
	}
	cols, err := tableColumns(ctx, conn, sink.versionTable(1))
	if err != nil || !slices.Equal(cols, []string{"k", "v"}) {
		t.Fatalf("version table columns %q (%v), want k, v", cols, err)
	}
}

// stageCSV stages csv (rows of columns k, v) as the output of one task
// attempt of run, and returns the output.
func stageCSV(t *testing.T, sink *Sink, run, task string, attempt int, csv string) connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: task, Attempt: attempt})
	if err != nil {
		t.Fatal(err)
	}
	if csv != "" {
		if err := tw.Write(ctx, kvBatch(csv)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := tw.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kvBatch(csv string) connectors.Batch {
	return connectors.Batch{Raw: []byte(csv), Format: connectors.FormatCSV, Columns: []string{"k", "v"}, Rows: int64(strings.Count(csv, "\n"))}
}

// A run planned again (a new attempt, with new task IDs) commits only the
// tasks its request lists: what late attempts of the earlier attempt's
// tasks staged, before or after the run's staging was aborted, and even
// while the commit runs, is never exposed, for a full load and for an
// incremental window alike.
func TestSinkCommitTakesOnlyListedTasks(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	w := connectors.Window{From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	for _, mode := range []connectors.CommitMode{connectors.ModeReplace, connectors.ModeAppend} {
		t.Run(string(cmp.Or(mode, "replace")), func(t *testing.T) {
			table := schema + ".l" + string(mode)
			sink := newSink(t, map[string]any{"dsn": dsn, "table": table})
			// Attempt 1 stages a task; the run is planned again and its
			// staging aborted.
			stageCSV(t, sink, "run", "t00000", 1, "1,old\n")
			if err := sink.Abort(ctx, "run"); err != nil {
				t.Fatal(err)
			}
			// Attempt 2's tasks stage; a late attempt of attempt 1's
			// task t00001 stages beside them.
			a := stageCSV(t, sink, "run", "a2-t00000", 1, "1,new\n2,new\n")
			stageCSV(t, sink, "run", "t00001", 1, "8,late\n")
			b := stageCSV(t, sink, "run", "a2-t00001", 1, "3,new\n")
			// Another late one is still writing when the commit starts:
			// the commit waits for it, then leaves its rows out.
			late, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "run", TaskID: "t00002", Attempt: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := late.Write(ctx, kvBatch("9,late\n")); err != nil {
				t.Fatal(err)
			}
			req := connectors.CommitRequest{RunID: "run", Version: 1, Tasks: []connectors.TaskOutput{a, b}}
			if mode == connectors.ModeAppend {
				req.Mode, req.Window = mode, &w
				exec(t, conn, "CREATE TABLE "+table+" (k text, v text, at timestamptz DEFAULT '2026-01-01 12:00:00+00')")
				req.DeltaColumn = "at"
			}
			done := make(chan error, 1)
			go func() {
				_, err := sink.Commit(ctx, req)
				done <- err
			}()
			// The commit waits for the late attempt's lock.
			waitLockWaiter(t, conn, schema, done)
			if _, err := late.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var got string
			if err := conn.QueryRow(ctx, "SELECT string_agg(k || v, ' ' ORDER BY k) FROM "+table).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != "1new 2new 3new" {
				t.Fatalf("%s holds %q, want the listed tasks' rows only: %q", table, got, "1new 2new 3new")
			}
		})
	}
}
