package conformance

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

// tasks writes task attempts into a sink for the sink checks, failing the
// test on any error.
type tasks struct {
	t        *testing.T
	ctx      context.Context
	h        SinkHarness
	pipeline string
}

// batches returns fresh batches lo to hi of the harness, releasing the
// others.
func (w tasks) batches(lo, hi int) []connectors.Batch {
	bs := w.h.Batches()
	release(bs[:lo])
	release(bs[hi:])
	return bs[lo:hi]
}

// write opens an attempt of a task of run in sink and writes bs to it,
// releasing them; the caller closes or aborts it.
func (w tasks) write(sink connectors.Sink, run, task string, attempt int, bs []connectors.Batch) connectors.TaskWriter {
	w.t.Helper()
	defer release(bs)
	tw, err := sink.OpenTask(w.ctx, connectors.TaskRef{RunID: run, TaskID: task, Pipeline: w.pipeline, Attempt: attempt})
	if err != nil {
		w.t.Fatalf("OpenTask %s/%s#%d: %v", run, task, attempt, err)
	}
	for _, b := range bs {
		if err := tw.Write(w.ctx, b); err != nil {
			w.t.Fatalf("Write %s/%s#%d: %v", run, task, attempt, err)
		}
	}
	return tw
}

// close closes a task attempt and returns its output.
func (w tasks) close(tw connectors.TaskWriter) connectors.TaskOutput {
	w.t.Helper()
	out, err := tw.Close(w.ctx)
	if err != nil {
		w.t.Fatalf("Close: %v", err)
	}
	return out
}

// check compares what the harness reads from sink with the rows of the
// batch ranges given, [lo, hi) each, as the test generated them, and
// with want, the checksums the sink reported for the tasks that wrote
// them.
func (w tasks) check(sink connectors.Sink, when string, want connectors.Checksum, ranges ...[2]int) {
	w.t.Helper()
	rows, err := w.h.ReadBack(w.t)
	if err != nil {
		w.t.Fatalf("ReadBack %s: %v", when, err)
	}
	if err := Compare(rows, w.rows(ranges...)); err != nil {
		w.t.Errorf("%s: readers see other rows than the test wrote: %v", when, err)
	}
	got, err := w.h.ReadCommitted(w.t, sink)
	if err != nil {
		w.t.Fatalf("ReadCommitted %s: %v", when, err)
	}
	if got != want {
		w.t.Errorf("%s: readers see %d rows checksum %s, the task outputs say %d rows checksum %s", when, got.Rows, got, want.Rows, want)
	}
}

// rows returns the rows the test generated for the batch ranges given.
func (w tasks) rows(ranges ...[2]int) Table {
	w.t.Helper()
	all := w.h.Want()
	var out []Table
	for _, r := range ranges {
		out = append(out, all[r[0]:r[1]]...)
	}
	return Concat(out...)
}

// checkHarness checks the harness's Want against its Batches: one Table
// a batch, with the batch's number of rows.
func checkHarness(t *testing.T, h SinkHarness) {
	t.Helper()
	if h.Want == nil || h.ReadBack == nil {
		t.Fatalf("the harness needs Want and ReadBack: the rows the test generated, and its own reader of the target")
	}
	bs, want := h.Batches(), h.Want()
	defer release(bs)
	if len(bs) != len(want) {
		t.Fatalf("the harness has %d batches and %d tables of rows they hold", len(bs), len(want))
	}
	for i, b := range bs {
		if int64(want[i].Len()) != rowsOf(b) {
			t.Fatalf("batch %d holds %d rows, the harness's Want %d", i, rowsOf(b), want[i].Len())
		}
	}
}
