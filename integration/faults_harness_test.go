//go:build unix

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// The fault matrix's harness: a process cluster with short timings, the
// faults (kill -9 of the worker running a task, of the Raft leader, of a
// NATS node) landed on conditions, and expected values the test computes
// from the source itself, never through Sluice's code.

// newFaultCluster is a process cluster whose crashed worker's tasks come
// back after 4s (the workers' ack wait), not 30s.
func newFaultCluster(t *testing.T, workers ...string) *procCluster {
	t.Helper()
	return newProcClusterWith(t, procOptions{
		workers:    workers,
		coordArgs:  []string{"--ack-wait", "4s"},
		workerArgs: []string{"--progress-every", "1s"},
	})
}

// applySpec stores the pipeline of a YAML spec.
func (c *procCluster) applySpec(y string) {
	c.t.Helper()
	s, err := pipeline.Parse([]byte(y), "spec.yaml")
	if err != nil {
		c.t.Fatalf("%v\n%s", err, y)
	}
	if _, err := c.client.Apply(c.ctx(30*time.Second), s); err != nil {
		c.t.Fatalf("apply %s: %v", s.Name, err)
	}
}

// leaderID is the Raft leader's node id, once one answers.
func (c *procCluster) leaderID() string {
	c.t.Helper()
	var id string
	waitFor(c.t, 60*time.Second, "a Raft leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		st, err := c.client.Status(ctx, protocol.StatusRequest{})
		if err == nil && st.Leader != "" && c.coords[st.Leader] != nil && !c.coords[st.Leader].exited() {
			id = st.Leader
			return true
		}
		return false
	})
	return id
}

// killLeader kills the Raft leader with SIGKILL and waits until another
// coordinator answers as leader; it returns both ids.
func (c *procCluster) killLeader() (old, next string) {
	c.t.Helper()
	old = c.leaderID()
	p := c.coords[old]
	p.signal(c.t, syscall.SIGKILL)
	<-p.done
	next = c.leaderID()
	if next == old {
		c.t.Fatalf("the killed coordinator %s still answers as leader", old)
	}
	return old, next
}

// killMidTask kills with SIGKILL a worker that runs a task of run, and
// starts a worker in its place (id+"b"). It freezes a worker seen starting
// a task (SIGSTOP), reads from its log what it has in flight, and kills it
// only then: a task it finished meanwhile does not count, and it tries
// again. It returns the victim's id and the tasks it had in flight.
func (c *procCluster) killMidTask(runID string) (string, []string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range slices.Sorted(maps.Keys(c.workers)) {
			p := c.workers[id]
			if p.exited() || len(inFlight(c.t, p, runID)) == 0 {
				continue
			}
			p.signal(c.t, syscall.SIGSTOP)
			tasks := inFlight(c.t, p, runID)
			if len(tasks) == 0 {
				p.signal(c.t, syscall.SIGCONT)
				continue
			}
			p.signal(c.t, syscall.SIGKILL)
			<-p.done
			delete(c.workers, id)
			c.startWorker(id + "b")
			c.t.Logf("killed worker %s with SIGKILL with tasks %v of %s in flight", id, tasks, runID)
			return id, tasks
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.t.Fatalf("no worker ran a task of %s within 60s", runID)
	return "", nil
}

// waitCommitted waits for run id to end and checks it committed as
// version.
func (c *procCluster) waitCommitted(id string, version int64) protocol.RunStatus {
	c.t.Helper()
	c.wait(id, 2*time.Minute)
	st, err := c.client.GetRun(c.ctx(10*time.Second), id)
	if err != nil {
		c.t.Fatal(err)
	}
	if st.State != protocol.RunCommitted || st.Version != version {
		c.t.Fatalf("run %s: %s as version %d (%s), want committed as version %d", id, st.State, st.Version, st.Error, version)
	}
	return st
}

// redelivered reports the tasks of run st that ran more than once, or
// says that the whole run was planned again.
func redelivered(st protocol.RunStatus) string {
	var again []string
	for _, ts := range st.TaskList {
		if ts.Attempts > 1 {
			again = append(again, fmt.Sprintf("%s (attempt %d by %s)", ts.TaskID, ts.Attempts, ts.Worker))
		}
	}
	if len(again) > 0 {
		return "tasks delivered again: " + strings.Join(again, ", ")
	}
	if st.Attempt > 1 {
		return fmt.Sprintf("run planned again: %+v", st.Replans)
	}
	return ""
}

// checkWorkerFault checks that run st shows the kill of a worker with
// tasks in flight: one of them ran again by another worker, or the run was
// planned again.
func checkWorkerFault(t *testing.T, st protocol.RunStatus, victim string, tasks []string) {
	t.Helper()
	if st.Attempt > 1 {
		t.Logf("run %s: %s", st.RunID, redelivered(st))
		return
	}
	for _, ts := range st.TaskList {
		if slices.Contains(tasks, ts.TaskID) && ts.Attempts > 1 && ts.Worker != victim {
			t.Logf("run %s: task %s of the killed %s ran again by %s (attempt %d)", st.RunID, ts.TaskID, victim, ts.Worker, ts.Attempts)
			return
		}
	}
	t.Errorf("run %s: none of the tasks %v of the killed worker %s ran again elsewhere: %+v", st.RunID, tasks, victim, st.TaskList)
}

// committedBy checks that coordinator id's log says it committed run.
func (c *procCluster) committedBy(id, run string) bool {
	return len(logLines(c.t, c.coords[id], `msg="run committed"`, "run="+run+" ")) > 0
}

// jsonlMD5 is the count and md5 of the rows of the JSONL files in dir,
// each row re-encoded with its keys sorted, the rows sorted.
func jsonlMD5(t *testing.T, dir string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("JSONL files in %s: %v %v", dir, paths, err)
	}
	var lines []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(b)) {
			var row map[string]any
			if err := json.Unmarshal([]byte(l), &row); err != nil {
				t.Fatalf("%s: %q: %v", p, l, err)
			}
			canon, err := json.Marshal(row)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, string(canon))
		}
	}
	return linesMD5(lines)
}

// queryMD5 is the count of the rows of a query and the md5 of their text
// forms, ordered by the first column, computed by PostgreSQL.
func queryMD5(t *testing.T, conn *pgx.Conn, q string) string {
	t.Helper()
	var n int64
	var sum string
	agg := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(r::text, E'\n' ORDER BY r.id)), '') FROM (%s) r`, q)
	if err := conn.QueryRow(context.Background(), agg).Scan(&n, &sum); err != nil {
		t.Fatalf("%s: %v", agg, err)
	}
	return fmt.Sprintf("%d rows, md5 %s", n, sum)
}

// cdcSource is a table of the CDC cells, acct (id, v, note): v counts the
// updates of a row, so each key's events must carry v = 0, 1, 2, ... in
// stream order.
type cdcSource struct {
	dsn, table string
	initial    int

	mu      sync.Mutex
	changes int   // committed changes
	next    int64 // next id to insert
	err     error
}

func newCDCSource(t *testing.T, conn *pgx.Conn, dsn, schema string, rows int) *cdcSource {
	t.Helper()
	s := &cdcSource{dsn: dsn, table: schema + ".acct", initial: rows, next: int64(rows) + 1}
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, v bigint NOT NULL, note text)`, s.table),
		fmt.Sprintf(`INSERT INTO %s SELECT g, 0, 'row ' || g || repeat(' ü,"x"', 20) FROM generate_series(1, %d) g`, s.table, rows),
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return s
}

// write runs transactions of 3 updates and 1 insert until ctx ends.
func (s *cdcSource) write(ctx context.Context) {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		s.fail(ctx, err)
		return
	}
	defer conn.Close(context.Background())
	rng := rand.New(rand.NewPCG(7, 11))
	for ctx.Err() == nil {
		s.mu.Lock()
		next := s.next
		s.mu.Unlock()
		// A transaction runs to its end: the count of committed changes
		// stays exact when the writer is stopped.
		bg := context.Background()
		tx, err := conn.Begin(bg)
		if err != nil {
			s.fail(ctx, err)
			return
		}
		for range 3 {
			id := 1 + rng.Int64N(next-1)
			if _, err := tx.Exec(bg, "UPDATE "+s.table+" SET v = v + 1, note = note || 'u' WHERE id = $1", id); err != nil {
				tx.Rollback(context.Background())
				s.fail(ctx, err)
				return
			}
		}
		if _, err := tx.Exec(bg, "INSERT INTO "+s.table+" VALUES ($1, 0, 'new')", next); err != nil {
			tx.Rollback(context.Background())
			s.fail(ctx, err)
			return
		}
		if err := tx.Commit(bg); err != nil {
			s.fail(ctx, err)
			return
		}
		s.mu.Lock()
		s.changes += 4
		s.next++
		s.mu.Unlock()
		time.Sleep(3 * time.Millisecond)
	}
}

// fail records the writer's error, unless the writer was stopped.
func (s *cdcSource) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *cdcSource) committed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

// writer starts the writer; the returned func stops it and returns the
// changes committed.
func (s *cdcSource) writer(t *testing.T) func() int {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.write(ctx)
	}()
	stopped := false
	stop := func() int {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil {
			t.Fatalf("writer: %v", s.err)
		}
		return s.changes
	}
	t.Cleanup(func() { stop() })
	return stop
}

// checkCDCStream reads every event of cdc pipeline name in SLUICE_CDC and
// checks them against the source: one read event per snapshot row (of the
// last snapshot started), each change once, per key in commit order (v
// counting up by one from the read or insert), and every source row's last
// v.
//
// With exact, the snapshot is the one taken before the writes began: the
// stream holds one read event per initial row and every committed change.
// Without (a snapshot taken again later), rows written before it are read
// events and only the changes after it are in the stream.
func checkCDCStream(t *testing.T, js jetstream.JetStream, conn *pgx.Conn, name string, src *cdcSource, changes int, exact bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The JetStream API of a loaded cluster may not answer at once (no
	// responders while its meta leader moves): tried for a while.
	var cons jetstream.Consumer
	var info *jetstream.ConsumerInfo
	var err error
	for try := 0; ; try++ {
		cons, err = js.OrderedConsumer(ctx, protocol.StreamCDC, jetstream.OrderedConsumerConfig{FilterSubjects: []string{protocol.CDCSubjectPrefix(name) + ">"}})
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err == nil {
			break
		}
		if try == 50 {
			t.Fatalf("read %s's events in %s: %v", name, protocol.StreamCDC, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	reads := map[string]int{}
	lastV := map[string]int64{} // by key: the v of its last event
	seen := map[string]bool{}   // change positions
	nchanges, dups, disorder := 0, 0, 0
	snapLSN, restarts := "", 0
	var firstBad string
	fails := 0 // fetches in a row that failed or brought nothing
	for left := info.NumPending; left > 0; {
		// Like the consumer's creation, a fetch may find no responders
		// while the loaded cluster's meta or stream leader moves.
		failed := func(err error) {
			if fails++; fails == 20 {
				t.Fatalf("SLUICE_CDC stopped delivering %s's events with %d messages left: %v", name, left, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			failed(err)
			continue
		}
		n := 0
		for m := range batch.Messages() {
			n++
			evs, err := protocol.DecodeChangeEvents(m.Data())
			if err != nil {
				t.Fatalf("message on %s: %v", m.Subject(), err)
			}
			for _, ev := range evs {
				if ev.Op == protocol.OpSnapshot {
					// A snapshot taken again (on a new slot, at a later
					// position) tells a consumer to start over: the read
					// events of a failed attempt before it do not count.
					if ev.LSN != snapLSN {
						if snapLSN != "" {
							restarts++
						}
						snapLSN = ev.LSN
						clear(reads)
						clear(lastV)
					}
					continue
				}
				row := ev.After
				if row == nil {
					row = ev.Before
				}
				id, v := row["id"].Text, int64(-1)
				if ev.After != nil {
					fmt.Sscan(ev.After["v"].Text, &v)
				}
				if ev.Op == protocol.OpRead {
					reads[id]++
					lastV[id] = v
					continue
				}
				pos := fmt.Sprintf("%s:%d", ev.CommitLSN, ev.Index)
				if seen[pos] {
					dups++
					continue
				}
				seen[pos] = true
				nchanges++
				prev, ok := lastV[id]
				want := prev + 1
				if !ok {
					want = 0 // an insert
				}
				if v != want {
					disorder++
					if firstBad == "" {
						firstBad = fmt.Sprintf("key %s: %s event at %s with v=%d after v=%d (known %v)", id, ev.Op, pos, v, prev, ok)
					}
				}
				lastV[id] = v
			}
		}
		left -= uint64(n)
		if err := batch.Error(); err != nil || n == 0 {
			failed(err)
			continue
		}
		fails = 0
	}
	twice := 0
	for _, k := range reads {
		if k > 1 {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%s: %d keys have more than one read event", name, twice)
	}
	if dups > 0 {
		t.Errorf("%s: %d change events appear twice in SLUICE_CDC", name, dups)
	}
	if disorder > 0 {
		t.Errorf("%s: %d change events out of their key's commit order (or one missing before them); first: %s", name, disorder, firstBad)
	}
	// Every row of the source is in the stream, with its last v: with v
	// counting up by one per key, none of its changes is missing.
	rows, err := conn.Query(ctx, "SELECT id::text, v FROM "+src.table)
	if err != nil {
		t.Fatal(err)
	}
	missing, stale := 0, 0
	n := 0
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		n++
		switch got, ok := lastV[id]; {
		case !ok:
			missing++
		case got != v:
			stale++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if missing > 0 || stale > 0 || len(lastV) != n {
		t.Errorf("%s: %d source rows absent from SLUICE_CDC, %d with another last v there; %d keys there, %d rows in the source", name, missing, stale, len(lastV), n)
	}
	if exact && (len(reads) != src.initial || nchanges != changes) {
		t.Errorf("%s: %d read events and %d change events, want one per snapshot row (%d) and one per committed change (%d)", name, len(reads), nchanges, src.initial, changes)
	}
	if exact && restarts > 0 {
		t.Errorf("%s: the snapshot started over %d times in SLUICE_CDC, its run once", name, restarts)
	}
	t.Logf("%s: %d read events (the snapshot started over %d times) and %d change events in SLUICE_CDC (%d changes committed)", name, len(reads), restarts, nchanges, changes)
}

// streamOf returns the stream named name as the leader reports it.
func (c *procCluster) streamOf(name string) (protocol.StreamInfo, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.client.CDCStatus(ctx)
	if err != nil {
		return protocol.StreamInfo{}, false
	}
	for _, s := range st.Streams {
		if s.Pipeline == name {
			return s, true
		}
	}
	return protocol.StreamInfo{}, false
}

// streaming waits until a live worker other than not holds stream name
// and reports it streaming, and returns the stream.
func (c *procCluster) streaming(name string, not string) protocol.StreamInfo {
	c.t.Helper()
	var s protocol.StreamInfo
	waitFor(c.t, 2*time.Minute, name+" streaming on a live worker", func() bool {
		var ok bool
		s, ok = c.streamOf(name)
		w := c.workers[s.Worker]
		return ok && s.Worker != "" && s.Worker != not && w != nil && !w.exited() && s.Status.State == protocol.StreamStreaming
	})
	return s
}

// killHolder kills with SIGKILL the worker holding stream name, starts one
// in its place and returns the stream before the kill.
func (c *procCluster) killHolder(name string) protocol.StreamInfo {
	c.t.Helper()
	s := c.streaming(name, "")
	p := c.workers[s.Worker]
	p.signal(c.t, syscall.SIGKILL)
	<-p.done
	delete(c.workers, s.Worker)
	c.startWorker(s.Worker + "b")
	c.t.Logf("killed worker %s holding %s (epoch %d) with SIGKILL", s.Worker, name, s.Epoch)
	return s
}

// checkLeaseMoved checks that stream name is held by another worker on a
// later epoch than before.
func (c *procCluster) checkLeaseMoved(name string, before protocol.StreamInfo) {
	c.t.Helper()
	after := c.streaming(name, before.Worker)
	if after.Epoch <= before.Epoch {
		c.t.Errorf("%s: lease epoch %d after the kill, %d before", name, after.Epoch, before.Epoch)
	}
	c.t.Logf("%s: lease moved from %s (epoch %d) to %s (epoch %d)", name, before.Worker, before.Epoch, after.Worker, after.Epoch)
}
