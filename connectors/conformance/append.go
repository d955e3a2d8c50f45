package conformance

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
)

// TestAppend checks a sink that appends runs without a window
// (connectors.Connector.SinkAppends: the commit of a run by position) on a
// fresh destination: a run's retried task counts once and an aborted
// later attempt keeps the earlier output; its commit (ModeAppend, no
// Window) makes exactly its rows readable; the same commit repeated (also
// from a new sink, as a new leader would) appends nothing more; a failed
// run (written, then aborted) adds nothing; a later run's commit adds its
// rows beside the first run's, once. h.ReadCommitted must return the
// checksum of every row the dataset holds (all runs appended). No
// goroutine is left behind.
func TestAppend(t *testing.T, h SinkHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	checkHarness(t, h)
	sink := h.Open(t)
	const pipeline = "conformance"
	n := len(h.Batches())
	half := max(n/2, 1)
	tk := tasks{t: t, ctx: ctx, h: h, pipeline: pipeline}
	batches := tk.batches
	write := func(run, task string, attempt int, bs []connectors.Batch) connectors.TaskWriter {
		t.Helper()
		return tk.write(sink, run, task, attempt, bs)
	}
	closeTask := tk.close
	commit := func(s connectors.Sink, run string, version int64, outs ...connectors.TaskOutput) {
		t.Helper()
		req := connectors.CommitRequest{RunID: run, Pipeline: pipeline, Version: version, Tasks: outs,
			Mode: connectors.ModeAppend, Watermark: "position-" + run}
		if _, err := s.Commit(ctx, req); err != nil {
			t.Fatalf("Commit %s (append without a window): %v", run, err)
		}
	}
	check := func(when string, want connectors.Checksum, ranges ...[2]int) {
		t.Helper()
		tk.check(sink, when, want, ranges...)
	}

	closeTask(write("run-1", "t00001", 1, batches(0, half)))
	out1 := closeTask(write("run-1", "t00001", 2, batches(0, half)))
	out2 := closeTask(write("run-1", "t00002", 1, batches(half, n)))
	if err := write("run-1", "t00002", 2, batches(half, n)).Abort(ctx); err != nil {
		t.Fatalf("Abort attempt: %v", err)
	}
	var run1 connectors.Checksum
	run1.Merge(out1.Checksum)
	run1.Merge(out2.Checksum)
	commit(sink, "run-1", 1, out1, out2)
	check("after run-1 appended", run1, [2]int{0, n})
	commit(sink, "run-1", 1, out1, out2)
	other := h.Open(t)
	commit(other, "run-1", 1, out1, out2)
	if err := other.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	check("after the commit of run-1 was repeated", run1, [2]int{0, n})

	closeTask(write("run-2", "t00001", 1, batches(0, n)))
	if err := sink.Abort(ctx, "run-2"); err != nil {
		t.Fatalf("Abort run-2: %v", err)
	}
	check("after run-2 failed", run1, [2]int{0, n})

	out3 := closeTask(write("run-3", "t00001", 1, batches(0, half)))
	commit(sink, "run-3", 2, out3)
	commit(sink, "run-3", 2, out3)
	both := run1
	both.Merge(out3.Checksum)
	check("after run-3 appended (twice)", both, [2]int{0, n}, [2]int{0, half})

	if err := sink.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	verifyNoLeaks(t, leaks)
}
