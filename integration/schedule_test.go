package integration

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// A pipeline scheduled @every 1s gets runs with distinct logical times (its
// ticks, one second apart or whole seconds apart), and never two runs for
// one tick, across the kill of the leader: the new leader goes on from the
// last tick recorded in Raft and catches up the latest missed one.
func TestScheduleEverySecondAcrossLeaderKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	in := writeDataset(t, 1, 20)
	out := t.TempDir()
	c.apply("ticking", in, out, 1, "schedule: \"@every 1s\"\n")

	list := func() []protocol.RunStatus {
		st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "ticking", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return st.Runs
	}
	waitRuns := func(n int) []protocol.RunStatus {
		deadline := time.Now().Add(30 * time.Second)
		for {
			runs := list()
			if len(runs) >= n {
				return runs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d scheduled runs after 30s, want %d", len(runs), n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := len(waitRuns(3))
	old := c.leader()
	old.c.Kill()
	old.killed = true
	if next := c.leader(); next == old {
		t.Fatal("the killed node is still leader")
	}
	waitRuns(before + 3)

	// Stop the schedule (apply it without one). A tick the scheduler was
	// starting meanwhile may still add its run: a pipeline scheduled
	// after the change ("pacer") gets its first run from a later pass of
	// the scheduler (one goroutine, one pass over the pipelines after
	// another, each pass over those it read when it began), and then no
	// tick of "ticking" is in flight any more.
	c.apply("ticking", in, out, 1, "")
	c.apply("pacer", in, t.TempDir(), 1, "schedule: \"@every 1s\"\n")
	pacer := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "pacer", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Runs) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pacer has %d scheduled runs after 30s, want %d", len(st.Runs), n)
			}
		}
	}
	pacer(1)
	runs := list()
	perTick := map[time.Time][]string{}
	for _, r := range runs {
		if r.LogicalTime.IsZero() {
			t.Fatalf("scheduled run %s has no logical time", r.RunID)
		}
		if r.Trigger == nil || r.Trigger.Schedule != "@every 1s" || !r.Trigger.EventTime.Equal(r.LogicalTime) {
			t.Fatalf("scheduled run %s trigger context %+v", r.RunID, r.Trigger)
		}
		perTick[r.LogicalTime.UTC()] = append(perTick[r.LogicalTime.UTC()], r.RunID)
	}
	var prev time.Time
	for i := len(runs) - 1; i >= 0; i-- { // oldest first
		lt := runs[i].LogicalTime.UTC()
		if ids := perTick[lt]; len(ids) != 1 {
			t.Fatalf("tick %s has %d runs: %v", lt.Format(time.RFC3339), len(ids), ids)
		}
		if !prev.IsZero() {
			if d := lt.Sub(prev); d < time.Second || d%time.Second != 0 {
				t.Fatalf("tick %s follows %s by %s: want whole seconds", lt.Format(time.RFC3339Nano), prev.Format(time.RFC3339Nano), d)
			}
		}
		prev = lt
	}
	t.Logf("%d scheduled runs over a leader kill, %d before it", len(runs), before)
	for _, r := range runs {
		if st := c.wait(r.RunID); st.State != protocol.RunCommitted {
			t.Fatalf("scheduled run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}
	assertSameRows(t, in, out)
	// No schedule any more: no more runs, also after another pass of the
	// scheduler (pacer's next run).
	n := len(runs)
	st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "pacer", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	pacer(len(st.Runs) + 1)
	if got := len(list()); got != n {
		t.Fatalf("%d runs after the schedule was removed, want %d", got, n)
	}
}
