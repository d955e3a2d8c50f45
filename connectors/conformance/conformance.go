// Package conformance is the shared test suite every connector runs from
// its own tests: a source must plan bounded partitions and read each one the
// same way every time, concurrently, stopping on cancellation; a sink must
// replace a retried task's output, commit a run atomically and repeatably,
// and leave the previous version exposed when a run fails (or, publishing
// as it writes, publish a retried task's rows once); a sink that keeps
// versions (connectors.Versioned) must list them and expose a kept one
// again; a sink that appends runs without a window (a run by position)
// must append each run once; the Applier of a cdc_apply target must apply each event exactly
// once across repeated batches, reopens and cancellations. All must leave
// no goroutine behind.
//
// Expected values come from the test, not from the code under test: a
// source harness gives the rows it put in the source, a sink harness the
// rows it generated and a reader of the target of its own (Table, and the
// decoders JSONLRows, CSVRows, ParquetRows, RecordRows); the suite
// compares them column by column (Compare).
package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// SourceHarness tells TestSource how to open a source and what it holds.
type SourceHarness struct {
	// Open returns a new source over the test data. TestSource closes it.
	Open func(t *testing.T) connectors.Source
	// Request is the plan request of the run to read.
	Request connectors.PlanRequest
	// WantRows is the number of rows the whole run reads.
	WantRows int64
	// Want returns the rows the run reads, as the test put them in the
	// source (built by the test from the values it generated, or read
	// back with its own code such as a SELECT: never through the source
	// under test), in the text forms of Table. The rows the source emits,
	// decoded by BatchRows, must equal them column by column.
	Want func(t *testing.T) Table
	// Columns, when set, are the columns compared with Want: for a
	// source that adds columns of its own the test cannot know (a slot's
	// position, the time of the plan).
	Columns []string
	// WantPartitions, when positive, is the number of partitions the plan
	// must have.
	WantPartitions int
}

// readResult is what one read of a partition produced.
type readResult struct {
	sum     connectors.Checksum
	rows    Table
	batches int
	err     error
}

// TestSource plans a run, reads every partition twice (once sequentially,
// once all partitions concurrently) and checks both reads gave the same rows
// and checksum, that the total is WantRows, that batches are well formed,
// that a cancelled read returns an error wrapping context.Canceled and stops
// emitting, and that no goroutine is left behind.
func TestSource(t *testing.T, h SourceHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	src := h.Open(t)
	plan, err := src.Plan(ctx, h.Request)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if h.WantPartitions > 0 && len(plan.Partitions) != h.WantPartitions {
		t.Errorf("Plan gave %d partitions, want %d", len(plan.Partitions), h.WantPartitions)
	}
	keys := map[string]bool{}
	for _, p := range plan.Partitions {
		if p.Key == "" || keys[p.Key] {
			t.Errorf("partition key %q is empty or repeated", p.Key)
		}
		keys[p.Key] = true
	}

	read := func(p protocol.Partition) readResult {
		var r readResult
		r.err = src.Read(ctx, p, func(_ context.Context, b connectors.Batch) error {
			c, err := BatchChecksum(b)
			if err != nil {
				return fmt.Errorf("batch at %s: %w", b.Position, err)
			}
			rows, err := BatchRows(b)
			if err != nil {
				return fmt.Errorf("decode batch at %s: %w", b.Position, err)
			}
			r.sum.Merge(c)
			r.rows = Concat(r.rows, rows)
			r.batches++
			return nil
		})
		return r
	}
	first := make([]readResult, len(plan.Partitions))
	for i, p := range plan.Partitions {
		first[i] = read(p)
	}
	second := make([]readResult, len(plan.Partitions))
	var wg sync.WaitGroup
	for i, p := range plan.Partitions {
		wg.Go(func() { second[i] = read(p) })
	}
	wg.Wait()

	var total connectors.Checksum
	var rows []Table
	for i, p := range plan.Partitions {
		a, b := first[i], second[i]
		if a.err != nil || b.err != nil {
			t.Errorf("Read %s: %v / %v", p.Key, a.err, b.err)
			continue
		}
		if a.sum != b.sum {
			t.Errorf("Read %s twice: rows %d checksum %s, then rows %d checksum %s", p.Key, a.sum.Rows, a.sum, b.sum.Rows, b.sum)
		}
		total.Merge(a.sum)
		rows = append(rows, a.rows)
	}
	if total.Rows != h.WantRows {
		t.Errorf("read %d rows in all, want %d", total.Rows, h.WantRows)
	}
	if h.Want == nil {
		t.Fatalf("the harness has no Want: the rows the test put in the source")
	}
	got := Concat(rows...)
	if h.Columns != nil {
		got = got.Project(h.Columns...)
	}
	if err := Compare(got, h.Want(t)); err != nil {
		t.Errorf("the rows read differ from the rows the test put in the source: %v", err)
	}

	if len(plan.Partitions) > 0 {
		p := plan.Partitions[0]
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := src.Read(cctx, p, func(context.Context, connectors.Batch) error { return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read %s with a cancelled context = %v, want an error wrapping context.Canceled", p.Key, err)
		}

		// Cancel while the first batch of the partition with the most
		// batches is being emitted: no batch may follow, and Read fails
		// with context.Canceled unless that batch was the partition's last.
		most := 0
		for i, r := range first {
			if r.batches > first[most].batches {
				most = i
			}
		}
		p = plan.Partitions[most]
		cctx, cancel = context.WithCancel(ctx)
		after := 0
		err = src.Read(cctx, p, func(c context.Context, _ connectors.Batch) error {
			if c.Err() != nil {
				after++
			}
			cancel()
			return nil
		})
		cancel()
		if after > 0 {
			t.Errorf("Read %s emitted %d batches after its context was cancelled", p.Key, after)
		}
		if first[most].batches > 1 && !errors.Is(err, context.Canceled) {
			t.Errorf("Read %s cancelled during emit = %v, want an error wrapping context.Canceled", p.Key, err)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Read %s cancelled during emit = %v", p.Key, err)
		}
	}

	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	verifyNoLeaks(t, leaks)
}

// verifyNoLeaks fails t when a goroutine started since leaks was taken
// is still running, but for the in-process Kafka broker's (kfake) reader
// of a connection the connector closed: the broker's, not the
// connector's, it ends once the broker sees the close, which on a loaded
// machine can be after the check.
func verifyNoLeaks(t *testing.T, leaks goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, leaks, goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"))
}

// SinkHarness tells TestSink how to open a sink and read what it committed.
type SinkHarness struct {
	// Open returns a sink over a fresh, empty destination. TestSink may call
	// it more than once (a new sink over the same destination, as a new
	// leader would open it) and closes each.
	Open func(t *testing.T) connectors.Sink
	// Batches returns the rows to write, fresh on each call (a source
	// releases Arrow records after emit, so Batches may build new ones).
	Batches func() []connectors.Batch
	// ReadCommitted returns the checksum of the exposed version, computed
	// the way the sink computes its task checksums, or an error when
	// nothing is exposed: the suite checks the checksums the sink reports
	// for its tasks (which the coordinator records) against it.
	ReadCommitted func(t *testing.T, s connectors.Sink) (connectors.Checksum, error)
	// Want returns the rows of each batch Batches returns (Want()[i]
	// those of Batches()[i]), built by the test from the values it
	// generated with its own code, in the text forms of Table and as the
	// target keeps them (Table.Map).
	Want func() []Table
	// ReadBack reads every row readers see in the destination now with
	// the test's own code (the decoders of this package, the standard
	// library, a SELECT: never the sink under test), or returns an error
	// when nothing is exposed. The rows must equal those of Want the
	// suite expects, column by column.
	ReadBack func(t *testing.T) (Table, error)
	// Published says the sink's output is visible as soon as a task wrote
	// it, as in a stream (the SLUICE_CDC events of a snapshot): there is
	// no staging place and no version, Commit and Abort change nothing, and
	// what a failed run wrote stays. ReadCommitted then returns everything
	// the sink published (no rows, not an error, before anything was), and
	// TestSink checks that retried tasks and repeated commits publish the
	// rows once, instead of versions replacing each other.
	Published bool
}

// TestSink checks the sink's contract end to end: a task written twice
// (a retried attempt) counts once; an aborted later attempt keeps the
// earlier closed output; a commit exposes exactly the tasks' rows and a
// repeated identical commit (also from a new sink) changes nothing; a failed
// run (written, then aborted) leaves the previous version exposed with the
// same checksum; a later run replaces it. No goroutine is left behind.
func TestSink(t *testing.T, h SinkHarness) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx := t.Context()
	sink := h.Open(t)
	const pipeline = "conformance"

	checkHarness(t, h)
	if got, err := h.ReadCommitted(t, sink); h.Published && (err != nil || got.Rows != 0) {
		t.Errorf("ReadCommitted before any task = %d rows, %v; want none", got.Rows, err)
	} else if !h.Published && err == nil {
		t.Errorf("ReadCommitted before any commit succeeded, want an error")
	}
	if got, err := h.ReadBack(t); h.Published && (err != nil || got.Len() != 0) {
		t.Errorf("ReadBack before any task = %d rows, %v; want none", got.Len(), err)
	} else if !h.Published && err == nil {
		t.Errorf("ReadBack before any commit succeeded, want an error")
	}

	all := h.Batches()
	var want connectors.Checksum
	for _, b := range all {
		want.Rows += rowsOf(b)
	}
	release(all)
	n := len(all)
	half := n / 2
	tk := tasks{t: t, ctx: ctx, h: h, pipeline: pipeline}
	batches := tk.batches
	write := func(run, task string, attempt int, bs []connectors.Batch) connectors.TaskWriter {
		t.Helper()
		return tk.write(sink, run, task, attempt, bs)
	}
	closeTask := tk.close

	// Run 1, task 1: two attempts that both close; the second replaces the first.
	out1a := closeTask(write("run-1", "t00001", 1, batches(0, half)))
	out1 := closeTask(write("run-1", "t00001", 2, batches(0, half)))
	if out1a.Checksum != out1.Checksum || out1a.Location != out1.Location {
		t.Errorf("two attempts of one task gave %+v and %+v", out1a, out1)
	}
	// Task 2: the first attempt closes, a second one is aborted half way.
	out2 := closeTask(write("run-1", "t00002", 1, batches(half, n)))
	w := write("run-1", "t00002", 2, batches(half, half+min(1, n-half)))
	if err := w.Abort(ctx); err != nil {
		t.Fatalf("Abort attempt: %v", err)
	}
	var run1 connectors.Checksum
	run1.Merge(out1.Checksum)
	run1.Merge(out2.Checksum)
	if run1.Rows != want.Rows || out1.Rows+out2.Rows != want.Rows {
		t.Errorf("task outputs hold %d rows (checksums count %d), want %d", out1.Rows+out2.Rows, run1.Rows, want.Rows)
	}

	req := connectors.CommitRequest{RunID: "run-1", Pipeline: pipeline, Version: 1, Tasks: []connectors.TaskOutput{out1, out2}}
	res, err := sink.Commit(ctx, req)
	if err != nil {
		t.Fatalf("Commit run-1: %v", err)
	}
	checkCommitted := func(when string, want connectors.Checksum, ranges ...[2]int) {
		t.Helper()
		tk.check(sink, when, want, ranges...)
	}
	checkCommitted("after commit of run-1", run1, [2]int{0, n})

	// The same commit again, as a new leader would repeat it.
	res2, err := sink.Commit(ctx, req)
	if err != nil {
		t.Fatalf("repeated Commit run-1: %v", err)
	}
	if res2 != res {
		t.Errorf("repeated Commit = %+v, first gave %+v", res2, res)
	}
	other := h.Open(t)
	if _, err := other.Commit(ctx, req); err != nil {
		t.Errorf("Commit run-1 repeated by a new sink: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	checkCommitted("after repeated commits of run-1", run1, [2]int{0, n})

	// Run 2 writes, then fails: run 1 stays exposed. (A published sink
	// keeps what a failed run wrote: run 2 writes nothing there.)
	if !h.Published {
		closeTask(write("run-2", "t00001", 1, batches(0, n)))
		w = write("run-2", "t00002", 1, batches(0, half))
		if err := w.Abort(ctx); err != nil {
			t.Fatalf("Abort attempt: %v", err)
		}
	}
	if err := sink.Abort(ctx, "run-2"); err != nil {
		t.Fatalf("Abort run-2: %v", err)
	}
	checkCommitted("after run-2 failed", run1, [2]int{0, n})
	if err := sink.Abort(ctx, "run-2"); err != nil {
		t.Errorf("repeated Abort run-2: %v", err)
	}

	// Run 3 commits only the first half: it replaces run 1. (A published
	// sink has no versions to replace.)
	if !h.Published {
		out3 := closeTask(write("run-3", "t00001", 1, batches(0, half)))
		if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "run-3", Pipeline: pipeline, Version: 2, Tasks: []connectors.TaskOutput{out3}}); err != nil {
			t.Fatalf("Commit run-3: %v", err)
		}
		checkCommitted("after commit of run-3", out3.Checksum, [2]int{0, half})
	}

	if err := sink.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	verifyNoLeaks(t, leaks)
}

// release releases the Arrow records of batches, as a source does after
// emit returns.
func release(bs []connectors.Batch) {
	for _, b := range bs {
		if b.Record != nil {
			b.Record.Release()
		}
	}
}

func rowsOf(b connectors.Batch) int64 {
	if b.Record != nil {
		return b.Record.NumRows()
	}
	return b.Rows
}

// BatchChecksum returns a checksum of the rows of a batch and checks the
// batch is well formed: exactly one of Record and Raw set, Raw JSONL lines
// each ending in '\n', CSV batches with Columns, and Rows matching the rows
// found. Raw rows are hashed as their bytes (JSONL lines, CSV records
// without line endings); Arrow rows as their column values, which is
// deterministic but not comparable with other formats.
func BatchChecksum(b connectors.Batch) (connectors.Checksum, error) {
	var c connectors.Checksum
	switch {
	case b.Record != nil && b.Raw != nil:
		return c, errors.New("both Record and Raw are set")
	case b.Record != nil:
		rec := b.Record
		var row bytes.Buffer
		for i := 0; i < int(rec.NumRows()); i++ {
			row.Reset()
			for j := 0; j < int(rec.NumCols()); j++ {
				col := rec.Column(j)
				if col.IsNull(i) {
					row.WriteString("\x00null")
				} else {
					row.WriteString(col.ValueStr(i))
				}
				row.WriteByte(0x1f)
			}
			c.Add(row.Bytes())
		}
	case b.Format == connectors.FormatJSONL:
		if len(b.Raw) > 0 && b.Raw[len(b.Raw)-1] != '\n' {
			return c, errors.New("JSONL batch does not end in a newline")
		}
		for _, line := range bytes.SplitAfter(b.Raw, []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			if len(line) == 1 {
				return c, errors.New("JSONL batch holds an empty line")
			}
			c.Add(line[:len(line)-1])
		}
	case b.Format == connectors.FormatCSV:
		if len(b.Columns) == 0 {
			return c, errors.New("CSV batch without Columns")
		}
		start, quoted := 0, false
		for i, ch := range b.Raw {
			switch {
			case ch == '"':
				quoted = !quoted
			case ch == '\n' && !quoted:
				c.Add(bytes.TrimSuffix(b.Raw[start:i], []byte{'\r'}))
				start = i + 1
			}
		}
		if start < len(b.Raw) {
			c.Add(b.Raw[start:])
		}
	default:
		return c, fmt.Errorf("raw batch of format %q", b.Format)
	}
	if b.Rows != c.Rows {
		return c, fmt.Errorf("batch says %d rows, holds %d", b.Rows, c.Rows)
	}
	return c, nil
}
