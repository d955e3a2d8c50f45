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

// check compares what the harness reads from sink with want.
func (w tasks) check(sink connectors.Sink, when string, want connectors.Checksum) {
	w.t.Helper()
	got, err := w.h.ReadCommitted(w.t, sink)
	if err != nil {
		w.t.Fatalf("ReadCommitted %s: %v", when, err)
	}
	if got != want {
		w.t.Errorf("%s: readers see %d rows checksum %s, want %d rows checksum %s", when, got.Rows, got, want.Rows, want)
	}
}
