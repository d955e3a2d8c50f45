package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/builtin"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// The tests of a run that survives its planner (DESIGN rule 10): a
// PostgreSQL full load whose exported snapshot is gone is planned again as
// a new attempt of the same run, on a fresh snapshot, and commits once.

// createOrders creates table (id, name, amount) with rows 1..n.
func createOrders(t *testing.T, conn *pgx.Conn, table string, n int) {
	t.Helper()
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, name text, amount numeric(12,2))`, table),
		fmt.Sprintf(`INSERT INTO %s SELECT g, 'name ' || g || ' ü,"q"', (g * 1.37)::numeric(12,2) FROM generate_series(1, %d) g`, table, n),
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// addOrders inserts rows from..to into table.
func addOrders(t *testing.T, conn *pgx.Conn, table string, from, to int) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s SELECT g, 'late ' || g, g FROM generate_series(%d, %d) g`, table, from, to)); err != nil {
		t.Fatal(err)
	}
}

// rowsMD5 is the row count of table and the md5 of its rows as text,
// ordered by id, computed by the server: the same for a source table and a
// copy of it whatever the copy's column types.
func rowsMD5(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var n int64
	var sum string
	q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(format('%%s|%%s|%%s', id, name, amount), E'\n' ORDER BY id::bigint)), '') FROM %s`, table)
	if err := conn.QueryRow(context.Background(), q).Scan(&n, &sum); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return fmt.Sprintf("%d rows, md5 %s", n, sum)
}

// checkReplanned checks that run st committed once, as version 1, on
// attempt 2, the first attempt given up for a reason containing why.
func checkReplanned(t *testing.T, st protocol.RunStatus, whys ...string) {
	t.Helper()
	if st.State != protocol.RunCommitted || st.Version != 1 {
		t.Fatalf("run %s: %s as version %d (%s), want committed as version 1", st.RunID, st.State, st.Version, st.Error)
	}
	if st.Attempt != 2 || len(st.Replans) != 1 || st.Replans[0].Attempt != 1 ||
		!slices.ContainsFunc(whys, func(why string) bool { return strings.Contains(st.Replans[0].Reason, why) }) {
		t.Fatalf("run %s on attempt %d, replans %+v; want attempt 2, attempt 1 given up: one of %q", st.RunID, st.Attempt, st.Replans, whys)
	}
	for _, ts := range st.TaskList {
		if !strings.HasPrefix(ts.TaskID, "a2-") {
			t.Errorf("task %s of run %s is not attempt 2's", ts.TaskID, st.RunID)
		}
	}
}

// applyPostgres stores a full load of src into sink (the YAML of a sink
// block), targetRows rows a task.
func (c *cluster) applyPostgres(name, dsn, src, sinkYAML string, targetRows int, extra string) {
	c.t.Helper()
	y := fmt.Sprintf("name: %s\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\n%ssink:\n%s\npartitioning:\n  target_rows: %d\n",
		name, dsn, src, extra, sinkYAML, targetRows)
	s, err := pipeline.Load([]byte(y), name+".yaml", c.reg, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(), s); err != nil {
		c.t.Fatal(err)
	}
}

// getRun returns the run with its tasks.
func (c *cluster) getRun(id string) protocol.RunStatus {
	c.t.Helper()
	st, err := c.client.GetRun(c.ctx(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

// The Raft leader that planned a PostgreSQL full load dies before any task
// ran: the next leader plans the run again at once on a fresh snapshot
// (rows inserted since the first plan are in it), with new task IDs. A
// late staging write and a late result of a task of the first attempt,
// arriving after the new plan, change nothing: the run commits once and
// the target equals the source.
func TestPostgresRunReplannedAfterLeaderDies(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src, dst := schema+".orders", schema+".orders_copy"
	createOrders(t, conn, src, 20000)
	c := newCluster(t, clusterConfig{})
	c.applyPostgres("replan", dsn, src, fmt.Sprintf("  kind: postgres\n  dsn: %s\n  table: %s", dsn, dst), 2500, "")
	res := c.run("replan")
	if res.Tasks < 8 {
		t.Fatalf("planned %d tasks for 20000 rows at 2500 a task", res.Tasks)
	}
	waitFor(t, 30*time.Second, "attempt 1's tasks published", func() bool { return c.queuedTasks("replan", res.RunID) == res.Tasks })
	addOrders(t, conn, src, 20001, 20500)

	old := c.leader()
	old.c.Kill()
	old.killed = true
	var st protocol.RunStatus
	waitFor(t, 30*time.Second, "the next leader plans the run again", func() bool {
		st = c.getRun(res.RunID)
		return st.Attempt == 2 && st.State == protocol.RunRunning && c.queuedTasks("replan", res.RunID) == st.Tasks
	})

	// A late worker of attempt 1 stages rows of task t00001 and reports it.
	sink, err := postgres.NewSink(postgres.SinkConfig{DSN: dsn, Table: dst})
	if err != nil {
		t.Fatal(err)
	}
	tw, err := sink.OpenTask(c.ctx(), connectors.TaskRef{RunID: res.RunID, TaskID: "t00001", Pipeline: "replan", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	late := "900001,late,1.00\n900002,late,2.00\n"
	if err := tw.Write(c.ctx(), connectors.Batch{Raw: []byte(late), Format: connectors.FormatCSV, Columns: []string{"id", "name", "amount"}, Rows: 2}); err != nil {
		t.Fatal(err)
	}
	out, err := tw.Close(c.ctx())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := protocol.Encode(protocol.Result{RunID: res.RunID, TaskID: "t00001", Pipeline: "replan", Attempt: 1, Worker: "late",
		Rows: out.Rows, Bytes: out.Bytes, Checksum: protocol.Sum(out.Checksum.Sum), Location: out.Location})
	if _, err := c.js.Publish(c.ctx(), protocol.ResultSubject("replan"), data); err != nil {
		t.Fatal(err)
	}

	c.addWorker()
	c.addWorker()
	st = c.wait(res.RunID)
	checkReplanned(t, c.getRun(res.RunID), "the leader that planned attempt 1 is gone")
	if st.Rows != 20500 {
		t.Errorf("run %s wrote %d rows, want the fresh snapshot's 20500", st.RunID, st.Rows)
	}
	if got, want := rowsMD5(t, conn, dst), rowsMD5(t, conn, src); got != want {
		t.Fatalf("target %s, source %s", got, want)
	}
}

// queuedTasks counts the task messages of run id of pipeline name in
// SLUICE_TASKS.
func (c *cluster) queuedTasks(name, id string) int {
	c.t.Helper()
	s, err := c.js.Stream(c.ctx(), protocol.StreamTasks)
	if err != nil {
		return -1
	}
	info, err := s.Info(c.ctx(), jetstream.WithSubjectFilter(protocol.TaskSubject(name, id)))
	if err != nil {
		return -1
	}
	n := 0
	for _, v := range info.State.Subjects {
		n += int(v)
	}
	return n
}

// The snapshot a running PostgreSQL full load was planned on ends while
// its leader still leads (its session outlived snapshot_timeout): the
// tasks that find it gone report it, the leader plans the run again, and
// the run commits once, equal to the source.
func TestPostgresRunReplannedWhenTaskFindsSnapshotGone(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src, out := schema+".orders", t.TempDir()
	createOrders(t, conn, src, 20000)
	c := newCluster(t, clusterConfig{})
	c.applyPostgres("replan", dsn, src, fmt.Sprintf("  kind: files\n  path: %s\n  format: csv", out), 2500, "  snapshot_timeout: 3s\n")
	res := c.run("replan")
	waitFor(t, 30*time.Second, "attempt 1's tasks published", func() bool { return c.queuedTasks("replan", res.RunID) == res.Tasks })
	time.Sleep(4 * time.Second) // the server ends the idle session holding the snapshot
	c.addWorker()
	c.addWorker()
	st := c.wait(res.RunID)
	checkReplanned(t, c.getRun(res.RunID), "snapshot is gone")
	want, err := postgres.TableChecksum(c.ctx(), conn, "SELECT * FROM "+src)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := files.Current(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := files.ReadChecksum(cur, "csv")
	if err != nil {
		t.Fatal(err)
	}
	if got != want || st.Rows != 20000 {
		t.Fatalf("files hold %d rows %s (run: %d rows); source %d rows %s", got.Rows, got, st.Rows, want.Rows, want)
	}
}

// `sluice dev` stopped mid-run (its workers drain, its coordinator
// releases the run's snapshot) and started again on the same data
// directory: the run, still running in the Raft log, is planned again and
// commits once.
func TestDevRestartMidRunReplans(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	src, dst := schema+".orders", schema+".orders_copy"
	createOrders(t, conn, src, 20000)
	reg := builtin.Registry()
	cfg := devcluster.Config{DataDir: filepath.Join(t.TempDir(), "dev"), Workers: 1, Slots: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: noop.NewTracerProvider(), Registry: reg}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var runID string
	err := devcluster.Run(ctx, cfg, func(ctx context.Context, l *devcluster.Cluster) error {
		y := fmt.Sprintf("name: dev\npattern: full_load\nsource:\n  kind: postgres\n  dsn: %s\n  table: %s\nsink:\n  kind: postgres\n  dsn: %s\n  table: %s\npartitioning:\n  target_rows: 1000\n",
			dsn, src, dsn, dst)
		s, err := pipeline.Load([]byte(y), "dev.yaml", reg, nil)
		if err != nil {
			return err
		}
		if _, err := l.Client.Apply(ctx, s); err != nil {
			return err
		}
		res, err := l.Client.Run(ctx, protocol.RunRequest{Pipeline: "dev"})
		if err != nil {
			return err
		}
		runID = res.RunID
		// Stop as soon as a task is done: one worker slot leaves most
		// tasks queued.
		for {
			st, err := l.Client.GetRun(ctx, runID)
			if err != nil {
				return err
			}
			if st.TasksDone >= 1 {
				if st.TasksDone == st.Tasks {
					return fmt.Errorf("run %s finished before the stop", runID)
				}
				t.Logf("stopping sluice dev at %d/%d tasks done", st.TasksDone, st.Tasks)
				return nil
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	err = devcluster.Run(ctx, cfg, func(ctx context.Context, l *devcluster.Cluster) error {
		st, err := l.Client.WaitRun(ctx, runID, 50*time.Millisecond, nil)
		if err != nil {
			return err
		}
		if st, err = l.Client.GetRun(ctx, runID); err != nil {
			return err
		}
		// The new leader finds the planning leader gone, or a worker
		// restarted with it reads a task first and finds the snapshot
		// gone: either way the run is planned again once.
		checkReplanned(t, st, "the leader that planned attempt 1 is gone", "snapshot is gone")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rowsMD5(t, conn, dst), rowsMD5(t, conn, src); got != want {
		t.Fatalf("target %s, source %s", got, want)
	}
}
