package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
	"github.com/sluicehq/sluice/telemetry"
)

// handle runs one task message to its end: it runs the task and settles the
// message (result and ack, nak, or term). taskCtx bounds the task's work;
// base, which only Kill cancels, bounds settling.
func (w *Worker) handle(taskCtx, base context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing can be acknowledged.
		w.log.Error("task message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	seq := meta.Sequence.Stream
	if err := w.verify(signing.KindTask, msg.Subject(), msg.Data(), msg.Headers(), &w.forged.tasks); err != nil {
		// Not issued by the leader: terminated unread, nothing opened.
		w.log.Warn("terminate forged task message", "stream_seq", seq, "subject", msg.Subject(), "err", err)
		if terr := msg.TermWithReason("forged task: " + err.Error()); terr != nil && !w.killed.Load() {
			w.log.Warn("terminate forged task message", "stream_seq", seq, "err", terr)
		}
		return
	}
	task, err := protocol.Decode[protocol.Task](msg.Data())
	if err != nil {
		w.log.Error("terminate undecodable task message", "stream_seq", seq, "subject", msg.Subject(), "err", err)
		if terr := msg.TermWithReason("undecodable task: " + err.Error()); terr != nil && !w.killed.Load() {
			w.log.Warn("terminate undecodable task message", "stream_seq", seq, "err", terr)
		}
		return
	}
	attempt := int(meta.NumDelivered)
	log := w.log.With("run", task.RunID, "task", task.TaskID, "attempt", attempt, "partition", task.Partition.Key)

	ctx := telemetry.Extract(taskCtx, msg.Headers())
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = telemetry.ExtractMap(taskCtx, task.Trace)
	}
	ctx, span := w.tracer.Start(ctx, telemetry.SpanTask,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			telemetry.AttrPipeline.String(task.Pipeline),
			telemetry.AttrRun.String(task.RunID),
			telemetry.AttrTask.String(task.TaskID),
			telemetry.AttrPartition.String(task.Partition.Key),
			telemetry.AttrAttempt.Int(attempt),
			telemetry.AttrWorker.String(w.cfg.ID),
		))
	defer span.End()

	w.mu.Lock()
	w.running[seq] = task.RunID + "/" + task.TaskID
	w.cfg.Metrics.WorkerSlots(w.cfg.ID, w.cfg.Slots, len(w.running))
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.running, seq)
		w.cfg.Metrics.WorkerSlots(w.cfg.ID, w.cfg.Slots, len(w.running))
		w.mu.Unlock()
	}()

	log.Debug("task started")
	started := time.Now()
	stopProgress := w.keepAlive(ctx, msg, log)
	out, err := w.execute(ctx, task, attempt, log)
	stopProgress()
	finished := time.Now()
	// What leaves the worker (result, trace, log) never shows a value a
	// ${NAME} reference expanded to.
	err = w.reg.ScrubError(err)

	if w.killed.Load() {
		return // a crash settles nothing
	}
	// Settle under base: the drain timeout must not stop a finished task
	// from reporting. The span goes along for trace context.
	sctx, cancel := context.WithTimeout(trace.ContextWithSpan(base, span), settleTimeout)
	defer cancel()

	res := protocol.Result{
		RunID:    task.RunID,
		TaskID:   task.TaskID,
		Pipeline: task.Pipeline,
		Attempt:  attempt,
		Worker:   w.cfg.ID,
		Token:    task.Token,
		Started:  started,
		Finished: finished,
	}
	if err == nil {
		w.cfg.Metrics.TaskAttempt(task.Pipeline, telemetry.TaskSucceeded, finished.Sub(started), out.Rows, out.Bytes)
		span.SetAttributes(telemetry.AttrRows.Int64(out.Rows), telemetry.AttrBytes.Int64(out.Bytes))
		res.Rows, res.Bytes = out.Rows, out.Bytes
		res.Checksum = protocol.Sum(out.Checksum.Sum)
		res.Location = out.Location
		w.succeed(sctx, msg, res, log)
		return
	}

	if taskCtx.Err() != nil {
		// Shutdown cut the task short: not a failure of the task.
		log.Info("task interrupted by shutdown; handing it back", "err", err)
		w.cfg.Metrics.TaskAttempt(task.Pipeline, telemetry.TaskInterrupted, finished.Sub(started), 0, 0)
		span.SetStatus(codes.Error, "interrupted by shutdown")
		if nerr := msg.NakWithDelay(requeueDelay); nerr != nil {
			log.Warn("hand back interrupted task", "err", nerr)
		}
		return
	}

	w.failed.Add(1)
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	maxAttempts := task.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = defaultMaxAttempts
	}
	outcome := telemetry.TaskFailed
	if !connectors.IsReplan(err) && !connectors.IsPermanent(err) && attempt < maxAttempts {
		outcome = telemetry.TaskRetried
	}
	w.cfg.Metrics.TaskAttempt(task.Pipeline, outcome, finished.Sub(started), 0, 0)
	switch {
	case connectors.IsReplan(err):
		// No attempt of this task can succeed: the leader plans the run
		// again, with new tasks.
		log.Warn("task's run must be planned again", "err", err)
		res.ErrorClass = protocol.ErrorReplan
		res.Error = err.Error()
		w.fail(sctx, msg, res, task.Backoff, attempt, log)
	case connectors.IsPermanent(err):
		log.Error("task failed permanently", "err", err)
		res.ErrorClass = protocol.ErrorPermanent
		res.Error = err.Error()
		w.fail(sctx, msg, res, task.Backoff, attempt, log)
	case attempt < maxAttempts:
		delay := backoff(task.Backoff, attempt)
		log.Warn("task failed; will retry", "err", err, "max_attempts", maxAttempts, "retry_in", delay)
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.Warn("nak failed task", "err", nerr)
		}
	default:
		log.Error("task failed on its last attempt", "err", err, "max_attempts", maxAttempts)
		res.ErrorClass = protocol.ErrorRetryable
		res.Error = fmt.Sprintf("after %d attempts: %v", attempt, err)
		w.fail(sctx, msg, res, task.Backoff, attempt, log)
	}
}

// execute runs the task: it reads the partition from the source and writes
// it to a task writer of the sink.
func (w *Worker) execute(ctx context.Context, task protocol.Task, attempt int, log *slog.Logger) (out connectors.TaskOutput, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("connector panic", "panic", r, "stack", string(debug.Stack()))
			err = connectors.Permanent(fmt.Errorf("connector panic: %v", r))
		}
	}()
	ctx = connectors.WithJetStream(ctx, w.js)
	if task.Pattern == protocol.PatternCompact {
		return w.rewrite(ctx, task, attempt)
	}
	src, err := w.sources.get(ctx, task.Source.Kind, task.Source.Config)
	if err != nil {
		return out, err
	}
	sink, err := w.sinks.get(ctx, task.Sink.Kind, task.Sink.Config)
	if err != nil {
		return out, err
	}
	if task.Units && task.Pattern != protocol.PatternPassthrough {
		// A transform planned in units: its contract applies to them.
		return w.executeUnits(ctx, task, attempt, src, sink, log)
	}
	if task.Pattern == protocol.PatternPassthrough {
		if len(task.Contract) > 0 {
			// Fail closed: a passthrough moves units undecoded, so
			// a contract's columns could not be transformed.
			return out, connectors.Permanent(errors.New("a passthrough copies data as it is and cannot apply a data contract: use pattern transform"))
		}
		return w.executeUnits(ctx, task, attempt, src, sink, log)
	}
	ref := connectors.TaskRef{
		RunID: task.RunID, TaskID: task.TaskID, Pipeline: task.Pipeline, Attempt: attempt, Schema: task.Schema,
	}
	// A data contract transforms the rows between the read and the write:
	// here, or, for a sink whose batches are not rows of one dataset, in
	// the sink itself.
	var ct *contract.Contract
	if len(task.Contract) > 0 {
		if w.reg.SinkAppliesContract(task.Sink.Kind) {
			ref.Contract = task.Contract
		} else {
			if ct, err = contract.Open(task.Contract); err != nil {
				return out, connectors.Permanent(err)
			}
			if ref.Schema, err = ct.Spec().Schema(task.Schema); err != nil {
				return out, connectors.Permanent(fmt.Errorf("contract: %w", err))
			}
		}
	}
	tw, err := sink.OpenTask(ctx, ref)
	if err != nil {
		return out, fmt.Errorf("open %s output of task: %w", task.Sink.Kind, err)
	}
	if ct != nil {
		if tw, err = ct.Writer(tw); err != nil {
			return out, err
		}
	}
	var writeErr error
	err = src.Read(ctx, task.Partition, func(ctx context.Context, b connectors.Batch) error {
		if err := tw.Write(ctx, b); err != nil {
			if b.Position != "" {
				err = fmt.Errorf("write batch at %s: %w", b.Position, err)
			}
			writeErr = err
			return err
		}
		return nil
	})
	return finishOutput(ctx, task, err, writeErr, tw, log)
}

// finishOutput ends the output of a task attempt after its read: when
// the read failed (readErr; writeErr when the sink failed it), it aborts
// the output and says which side failed, else it closes the output.
func finishOutput(ctx context.Context, task protocol.Task, readErr, writeErr error, out interface {
	Close(context.Context) (connectors.TaskOutput, error)
	Abort(context.Context) error
}, log *slog.Logger) (connectors.TaskOutput, error) {
	if readErr != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		if aerr := out.Abort(actx); aerr != nil {
			log.Warn("abort task output", "err", aerr)
		}
		if writeErr != nil {
			return connectors.TaskOutput{}, fmt.Errorf("write %s sink: %w", task.Sink.Kind, readErr)
		}
		return connectors.TaskOutput{}, fmt.Errorf("read %s source: %w", task.Source.Kind, readErr)
	}
	res, err := out.Close(ctx)
	if err != nil {
		return res, fmt.Errorf("close %s output of task: %w", task.Sink.Kind, err)
	}
	return res, nil
}

// keepAlive sends in-progress acks every ProgressEvery until the returned
// function is called; that function waits for the sender to stop.
func (w *Worker) keepAlive(ctx context.Context, msg jetstream.Msg, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil && !w.killed.Load() {
					log.Warn("send in-progress ack", "err", err)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// succeed publishes the result of a task that succeeded, then acknowledges
// the task. If the worker dies in between, the task runs again and the
// coordinator ignores the second result.
func (w *Worker) succeed(ctx context.Context, msg jetstream.Msg, res protocol.Result, log *slog.Logger) {
	if err := w.publishResult(ctx, res); err != nil {
		// The output is staged but nobody knows: run the task again.
		log.Error("publish task result; the task will run again", "err", err)
		if nerr := msg.NakWithDelay(requeueDelay); nerr != nil {
			log.Warn("nak task whose result was not published", "err", nerr)
		}
		return
	}
	w.done.Add(1)
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack task after its result; it may run again", "err", err)
	}
	log.Info("task done", "rows", res.Rows, "bytes", res.Bytes,
		"duration", res.Finished.Sub(res.Started).Round(time.Millisecond))
}

// fail publishes the failed result of a task that will not be retried, then
// terminates the task. When the result cannot be published the task is
// handed back, so that its next attempt reports it.
func (w *Worker) fail(ctx context.Context, msg jetstream.Msg, res protocol.Result, base time.Duration, attempt int, log *slog.Logger) {
	if err := w.publishResult(ctx, res); err != nil {
		log.Error("publish failed task result; the task will run again", "err", err)
		if nerr := msg.NakWithDelay(backoff(base, attempt)); nerr != nil {
			log.Warn("nak task whose result was not published", "err", nerr)
		}
		return
	}
	if err := msg.TermWithReason(string(res.ErrorClass) + ": " + res.Error); err != nil {
		log.Warn("terminate failed task", "err", err)
	}
}

// publishResult publishes res on JetStream with a message id that makes a
// repeated publication of the same attempt harmless, and waits for the
// stream's ack, retrying while ctx allows.
func (w *Worker) publishResult(ctx context.Context, res protocol.Result) error {
	data, err := protocol.Encode(res)
	if err != nil {
		return err
	}
	m := nats.NewMsg(protocol.ResultSubject(res.Pipeline))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, protocol.ResultMsgID(res.RunID, res.TaskID, res.Attempt))
	m.Header.Set(protocol.HeaderRun, res.RunID)
	m.Header.Set(protocol.HeaderTask, res.TaskID)
	telemetry.Inject(ctx, m.Header)
	delay := 100 * time.Millisecond
	for {
		_, err = w.js.PublishMsg(ctx, m)
		if err == nil {
			return nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) || w.killed.Load() {
			return fmt.Errorf("publish result: %w", err)
		}
		if !sleep(ctx, delay) {
			return fmt.Errorf("publish result: %w", err)
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// backoff is the delay before the retry that follows the given attempt:
// base doubled for each attempt after the first, 1s when base is zero,
// capped at five minutes.
func backoff(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// rewrite runs a task of a compaction: the dataset's sink rewrites the
// task's group into the run's staging place.
func (w *Worker) rewrite(ctx context.Context, task protocol.Task, attempt int) (connectors.TaskOutput, error) {
	sink, err := w.sinks.get(ctx, task.Sink.Kind, task.Sink.Config)
	if err != nil {
		return connectors.TaskOutput{}, err
	}
	cp, ok := sink.(connectors.Compactor)
	if !ok {
		return connectors.TaskOutput{}, connectors.Permanent(fmt.Errorf("a %s sink does not compact its dataset", task.Sink.Kind))
	}
	out, err := cp.Rewrite(ctx, connectors.TaskRef{RunID: task.RunID, TaskID: task.TaskID, Pipeline: task.Pipeline, Attempt: attempt}, task.Partition)
	if err != nil {
		return out, fmt.Errorf("rewrite %s group %s: %w", task.Sink.Kind, task.Partition.Key, err)
	}
	return out, nil
}
