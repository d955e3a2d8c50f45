package coordinator

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/protocol"
)

func TestTaskIndex(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want int
		ok   bool
	}{
		{"t00000", 0, true}, {"t00042", 42, true}, {"t100000", 100000, true},
		{"a2-t00007", 7, true}, {"a12-t123456", 123456, true},
		{"a1-t00007", 0, false}, {"b2-t00007", 0, false}, {"t0001", 0, false}, {"t-0001", 0, false},
		{"t+0001", 0, false}, {"x00001", 0, false}, {"", 0, false}, {"a2-", 0, false},
	} {
		got, ok := taskIndex(tc.id)
		if got != tc.want || ok != tc.ok {
			t.Errorf("taskIndex(%q) = %d, %v; want %d, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
	// Every id taskID makes is found where it lies.
	for _, attempt := range []int{0, 1, 2, 7} {
		for _, i := range []int{0, 9, 99999, 100000, 1234567} {
			if got, ok := taskIndex(taskID(attempt, i)); !ok || got != i {
				t.Errorf("taskIndex(taskID(%d, %d) = %q) = %d, %v", attempt, i, taskID(attempt, i), got, ok)
			}
		}
	}
}

// TestFSMCountsAsRestored checks, after every entry of a log, that what
// the handlers count beside the stored state (succeeded tasks, running
// windows, the first queued window) is what a restore of a snapshot of
// it counts: a leader's look at a run or a backfill sees the same on
// every node and after a restart.
func TestFSMCountsAsRestored(t *testing.T) {
	log := append(fullLog(),
		// results out of order, repeated, of an unknown task and of an
		// earlier attempt's task
		create("orders", "r9"), planned("orders-000003", 4, "wm"), published("orders-000003"),
		ok("orders-000003", "t00002", 1), ok("orders-000003", "t00002", 1), ok("orders-000003", "t00009", 1),
		ok("orders-000003", "a2-t00000", 1), ok("orders-000003", "t00000", 1), ok("orders-000003", "t00001", 1),
		ok("orders-000003", "t00003", 1), committing("orders-000003"))
	log = append(log, putIncremental("ev"),
		backfillCmd{Pipeline: "ev", From: start, To: start.Add(8 * time.Hour), Concurrency: 2, MaxAttempts: 3, LeaderStarts: true, Time: t0})
	f := newFSM()
	for i, e := range log {
		applyAll(t, f, e)
		if i == len(log)-1 {
			// start the backfill's windows and end them, one way or
			// the other
			var ids []string
			for k := range 2 {
				b := f.st.Backfills["ev-bf0001"]
				w, ok := b.nextWindow()
				if !ok {
					t.Fatalf("backfill: no window to start (%d)", k)
				}
				out := applyAll(t, f, runCreateCmd{Pipeline: "ev", Backfill: "ev-bf0001", Window: &w, MaxAttempts: 3, Time: t0})
				ids = append(ids, out.(runCreateReply).RunID)
				checkCounts(t, f, fmt.Sprintf("window %d started", k))
			}
			applyAll(t, f, runFailed(ids[0], 50))
			checkCounts(t, f, "a window failed")
			applyAll(t, f, planned(ids[1], 1, ""), published(ids[1]), ok(ids[1], "t00000", 3), committing(ids[1]), committed(ids[1], 50))
			checkCounts(t, f, "a window committed")
		}
		checkCounts(t, f, fmt.Sprintf("entry %d (%s)", i, e.cmdType()))
	}
	if r := f.st.Runs["orders-000003"]; r.succeeded != 4 || !r.allSucceeded() || r.State != protocol.RunCommitting {
		t.Errorf("orders-000003: %d succeeded of %d, %s; want all 4, committing", r.succeeded, len(r.Tasks), r.State)
	}
	if h := f.st.Runs["orders-000002"].head(); h.allSucceeded() || h.Tasks != nil {
		t.Errorf("head of a run with a failed task: allSucceeded %v, tasks %v", h.allSucceeded(), h.Tasks)
	}
}

// checkCounts fails unless f's state equals its restored snapshot, the
// fields the handlers count included.
func checkCounts(t *testing.T, f *fsm, after string) {
	t.Helper()
	snap, err := f.Snapshot()
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
	if !reflect.DeepEqual(g.st, f.st) {
		for id, r := range f.st.Runs {
			if gr := g.st.Runs[id]; gr != nil && gr.succeeded != r.succeeded {
				t.Errorf("after %s: run %s counts %d succeeded tasks, restored %d", after, id, r.succeeded, gr.succeeded)
			}
		}
		for id, b := range f.st.Backfills {
			if gb := g.st.Backfills[id]; gb != nil && (gb.active != b.active || gb.queuedFrom != b.queuedFrom) {
				t.Errorf("after %s: backfill %s counts %d running from %d, restored %d from %d", after, id, b.active, b.queuedFrom, gb.active, gb.queuedFrom)
			}
		}
		a, _ := json.Marshal(f.st)
		t.Fatalf("after %s: the restored state differs from %s", after, a)
	}
}

// TestFSMApplyBatch checks that a batch of entries applied together
// leaves the state and replies of the same entries applied one by one.
func TestFSMApplyBatch(t *testing.T) {
	log := fullLog()
	one := newFSM()
	var want []any
	for i, e := range log {
		b, _ := encodeCmd(e)
		want = append(want, one.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}))
	}
	batch := newFSM()
	var logs []*raft.Log
	for i, e := range log {
		b, _ := encodeCmd(e)
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b})
	}
	logs = append(logs, &raft.Log{Index: uint64(len(log) + 1), Type: raft.LogConfiguration})
	watch := batch.watch()
	got := batch.ApplyBatch(logs)
	select {
	case <-watch:
	default:
		t.Error("a batch applied did not wake the watchers")
	}
	if len(got) != len(logs) || got[len(got)-1] != nil {
		t.Fatalf("ApplyBatch replied %d responses (last %v), want %d, the last nil", len(got), got[len(got)-1], len(logs))
	}
	if !reflect.DeepEqual(got[:len(log)], want) {
		t.Errorf("batch replies %v, want %v", got[:len(log)], want)
	}
	if !reflect.DeepEqual(batch.st, one.st) {
		t.Error("the state after a batch differs from the state after the same entries one by one")
	}
}

// TestFSMKeepsUnannouncedRuns checks that a run that ends while more than
// KeepRuns others end is kept until its end is announced (its run event,
// its downstream runs, its backfill's next window depend on it), then
// pruned with the others; an entry of an earlier version (no
// keep_unannounced) prunes as that version did.
func TestFSMKeepsUnannouncedRuns(t *testing.T) {
	runs := func(f *fsm) []string {
		var out []string
		for id := range f.st.Runs {
			out = append(out, id)
		}
		return out
	}
	for _, keepUnannounced := range []bool{true, false} {
		f := newFSM()
		applyAll(t, f, put("orders"))
		for i := 1; i <= 4; i++ {
			run := fmt.Sprintf("orders-%06d", i)
			applyAll(t, f, create("orders", ""), planned(run, 1, ""), published(run), ok(run, "t00000", 1), committing(run),
				runCommittedCmd{Run: run, Keep: 2, KeepUnannounced: keepUnannounced, Time: t0})
		}
		applyAll(t, f, create("orders", ""), runFailedCmd{Run: "orders-000005", Error: "x", Keep: 2, KeepUnannounced: keepUnannounced, Time: t0})
		want := []string{"orders-000001", "orders-000002", "orders-000003", "orders-000004", "orders-000005"}
		if !keepUnannounced {
			want = want[3:]
		}
		if got := runs(f); !equalSet(got, want) {
			t.Fatalf("keep_unannounced %v: runs %v before their ends were announced, want %v", keepUnannounced, got, want)
		}
		if !keepUnannounced {
			continue
		}
		applyAll(t, f, runNotifiedCmd{Run: "orders-000002", Keep: 2, Time: t0}, runNotifiedCmd{Run: "orders-000004", Keep: 2, Time: t0})
		if got, want := runs(f), []string{"orders-000001", "orders-000002", "orders-000003", "orders-000004", "orders-000005"}; !equalSet(got, want) {
			t.Errorf("runs %v after 2 of 5 announced (keep 2), want %v", got, want)
		}
		for _, r := range []string{"orders-000001", "orders-000003", "orders-000005"} {
			applyAll(t, f, runNotifiedCmd{Run: r, Keep: 2, Time: t0})
		}
		if got, want := runs(f), []string{"orders-000004", "orders-000005"}; !equalSet(got, want) {
			t.Errorf("runs %v after all announced (keep 2), want %v", got, want)
		}
	}
}

// TestBackfillStatusListsWindowsToLookAt checks that the status of a
// backfill of many windows lists MaxWindowList of them, its failed and
// running ones among them, in order, and counts all of them.
func TestBackfillStatusListsWindowsToLookAt(t *testing.T) {
	b := &backfillState{ID: "ev-bf0001", State: protocol.BackfillRunning}
	n := protocol.MaxWindowList + 500
	for i := range n {
		w := protocol.BackfillWindow{Window: protocol.ValueWindow(int64(i), int64(i+1)), State: protocol.WindowCommitted, Rows: 1}
		switch {
		case i == n-1:
			w.State = protocol.WindowFailed
		case i >= n-3:
			w.State = protocol.WindowRunning
		case i >= n-10:
			w.State = protocol.WindowQueued
		}
		b.Windows = append(b.Windows, w)
	}
	st := backfillStatus(b)
	if len(st.Windows) != protocol.MaxWindowList || st.Total != n || st.Committed != n-10 || st.Failed != 1 || st.Running != 2 || st.Queued != 7 || st.Rows != int64(n-10) {
		t.Fatalf("status lists %d windows; total %d, committed %d, failed %d, running %d, queued %d, rows %d",
			len(st.Windows), st.Total, st.Committed, st.Failed, st.Running, st.Queued, st.Rows)
	}
	for i := 1; i < len(st.Windows); i++ {
		if st.Windows[i-1].Window.Compare(st.Windows[i].Window) >= 0 {
			t.Fatalf("windows listed out of order at %d", i)
		}
	}
	if last := st.Windows[len(st.Windows)-10:]; last[9].State != protocol.WindowFailed || last[7].State != protocol.WindowRunning || last[0].State != protocol.WindowQueued {
		t.Errorf("the last windows listed are %v, want the queued, running and failed ones", last)
	}
}
