package coordinator

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func putIncremental(name string) entry {
	s := testSpec(name)
	s.Pattern = protocol.PatternIncremental
	s.Incremental = &pipeline.Incremental{DeltaColumn: "updated_at", Window: time.Hour, Lag: 5 * time.Minute, Start: start}
	return pipelinePutCmd{Spec: s, Time: t0}
}

func win(fromHour, toHour int) *protocol.Window {
	return &protocol.Window{From: start.Add(time.Duration(fromHour) * time.Hour), To: start.Add(time.Duration(toHour) * time.Hour)}
}

func createWindow(p string, w *protocol.Window, live bool) entry {
	return runCreateCmd{Pipeline: p, MaxAttempts: 3, Backoff: time.Second, Window: w, Live: live, Time: t0}
}

// commitEntries is the log of a planned run's one task succeeding and
// the run committing.
func commitEntries(run string, rows int64) []entry {
	return []entry{planned(run, 1, "plan-watermark"), published(run), ok(run, "t00000", rows),
		committing(run), committed(run, 50)}
}

// failEntries is the log of a planned run failing.
func failEntries(run string) []entry {
	return []entry{planned(run, 1, ""), published(run), runFailed(run, 50)}
}

func TestFSMIncrementalWindowAndWatermark(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putIncremental("ev"))
	resp := applyAll(t, f, createWindow("ev", win(0, 1), true))
	if res, ok := resp.(runCreateReply); !ok || res.RunID != "ev-000001" {
		t.Fatalf("create: %v", resp)
	}
	r := f.st.Runs["ev-000001"]
	if r.Window == nil || *r.Window != *win(0, 1) || !r.Live || r.DeltaColumn != "updated_at" {
		t.Fatalf("run window %v live %v column %q: the window must be recorded in the run", r.Window, r.Live, r.DeltaColumn)
	}
	p := f.st.Pipelines["ev"]

	// A second live run while the first is in flight would skip or
	// overlap windows: refused.
	if err, _ := applyAll(t, f, createWindow("ev", win(1, 2), true)).(error); !refused(err, refusedConflict) {
		t.Fatalf("second live run: %v, want a conflict", err)
	}
	// Planned, tasks done, committing: the watermark has not moved.
	log := commitEntries("ev-000001", 7)
	applyAll(t, f, log[:len(log)-1]...)
	if p.Watermark != "" {
		t.Fatalf("watermark %q before the commit entry", p.Watermark)
	}
	if f.st.Runs["ev-000001"].Watermark != formatWatermark(win(0, 1).To) {
		t.Fatalf("the plan's watermark replaced the window's: %q", f.st.Runs["ev-000001"].Watermark)
	}
	applyAll(t, f, log[len(log)-1])
	if want := "2026-01-01T01:00:00Z"; p.Watermark != want {
		t.Fatalf("watermark after commit = %q, want %q", p.Watermark, want)
	}

	// A live window must start at the watermark.
	if err, _ := applyAll(t, f, createWindow("ev", win(0, 1), true)).(error); !refused(err, refusedConflict) {
		t.Fatalf("live window behind the watermark: %v, want a conflict", err)
	}
	// A failed run leaves the watermark; the next run loads the same window.
	applyAll(t, f, createWindow("ev", win(1, 2), true))
	applyAll(t, f, failEntries("ev-000002")...)
	if p.Watermark != "2026-01-01T01:00:00Z" {
		t.Fatalf("watermark after a failed run = %q", p.Watermark)
	}
	applyAll(t, f, createWindow("ev", win(1, 2), true))
	applyAll(t, f, commitEntries("ev-000003", 3)...)
	if p.Watermark != "2026-01-01T02:00:00Z" {
		t.Fatalf("watermark = %q", p.Watermark)
	}
	// An explicit window (a re-run) never moves the watermark, even behind it.
	applyAll(t, f, createWindow("ev", win(0, 1), false))
	applyAll(t, f, commitEntries("ev-000004", 7)...)
	if p.Watermark != "2026-01-01T02:00:00Z" {
		t.Fatalf("a re-run moved the watermark to %q", p.Watermark)
	}
	if want := []protocol.Window{*win(0, 2)}; !reflect.DeepEqual(p.Loaded, want) {
		t.Fatalf("loaded = %v, want %v", p.Loaded, want)
	}
	// An incremental run needs a window; a full load refuses one.
	if err, _ := applyAll(t, f, createWindow("ev", nil, false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("run without a window: %v", err)
	}
	applyAll(t, f, put("full"))
	if err, _ := applyAll(t, f, createWindow("full", win(0, 1), false)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("full load with a window: %v", err)
	}
}

func backfillEntry(p string, from, to, conc int, replace bool) entry {
	return backfillCmd{Pipeline: p, From: start.Add(time.Duration(from) * time.Hour), To: start.Add(time.Duration(to) * time.Hour),
		Concurrency: conc, Replace: replace, MaxAttempts: 3, Backoff: time.Second, Time: t0, LeaderStarts: true}
}

// windowRun is the leader's entry creating the run of window w of
// backfill id of pipeline p.
func windowRun(p, id string, w *protocol.Window) entry {
	return runCreateCmd{Pipeline: p, Backfill: id, Window: w, MaxAttempts: 3, Backoff: time.Second, Time: t0}
}

// startWindows does what the leader does for backfill id: it creates the
// runs of its queued windows while fewer than its concurrency run, and
// returns them.
func startWindows(t *testing.T, f *fsm, id string) []string {
	t.Helper()
	var started []string
	for {
		b, ok := f.backfillByID(id)
		if !ok {
			return started
		}
		w, ok := b.nextWindow()
		if !ok {
			return started
		}
		out, isReply := applyAll(t, f, windowRun(b.Pipeline, id, &w)).(runCreateReply)
		if !isReply {
			t.Fatalf("window %s of %s not started", w, id)
		}
		started = append(started, out.RunID)
	}
}

func windowStates(b *backfillState) []string {
	var out []string
	for _, w := range b.Windows {
		out = append(out, w.State)
	}
	return out
}

// A backfill queues its windows (skipping those loaded, unless replace);
// the leader starts them, each with an entry the FSM checks: the window
// must be queued and fewer than the concurrency running.
func TestFSMBackfillQueuesSkipsAndReplaces(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putIncremental("ev"))
	// Hour 1 was loaded by a live run already.
	applyAll(t, f, createWindow("ev", win(0, 1), true))
	applyAll(t, f, commitEntries("ev-000001", 1)...)
	resp := applyAll(t, f, backfillEntry("ev", 0, 5, 2, false))
	if res, _ := resp.(backfillReply); res.Backfill != "ev-bf0001" || res.Reused {
		t.Fatalf("backfill: %+v", resp)
	}
	b := f.st.Backfills["ev-bf0001"]
	Q, R, C, F, S := protocol.WindowQueued, protocol.WindowRunning, protocol.WindowCommitted, protocol.WindowFailed, protocol.WindowSkipped
	if got, want := windowStates(b), []string{S, Q, Q, Q, Q}; !reflect.DeepEqual(got, want) {
		t.Fatalf("windows %v, want %v (hour 0 loaded, the rest queued for the leader)", got, want)
	}
	if len(f.st.Runs) != 1 {
		t.Fatalf("the backfill entry created runs: %d runs", len(f.st.Runs))
	}
	if got := startWindows(t, f, b.ID); len(got) != 2 {
		t.Fatalf("started %v, want 2 windows (concurrency 2)", got)
	}
	if got, want := windowStates(b), []string{S, R, R, Q, Q}; !reflect.DeepEqual(got, want) {
		t.Fatalf("windows %v, want %v (2 at once)", got, want)
	}
	if r := f.st.Runs[b.Windows[1].Run]; r.Window == nil || *r.Window != *win(1, 2) || r.Live || r.Backfill != b.ID || r.MaxAttempts != 3 {
		t.Fatalf("backfill run %+v", r)
	}
	// The FSM refuses a third window (concurrency), a window not queued, a
	// window the backfill does not have, a live one, an unknown backfill.
	for _, tt := range []struct {
		e    entry
		code refusalCode
	}{
		{windowRun("ev", b.ID, win(3, 4)), refusedConflict},
		{windowRun("ev", b.ID, win(1, 2)), refusedConflict},
		{windowRun("ev", b.ID, win(0, 1)), refusedConflict},
		{windowRun("ev", b.ID, win(7, 8)), refusedInvalid},
		{runCreateCmd{Pipeline: "ev", Backfill: b.ID, Window: win(3, 4), Live: true, Time: t0}, refusedInvalid},
		{windowRun("ev", "ev-bf0009", win(3, 4)), refusedNotFound},
	} {
		if err, _ := applyAll(t, f, tt.e).(error); !refused(err, tt.code) {
			t.Errorf("%+v: %v, want a %s refusal", tt.e, err, tt.code)
		}
	}
	if err, _ := applyAll(t, f, backfillEntry("ev", 0, 5, 2, false)).(error); !refused(err, refusedConflict) {
		t.Fatalf("second backfill while one runs: %v", err)
	}
	// One window commits, one fails: their runs' ends free two windows,
	// which the leader starts.
	applyAll(t, f, commitEntries(b.Windows[1].Run, 10)...)
	applyAll(t, f, failEntries(b.Windows[2].Run)...)
	if got, want := windowStates(b), []string{S, C, F, Q, Q}; !reflect.DeepEqual(got, want) {
		t.Fatalf("windows %v, want %v", got, want)
	}
	startWindows(t, f, b.ID)
	if got, want := windowStates(b), []string{S, C, F, R, R}; !reflect.DeepEqual(got, want) {
		t.Fatalf("windows %v, want %v", got, want)
	}
	applyAll(t, f, commitEntries(b.Windows[3].Run, 10)...)
	if b.State != protocol.BackfillRunning {
		t.Fatalf("backfill %s with a window running", b.State)
	}
	applyAll(t, f, commitEntries(b.Windows[4].Run, 10)...)
	if b.State != protocol.BackfillDone || b.Finished.IsZero() {
		t.Fatalf("backfill %s finished %v", b.State, b.Finished)
	}
	if err, _ := applyAll(t, f, windowRun("ev", b.ID, win(2, 3))).(error); !refused(err, refusedConflict) {
		t.Fatalf("window of a finished backfill: %v", err)
	}
	if f.st.Pipelines["ev"].Watermark != "2026-01-01T01:00:00Z" {
		t.Fatalf("a backfill moved the watermark to %q", f.st.Pipelines["ev"].Watermark)
	}
	// Run again: only the failed window loads.
	applyAll(t, f, backfillEntry("ev", 0, 5, 4, false))
	b2 := f.st.Backfills["ev-bf0002"]
	startWindows(t, f, b2.ID)
	if got, want := windowStates(b2), []string{S, S, R, S, S}; !reflect.DeepEqual(got, want) {
		t.Fatalf("re-run windows %v, want %v", got, want)
	}
	applyAll(t, f, commitEntries(b2.Windows[2].Run, 10)...)
	// With replace every window loads again, four at once.
	applyAll(t, f, backfillEntry("ev", 0, 5, 4, true))
	startWindows(t, f, "ev-bf0003")
	if got, want := windowStates(f.st.Backfills["ev-bf0003"]), []string{R, R, R, R, Q}; !reflect.DeepEqual(got, want) {
		t.Fatalf("replace windows %v, want %v", got, want)
	}
	// A backfill with every window loaded is done at once.
	applyAll(t, f, put("full"))
	if err, _ := applyAll(t, f, backfillEntry("full", 0, 5, 4, true)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("backfill of a full load: %v", err)
	}
	g := newFSM()
	applyAll(t, g, putIncremental("ev"), createWindow("ev", win(0, 2), true))
	applyAll(t, g, commitEntries("ev-000001", 1)...)
	applyAll(t, g, backfillEntry("ev", 0, 2, 1, false))
	if b := g.st.Backfills["ev-bf0001"]; b.State != protocol.BackfillDone || !reflect.DeepEqual(windowStates(b), []string{S, S}) {
		t.Fatalf("backfill of loaded windows: %s %v, want done at once", b.State, windowStates(b))
	}
}

func TestFSMBackfillSplitsRange(t *testing.T) {
	f := newFSM()
	applyAll(t, f, putIncremental("ev"))
	c := backfillEntry("ev", 0, 0, 1, false)
	body := c.(backfillCmd)
	body.To = start.Add(150 * time.Minute)
	applyAll(t, f, body)
	b := f.st.Backfills["ev-bf0001"]
	var got []protocol.Window
	for _, w := range b.Windows {
		got = append(got, w.Window)
	}
	want := []protocol.Window{*win(0, 1), *win(1, 2), {From: start.Add(2 * time.Hour), To: start.Add(150 * time.Minute)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("windows %v, want %v", got, want)
	}
}

// incrementalLog exercises the incremental commands.
func incrementalLog() []entry {
	log := []entry{putIncremental("ev"), createWindow("ev", win(0, 1), true)}
	log = append(log, commitEntries("ev-000001", 5)...)
	log = append(log, backfillEntry("ev", 0, 6, 2, false),
		windowRun("ev", "ev-bf0001", win(1, 2)), windowRun("ev", "ev-bf0001", win(2, 3)))
	log = append(log, commitEntries("ev-000002", 3)...)
	log = append(log, failEntries("ev-000003")...)
	log = append(log, windowRun("ev", "ev-bf0001", win(3, 4)), windowRun("ev", "ev-bf0001", win(4, 5)))
	log = append(log, createWindow("ev", win(1, 2), true))
	return log
}

func TestFSMIncrementalReplayAndSnapshot(t *testing.T) {
	a, b := newFSM(), newFSM()
	applyAll(t, a, incrementalLog()...)
	applyAll(t, b, incrementalLog()...)
	ja, _ := json.Marshal(a.st)
	jb, _ := json.Marshal(b.st)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("same log, different states:\n%s\n%s", ja, jb)
	}
	// The replayed state has the windows, the watermark and the queue.
	if p := a.st.Pipelines["ev"]; p.Watermark != "2026-01-01T01:00:00Z" || a.st.Runs["ev-000006"].Window == nil {
		t.Fatalf("replayed watermark %q", p.Watermark)
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.st, a.st) {
		jg, _ := json.Marshal(g.st)
		t.Fatalf("restored state differs:\n got %s\nwant %s", jg, ja)
	}
	// Both go on the same way: the backfill's next window starts on each.
	more := append(commitEntries(a.st.Backfills["ev-bf0001"].Windows[3].Run, 2), windowRun("ev", "ev-bf0001", win(5, 6)))
	applyAll(t, a, more...)
	applyAll(t, g, more...)
	if !reflect.DeepEqual(g.st, a.st) {
		t.Fatal("states differ after the same entries")
	}
}

func TestRunWindow(t *testing.T) {
	spec := putIncremental("ev").(pipelinePutCmd).Spec // window 1h, lag 5m, start 2026-01-01
	at := func(h, m int) time.Time { return start.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	tests := []struct {
		name      string
		watermark string
		now       time.Time
		want      protocol.Window
	}{
		{"first run, far behind: a whole window from start", "", at(30, 0), protocol.Window{From: at(0, 0), To: at(1, 0)}},
		{"from the watermark", "2026-01-01T03:00:00Z", at(30, 0), protocol.Window{From: at(3, 0), To: at(4, 0)}},
		{"lag guard cuts the window", "2026-01-01T03:00:00Z", at(3, 35).Add(700 * time.Millisecond), protocol.Window{From: at(3, 0), To: at(3, 30)}},
		{"up to date: empty window", "2026-01-01T03:00:00Z", at(3, 4), protocol.Window{From: at(3, 0), To: at(2, 59)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &pipelineState{Spec: spec, Watermark: tt.watermark}
			got, live, err := runWindow(p, nil, tt.now)
			if err != nil || !live || got != tt.want {
				t.Fatalf("runWindow = %v live %v err %v; want %v", got, live, err, tt.want)
			}
		})
	}
	p := &pipelineState{Spec: spec}
	asked := win(5, 6)
	if got, live, err := runWindow(p, asked, at(30, 0)); err != nil || live || got != *asked {
		t.Fatalf("explicit window: %v %v %v", got, live, err)
	}
	if _, _, err := runWindow(p, &protocol.Window{From: at(2, 0), To: at(1, 0)}, at(30, 0)); err == nil {
		t.Fatal("an empty explicit window was accepted")
	}
	noStart := spec
	inc := *spec.Incremental
	inc.Start = time.Time{}
	noStart.Incremental = &inc
	if _, _, err := runWindow(&pipelineState{Spec: noStart}, nil, at(30, 0)); err == nil {
		t.Fatal("a first run without incremental.start was accepted")
	}
}
