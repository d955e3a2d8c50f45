package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func replanCmd(run string, attempt int, reason string) entry {
	return runReplanCmd{Run: run, Attempt: attempt, Reason: reason, Limit: 3, Keep: 50, Time: t0.Add(time.Duration(attempt) * time.Second)}
}

func heldPlan(run string, n int, wm string) entry {
	c := planned(run, n, wm).(runPlannedCmd)
	c.Holds = true
	return c
}

func taskIDs(r *runState) []string {
	var ids []string
	for _, ts := range r.Tasks {
		ids = append(ids, ts.ID)
	}
	return ids
}

// A run whose plan can no longer be read is planned again as a new attempt
// of the same run: the attempt's tasks get IDs of their own, a late result
// of an earlier attempt's task changes nothing, a task finding the hold
// gone marks the run for a new plan without failing it, and giving up the
// last attempt fails the run naming why.
func TestFSMReplan(t *testing.T) {
	const run = "orders-000001"
	f := newFSM()
	applyAll(t, f, put("orders"), create("orders", ""), heldPlan(run, 2, "wm1"), published(run), ok(run, "t00000", 5))
	if r := f.st.Runs[run]; !r.Holds || r.attempt() != 1 || !slices.Equal(taskIDs(r), []string{"t00000", "t00001"}) {
		t.Fatalf("first plan: holds %v, attempt %d, tasks %v", r.Holds, r.attempt(), taskIDs(r))
	}

	// Another leader's command for another attempt is refused.
	if err, _ := applyAll(t, f, replanCmd(run, 2, "x")).(error); !refused(err, refusedRunState) {
		t.Fatalf("re-plan of attempt 2 while the run is at 1: %v", err)
	}
	out := applyAll(t, f, replanCmd(run, 1, "its leader died"))
	if out != (runReplanReply{Attempt: 2}) {
		t.Fatalf("re-plan reply %+v", out)
	}
	r := f.st.Runs[run]
	if r.State != protocol.RunPlanning || r.Planned || r.Published || r.Holds || r.Tasks != nil || r.Watermark != "" || r.attempt() != 2 {
		t.Fatalf("after the re-plan: %+v", r)
	}
	if want := []protocol.Replan{{Attempt: 1, Reason: "its leader died", Time: t0.Add(time.Second)}}; !slices.Equal(r.Replans, want) {
		t.Fatalf("replans %+v, want %+v", r.Replans, want)
	}
	if err, _ := applyAll(t, f, replanCmd(run, 2, "x")).(error); !refused(err, refusedRunState) {
		t.Fatalf("re-plan of a run that is planning: %v", err)
	}

	applyAll(t, f, heldPlan(run, 2, "wm2"), published(run))
	r = f.st.Runs[run]
	if !slices.Equal(taskIDs(r), []string{"a2-t00000", "a2-t00001"}) || r.Watermark != "wm2" || r.State != protocol.RunRunning {
		t.Fatalf("second plan: tasks %v, watermark %q, state %s", taskIDs(r), r.Watermark, r.State)
	}
	// A late result of attempt 1's task is ignored.
	if got := applyAll(t, f, ok(run, "t00001", 99)); got != (taskResultReply{}) {
		t.Fatalf("late result of an earlier attempt: %+v, want ignored", got)
	}
	// A task of attempt 2 finds the hold gone: the run waits for its new
	// plan; a late success of another task is still recorded.
	gone := taskResultCmd{Run: run, Task: "a2-t00001", Attempt: 1, ErrorClass: protocol.ErrorReplan, Error: "snapshot gone", Time: t0}
	if got := applyAll(t, f, gone); got != (taskResultReply{Changed: true}) {
		t.Fatalf("replan result: %+v", got)
	}
	applyAll(t, f, ok(run, "a2-t00000", 5))
	r = f.st.Runs[run]
	if r.State != protocol.RunRunning || r.Replan != "task a2-t00001 (p1) found what the run was planned on gone: snapshot gone" || r.task("a2-t00001").State != protocol.TaskPending {
		t.Fatalf("after the replan result: state %s, replan %q, task %+v", r.State, r.Replan, r.task("a2-t00001"))
	}
	applyAll(t, f, replanCmd(run, 2, r.Replan), heldPlan(run, 1, "wm3"), published(run))
	if r = f.st.Runs[run]; r.Replan != "" || !slices.Equal(taskIDs(r), []string{"a3-t00000"}) {
		t.Fatalf("third plan: replan %q, tasks %v", r.Replan, taskIDs(r))
	}
	out = applyAll(t, f, replanCmd(run, 3, "snapshot gone again"))
	r = f.st.Runs[run]
	if out != (runReplanReply{Attempt: 3, Failed: true}) || r.State != protocol.RunFailed || r.Error != "given up after 3 attempts: snapshot gone again" || len(r.Replans) != 3 {
		t.Fatalf("last attempt given up: %+v; run %s %q, %d replans", out, r.State, r.Error, len(r.Replans))
	}
	if p := f.st.Pipelines["orders"]; p.Version != 0 || p.Watermark != "" {
		t.Fatalf("a failed run moved the pipeline: %+v", p)
	}

	// A run whose tasks all succeeded needs no hold: it commits.
	applyAll(t, f, create("orders", ""), heldPlan("orders-000002", 1, "wm"), published("orders-000002"), ok("orders-000002", "t00000", 1))
	if err, _ := applyAll(t, f, replanCmd("orders-000002", 1, "x")).(error); !refused(err, refusedRunState) {
		t.Fatalf("re-plan of a run whose tasks all succeeded: %v", err)
	}
}

// An incremental run keeps its window and the position it reaches across
// attempts, and a backfill's window stays running while its run plans
// again; the commit of the last attempt moves the watermark.
func TestFSMReplanKeepsWindow(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putIncremental("ev"), createWindow("ev", win(0, 1), true))
	const run = "ev-000001"
	applyAll(t, f, heldPlan(run, 1, "ignored"), published(run), replanCmd(run, 1, "gone"))
	r := f.st.Runs[run]
	if *r.Window != *win(0, 1) || !r.Live || r.Watermark != "2026-01-01T01:00:00Z" || r.State != protocol.RunPlanning {
		t.Fatalf("re-planned incremental run: window %v live %v watermark %q state %s", r.Window, r.Live, r.Watermark, r.State)
	}
	applyAll(t, f, heldPlan(run, 1, "ignored"), published(run), ok(run, "a2-t00000", 3), committing(run), committed(run, 50))
	if p := f.st.Pipelines["ev"]; p.Watermark != "2026-01-01T01:00:00Z" || p.Version != 1 || len(p.Loaded) != 1 || p.Loaded[0] != *win(0, 1) {
		t.Fatalf("after the commit of attempt 2: watermark %q version %d loaded %v", p.Watermark, p.Version, p.Loaded)
	}

	applyAll(t, f, backfillCmd{Pipeline: "ev", From: win(2, 4).From, To: win(2, 4).To, Concurrency: 1, MaxAttempts: 3, Time: t0, LeaderStarts: true},
		windowRun("ev", "ev-bf0001", win(2, 3)))
	b := f.st.Backfills["ev-bf0001"]
	wrun := b.Windows[0].Run
	applyAll(t, f, heldPlan(wrun, 1, ""), published(wrun), replanCmd(wrun, 1, "gone"))
	if w := f.st.Backfills["ev-bf0001"].Windows[0]; w.State != protocol.WindowRunning || w.Run != wrun || *f.st.Runs[wrun].Window != *win(2, 3) {
		t.Fatalf("backfill window while its run plans again: %+v", w)
	}
}

// The initial snapshot of a cdc pipeline is not planned again as the same
// run: giving up its attempt fails it, and a new run on a new slot starts
// it over (tendSnapshot). A task finding its snapshot gone marks it the
// same way.
func TestFSMReplanSnapshotRunFails(t *testing.T) {
	f := newFSM()
	spec := cdcSpec("shop")
	src, sink, err := snapshotEndpoints((&memConnectors{}).registry(), spec)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, f, pipelinePutCmd{Spec: spec, Time: t0})
	out := applyAll(t, f, runCreateCmd{Pipeline: "shop", Snapshot: true, Source: &src, Sink: &sink, MaxAttempts: 3, Time: t0}).(runCreateReply)
	gone := taskResultCmd{Run: out.RunID, Task: "t00000", Attempt: 1, ErrorClass: protocol.ErrorReplan, Error: "snapshot gone", Time: t0}
	applyAll(t, f, heldPlan(out.RunID, 1, "0/1"), published(out.RunID), gone)
	r := f.st.Runs[out.RunID]
	reply := applyAll(t, f, replanCmd(out.RunID, 1, r.Replan))
	if r = f.st.Runs[out.RunID]; reply != (runReplanReply{Attempt: 1, Failed: true}) || r.State != protocol.RunFailed || !strings.Contains(r.Error, "new slot") {
		t.Fatalf("snapshot run given up: %+v, %s %q", reply, r.State, r.Error)
	}
	if p := f.st.Pipelines["shop"]; p.Stream.SnapshotDone || p.Stream.SnapshotAttempts != 1 {
		t.Fatalf("stream after the failed snapshot: %+v", p.Stream)
	}
}

// replanSpec is a full load of memsrc holding its plans, in parts tasks.
func replanSpec(name string, parts int) pipeline.Spec {
	s := memSpec(name, parts)
	s.Source.Config = json.RawMessage(fmt.Sprintf(`{"parts":%d,"holds":true}`, parts))
	return s
}

// runToEnd applies spec, starts a run of it and waits for the run's end.
func runToEnd(ctx context.Context, t *testing.T, cl *Client, spec pipeline.Spec) protocol.RunStatus {
	t.Helper()
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: spec.Name})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitRun(ctx, reply.RunID, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// firstAttempt reports whether task is one of a run's first attempt.
func firstAttempt(task protocol.Task) bool { return !strings.HasPrefix(task.TaskID, "a") }

// A task that finds what its run was planned on gone makes the leader plan
// the run again: the earlier attempt's staging is aborted and its hold
// released before the new plan, a late result of the earlier attempt is
// ignored, and the run commits once, with the new attempt's tasks only.
func TestRunReplannedWhenTaskFindsHoldGone(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lateSent := false
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		if firstAttempt(task) {
			if task.TaskID == "t00001" {
				return protocol.Result{Worker: "w1", ErrorClass: protocol.ErrorReplan, Error: "the run's exported snapshot is gone"}
			}
			return succeed(task, attempt)
		}
		if !lateSent {
			// A late success of attempt 1's failed task, published
			// before attempt 2's first result.
			lateSent = true
			late, _ := protocol.Encode(protocol.Result{RunID: task.RunID, TaskID: "t00001", Pipeline: task.Pipeline, Attempt: 2, Worker: "late", Rows: 999, Location: "stage/late"})
			if _, err := js.Publish(ctx, protocol.ResultSubject(task.Pipeline), late); err != nil {
				t.Errorf("publish late result: %v", err)
			}
		}
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	st := runToEnd(ctx, t, cl, replanSpec("orders", 3))
	if st.State != protocol.RunCommitted || st.Version != 1 || st.Rows != 30 || st.Attempt != 2 || len(st.Replans) != 1 {
		t.Fatalf("run %+v: want committed as version 1, 30 rows, on attempt 2", st)
	}
	if rp := st.Replans[0]; rp.Attempt != 1 || !strings.Contains(rp.Reason, "task t00001 (part-1)") || !strings.Contains(rp.Reason, "snapshot is gone") {
		t.Errorf("replan %+v: want attempt 1, naming the task and its error", rp)
	}
	if !lateSent {
		t.Fatal("attempt 2 ran no task")
	}
	commits := mem.committed()
	if len(commits) != 1 {
		t.Fatalf("%d commits, want 1", len(commits))
	}
	for i, out := range commits[0].Tasks {
		if want := fmt.Sprintf("stage/%s/a2-t%05d", st.RunID, i); out.Location != want || out.Rows != 10 {
			t.Errorf("commit task %d: %+v, want %s with 10 rows", i, out, want)
		}
	}
	full, err := cl.GetRun(ctx, st.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range full.TaskList {
		if !strings.HasPrefix(ts.TaskID, "a2-") || ts.Worker == "late" {
			t.Errorf("task %+v is not attempt 2's", ts)
		}
	}
	// Attempt 1's staging was aborted and its hold released before the
	// second plan; both plans read the same request.
	if plans := mem.planned(st.RunID); len(plans) != 2 || !slices.Equal(mem.aborted(), []string{st.RunID}) {
		t.Errorf("%d plans, aborts %v; want 2 plans and one abort", len(plans), mem.aborted())
	}
	mem.mu.Lock()
	released := slices.Clone(mem.released)
	mem.mu.Unlock()
	if len(released) != 2 || released[0] != st.RunID {
		t.Errorf("released %v, want the run's two holds", released)
	}
}

// A run whose attempts keep losing what they were planned on fails after
// runAttempts attempts, naming why, and commits nothing.
func TestRunReplanAttemptsBounded(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, func(protocol.Task, int) protocol.Result {
		return protocol.Result{Worker: "w1", ErrorClass: protocol.ErrorReplan, Error: "the run's exported snapshot is gone"}
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := runToEnd(ctx, t, cl, replanSpec("orders", 2))
	if st.State != protocol.RunFailed || st.Attempt != runAttempts || len(st.Replans) != runAttempts ||
		!strings.HasPrefix(st.Error, fmt.Sprintf("given up after %d attempts: task a3-", runAttempts)) || !strings.Contains(st.Error, "snapshot is gone") {
		t.Fatalf("run %s on attempt %d with %d replans: %q", st.State, st.Attempt, len(st.Replans), st.Error)
	}
	if n := len(mem.committed()); n != 0 {
		t.Errorf("%d commits of a failed run", n)
	}
	if p := mem.planned(st.RunID); len(p) != runAttempts {
		t.Errorf("%d plans, want %d", len(p), runAttempts)
	}
}

// An incremental run planned again reads the same window on every
// attempt, and its commit moves the watermark to the window's end.
func TestIncrementalRunReplannedKeepsWindow(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	tracedLeader(t, url, mem)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		if firstAttempt(task) {
			return protocol.Result{Worker: "w1", ErrorClass: protocol.ErrorReplan, Error: "snapshot gone"}
		}
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := memIncremental("ev")
	spec.Source.Config = json.RawMessage(`{"parts":2,"holds":true}`)
	st := runToEnd(ctx, t, cl, spec)
	want := protocol.Window{From: start, To: start.Add(time.Hour)}
	if st.State != protocol.RunCommitted || st.Attempt != 2 || st.Window == nil || *st.Window != want {
		t.Fatalf("run %s on attempt %d, window %v; want committed on attempt 2, window %v", st.State, st.Attempt, st.Window, want)
	}
	plans := mem.planned(st.RunID)
	if len(plans) != 2 {
		t.Fatalf("%d plans, want 2", len(plans))
	}
	for i, p := range plans {
		if p.Window == nil || *p.Window != want || p.DeltaColumn != "updated_at" {
			t.Errorf("plan %d: window %v column %q, want %v on updated_at", i+1, p.Window, p.DeltaColumn, want)
		}
	}
	commits := mem.committed()
	if len(commits) != 1 || commits[0].Mode != connectors.ModeAppend || *commits[0].Window != want {
		t.Fatalf("commits %+v, want one of window %v", commits, want)
	}
	stat, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "ev"})
	if err != nil {
		t.Fatal(err)
	}
	if wm := stat.Pipelines[0].Watermark; wm != formatWatermark(want.To) {
		t.Errorf("watermark %q, want %s", wm, formatWatermark(want.To))
	}
}

// A new leader that did not plan a running run whose plan holds something
// plans it again at once, before any task runs: the old attempt's queued
// tasks are purged (no worker ever gets one) and the run commits once, on
// attempt 2.
func TestLeaderReplansRunItDidNotPlan(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	nodes, trans := cluster(t, url, mem)
	first := leaderOf(t, nodes)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, replanSpec("orders", 3)); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d has the run published", i), func() bool {
			r, ok := n.fsm.run(reply.RunID)
			return ok && r.Published && r.Holds
		})
	}
	second := killLeader(t, nodes, trans, first)
	eventually(t, 20*time.Second, "the new leader plans the run again", func() bool {
		r, ok := nodes[second].fsm.run(reply.RunID)
		return ok && r.attempt() == 2 && r.Published
	})
	tasks := make(chan string, 10)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		tasks <- task.TaskID
		return succeed(task, attempt)
	})
	st, err := cl.WaitRun(ctx, reply.RunID, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.RunCommitted || st.Version != 1 || st.Attempt != 2 || len(st.Replans) != 1 ||
		!strings.Contains(st.Replans[0].Reason, "the leader that planned attempt 1 is gone") {
		t.Fatalf("run %+v: want committed as version 1 on attempt 2, the first given up for its leader", st)
	}
	close(tasks)
	for id := range tasks {
		if !strings.HasPrefix(id, "a2-") {
			t.Errorf("a worker got task %s of the attempt given up", id)
		}
	}
	if n := len(mem.committed()); n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
}
