package coordinator

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func putPartitioned(name string) entry {
	s := testSpec(name)
	s.Pattern = protocol.PatternIncremental
	s.Incremental = &pipeline.Incremental{Window: time.Hour, Start: start, ReadyTimeout: time.Hour, ReadyCheck: time.Second}
	return pipelinePutCmd{Spec: s, Time: t0}
}

// A partition-based run waits (recorded in Raft) while its partition is
// not ready, keeps the time it started waiting when what it waits for is
// recorded again, and is planned from waiting; a finished run cannot wait.
func TestFSMRunWaiting(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putPartitioned("ev"), createWindow("ev", win(0, 1), true))
	r := f.st.Runs["ev-000001"]
	if r.DeltaColumn != "" || r.ReadyTimeout != time.Hour || r.ReadyCheck != time.Second {
		t.Fatalf("run copies column %q, ready timeout %s, check %s from the spec", r.DeltaColumn, r.ReadyTimeout, r.ReadyCheck)
	}
	t1 := t0.Add(time.Minute)
	res := applyAll(t, f, runWaitingCmd{Run: r.ID, What: "/in/date=2026-01-01/hour=00", Time: t1})
	if out, _ := res.(runWaitingReply); !out.Changed || r.State != protocol.RunWaiting || r.WaitingFor != "/in/date=2026-01-01/hour=00" || !r.WaitingSince.Equal(t1) {
		t.Fatalf("after run waiting: %v, state %s, for %q since %v", res, r.State, r.WaitingFor, r.WaitingSince)
	}
	// The same again changes nothing; another input keeps the start.
	if out, _ := applyAll(t, f, runWaitingCmd{Run: r.ID, What: "/in/date=2026-01-01/hour=00", Time: t1.Add(time.Minute)}).(runWaitingReply); out.Changed {
		t.Fatal("the same waiting entry changed the run")
	}
	applyAll(t, f, runWaitingCmd{Run: r.ID, What: "other", Time: t1.Add(2 * time.Minute)})
	if r.WaitingFor != "other" || !r.WaitingSince.Equal(t1) {
		t.Fatalf("waiting for %q since %v; want other since %v", r.WaitingFor, r.WaitingSince, t1)
	}
	if st := runStatus(r, false); st.State != protocol.RunWaiting || st.WaitingFor != "other" || !st.ReadyDeadline.Equal(t1.Add(time.Hour)) {
		t.Fatalf("status %+v", st)
	}
	applyAll(t, f, commitEntries(r.ID, 4)...)
	if r.State != protocol.RunCommitted || f.st.Pipelines["ev"].Watermark != "2026-01-01T01:00:00Z" {
		t.Fatalf("run %s, watermark %q after commit", r.State, f.st.Pipelines["ev"].Watermark)
	}
	if st := runStatus(r, false); st.WaitingFor != "" {
		t.Fatalf("a committed run shows waiting for %q", st.WaitingFor)
	}
	if err, _ := applyAll(t, f, runWaitingCmd{Run: r.ID, What: "x", Time: t1}).(error); !refused(err, refusedRunState) {
		t.Fatalf("waiting entry for a committed run: %v", err)
	}
}

// A partition-based pipeline loads whole partitions: a live window only
// once the partition's time is over (plus lag), explicit windows and
// backfill ranges on partition boundaries.
func TestRunWindowPartitioned(t *testing.T) {
	spec := putPartitioned("ev").(pipelinePutCmd).Spec
	at := func(h, m int) time.Time { return start.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	p := &pipelineState{Spec: spec, Watermark: "2026-01-01T03:00:00Z"}
	if got, live, err := runWindow(p, nil, at(30, 0)); err != nil || !live || got != *win(3, 4) {
		t.Fatalf("far behind: %v %v %v", got, live, err)
	}
	if got, _, err := runWindow(p, nil, at(4, 0)); err != nil || got != *win(3, 4) {
		t.Fatalf("at the partition's end: %v %v", got, err)
	}
	// Mid-partition: up to date, not a cut window.
	if got, _, err := runWindow(p, nil, at(3, 59)); err != nil || !got.Empty() {
		t.Fatalf("mid-partition: %v %v; want an empty window", got, err)
	}
	if got, _, err := runWindow(p, win(1, 2), at(30, 0)); err != nil || got != *win(1, 2) {
		t.Fatalf("explicit partition: %v %v", got, err)
	}
	for _, w := range []*protocol.Window{win(1, 3), {From: at(1, 30), To: at(2, 30)}} {
		if _, _, err := runWindow(p, w, at(30, 0)); err == nil {
			t.Fatalf("explicit window %s, not one partition, was accepted", w)
		}
	}
}
