package conformance

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
)

// TestVersioned checks a sink's Versioned capability (rollback) on a
// fresh destination: nothing is kept before a commit; after two runs
// commit, both are listed and the second is exposed; exposing the first
// makes readers see exactly its rows and the list mark it; exposing it
// again changes nothing; exposing a version that is not kept is refused
// with a permanent error listing the kept versions, and the exposed
// version stays; a sink opened anew lists the same; a run committed after
// the rollback is exposed as its own new version. The sink h.Open returns
// must implement connectors.Versioned. No goroutine is left behind.
func TestVersioned(t *testing.T, h SinkHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	checkHarness(t, h)
	sink := h.Open(t)
	vs, ok := sink.(connectors.Versioned)
	if !ok {
		t.Fatalf("%T does not implement connectors.Versioned", sink)
	}
	const pipeline = "conformance"

	list := func(v connectors.Versioned, when string) []connectors.Version {
		t.Helper()
		kept, err := v.Versions(ctx)
		if err != nil {
			t.Fatalf("Versions %s: %v", when, err)
		}
		return kept
	}
	if kept := list(vs, "before any commit"); len(kept) != 0 {
		t.Errorf("Versions before any commit = %+v, want none", kept)
	}
	if err := vs.Expose(ctx, 1); err == nil || !connectors.IsPermanent(err) {
		t.Errorf("Expose(1) before any commit = %v, want a permanent error", err)
	}

	// Two runs, of different rows: run-1 the first half, run-2 all.
	n := len(h.Batches())
	half := max(n/2, 1)
	tk := tasks{t: t, ctx: ctx, h: h, pipeline: pipeline}
	commit := func(run string, version int64, lo, hi int) connectors.Checksum {
		t.Helper()
		out := tk.close(tk.write(sink, run, "t00001", 1, tk.batches(lo, hi)))
		if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: run, Pipeline: pipeline, Version: version, Tasks: []connectors.TaskOutput{out}}); err != nil {
			t.Fatalf("Commit %s as version %d: %v", run, version, err)
		}
		return out.Checksum
	}
	exposes := func(when string, want connectors.Checksum, ranges ...[2]int) {
		t.Helper()
		tk.check(sink, when, want, ranges...)
	}
	// checkList checks the kept versions: exactly want (by number), with
	// their runs and rows, exposed the one marked.
	checkList := func(when string, kept []connectors.Version, want map[int64]connectors.Version, exposed int64) {
		t.Helper()
		if len(kept) != len(want) {
			t.Fatalf("Versions %s = %+v, want versions %v", when, kept, keys(want))
		}
		for i, k := range kept {
			w, ok := want[k.Version]
			if !ok || (i > 0 && kept[i-1].Version >= k.Version) {
				t.Fatalf("Versions %s = %+v, want versions %v oldest first", when, kept, keys(want))
			}
			if k.Run != w.Run || k.Rows != w.Rows || k.Exposed != (k.Version == exposed) || k.Location == "" || k.Time.IsZero() {
				t.Errorf("Versions %s: %+v, want run %s, %d rows, exposed %t, a location and a time", when, k, w.Run, w.Rows, k.Version == exposed)
			}
		}
	}

	sum1 := commit("run-1", 1, 0, half)
	sum2 := commit("run-2", 2, 0, n)
	want := map[int64]connectors.Version{1: {Run: "run-1", Rows: sum1.Rows}, 2: {Run: "run-2", Rows: sum2.Rows}}
	exposes("after two commits", sum2, [2]int{0, n})
	checkList("after two commits", list(vs, "after two commits"), want, 2)

	if err := vs.Expose(ctx, 1); err != nil {
		t.Fatalf("Expose(1): %v", err)
	}
	exposes("after Expose(1)", sum1, [2]int{0, half})
	checkList("after Expose(1)", list(vs, "after Expose(1)"), want, 1)
	if err := vs.Expose(ctx, 1); err != nil {
		t.Errorf("Expose(1) again: %v", err)
	}
	exposes("after Expose(1) again", sum1, [2]int{0, half})
	checkList("after Expose(1) again", list(vs, "after Expose(1) again"), want, 1)

	for _, v := range []int64{3, 99, 0} {
		err := vs.Expose(ctx, v)
		if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "kept: 1, 2") {
			t.Errorf("Expose(%d) of a version never committed = %v, want a permanent error listing the kept versions (kept: 1, 2)", v, err)
		}
		exposes("after a refused Expose", sum1, [2]int{0, half})
	}
	other := h.Open(t)
	checkList("by a new sink", list(other.(connectors.Versioned), "by a new sink"), want, 1)
	if err := other.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	// Forward again, back, then a new run: exposed as its own version.
	if err := vs.Expose(ctx, 2); err != nil {
		t.Fatalf("Expose(2): %v", err)
	}
	exposes("after Expose(2)", sum2, [2]int{0, n})
	if err := vs.Expose(ctx, 1); err != nil {
		t.Fatalf("Expose(1): %v", err)
	}
	sum3 := commit("run-3", 3, half, n)
	want[3] = connectors.Version{Run: "run-3", Rows: sum3.Rows}
	exposes("after a commit following a rollback", sum3, [2]int{half, n})
	checkList("after a commit following a rollback", list(vs, "after a commit following a rollback"), want, 3)

	if err := sink.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	verifyNoLeaks(t, leaks)
}

func keys(m map[int64]connectors.Version) []int64 { return slices.Sorted(maps.Keys(m)) }
