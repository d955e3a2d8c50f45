package coordinator

import (
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// putValues stores pipeline name with integer windows of span values from
// 0, lookback windows read again.
func putValues(name string, span int64, lookback int) entry {
	s := testSpec(name)
	s.Pattern = protocol.PatternIncremental
	zero := int64(0)
	s.Incremental = &pipeline.Incremental{DeltaColumn: "id", Span: span, StartValue: &zero, Lookback: lookback}
	return pipelinePutCmd{Spec: s, Time: t0}
}

func vwin(lo, hi int64) *protocol.Window { w := protocol.ValueWindow(lo, hi); return &w }

// plannedTo is the plan of run ending its capped window at hi, in n
// tasks.
func plannedTo(run string, lo, hi int64, n int) entry {
	c := planned(run, n, "").(runPlannedCmd)
	c.Window = vwin(lo, hi)
	return c
}

// A live window of integer values is capped at lo + span; the plan ends
// it where the column's values end, and the commit moves the watermark
// there, only forward; a plan past the cap, or of another low bound, is
// refused; explicit windows and backfills are ranges of values.
func TestFSMValueWindows(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putValues("ids", 1000, 0))
	p := f.st.Pipelines["ids"]
	if err, _ := applyAll(t, f, createWindow("ids", win(0, 1), true)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("a time window of an integer pipeline: %v", err)
	}
	if err, _ := applyAll(t, f, createWindow("ids", vwin(5, 1005), true)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a live window not at the start: %v", err)
	}
	applyAll(t, f, createWindow("ids", vwin(0, 1000), true))
	r := f.st.Runs["ids-000001"]
	if r.Trim == nil || r.Trim.From != 0 {
		t.Fatalf("run %+v: want its window capped, trimmed from 0", r)
	}
	for _, bad := range []entry{plannedTo("ids-000001", 0, 1001, 1), plannedTo("ids-000001", 1, 500, 1), planned("ids-000001", 1, "")} {
		if err, _ := applyAll(t, f, bad).(error); !refused(err, refusedInvalid) {
			t.Fatalf("plan %+v: %v, want refused", bad, err)
		}
	}
	applyAll(t, f, plannedTo("ids-000001", 0, 420, 1), published("ids-000001"), ok("ids-000001", "t00000", 420), committing("ids-000001"))
	if *r.Window != *vwin(0, 420) || r.Trim != nil || r.Watermark != "420" || p.Watermark != "" {
		t.Fatalf("planned: window %v trim %v reaching %q, pipeline at %q", r.Window, r.Trim, r.Watermark, p.Watermark)
	}
	applyAll(t, f, committed("ids-000001", 50))
	if p.Watermark != "420" || !reflect.DeepEqual(p.Loaded, []protocol.Window{*vwin(0, 420)}) {
		t.Fatalf("committed: watermark %q loaded %v; want 420 and [0, 420)", p.Watermark, p.Loaded)
	}
	// Nothing new: the plan ends the window at the watermark (empty);
	// the watermark stays.
	applyAll(t, f, createWindow("ids", vwin(420, 1420), true))
	applyAll(t, f, plannedTo("ids-000002", 420, 420, 0), published("ids-000002"), committing("ids-000002"), committed("ids-000002", 50))
	if st := f.st.Runs["ids-000002"].State; st != protocol.RunCommitted {
		t.Fatalf("the run of an empty window is %s, want committed", st)
	}
	if p.Watermark != "420" || len(p.Loaded) != 1 {
		t.Fatalf("an empty window moved the watermark to %q, loaded %v", p.Watermark, p.Loaded)
	}
	// A re-run of values behind the watermark, and a backfill by range.
	applyAll(t, f, createWindow("ids", vwin(100, 200), false))
	applyAll(t, f, plannedTo("ids-000003", 100, 200, 1))
	if r3 := f.st.Runs["ids-000003"]; r3.Trim != nil || r3.Window.Hi != 200 {
		t.Fatalf("an explicit window was capped: %+v", r3)
	}
	if r3 := f.st.Runs["ids-000003"]; r3.State != protocol.RunPlanning {
		t.Fatalf("a plan that trims an explicit window was taken: %s", r3.State)
	}
	applyAll(t, f, planned("ids-000003", 1, ""), published("ids-000003"), ok("ids-000003", "t00000", 1), committing("ids-000003"), committed("ids-000003", 50))
	if p.Watermark != "420" {
		t.Fatalf("a re-run moved the watermark to %q", p.Watermark)
	}
	rg := vwin(0, 2500)
	resp := applyAll(t, f, backfillCmd{Pipeline: "ids", Range: rg, Concurrency: 2, MaxAttempts: 3, Backoff: time.Second, Time: t0, LeaderStarts: true})
	b := f.st.Backfills[resp.(backfillReply).Backfill]
	var got []protocol.Window
	for _, w := range b.Windows {
		got = append(got, w.Window)
	}
	if want := []protocol.Window{*vwin(0, 1000), *vwin(1000, 2000), *vwin(2000, 2500)}; !reflect.DeepEqual(got, want) || b.Span != 1000 {
		t.Fatalf("backfill windows %v (span %d), want %v", got, b.Span, want)
	}
	if err, _ := applyAll(t, f, backfillEntry("ids", 0, 5, 2, false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("a time backfill of an integer pipeline: %v", err)
	}
}

// With lookback a live window starts that many windows before the
// watermark (never before start); the watermark still moves to its end.
func TestFSMLookback(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putValues("ids", 100, 2))
	p := f.st.Pipelines["ids"]
	pw, live, err := valueWindow(p.clone(), nil)
	if err != nil || !live || pw != *vwin(0, 100) {
		t.Fatalf("first window %v %v %v: want [0, 100), lookback clamped at start", pw, live, err)
	}
	applyAll(t, f, createWindow("ids", &pw, true), plannedTo("ids-000001", 0, 100, 1), published("ids-000001"), ok("ids-000001", "t00000", 5), committing("ids-000001"), committed("ids-000001", 50))
	if pw, _, _ = valueWindow(p.clone(), nil); pw != *vwin(0, 200) || p.Watermark != "100" {
		t.Fatalf("window after 100: %v (watermark %q), want [0, 200)", pw, p.Watermark)
	}
	p.Watermark = "350"
	pw, _, _ = valueWindow(p.clone(), nil)
	if pw != *vwin(150, 450) {
		t.Fatalf("window after 350: %v, want [150, 450): two windows of 100 read again", pw)
	}
	if err, _ := applyAll(t, f, createWindow("ids", vwin(350, 450), true)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a live window without its lookback: %v", err)
	}
	applyAll(t, f, createWindow("ids", &pw, true))
	if r := f.st.Runs["ids-000002"]; r.Trim == nil || r.Trim.From != 350 {
		t.Fatalf("run %+v: want rows counted from the watermark 350", r.Trim)
	}

	// Time windows: the window starts lookback windows back.
	g := newFSM()
	spec := putIncremental("ev").(pipelinePutCmd)
	spec.Spec.Incremental.Lookback = 3
	applyAll(t, g, spec)
	gp := g.st.Pipelines["ev"]
	gp.Watermark = formatWatermark(start.Add(5 * time.Hour))
	w, live, err := runWindow(gp, nil, start.Add(30*time.Hour))
	if err != nil || !live || w != *win(2, 6) {
		t.Fatalf("time window with lookback 3: %v %v %v, want [2h, 6h)", w, live, err)
	}
	gp.Watermark = formatWatermark(start.Add(time.Hour))
	if w, _, _ := runWindow(gp, nil, start.Add(30*time.Hour)); w != *win(0, 2) {
		t.Fatalf("lookback before start: %v, want [0h, 2h)", w)
	}
	// Up to date: no run, whatever the lookback.
	if w, _, _ := runWindow(gp, nil, start.Add(time.Hour)); !w.Empty() {
		t.Fatalf("up to date with lookback: %v, want an empty window", w)
	}
}

// A repair's backfill loads exactly the windows it names, each one of its
// range's, replacing them even when loaded before.
func TestFSMBackfillOfChosenWindows(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putIncremental("ev"))
	applyAll(t, f, createWindow("ev", win(0, 5), true))
	applyAll(t, f, commitEntries("ev-000001", 1)...)
	c := backfillEntry("ev", 0, 5, 2, true).(backfillCmd)
	c.Windows = []protocol.Window{*win(1, 2), *win(3, 4)}
	resp := applyAll(t, f, c)
	b := f.st.Backfills[resp.(backfillReply).Backfill]
	if len(b.Windows) != 2 || !b.Windows[0].Window.Equal(*win(1, 2)) || !b.Windows[1].Window.Equal(*win(3, 4)) || b.Windows[0].State != protocol.WindowQueued {
		t.Fatalf("backfill windows %+v, want [1h, 2h) and [3h, 4h) queued", b.Windows)
	}
	g := newFSM()
	applyAll(t, g, putIncremental("ev"))
	c.Windows = []protocol.Window{{From: start.Add(90 * time.Minute), To: start.Add(2 * time.Hour)}}
	if err, _ := applyAll(t, g, c).(error); !refused(err, refusedInvalid) {
		t.Fatalf("a window that is not one of the range's: %v", err)
	}
}
