package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// memIncremental is an incremental pipeline of the mem connectors with
// hourly windows from start.
func memIncremental(name string) pipeline.Spec {
	s := memSpec(name, 2)
	s.Pattern = protocol.PatternIncremental
	s.Incremental = &pipeline.Incremental{DeltaColumn: "updated_at", Window: time.Hour, Start: start}
	return s
}

// backfill runs a backfill of hours [0, hours) of pipeline name, at most
// conc windows at once, to its end.
func backfill(ctx context.Context, t *testing.T, cl *Client, name string, hours, conc int) protocol.BackfillStatus {
	t.Helper()
	st, err := cl.Backfill(ctx, protocol.BackfillRequest{Pipeline: name, From: start, To: start.Add(time.Duration(hours) * time.Hour), Concurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	if st.Running == 0 || st.Running > conc {
		t.Errorf("backfill reply: %d windows running, want 1 to %d", st.Running, conc)
	}
	most := 0
	st, err = cl.WaitBackfill(ctx, st.ID, 20*time.Millisecond, func(s protocol.BackfillStatus) { most = max(most, s.Running) })
	if err != nil {
		t.Fatal(err)
	}
	if most > conc {
		t.Errorf("%d windows ran at once, concurrency %d", most, conc)
	}
	if st.State != protocol.BackfillDone || st.Committed != hours || st.Total != hours {
		t.Fatalf("backfill %+v, want %d windows committed", st, hours)
	}
	return st
}

// Every run of a backfill has its own trace: a run span that is a root,
// the plan and the commit under it, and the trace id in the run's status
// and its tasks.
func TestBackfillRunsAreTraced(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	_, rec := tracedLeader(t, url, mem)
	taskTraces := make(chan string, 100)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		taskTraces <- task.RunID + " " + telemetry.TraceID(task.Trace)
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memIncremental("ev")); err != nil {
		t.Fatal(err)
	}
	st := backfill(ctx, t, cl, "ev", 4, 2)

	traces := map[string]string{} // trace id -> run
	for i, w := range st.Windows {
		r, err := cl.GetRun(ctx, w.Run)
		if err != nil {
			t.Fatal(err)
		}
		if r.Backfill != st.ID || r.Window == nil || !r.Window.From.Equal(start.Add(time.Duration(i)*time.Hour)) || r.State != protocol.RunCommitted {
			t.Errorf("window %d: run %+v", i, r)
		}
		if r.TraceID == "" || traces[r.TraceID] != "" {
			t.Fatalf("run %s: trace id %q (runs by trace: %v), want a trace of its own", r.RunID, r.TraceID, traces)
		}
		traces[r.TraceID] = r.RunID
	}
	close(taskTraces)
	for tt := range taskTraces {
		var run, id string
		fmt.Sscan(tt, &run, &id)
		if traces[id] != run {
			t.Errorf("task of run %s carries trace %q, not its run's", run, id)
		}
	}
	eventually(t, 10*time.Second, "each backfill run's trace has its run, plan and commit spans", func() bool {
		spans := map[string]map[string]bool{}
		for _, s := range rec.Ended() {
			id := s.SpanContext().TraceID().String()
			if traces[id] == "" {
				continue
			}
			if s.Name() == telemetry.SpanRun && s.Parent().IsValid() {
				t.Fatalf("run span of %s has a parent %s", traces[id], s.Parent().SpanID())
			}
			if spans[id] == nil {
				spans[id] = map[string]bool{}
			}
			spans[id][s.Name()] = true
		}
		for id := range traces {
			if s := spans[id]; !s[telemetry.SpanRun] || !s[telemetry.SpanPlan] || !s[telemetry.SpanCommit] {
				return false
			}
		}
		return true
	})
	// Each window committed once, appended by its window.
	commits := mem.committed()
	if len(commits) != 4 {
		t.Fatalf("%d commits, want 4", len(commits))
	}
	for _, c := range commits {
		if c.Mode != connectors.ModeAppend || c.Window == nil || c.DeltaColumn != "updated_at" {
			t.Errorf("commit %+v, want an append of its window", c)
		}
	}
}

// A backfill survives its leader: the new one goes on from the windows the
// FSM holds (running ones carried on, queued ones started), and every
// window is loaded by exactly one run.
func TestBackfillGoesOnAfterFailover(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	nodes, trans := cluster(t, url, mem)
	first := leaderOf(t, nodes)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memIncremental("ev")); err != nil {
		t.Fatal(err)
	}
	// No worker yet: the first two windows run, published; three wait.
	st, err := cl.Backfill(ctx, protocol.BackfillRequest{Pipeline: "ev", From: start, To: start.Add(5 * time.Hour), Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Running != 2 || st.Queued != 3 {
		t.Fatalf("backfill reply %+v, want 2 running and 3 queued", st)
	}
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d has both runs published", i), func() bool {
			for _, w := range st.Windows[:2] {
				if r, ok := n.fsm.run(w.Run); !ok || !r.Published {
					return false
				}
			}
			return true
		})
	}
	second := killLeader(t, nodes, trans, first)

	fakeWorker(t, url, succeed)
	st, err = cl.WaitBackfill(ctx, st.ID, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.BackfillDone || st.Committed != 5 {
		t.Fatalf("backfill after failover %+v, want 5 windows committed", st)
	}
	runs := nodes[second].fsm.runs(func(r *runState) bool { return r.Pipeline == "ev" })
	if len(runs) != 5 {
		t.Errorf("%d runs, want one per window", len(runs))
	}
	if n := len(mem.committed()); n != 5 {
		t.Errorf("%d sink commits, want 5", n)
	}
}
