//go:build unix

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// The fault matrix: {a worker, the Raft leader, a NATS node} killed with
// SIGKILL x {files -> files, PostgreSQL -> files, PostgreSQL ->
// PostgreSQL full load, incremental window, CDC snapshot, CDC streaming,
// cdc_apply}, plus the leader killed in the commit step, on a cluster of
// processes. Each cell ends with the target equal to the source (count and
// an md5 the test computes from the source rows), one committed version
// (or each change once, per key in commit order), and the run's history
// showing the fault. The clusters run in parallel; the cells of one fault
// share its cluster.

// batchCell is a run-based cell: a pipeline whose first run the fault
// hits, and the check of its target against its source.
type batchCell struct {
	name  string
	spec  string
	check func(t *testing.T)
}

// batchCells creates the sources of the four batch cells, in schema and
// under the test's directories, with pipeline names prefixed by prefix.
func batchCells(t *testing.T, conn *pgx.Conn, dsn, schema, prefix string) []batchCell {
	t.Helper()
	ctx := context.Background()
	in, out, csvOut := writeDataset(t, 6, 20000), t.TempDir(), t.TempDir()
	orders, copyT := schema+".orders", schema+".orders_copy"
	createOrders(t, conn, orders, 100000)
	start := time.Now().UTC().Truncate(time.Hour).Add(-72 * time.Hour)
	events, incT := schema+".events", schema+".events_inc"
	for _, q := range []string{
		`CREATE TABLE ` + events + ` (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, customer text, amount numeric(12,2), note text)`,
		// 40000 rows over 48h: 20000 in the first day's window.
		fmt.Sprintf(`INSERT INTO %s SELECT g, '%s'::timestamptz + (g - 1) * interval '4.32 seconds', 'cust-' || (g %% 97), (g * 1.37)::numeric(12,2), CASE WHEN g %% 7 = 0 THEN NULL ELSE E'l1\nl2 "q" ü ' || g END FROM generate_series(1, 40000) g`, events, start.Format(time.RFC3339)),
		`CREATE INDEX ON ` + events + ` (updated_at)`,
		`CREATE TABLE ` + incT + ` (LIKE ` + events + `)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	oneVersion := func(t *testing.T, dir string) {
		if vs, _ := filepath.Glob(filepath.Join(dir, "v*")); len(vs) != 1 {
			t.Errorf("versions on disk %v, want exactly one", vs)
		}
	}
	cols := "SELECT id, updated_at, customer, amount, note FROM "
	return []batchCell{
		{
			name: prefix + "-files",
			spec: fmt.Sprintf("name: %s-files\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: files, path: %s, format: jsonl}\npartitioning: {max_files: 1}\n", prefix, in, out),
			check: func(t *testing.T) {
				if got, want := jsonlMD5(t, filepath.Join(out, "current")), jsonlMD5(t, in); got != want {
					t.Errorf("files target %s, source %s", got, want)
				}
				oneVersion(t, out)
			},
		},
		{
			name: prefix + "-pgfiles",
			spec: fmt.Sprintf("name: %s-pgfiles\npattern: full_load\nsource: {kind: postgres, dsn: '%s', table: %s}\nsink: {kind: files, path: %s, format: csv}\npartitioning: {target_rows: 12500}\n", prefix, dsn, orders, csvOut),
			check: func(t *testing.T) {
				if got, want := csvLinesMD5(t, filepath.Join(csvOut, "current")), sourceCSVMD5(t, conn, orders); got != want {
					t.Errorf("CSV target %s, source %s", got, want)
				}
				oneVersion(t, csvOut)
			},
		},
		{
			name: prefix + "-pgpg",
			spec: fmt.Sprintf("name: %s-pgpg\npattern: full_load\nsource: {kind: postgres, dsn: '%s', table: %s}\nsink: {kind: postgres, dsn: '%s', table: %s}\npartitioning: {target_rows: 12500}\n", prefix, dsn, orders, dsn, copyT),
			check: func(t *testing.T) {
				if got, want := rowsMD5(t, conn, copyT), rowsMD5(t, conn, orders); got != want {
					t.Errorf("PostgreSQL target %s, source %s", got, want)
				}
			},
		},
		{
			name: prefix + "-incremental",
			spec: fmt.Sprintf("name: %s-incremental\npattern: incremental\nsource: {kind: postgres, dsn: '%s', table: %s}\nsink: {kind: postgres, dsn: '%s', table: %s}\npartitioning: {target_rows: 2500}\nincremental: {delta_column: updated_at, window: 24h, lag: 5m, start: '%s'}\n",
				prefix, dsn, events, dsn, incT, start.Format(time.RFC3339)),
			check: func(t *testing.T) {
				where := fmt.Sprintf(" WHERE updated_at >= '%s' AND updated_at < '%s'", start.Format(time.RFC3339), start.Add(24*time.Hour).Format(time.RFC3339))
				got, want := queryMD5(t, conn, cols+incT), queryMD5(t, conn, cols+events+where)
				if got != want || !strings.HasPrefix(want, "20000 rows") {
					t.Errorf("incremental target %s, source window (20000 rows) %s", got, want)
				}
			},
		},
	}
}

// A worker killed with SIGKILL with a task in flight, once in each batch
// cell: the task runs again on another worker and the run commits once.
func TestFaultMatrixWorkerKill9Batch(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	cells := batchCells(t, conn, dsn, schema, "wk")
	c := newFaultCluster(t, "w1", "w2", "w3")
	for _, cell := range cells {
		c.applySpec(cell.spec)
		res := c.run(cell.name)
		victim, tasks := c.killMidTask(res.RunID)
		st := c.waitCommitted(res.RunID, 1)
		checkWorkerFault(t, st, victim, tasks)
		cell.check(t)
		expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject(cell.name, "committed"), 1)
		t.Logf("cell %s: pass", cell.name)
	}
}

// The Raft leader killed with SIGKILL while a worker runs a task of each
// batch cell's run: the next leader finishes the run (planning it again
// when its source's snapshot died with the old leader), and it commits
// once.
func TestFaultMatrixLeaderKill9Batch(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	cells := batchCells(t, conn, dsn, schema, "lk")
	c := newFaultCluster(t, "w1", "w2")
	for _, cell := range cells {
		c.applySpec(cell.spec)
		res := c.run(cell.name)
		// Workers frozen once one runs a task: the kill lands mid-run.
		c.busyWorker(res.RunID, 60*time.Second)
		c.freezeWorkers(true)
		if st, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID); err != nil || st.TasksDone == st.Tasks {
			t.Fatalf("cell %s: run %s ended before the kill (%v)", cell.name, res.RunID, err)
		}
		old, next := c.killLeader()
		c.freezeWorkers(false)
		st := c.waitCommitted(res.RunID, 1)
		if c.committedBy(old, res.RunID) {
			t.Errorf("cell %s: the killed leader %s logged the commit of %s", cell.name, old, res.RunID)
		}
		by := ""
		for id := range c.coords {
			if id != old && c.committedBy(id, res.RunID) {
				by = id
			}
		}
		if by == "" {
			t.Errorf("cell %s: no coordinator but the killed %s logged the commit of %s", cell.name, old, res.RunID)
		}
		t.Logf("cell %s: leader %s killed mid-run, %s led on and %s committed; run on attempt %d %s", cell.name, old, next, by, st.Attempt, redelivered(st))
		cell.check(t)
		expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject(cell.name, "committed"), 1)
		// The killed coordinator comes back as a follower for the next
		// cell.
		c.restartCoordinator(old)
		t.Logf("cell %s: pass", cell.name)
	}
	leaderKill9InCommit(t, c, conn, dsn, schema)
}

// freezeWorkers sends SIGSTOP (or SIGCONT) to every live worker.
func (c *procCluster) freezeWorkers(stop bool) {
	c.t.Helper()
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	for _, w := range c.workers {
		if !w.exited() {
			w.signal(c.t, sig)
		}
	}
}

// restartCoordinator starts the killed coordinator id again, with its
// data directory.
func (c *procCluster) restartCoordinator(id string) {
	c.t.Helper()
	old := c.coords[id]
	c.coords[id] = c.start(old.name+"-again", old.cmd.Path, old.cmd.Args[1:]...)
}

// restartProc starts the exited process p again with the same command
// line.
func (c *procCluster) restartProc(p *proc) *proc {
	c.t.Helper()
	return c.start(p.name+"-again", p.cmd.Path, p.cmd.Args[1:]...)
}

// leaderKill9InCommit: the leader killed with SIGKILL in the commit step
// of a PostgreSQL full load's second run (a transaction holding the view
// makes the view swap wait, so the commit has begun and not finished):
// the next leader commits it again, harmlessly, as version 2.
func leaderKill9InCommit(t *testing.T, c *procCluster, conn *pgx.Conn, dsn, schema string) {
	t.Helper()
	ctx := context.Background()
	src, view := schema+".orders", schema+".orders_view"
	name := "lk-commit"
	c.applySpec(fmt.Sprintf("name: %s\npattern: full_load\nsource: {kind: postgres, dsn: '%s', table: %s}\nsink: {kind: postgres, dsn: '%s', table: %s}\npartitioning: {target_rows: 25000}\n", name, dsn, src, dsn, view))
	c.waitCommitted(c.run(name).RunID, 1)
	addOrders(t, conn, src, 100001, 101000)

	hold, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close(ctx)
	tx, err := hold.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+view+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	res := c.run(name)
	lead := c.leaderID()
	// The commit has begun: the leader says so, and a session waits for a
	// lock on the view.
	waitFor(t, 2*time.Minute, "the commit step of "+res.RunID, func() bool {
		if len(logLines(t, c.coords[lead], `msg="commit started"`, "run="+res.RunID+" ")) == 0 {
			return false
		}
		var waiting int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass`, view).Scan(&waiting)
		return waiting > 0
	})
	old, next := c.killLeader()
	if old != lead {
		t.Fatalf("leader %s killed, %s began the commit", old, lead)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.waitCommitted(res.RunID, 2)
	if !c.committedBy(next, res.RunID) {
		t.Errorf("commit cell: %s's log does not show the commit of %s it finished", next, res.RunID)
	}
	if c.committedBy(old, res.RunID) {
		t.Errorf("commit cell: the killed leader %s logged the commit of %s", old, res.RunID)
	}
	if got, want := rowsMD5(t, conn, view), rowsMD5(t, conn, src); got != want || !strings.HasPrefix(want, "101000 rows") {
		t.Errorf("commit cell: view %s, source (101000 rows) %s", got, want)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject(name, "committed"), 2)
	t.Logf("cell %s: leader %s killed in the commit step of %s; %s committed it as version %d: pass", name, old, st.RunID, next, st.Version)
}

// cdcFaults are the faults of one CDC scenario: in the initial snapshot
// (its run given), while the slot streams, and while cdc_apply applies.
type cdcFaults struct {
	snapshot  func(snapRun string) (check func())
	streaming func() (check func())
	applying  func() (check func())
}

// cdcScenario runs a cdc pipeline (initial snapshot in chunk tasks, then
// streaming) and a cdc_apply pipeline replicating it, with writes running,
// and the faults at their moments; at the end the replica equals the
// source and SLUICE_CDC holds each row and change once, per key in
// commit order.
func cdcScenario(t *testing.T, c *procCluster, conn *pgx.Conn, dsn, schema, prefix string, f cdcFaults) {
	t.Helper()
	ctx := context.Background()
	src := newCDCSource(t, conn, dsn, schema, 40000)
	slot := strings.ToLower(schema)[:min(len(schema), 50)] + "_" + prefix
	// The workers stop streaming the slot before it is dropped.
	t.Cleanup(func() {
		c.killAll()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 50 {
			if pgcdc.DropSlot(ctx, dsn, slot, slot) == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("slot %s left behind", slot)
	})
	replica := schema + "_replica"
	// applied logs every row cdc_apply writes, in the order it writes
	// them: per key, v (the source's own update counter) must never go
	// back, whatever the batches, retries and faults.
	for _, q := range []string{"CREATE SCHEMA " + replica, fmt.Sprintf("CREATE TABLE %s.acct (LIKE %s INCLUDING ALL)", replica, src.table),
		fmt.Sprintf("CREATE TABLE %s.applied (seq bigserial PRIMARY KEY, id bigint NOT NULL, v bigint NOT NULL)", replica),
		fmt.Sprintf("CREATE FUNCTION %[1]s.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO %[1]s.applied (id, v) VALUES (NEW.id, NEW.v); RETURN NULL; END$$", replica),
		fmt.Sprintf("CREATE TRIGGER applied AFTER INSERT OR UPDATE ON %[1]s.acct FOR EACH ROW EXECUTE FUNCTION %[1]s.log_applied()", replica),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP SCHEMA "+replica+" CASCADE") })
	cdc, apply := prefix+"-cdc", prefix+"-apply"
	c.applySpec(fmt.Sprintf("name: %s\npattern: cdc\nsource: {kind: postgres, dsn: '%s', tables: [%s]}\ncdc: {slot: %s, publication: %s, heartbeat: 1s, lease: 3s, target_rows: 5000}\n",
		cdc, dsn, src.table, slot, slot))
	c.applySpec(fmt.Sprintf("name: %s\npattern: cdc_apply\nsource: {kind: cdc, pipeline: %s}\nsink: {kind: postgres, dsn: '%s', schema: %s}\ncdc: {lease: 3s}\n", apply, cdc, dsn, replica))

	// The snapshot's run, once planned on the slot's exported snapshot.
	var snap protocol.StreamInfo
	waitFor(t, 60*time.Second, "the snapshot run of "+cdc, func() bool {
		var ok bool
		snap, ok = c.streamOf(cdc)
		if !ok || snap.SnapshotRun == "" {
			return false
		}
		st, err := c.client.GetRun(c.ctx(10*time.Second), snap.SnapshotRun)
		return err == nil && st.Tasks > 0
	})
	// Changes start once the slot exists: all of them come after the
	// snapshot's consistent point.
	stop := src.writer(t)
	var checks []func()
	if f.snapshot != nil {
		checks = append(checks, f.snapshot(snap.SnapshotRun))
	}
	c.streaming(cdc, "")
	c.streaming(apply, "")
	if f.streaming != nil {
		at := src.committed()
		waitFor(t, time.Minute, "changes streamed", func() bool { return src.committed() > at+200 })
		checks = append(checks, f.streaming())
	}
	if f.applying != nil {
		at := src.committed()
		waitFor(t, time.Minute, "changes applied", func() bool { return src.committed() > at+200 })
		checks = append(checks, f.applying())
	}
	at := src.committed()
	waitFor(t, time.Minute, "changes after the faults", func() bool { return src.committed() > at+200 })
	changes := stop()
	cols := "SELECT id, v, note FROM "
	var got, want string
	if !waitForOK(2*time.Minute, func() bool {
		got, want = queryMD5(t, conn, cols+replica+".acct"), queryMD5(t, conn, cols+src.table)
		return got == want
	}) {
		st, _ := c.client.CDCStatus(c.ctx(10 * time.Second))
		t.Errorf("replica %s, source %s\nstreams: %+v", got, want, st)
		var diff []string
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT s.id, s.v, r.v, s.note = r.note FROM %s s FULL JOIN %s.acct r USING (id)
			WHERE r.id IS NULL OR s.id IS NULL OR s.v <> r.v OR s.note IS DISTINCT FROM r.note ORDER BY 1 LIMIT 10`, src.table, replica))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, sv, rv *int64
			var same *bool
			if err := rows.Scan(&id, &sv, &rv, &same); err != nil {
				t.Fatal(err)
			}
			diff = append(diff, fmt.Sprintf("id %v: source v %v, replica v %v, same note %v", deref(id), deref(sv), deref(rv), deref(same)))
		}
		t.Errorf("rows that differ: %s", strings.Join(diff, "; "))
	}
	t.Logf("%s: replica = source = %s after %d changes", apply, want, changes)
	checkAppliedOrder(t, conn, replica+".applied")
	s, _ := c.streamOf(cdc)
	if s.SnapshotRun != snap.SnapshotRun {
		t.Logf("%s: the snapshot run %s failed; %s took it again on a new slot", cdc, snap.SnapshotRun, s.SnapshotRun)
	}
	checkCDCStream(t, c.js, conn, cdc, src, changes, s.SnapshotRun == snap.SnapshotRun)
	for _, check := range checks {
		check()
	}
}

// A worker killed with SIGKILL running a snapshot chunk task, then the
// worker streaming the slot, then the worker holding cdc_apply's stream.
// checkAppliedOrder checks the log of the rows an applier wrote (seq, id,
// v): per id, v, the source's update counter, never goes back.
func checkAppliedOrder(t *testing.T, conn *pgx.Conn, log string) {
	t.Helper()
	var n, back int64
	var example string
	err := conn.QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE v < prev),
		coalesce(min(CASE WHEN v < prev THEN 'id ' || id || ': v ' || prev || ' then ' || v END), '')
		FROM (SELECT id, v, lag(v) OVER (PARTITION BY id ORDER BY seq) AS prev FROM %s) l`, log)).Scan(&n, &back, &example)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || back > 0 {
		t.Errorf("%s: %d rows applied, %d of them older than the key's row applied before (%s)", log, n, back, example)
	}
}

func TestFaultMatrixWorkerKill9CDC(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	c := newFaultCluster(t, "w1", "w2", "w3")
	cdcScenario(t, c, conn, dsn, schema, "wk", cdcFaults{
		snapshot: func(run string) func() {
			victim, tasks := c.killMidTask(run)
			return func() {
				st, err := c.client.GetRun(c.ctx(10*time.Second), run)
				if err != nil {
					t.Fatal(err)
				}
				if st.State != protocol.RunCommitted {
					// A leader change on a loaded machine lets the
					// exported snapshot go: the snapshot is then taken
					// again as a new run (checked by cdcScenario).
					t.Logf("snapshot run %s: %s (%s)", run, st.State, st.Error)
					if s, _ := c.streamOf("wk-cdc"); s.SnapshotRun == run {
						t.Errorf("snapshot run %s %s and was not taken again", run, st.State)
					}
				}
				checkWorkerFault(t, st, victim, tasks)
			}
		},
		streaming: func() func() {
			before := c.killHolder("wk-cdc")
			return func() { c.checkLeaseMoved("wk-cdc", before) }
		},
		applying: func() func() {
			before := c.killHolder("wk-apply")
			return func() { c.checkLeaseMoved("wk-apply", before) }
		},
	})
}

// The Raft leader killed with SIGKILL once the initial snapshot was
// exported and a chunk task runs (the workers frozen meanwhile), then
// while the slot streams and cdc_apply applies (one kill for both cells:
// the leases outlive the leader).
func TestFaultMatrixLeaderKill9CDC(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	c := newFaultCluster(t, "w1", "w2")
	cdcScenario(t, c, conn, dsn, schema, "lk", cdcFaults{
		snapshot: func(run string) func() {
			c.busyWorker(run, 60*time.Second)
			c.freezeWorkers(true)
			old, next := c.killLeader()
			c.freezeWorkers(false)
			t.Logf("leader %s killed with SIGKILL mid-snapshot %s; %s leads", old, run, next)
			c.restartCoordinator(old)
			return func() {
				s, _ := c.streamOf("lk-cdc")
				st, err := c.client.GetRun(c.ctx(10*time.Second), s.SnapshotRun)
				if err != nil {
					t.Fatal(err)
				}
				if st.State != protocol.RunCommitted {
					t.Errorf("snapshot run %s: %s (%s)", st.RunID, st.State, st.Error)
				}
				why := redelivered(st)
				if s.SnapshotRun != run {
					why = fmt.Sprintf("snapshot taken again as run %s", s.SnapshotRun)
				}
				if why == "" {
					t.Errorf("snapshot run %s shows nothing of the leader's death (attempt %d, tasks %+v)", run, st.Attempt, st.TaskList)
				}
				t.Logf("snapshot after the leader's kill: %s", why)
			}
		},
		streaming: func() func() {
			before := map[string]protocol.StreamInfo{}
			for _, n := range []string{"lk-cdc", "lk-apply"} {
				before[n] = c.streaming(n, "")
			}
			old, next := c.killLeader()
			t.Logf("leader %s killed with SIGKILL while lk-cdc and lk-apply stream; %s leads", old, next)
			c.restartCoordinator(old)
			return func() {
				if c.leaderID() == old {
					t.Logf("%s leads again", old)
				}
				for n, b := range before {
					a := c.streaming(n, "")
					t.Logf("%s: held by %s epoch %d before the kill, %s epoch %d after", n, b.Worker, b.Epoch, a.Worker, a.Epoch)
				}
			}
		},
	})
}

// natsProc returns the live process of NATS node name (n1, n2, n3).
func (c *procCluster) natsProc(name string) *proc {
	c.t.Helper()
	for _, p := range slices.Backward(c.procs) {
		if strings.HasPrefix(p.name, name) && (len(p.name) == len(name) || p.name[len(name)] == '-') && !p.exited() {
			return p
		}
	}
	c.t.Fatalf("no live NATS node %s", name)
	return nil
}

// streamLeader is the NATS node leading stream, once one does (and is
// not not).
func (c *procCluster) streamLeader(stream, not string) string {
	c.t.Helper()
	var leader string
	waitFor(c.t, time.Minute, "a leader of "+stream, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := c.js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != "" && leader != not
	})
	return leader
}

// killNATS kills with SIGKILL the NATS node leading stream, waits for
// another to lead it, starts the node again and waits until the stream's
// replicas are all current. It returns the killed node and the new
// leader.
func (c *procCluster) killNATS(stream string) (string, string) {
	c.t.Helper()
	node := c.streamLeader(stream, "")
	p := c.natsProc(node)
	p.signal(c.t, syscall.SIGKILL)
	<-p.done
	next := c.streamLeader(stream, node)
	c.t.Logf("NATS node %s leading %s killed with SIGKILL; %s leads it", node, stream, next)
	c.restartProc(p)
	waitFor(c.t, 2*time.Minute, "the replicas of "+stream+" current", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := c.js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	})
	return node, next
}

// A NATS node killed with SIGKILL: the one leading SLUICE_TASKS while the
// four batch runs are under way (it is started again after: the streams
// keep a quorum of 2 of 3).
func TestFaultMatrixNATSKill9(t *testing.T) {
	t.Parallel()
	dsn, schema, conn := pgtest.DB(t)
	cells := batchCells(t, conn, dsn, schema, "nk")
	c := newFaultCluster(t, "w1", "w2", "w3")
	// The workers frozen while the four runs are planned and published:
	// the kill lands once one of them runs a task, all four runs' tasks
	// queued or running.
	c.freezeWorkers(true)
	var runs []string
	for _, cell := range cells {
		c.applySpec(cell.spec)
		runs = append(runs, c.run(cell.name).RunID)
	}
	for _, id := range runs {
		waitFor(t, time.Minute, id+" published", func() bool {
			st, err := c.client.GetRun(c.ctx(10*time.Second), id)
			return err == nil && st.State == protocol.RunRunning && st.Tasks > 0
		})
	}
	c.freezeWorkers(false)
	c.busyWorker(runs[0], 60*time.Second)
	node, next := c.killNATS(protocol.StreamTasks)
	for i, cell := range cells {
		st := c.waitCommitted(runs[i], 1)
		cell.check(t)
		expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject(cell.name, "committed"), 1)
		again := redelivered(st)
		if again == "" {
			again = "no task ran twice"
		}
		t.Logf("cell %s: committed through the kill of %s (SLUICE_TASKS led by %s after); %s: pass", cell.name, node, next, again)
	}
}

// A NATS node killed with SIGKILL: the one leading SLUICE_CDC during the
// snapshot, while the slot streams, and while cdc_apply applies (each
// restarted before the next kill). Every change reaches SLUICE_CDC once and
// in its key's commit order (the reader has one message in flight at a
// time, so none is stored before an earlier one published again after the
// failover), and cdc_apply leaves the replica equal to the source.
func TestFaultMatrixNATSKill9CDC(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	c := newFaultCluster(t, "w1", "w2", "w3")
	cdcScenario(t, c, conn, dsn, schema, "nk", cdcFaults{
		snapshot: func(run string) func() {
			c.busyWorker(run, 60*time.Second)
			node, next := c.killNATS(protocol.StreamCDC)
			return func() { t.Logf("snapshot: NATS node %s killed, %s led SLUICE_CDC after", node, next) }
		},
		streaming: func() func() {
			node, next := c.killNATS(protocol.StreamCDC)
			return func() { t.Logf("streaming: NATS node %s killed, %s led SLUICE_CDC after", node, next) }
		},
		applying: func() func() {
			node, next := c.killNATS(protocol.StreamCDC)
			return func() { t.Logf("applying: NATS node %s killed, %s led SLUICE_CDC after", node, next) }
		},
	})
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
