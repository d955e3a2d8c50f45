package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// UnitsHarness tells TestUnits how to open the passthrough source and sink
// of a kind (connectors.UnitSource, connectors.UnitSink) over test data,
// and how to compare the target with the source.
type UnitsHarness struct {
	// Source and Sink open a new source and sink; TestUnits closes them.
	Source func(t *testing.T) connectors.Source
	Sink   func(t *testing.T) connectors.Sink
	// Partitioning bounds the tasks; it should make several.
	Partitioning connectors.Partitioning
	// Equal reports whether the target holds what the source does now,
	// saying what differs.
	Equal func(t *testing.T) error
	// Change changes the source (adds, rewrites and removes some of its
	// data), for the second run.
	Change func(t *testing.T)
}

// PassRun is a passthrough run driven in-process as the coordinator and
// the workers drive one (see RunUnits).
type PassRun struct {
	RunID string
	// Version is the dataset version its commit makes.
	Version int64
	// Since is the watermark the run plans from; Watermark the one its
	// commit records.
	Since, Watermark string
	Plan             connectors.Plan
	Outputs          []connectors.TaskOutput
	Result           connectors.CommitResult
}

// PlanUnits plans a passthrough run, the one after prev (nil for the
// first), as the coordinator leader does: it asks an Inventoried sink
// what its target holds as of prev's watermark, then the source's
// PlanUnits with it. The run's version is the one after prev's.
func PlanUnits(ctx context.Context, src connectors.Source, sink connectors.Sink, runID string, prev *PassRun, part connectors.Partitioning) (PassRun, error) {
	r := PassRun{RunID: runID, Version: 1}
	if prev != nil {
		r.Since, r.Version = prev.Watermark, prev.Version+1
	}
	since := r.Since
	us, ok := src.(connectors.UnitSource)
	if !ok {
		return r, fmt.Errorf("the source (%T) is no connectors.UnitSource", src)
	}
	if _, ok := sink.(connectors.UnitSink); !ok {
		return r, fmt.Errorf("the sink (%T) is no connectors.UnitSink", sink)
	}
	req := connectors.PlanRequest{RunID: runID, Pipeline: "conformance", Watermark: since, Partitioning: part}
	if inv, ok := sink.(connectors.Inventoried); ok {
		var err error
		if req.Target, r.Watermark, err = inv.Inventory(ctx, connectors.InventoryRequest{Pipeline: req.Pipeline, RunID: runID, Watermark: since}); err != nil {
			return r, fmt.Errorf("Inventory: %w", err)
		}
	}
	plan, err := us.PlanUnits(ctx, req)
	if err != nil {
		return r, fmt.Errorf("PlanUnits: %w", err)
	}
	if plan.Watermark != "" {
		r.Watermark = plan.Watermark
	}
	r.Plan = plan
	return r, nil
}

// WriteTask runs task i of a planned run as a worker does, attempt as
// given, and returns its output.
func WriteTask(ctx context.Context, src connectors.Source, sink connectors.Sink, r PassRun, i, attempt int) (connectors.TaskOutput, error) {
	uw, err := sink.(connectors.UnitSink).OpenUnits(ctx, connectors.TaskRef{RunID: r.RunID, TaskID: fmt.Sprintf("t%05d", i),
		Pipeline: "conformance", Attempt: attempt, Schema: r.Plan.Schema})
	if err != nil {
		return connectors.TaskOutput{}, fmt.Errorf("OpenUnits: %w", err)
	}
	err = src.(connectors.UnitSource).ReadUnits(ctx, r.Plan.Partitions[i], uw.WriteUnit)
	if err != nil {
		return connectors.TaskOutput{}, errors.Join(fmt.Errorf("ReadUnits %s: %w", r.Plan.Partitions[i].Key, err), uw.Abort(ctx))
	}
	return uw.Close(ctx)
}

// Commit commits a run whose tasks are written, as the leader does.
func (r *PassRun) Commit(ctx context.Context, sink connectors.Sink) error {
	var err error
	r.Result, err = sink.(connectors.UnitSink).CommitUnits(ctx, connectors.CommitRequest{RunID: r.RunID, Pipeline: "conformance",
		Version: r.Version, Tasks: r.Outputs, Watermark: r.Watermark, Since: r.Since, Schema: r.Plan.Schema})
	if err != nil {
		return fmt.Errorf("CommitUnits %s: %w", r.RunID, err)
	}
	return nil
}

// WriteTasks writes every task of a planned run once, as workers do, and
// adds their outputs to r.Outputs.
func (r *PassRun) WriteTasks(ctx context.Context, src connectors.Source, sink connectors.Sink) error {
	for i := range r.Plan.Partitions {
		out, err := WriteTask(ctx, src, sink, *r, i, 1)
		if err != nil {
			return err
		}
		r.Outputs = append(r.Outputs, out)
	}
	return nil
}

// RunUnits plans, writes (each task once) and commits a passthrough run,
// the one after prev (nil for the first), in-process, and releases what
// the source holds for it, as the leader does.
func RunUnits(ctx context.Context, src connectors.Source, sink connectors.Sink, runID string, prev *PassRun, part connectors.Partitioning) (PassRun, error) {
	r, err := PlanUnits(ctx, src, sink, runID, prev, part)
	if err != nil {
		return r, err
	}
	defer releaseRun(src, runID)
	if err := r.WriteTasks(ctx, src, sink); err != nil {
		return r, err
	}
	return r, r.Commit(ctx, sink)
}

// releaseRun lets go of what a source holds for a run, if anything.
func releaseRun(src connectors.Source, runID string) {
	if h, ok := src.(connectors.RunHolder); ok {
		h.ReleaseRun(runID)
	}
}

// TestUnits checks a kind's passthrough end to end: a plan's partitions
// read the same units, with the same bytes, twice and concurrently; a
// task written twice (a retried attempt) and one whose second attempt is
// aborted count once; a commit makes the target equal to the source, and
// a repeated commit (also from a new sink) changes nothing; a run aborted
// after its tasks wrote leaves the target as it was; after the source
// changes, the next run from the first's watermark makes the target equal
// again. No goroutine is left behind.
func TestUnits(t *testing.T, h UnitsHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	src, sink := h.Source(t), h.Sink(t)
	closed := false
	t.Cleanup(func() {
		if !closed {
			src.Close()
			sink.Close()
		}
	})

	r, err := PlanUnits(ctx, src, sink, "run-1", nil, h.Partitioning)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Plan.Partitions) < 2 {
		t.Errorf("the plan has %d partitions; the harness should make several", len(r.Plan.Partitions))
	}
	keys := map[string]bool{}
	for _, p := range r.Plan.Partitions {
		if p.Key == "" || keys[p.Key] {
			t.Errorf("partition key %q is empty or repeated", p.Key)
		}
		keys[p.Key] = true
	}
	// Each partition reads the same units twice, the second time all at
	// once.
	first := make([][]string, len(r.Plan.Partitions))
	for i, p := range r.Plan.Partitions {
		first[i] = readUnits(t, src, p)
	}
	done := make(chan struct{}, len(first))
	for i, p := range r.Plan.Partitions {
		go func() {
			defer func() { done <- struct{}{} }()
			if got := readUnits(t, src, p); fmt.Sprint(got) != fmt.Sprint(first[i]) {
				t.Errorf("partition %s read %v, then %v", p.Key, first[i], got)
			}
		}()
	}
	for range first {
		<-done
	}

	// Task 0 twice (both close), task 1 closes, then a second attempt
	// aborts; the rest once.
	for i := range r.Plan.Partitions {
		out, err := WriteTask(ctx, src, sink, r, i, 1)
		if err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
		if i == 0 {
			again, err := WriteTask(ctx, src, sink, r, i, 2)
			if err != nil {
				t.Fatalf("task %d attempt 2: %v", i, err)
			}
			if again.Rows != out.Rows || again.Bytes != out.Bytes || again.Checksum != out.Checksum || again.Location != out.Location {
				t.Errorf("two attempts of task 0 gave %+v and %+v", out, again)
			}
			out = again
		}
		if i == 1 {
			uw, err := sink.(connectors.UnitSink).OpenUnits(ctx, connectors.TaskRef{RunID: r.RunID, TaskID: "t00001", Pipeline: "conformance", Attempt: 2, Schema: r.Plan.Schema})
			if err != nil {
				t.Fatal(err)
			}
			if err := uw.Abort(ctx); err != nil {
				t.Errorf("Abort: %v", err)
			}
		}
		r.Outputs = append(r.Outputs, out)
	}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatal(err)
	}
	releaseRun(src, r.RunID)
	if err := h.Equal(t); err != nil {
		t.Errorf("after run-1: %v", err)
	}
	again := r
	if err := again.Commit(ctx, sink); err != nil {
		t.Errorf("repeated commit: %v", err)
	}
	other := h.Sink(t)
	if err := again.Commit(ctx, other); err != nil {
		t.Errorf("commit repeated by a new sink: %v", err)
	}
	other.Close()
	if err := h.Equal(t); err != nil {
		t.Errorf("after run-1's commit was repeated: %v", err)
	}

	// Run 2 changes the source, writes, and is aborted: the target stays.
	h.Change(t)
	r2, err := PlanUnits(ctx, src, sink, "run-2", &r, h.Partitioning)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.WriteTasks(ctx, src, sink); err != nil {
		t.Fatal(err)
	}
	releaseRun(src, r2.RunID)
	if err := sink.(connectors.UnitSink).AbortUnits(ctx, "run-2"); err != nil {
		t.Fatalf("AbortUnits: %v", err)
	}
	if err := h.Equal(t); err == nil {
		t.Errorf("after run-2 failed, the target equals the changed source: it should hold run-1's copy")
	}

	// Run 3 from run 1's watermark copies the changes.
	if _, err := RunUnits(ctx, src, sink, "run-3", &r, h.Partitioning); err != nil {
		t.Fatal(err)
	}
	if err := h.Equal(t); err != nil {
		t.Errorf("after run-3: %v", err)
	}
	closed = true
	if err := errors.Join(src.Close(), sink.Close()); err != nil {
		t.Errorf("Close: %v", err)
	}
	verifyNoLeaks(t, leaks)
}

// readUnits reads a partition and describes its units: name, range,
// removal, and the digest of their bytes.
func readUnits(t *testing.T, src connectors.Source, p protocol.Partition) []string {
	t.Helper()
	var out []string
	err := src.(connectors.UnitSource).ReadUnits(t.Context(), p, func(_ context.Context, u connectors.Unit) error {
		if u.Remove {
			out = append(out, "remove "+u.Name)
			return nil
		}
		var b bytes.Buffer
		n, err := io.Copy(&b, u.Body)
		if err != nil {
			return err
		}
		if u.Length >= 0 && n != u.Length {
			return fmt.Errorf("unit %s: Body gave %d bytes, Length is %d", u.Position, n, u.Length)
		}
		out = append(out, fmt.Sprintf("%s@%d+%d %x", u.Name, u.Offset, n, connectors.RowHash(b.Bytes())))
		return nil
	})
	if err != nil {
		t.Errorf("ReadUnits %s: %v", p.Key, err)
	}
	return out
}
