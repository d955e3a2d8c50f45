package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// A 50-task full load through 3 coordinators and 2 workers commits an output
// equal to the source.
func TestFiftyTaskLoadEqualsSource(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 2})
	in := writeDataset(t, 50, 2000)
	out := t.TempDir()
	c.apply("fifty", in, out, 1, "")
	res := c.run("fifty")
	if res.Tasks != 50 {
		t.Fatalf("run planned %d tasks, want 50 (one per file)", res.Tasks)
	}
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	sum := assertSameRows(t, in, out)
	if st.Rows != 100_000 || st.Rows != sum.Rows || st.Checksum != sum.String() {
		t.Fatalf("run reported %d rows checksum %s, output has %d rows checksum %s", st.Rows, st.Checksum, sum.Rows, sum)
	}
	if st.TasksDone != 50 || st.Version != 1 {
		t.Fatalf("tasks done %d, version %d; want 50 and 1", st.TasksDone, st.Version)
	}
	if _, err := os.Stat(st.Marker); err != nil {
		t.Fatalf("readiness marker: %v", err)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("fifty", "committed"), 1)
}

// The Raft leader stopped mid-run: a new leader continues the run, which
// commits exactly once with an output equal to the source.
func TestLeaderStoppedMidRunCommitsOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 2, slots: 1})
	in := writeDataset(t, 50, 4000)
	out := t.TempDir()
	c.apply("failover", in, out, 1, "")
	res := c.run("failover")
	old := c.leader()

	// Wait until the run is under way but not finished, then kill the leader.
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.client.GetRun(c.ctx(), res.RunID)
		if err == nil && st.TasksDone >= 3 {
			if st.TasksDone == st.Tasks {
				t.Fatal("run finished before the leader could be stopped; make the dataset larger")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s made no progress: %v", res.RunID, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := time.Now()
	old.c.Kill()
	old.killed = true
	next := c.leader()
	if next == old {
		t.Fatal("the killed node is still leader")
	}
	t.Logf("leader killed; new leader elected %s after the kill began", time.Since(stopped).Round(time.Millisecond))

	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s after failover: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	if st.Version != 1 {
		t.Fatalf("dataset version %d, want 1: the run committed more than once", st.Version)
	}
	versions, _ := filepath.Glob(filepath.Join(out, "v*"))
	if len(versions) != 1 {
		t.Fatalf("versions on disk %v, want exactly one", versions)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("failover", "committed"), 1)
}

// A worker stopped mid-task without acking: its task is redelivered to the
// other worker after AckWait, and the committed output has no duplicate row.
func TestWorkerKilledMidTaskNoDuplicates(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 2 * time.Second})
	in := writeDataset(t, 12, 20000)
	out := t.TempDir()
	c.apply("crash", in, out, 1, "")
	res := c.run("crash")
	c.killWhenBusy(0)

	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	c.assertRedelivered(res.RunID)
}

// A task that keeps failing is retried with backoff, then dead: the run
// fails, the task lands in the dead-letter stream, and the dataset's
// previous version stays exposed, untouched.
func TestFailingTaskRetriedThenDeadKeepsPreviousVersion(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	in := writeDataset(t, 6, 500)
	out := t.TempDir()
	c.apply("flaky", in, out, 2, "retry:\n  max_attempts: 3\n  backoff: 100ms\n")
	first := c.wait(c.run("flaky").RunID)
	if first.State != protocol.RunCommitted {
		t.Fatalf("first run: %s (%s)", first.State, first.Error)
	}
	before := assertSameRows(t, in, out)

	// Stop the worker, plan a second run, then remove one planned file so
	// that its task fails on every attempt.
	c.workers[0].cancel()
	<-c.workers[0].done
	c.workers = c.workers[:0]
	res := c.run("flaky")
	gone := filepath.Join(in, "part-0003.jsonl")
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	c.addWorker()
	st := c.wait(res.RunID)
	if st.State != protocol.RunFailed {
		t.Fatalf("second run: %s, want failed", st.State)
	}
	full, err := c.client.GetRun(c.ctx(), res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var dead []protocol.TaskStatus
	for _, task := range full.TaskList {
		if task.State == protocol.TaskFailed {
			dead = append(dead, task)
		}
	}
	if len(dead) != 1 || dead[0].Attempts != 3 || !strings.Contains(dead[0].Error, "part-0003.jsonl") {
		t.Fatalf("dead tasks %+v; want one, after 3 attempts, naming part-0003.jsonl", dead)
	}
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("task", "flaky"), 1)
	dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0)
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	h := dl[0].Header
	if dl[0].Kind != "task" || h.Get(protocol.HeaderRun) != res.RunID || h.Get(protocol.HeaderTask) != dead[0].TaskID ||
		h.Get(protocol.HeaderAttempts) != "3" || !strings.Contains(h.Get(protocol.HeaderReason), "part-0003.jsonl") ||
		h.Get(protocol.HeaderOrigSubject) != protocol.TaskSubject("flaky", res.RunID) {
		t.Fatalf("dead letter %s headers %v; want the run, task, 3 attempts, the reason and the task subject", dl[0].Subject, h)
	}

	// The first version is still the exposed one, with the same rows.
	cur, err := files.Current(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := files.ReadChecksum(cur, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got != before || filepath.Base(cur) != "v000001" {
		t.Fatalf("after the failed run, current is %s with %d rows %s; want v000001 with %d rows %s", cur, got.Rows, got, before.Rows, before)
	}
	// The sink's staging is removed when the failure is announced, just
	// after the Raft entry that failed the run.
	staging := filepath.Join(out, "_staging", res.RunID)
	deadline := time.Now().Add(15 * time.Second)
	for _, err := os.Stat(staging); !os.IsNotExist(err); _, err = os.Stat(staging) {
		if time.Now().After(deadline) {
			t.Fatalf("staging of the failed run left behind: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
