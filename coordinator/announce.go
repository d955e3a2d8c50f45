package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// announce tells the world a run ended: for a failed run the sink's
// staging output is removed and each failed task goes to the dead-letter
// stream; then a run event is published and the FSM records that it was.
func (t *leaderTerm) announce(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	t.release(log, r.ID)
	t.mu.Lock()
	delete(t.discarded, r.ID)
	t.mu.Unlock()
	if r.Backfill != "" {
		// The run's end frees a window of its backfill for the next.
		if _, err := t.startWindows(ctx, r.Backfill); err != nil && ctx.Err() == nil {
			log.Warn("start backfill windows", "backfill", r.Backfill, "err", err)
		}
	}
	traceID := telemetry.TraceID(r.Trace)
	ev := protocol.RunEvent{RunID: r.ID, Pipeline: r.Pipeline, Outcome: r.State, Location: r.Location,
		Error: r.Error, Time: r.Finished, TraceID: traceID, Trigger: r.Trigger}
	for _, ts := range r.Tasks {
		ev.Rows += ts.Rows
		ev.Bytes += ts.Bytes
	}
	if r.State == protocol.RunCommitted {
		ev.DatasetVersion = r.Version
		ev.Checksum = r.checksum().String()
	}
	if r.State == protocol.RunFailed {
		if r.Planned {
			// Tasks of the run still queued would only write staging
			// output nobody commits: drop them before removing staging.
			if err := t.purgeTasks(ctx, r); err != nil {
				log.Warn("purge queued tasks of failed run", "err", err)
			}
			if err := t.abort(ctx, r); err != nil {
				log.Warn("abort sink staging of failed run", "err", err)
			}
		}
		for _, ts := range r.Tasks {
			if ts.State != protocol.TaskFailed {
				continue
			}
			if err := t.deadLetter(ctx, r, ts, traceID); err != nil {
				return fmt.Errorf("dead-letter task %s: %w", ts.ID, err)
			}
		}
	}
	data, err := protocol.Encode(ev)
	if err != nil {
		return err
	}
	m := nats.NewMsg(protocol.RunEventSubject(r.Pipeline, r.State))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, "event:"+r.ID)
	m.Header.Set(protocol.HeaderRun, r.ID)
	telemetry.Inject(runContext(ctx, r), m.Header)
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish run event: %w", err)
	}
	if r.State == protocol.RunCommitted && !t.oneOffCompaction(r) {
		if err := t.startDownstream(ctx, log, r); err != nil {
			return err
		}
	}
	if _, err := apply(c, runNotifiedCmd{Run: r.ID, Keep: c.cfg.KeepRuns, Time: now()}); err != nil {
		return err
	}
	c.observeRun(r)
	c.endSpan(r.ID)
	return nil
}

// release lets go of what a source holds for run id, if anything.
func (t *leaderTerm) release(log *slog.Logger, id string) {
	t.mu.Lock()
	src, ok := t.held[id]
	delete(t.held, id)
	t.mu.Unlock()
	if !ok {
		return
	}
	if err := src.(connectors.RunHolder).ReleaseRun(id); err != nil {
		log.Warn("release source hold", "run", id, "err", err)
	}
	if err := src.Close(); err != nil {
		log.Warn("close source", "run", id, "err", err)
	}
}

func (t *leaderTerm) purgeTasks(ctx context.Context, r *runState) error {
	s, err := t.c.js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(protocol.TaskSubject(r.Pipeline, r.ID)))
}

func (t *leaderTerm) abort(ctx context.Context, r *runState) error {
	sink, err := t.c.reg.OpenSink(ctx, r.Sink.Kind, r.Sink.Config)
	if err != nil {
		return err
	}
	defer sink.Close()
	if t.c.inUnits(r) {
		if us, ok := sink.(connectors.UnitSink); ok {
			return us.AbortUnits(ctx, r.ID)
		}
	}
	return sink.Abort(ctx, r.ID)
}

func (t *leaderTerm) deadLetter(ctx context.Context, r *runState, ts taskState, traceID string) error {
	task, err := t.taskOf(r, ts)
	if err != nil {
		return err
	}
	data, err := protocol.Encode(task)
	if err != nil {
		return err
	}
	m := nats.NewMsg(protocol.DLQSubject("task", r.Pipeline))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, "dlq:"+r.ID+":"+ts.ID)
	m.Header.Set(protocol.HeaderRun, r.ID)
	m.Header.Set(protocol.HeaderTask, ts.ID)
	m.Header.Set(protocol.HeaderReason, ts.Error)
	m.Header.Set(protocol.HeaderAttempts, strconv.Itoa(ts.Attempts))
	m.Header.Set(protocol.HeaderOrigSubject, protocol.TaskSubject(r.Pipeline, r.ID))
	if traceID != "" {
		m.Header.Set(protocol.HeaderTraceID, traceID)
	}
	telemetry.Inject(runContext(ctx, r), m.Header)
	if _, err := t.c.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	return nil
}
