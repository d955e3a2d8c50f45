package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// commit publishes the run through its sink, with the version recorded in
// the committing entry, and records the commit. A failing commit is retried
// with backoff; then the run fails.
func (t *leaderTerm) commit(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	mu := t.pipelineLock(r.Pipeline)
	mu.Lock()
	defer mu.Unlock()
	// A rollback recorded and not finished (its leader died midway) is
	// finished first: a commit never overtakes a recorded rollback.
	if _, err := t.finishRollback(ctx, log, r.Pipeline); err != nil && refusalOf(err) == nil {
		return err
	}
	schema, err := r.sinkSchema()
	if err != nil {
		return fmt.Errorf("commit %s: %w", r.ID, err)
	}
	req := connectors.CommitRequest{RunID: r.ID, Pipeline: r.Pipeline, Version: r.Version, Watermark: r.Watermark, Schema: schema}
	switch {
	case r.Window != nil:
		req.Mode, req.Window, req.DeltaColumn, req.Merge = connectors.ModeAppend, r.Window, r.DeltaColumn, r.Merge
	case r.positioned():
		req.Mode = connectors.ModeAppend
	case r.passthrough():
		req.Since = r.Since
	}
	for _, ts := range r.Tasks {
		req.Tasks = append(req.Tasks, connectors.TaskOutput{Rows: ts.Rows, Bytes: ts.Bytes, Checksum: ts.checksum(), Location: ts.Location})
	}
	cctx, span := c.tracer.Start(runContext(ctx, r), telemetry.SpanCommit, trace.WithAttributes(
		telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID),
		telemetry.AttrVersion.Int64(r.Version), telemetry.AttrTasks.Int(len(r.Tasks))))
	defer span.End()
	if req.Mode == connectors.ModeAppend && (req.Window == nil || req.Window.Empty()) && len(req.Tasks) == 0 {
		// A run by position, or of integer values, that found nothing
		// new appends nothing: only its watermark moves (a source may
		// pass what it skips).
		if _, err := apply(c, runCommittedCmd{Run: r.ID, Keep: c.cfg.KeepRuns, KeepUnannounced: true, Time: now()}); err != nil {
			return err
		}
		log.Info("run committed: nothing new", "version", r.Version, "watermark", r.Watermark)
		return nil
	}
	// The fault tests kill the leader once this line is out.
	log.Debug("commit started", "version", r.Version, "tasks", len(r.Tasks))
	var lastErr error
	backoff := 250 * time.Millisecond
	for attempt := 1; attempt <= commitAttempts; attempt++ {
		res, err := func() (connectors.CommitResult, error) {
			sink, err := c.reg.OpenSink(cctx, r.Sink.Kind, r.Sink.Config)
			if err != nil {
				return connectors.CommitResult{}, err
			}
			defer func() {
				if err := sink.Close(); err != nil {
					log.Warn("close sink after commit", "err", err)
				}
			}()
			defer t.datasetLock(sink)()
			if r.Pattern == protocol.PatternCompact {
				return t.commitCompaction(cctx, log, r, sink)
			}
			if c.inUnits(r) {
				us, ok := sink.(connectors.UnitSink)
				if !ok {
					return connectors.CommitResult{}, connectors.Permanent(fmt.Errorf("a %s sink cannot be the sink of a passthrough", r.Sink.Kind))
				}
				return us.CommitUnits(cctx, req)
			}
			return sink.Commit(cctx, req)
		}()
		if err == nil {
			if _, err := apply(c, runCommittedCmd{Run: r.ID, Location: res.Location, Marker: res.Marker, Keep: c.cfg.KeepRuns, KeepUnannounced: true, Time: now()}); err != nil {
				return err
			}
			log.Info("run committed", "version", r.Version, "location", res.Location)
			if r.Pattern == protocol.PatternCompact {
				t.afterCompaction(ctx, log, r)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = t.c.reg.ScrubError(err)
		log.Warn("commit", "attempt", attempt, "err", lastErr)
		if connectors.IsPermanent(err) || attempt == commitAttempts {
			break
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff *= 2
	}
	span.RecordError(lastErr)
	span.SetStatus(codes.Error, lastErr.Error())
	return t.failRun(r, "commit: "+lastErr.Error())
}

func (t *leaderTerm) pipelineLock(name string) *sync.Mutex {
	t.mu.Lock()
	defer t.mu.Unlock()
	mu, ok := t.commitMu[name]
	if !ok {
		mu = &sync.Mutex{}
		t.commitMu[name] = mu
	}
	return mu
}
