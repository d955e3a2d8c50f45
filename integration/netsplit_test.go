//go:build linux

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// The partition tests run the process cluster with every process in its
// own network namespace (netns_test.go) and cut network links mid-run.

// The Raft leader cut off from its Raft peers mid-run, while it still
// reaches NATS and the workers: the majority elects a leader that finishes
// the run, the run commits exactly once, and the cut-off leader commits
// nothing, neither while cut off nor after the link heals.
func TestPartitionRaftLeaderCutOff(t *testing.T) {
	t.Parallel()
	c := newNetCluster(t, netClusterConfig{workers: 2})
	in := processDataset(t)
	out := t.TempDir()
	c.apply("split", in, out, 1)
	res := c.run("split")
	old := c.leader()

	// The workers freeze once two tasks are done, so that the cut lands
	// mid-run however fast the machine, and thaw right after it.
	ctx := c.ctx(60 * time.Second)
	waitFor(t, 60*time.Second, "two tasks done", func() bool {
		st, err := c.client.GetRun(ctx, res.RunID)
		return err == nil && st.TasksDone >= 2
	})
	for _, w := range c.workers {
		w.signal(t, syscall.SIGSTOP)
	}
	st, err := c.client.GetRun(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if st.TasksDone == st.Tasks {
		t.Fatal("run finished before the leader could be cut off; make the dataset larger")
	}
	c.lab.cut("c"+old, "raft")
	cut := time.Now()
	for _, w := range c.workers {
		w.signal(t, syscall.SIGCONT)
	}
	t.Logf("cut leader %s off its Raft peers at %d/%d tasks done", old, st.TasksDone, st.Tasks)

	var next string
	waitFor(t, 30*time.Second, "a leader other than "+old, func() bool {
		st, err := c.client.Status(c.ctx(2*time.Second), protocol.StatusRequest{})
		next = st.Leader
		return err == nil && st.Leader != "" && st.Leader != old
	})
	t.Logf("%s leads %v after the cut", next, time.Since(cut).Round(time.Millisecond))
	st = c.wait(res.RunID, 90*time.Second)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s with %s cut off: %s (%s)", st.RunID, old, st.State, st.Error)
	}
	t.Logf("run committed by the majority %v after the cut", time.Since(cut).Round(time.Millisecond))

	if lines := logLines(t, c.coords[old], `msg="leadership lost"`); len(lines) == 0 {
		t.Errorf("the cut-off leader %s never stepped down", old)
	}

	// The old leader's term has ended: none of its work (a commit, a
	// publish) is still running.
	waitFor(t, 30*time.Second, "the cut-off leader's term ended", func() bool {
		return len(logLines(t, c.coords[old], `msg="leader term ended"`)) > 0
	})
	// Healed, the old leader rejoins as a follower, and never committed.
	c.lab.heal("c"+old, "raft")
	waitFor(t, 30*time.Second, "a leader after the heal", func() bool {
		st, err := c.client.Status(c.ctx(2*time.Second), protocol.StatusRequest{})
		return err == nil && st.Leader != ""
	})
	if lines := logLines(t, c.coords[old], `msg="run committed"`); len(lines) > 0 {
		t.Errorf("the cut-off leader %s committed: %q", old, lines)
	}
	st = c.wait(res.RunID, 30*time.Second)
	if st.Version != 1 {
		t.Errorf("dataset version %d, want 1: the run committed more than once", st.Version)
	}
	if versions, _ := filepath.Glob(filepath.Join(out, "v*")); len(versions) != 1 {
		t.Errorf("versions on disk %v, want exactly one", versions)
	}
	assertSameRows(t, in, out)
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("split", "committed"), 1)
}

// One NATS server of three cut off mid-run, the one that leads SLUICE_TASKS
// (the most to lose): the run commits with every row exactly once, and a
// second run started while the server is still cut off commits too; the
// healed server rejoins.
func TestPartitionNATSNodeCutOff(t *testing.T) {
	t.Parallel()
	c := newNetCluster(t, netClusterConfig{workers: 2})
	in := processDataset(t)
	out1, out2 := t.TempDir(), t.TempDir()
	c.apply("nsplit1", in, out1, 1)
	c.apply("nsplit2", in, out2, 1)
	res := c.run("nsplit1")

	ctx := c.ctx(60 * time.Second)
	// Asked until it answers with a leader (a loaded cluster's JetStream
	// API may time out or find no responders for a moment).
	var info jetstream.Stream
	var si *jetstream.StreamInfo
	waitFor(t, 60*time.Second, "a leader of "+protocol.StreamTasks, func() bool {
		var err error
		if info == nil {
			if info, err = c.js.Stream(c.ctx(5*time.Second), protocol.StreamTasks); err != nil {
				info = nil
				return false
			}
		}
		si, err = info.Info(c.ctx(5 * time.Second))
		return err == nil && si.Cluster != nil && si.Cluster.Leader != ""
	})
	victim := si.Cluster.Leader
	if c.ns[victim] == "" {
		t.Fatalf("stream leader %q is not one of the NATS servers", victim)
	}
	waitFor(t, 60*time.Second, "two tasks done", func() bool {
		st, err := c.client.GetRun(ctx, res.RunID)
		return err == nil && st.TasksDone >= 2
	})
	for _, w := range c.workers {
		w.signal(t, syscall.SIGSTOP)
	}
	st, err := c.client.GetRun(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if st.TasksDone == st.Tasks {
		t.Fatal("run finished before the NATS server could be cut off; make the dataset larger")
	}
	c.lab.cut(victim, "data")
	cut := time.Now()
	for _, w := range c.workers {
		w.signal(t, syscall.SIGCONT)
	}
	t.Logf("cut NATS server %s (leader of %s) off at %d/%d tasks done", victim, protocol.StreamTasks, st.TasksDone, st.Tasks)

	st = c.wait(res.RunID, 2*time.Minute)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s with %s cut off: %s (%s)", st.RunID, victim, st.State, st.Error)
	}
	t.Logf("run committed %v after the cut", time.Since(cut).Round(time.Millisecond))
	if full, err := c.client.GetRun(c.ctx(10*time.Second), res.RunID); err == nil {
		for _, task := range full.TaskList {
			if task.Attempts > 1 {
				t.Logf("task %s ran %d times (last by %s): its delivery was lost with the cut", task.TaskID, task.Attempts, task.Worker)
			}
		}
	}
	res2 := c.run("nsplit2")
	st2 := c.wait(res2.RunID, 2*time.Minute)
	if st2.State != protocol.RunCommitted {
		t.Fatalf("run %s started with %s cut off: %s (%s)", st2.RunID, victim, st2.State, st2.Error)
	}
	t.Logf("second run committed %v after the cut", time.Since(cut).Round(time.Millisecond))

	// The processes that were on the cut-off server left it for another.
	moved := 0
	for _, p := range c.procs {
		lost := len(logLines(t, p, `msg="NATS connection lost"`))
		back := len(logLines(t, p, `msg="NATS reconnected"`))
		if lost > 0 {
			moved++
			t.Logf("%s left the cut-off server: %s", p.name, logLines(t, p, `msg="NATS reconnected"`))
		}
		if back < lost {
			t.Errorf("%s lost its NATS connection %d times and reconnected %d times", p.name, lost, back)
		}
	}
	t.Logf("%d processes moved to another NATS server", moved)
	for _, o := range []struct{ pipeline, dir string }{{"nsplit1", out1}, {"nsplit2", out2}} {
		if versions, _ := filepath.Glob(filepath.Join(o.dir, "v*")); len(versions) != 1 {
			t.Errorf("%s: versions on disk %v, want exactly one", o.pipeline, versions)
		}
		assertSameRows(t, in, o.dir)
		// The run's event may lag its commit while SLUICE_EVENTS
		// elects a leader; it must come, once.
		subj := protocol.RunEventSubject(o.pipeline, "committed")
		waitFor(t, 90*time.Second, "the event of "+o.pipeline+"'s commit", func() bool {
			s, err := c.js.Stream(c.ctx(5*time.Second), protocol.StreamEvents)
			if err != nil {
				return false
			}
			info, err := s.Info(c.ctx(5*time.Second), jetstream.WithSubjectFilter(subj))
			return err == nil && info.State.Subjects[subj] > 0
		})
		t.Logf("%s: commit event in SLUICE_EVENTS %v after the cut", o.pipeline, time.Since(cut).Round(time.Millisecond))
		expectMessages(t, c.js, protocol.StreamEvents, subj, 1)
	}
	// Healed (after the checks: a healed server may answer a stream's
	// info from its stale state for a moment).
	c.lab.heal(victim, "data")
	// The healed server catches up: the tasks stream has its three
	// replicas current again.
	waitFor(t, 60*time.Second, victim+" current again in "+protocol.StreamTasks, func() bool {
		si, err := info.Info(c.ctx(5 * time.Second))
		if err != nil || si.Cluster == nil {
			return false
		}
		for _, r := range si.Cluster.Replicas {
			if r.Name == victim {
				return r.Current && !r.Offline
			}
		}
		return si.Cluster.Leader == victim
	})
}

// The worker streaming a CDC slot cut off from NATS, but not from
// PostgreSQL, while a writer keeps changing rows: its lease lapses, it
// gives the slot up, another worker takes the slot over and resumes from
// the confirmed position. When the link heals, whatever the cut-off worker
// had written to its NATS connection reaches the servers late. SLUICE_CDC
// then holds every change exactly once, each key's changes in commit
// order: for every key, the values 1, 2, ... its row took, no gap, none
// twice.
func TestPartitionCDCWorkerCutFromNATS(t *testing.T) {
	t.Parallel()
	holdSlot(t)
	dsn, schema, conn := pgtest.DB(t)
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pgAddr := net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))
	slot := cdcSlot(t, dsn, schema, "_ns")
	table := schema + ".kv"
	bg := context.Background()
	if _, err := conn.Exec(bg, "CREATE TABLE "+table+" (id int PRIMARY KEY, v int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	c := newNetCluster(t, netClusterConfig{workers: 2, pg: pgAddr})
	y := fmt.Sprintf("name: nscdc\npattern: cdc\nsource:\n  kind: postgres\n  dsn: %s\n  tables: [%s]\ncdc:\n  slot: %s\n  publication: %s\n  heartbeat: 1s\n  lease: 3s\n",
		dsn, table, slot, slot)
	s, err := pipeline.Parse([]byte(y), "nscdc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Apply(c.ctx(30*time.Second), s); err != nil {
		t.Fatalf("apply nscdc: %v", err)
	}
	holder := c.cdcHolder("nscdc", "")

	// The writer: transactions of 5 upserts of keys 1-200, each setting
	// the row's v to its previous value + 1 (1 for a new row).
	wctx, stopWriter := context.WithCancel(bg)
	defer stopWriter()
	werr := make(chan error, 1)
	var txs atomic.Int64
	go func() {
		werr <- func() error {
			wc, err := pgx.Connect(bg, dsn)
			if err != nil {
				return err
			}
			defer wc.Close(bg)
			rng := rand.New(rand.NewPCG(1, 2))
			for wctx.Err() == nil {
				tx, err := wc.Begin(bg)
				if err != nil {
					return err
				}
				for range 5 {
					if _, err := tx.Exec(bg, "INSERT INTO "+table+" VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET v = kv.v + 1", rng.IntN(200)+1); err != nil {
						return err
					}
				}
				if err := tx.Commit(bg); err != nil {
					return err
				}
				txs.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
			return nil
		}()
	}()
	waitFor(t, 30*time.Second, "100 transactions", func() bool { return txs.Load() >= 100 })

	c.lab.cut(holder, "data")
	cut := time.Now()
	t.Logf("cut worker %s, streaming the slot, off NATS at %d transactions", holder, txs.Load())
	next := c.cdcHolder("nscdc", holder)
	t.Logf("%s streams the slot %v after the cut", next, time.Since(cut).Round(time.Millisecond))
	waitFor(t, 30*time.Second, holder+" giving the slot up", func() bool {
		return len(logLines(t, c.workers[holder], `msg="stream lease given up"`)) > 0
	})
	at := txs.Load()
	waitFor(t, 30*time.Second, "100 more transactions", func() bool { return txs.Load() >= at+100 })
	stopWriter()
	if err := <-werr; err != nil {
		t.Fatalf("writer: %v", err)
	}
	c.lab.heal(holder, "data")
	t.Logf("healed %s after %d transactions", holder, txs.Load())

	// What the source says each key went through.
	want := map[int]int{}
	total := 0
	rows, err := conn.Query(bg, "SELECT id, v FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, v int
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		want[id] = v
		total += v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var got map[int][]int
	var n int
	var rerr error
	read := func() bool {
		got, n, rerr = c.changesByKey("nscdc")
		return rerr == nil
	}
	if !waitForOK(60*time.Second, func() bool { return read() && n >= total }) {
		t.Fatalf("SLUICE_CDC holds %d change events, want %d (%v)", n, total, rerr)
	}
	// Late writes of the cut-off worker may still be on their way.
	time.Sleep(3 * time.Second)
	if !waitForOK(30*time.Second, read) {
		t.Fatalf("read SLUICE_CDC: %v", rerr)
	}
	t.Logf("SLUICE_CDC: %d change events of %d keys for %d committed changes", n, len(got), total)
	bad := 0
	for id, v := range want {
		seq := got[id]
		ok := len(seq) == v
		for i := 0; ok && i < v; i++ {
			ok = seq[i] == i+1
		}
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("key %d: values in the stream %v, want 1..%d in order", id, seq, v)
			}
		}
	}
	if n != total || len(got) != len(want) || bad > 0 {
		t.Errorf("%d change events of %d keys, want %d of %d; %d keys wrong", n, len(got), total, len(want), bad)
	}
}

// cdcHolder waits until a worker other than not streams pipeline's slot
// and returns it.
func (c *netCluster) cdcHolder(pipeline, not string) string {
	c.t.Helper()
	var holder string
	var last protocol.CDCStatusReply
	if !waitForOK(60*time.Second, func() bool {
		st, err := c.client.CDCStatus(c.ctx(2 * time.Second))
		if err != nil {
			return false
		}
		last = st
		for _, s := range st.Streams {
			if s.Pipeline == pipeline && s.Worker != "" && s.Worker != not && s.Status.State == protocol.StreamStreaming {
				holder = s.Worker
				return true
			}
		}
		return false
	}) {
		c.t.Fatalf("no worker but %q streams %s within 60s: %+v", not, pipeline, last.Streams)
	}
	if c.workers[holder] == nil {
		c.t.Fatalf("stream holder %q is not one of the workers", holder)
	}
	return holder
}

// changesByKey reads pipeline's change events in SLUICE_CDC, in stream
// order, and returns the values of column v each key's inserts and updates
// set, and how many there were. An error of JetStream (the cluster may be
// settling after a heal) is returned, for the caller to try again.
func (c *netCluster) changesByKey(pipeline string) (map[int][]int, int, error) {
	c.t.Helper()
	ctx := c.ctx(60 * time.Second)
	cons, err := c.js.OrderedConsumer(ctx, protocol.StreamCDC, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"sluice.cdc." + pipeline + ".>"}})
	if err != nil {
		return nil, 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := map[int][]int{}
	n := 0
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			evs, err := protocol.DecodeChangeEvents(m.Data())
			if err != nil {
				c.t.Fatalf("message on %s: %v", m.Subject(), err)
			}
			for _, ev := range evs {
				if ev.Op != protocol.OpInsert && ev.Op != protocol.OpUpdate {
					continue
				}
				id, err1 := strconv.Atoi(ev.After["id"].Text)
				v, err2 := strconv.Atoi(ev.After["v"].Text)
				if err1 != nil || err2 != nil {
					c.t.Fatalf("event %+v: id %v, v %v", ev, err1, err2)
				}
				out[id] = append(out[id], v)
				n++
			}
		}
		if err := batch.Error(); err != nil {
			return nil, 0, err
		}
		if got == 0 {
			return nil, 0, fmt.Errorf("SLUICE_CDC stopped delivering with %d messages left", left)
		}
		left -= uint64(got)
	}
	return out, n, nil
}
