package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// plan asks the source for the run's partitions and records them. A
// source that implements connectors.Readiness is asked first whether the
// run's input is complete: while it is not, the run waits (recorded in
// Raft once, with what it waits for), no task is published, and a timer
// kicks the run again after its ready check interval; waiting is true
// then. A run waiting longer than its ready timeout fails, naming what it
// waited for. A plan whose schema the run's sink cannot hold fails the run
// before any task is recorded (checkSchema). A run planned again first
// loses what its given-up attempts left (discard). The plan records
// whether it holds what the source kept for it (connectors.Plan.Holds).
func (t *leaderTerm) plan(ctx context.Context, log *slog.Logger, r *runState) (waiting bool, err error) {
	c := t.c
	if t.notYet(r.ID) {
		return true, nil
	}
	if r.attempt() > 1 {
		if err := t.discard(ctx, log, r); err != nil {
			return false, err
		}
	}
	if r.Pattern == protocol.PatternCompact {
		return false, t.planCompaction(ctx, log, r)
	}
	p, ok := c.fsm.pipeline(r.Pipeline)
	watermark := ""
	switch {
	case r.positioned() || r.passthrough():
		// The position the run was created at: every attempt plans from it.
		watermark = r.Since
	case ok:
		watermark = p.Watermark
	}
	req := connectors.PlanRequest{
		RunID: r.ID, Pipeline: r.Pipeline, Params: r.Params, LogicalTime: r.LogicalTime,
		Watermark: watermark, ByPosition: r.positioned(), Partitioning: r.Partitioning,
		Window: r.Window, DeltaColumn: r.DeltaColumn,
	}
	if r.Trim != nil {
		req.Trim = &connectors.Trim{From: r.Trim.From, MaxRows: r.Trim.MaxRows}
	}
	rctx := runContext(ctx, r)
	var span trace.Span
	var what string
	holds := false
	plan, err := func() (connectors.Plan, error) {
		src, err := c.reg.OpenSource(rctx, r.Source.Kind, r.Source.Config)
		if err != nil {
			return connectors.Plan{}, err
		}
		if rd, ok := src.(connectors.Readiness); ok {
			var ready bool
			ready, what, err = rd.Ready(rctx, req)
			switch {
			case err != nil && !connectors.IsPermanent(err):
				log.Warn("check source readiness", "err", err)
				waiting, err = true, nil
			case err == nil && !ready:
				waiting = true
			}
			if waiting || err != nil {
				if cerr := src.Close(); cerr != nil {
					log.Warn("close source after readiness check", "err", cerr)
				}
				return connectors.Plan{}, err
			}
		}
		// The plan span starts once the input is ready: a long wait is
		// no span per check.
		var sctx context.Context
		sctx, span = c.tracer.Start(rctx, telemetry.SpanPlan, trace.WithAttributes(
			telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID), telemetry.AttrAttempt.Int(r.attempt())))
		plan, err := t.planSource(sctx, r, src, req)
		if err == nil {
			err = checkTrim(r, req, &plan)
		}
		if err == nil {
			var out *protocol.Schema
			// The sink holds the rows the contract makes.
			if out, err = r.Contract.Schema(plan.Schema); err == nil {
				err = t.checkSchema(sctx, r, out)
			}
		}
		if _, ok := src.(connectors.RunHolder); ok && err == nil {
			// The source holds the run's snapshot until the run ends.
			t.mu.Lock()
			t.held[r.ID] = src
			t.mu.Unlock()
			holds = plan.Holds
			return plan, nil
		}
		if cerr := src.Close(); cerr != nil {
			log.Warn("close source after planning", "err", cerr)
		}
		return plan, err
	}()
	if span != nil {
		defer span.End()
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if span == nil { // failed before planning: opening or checking the source
			_, span = c.tracer.Start(rctx, telemetry.SpanPlan, trace.WithAttributes(
				telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID), telemetry.AttrAttempt.Int(r.attempt())))
			defer span.End()
		}
		err = c.reg.ScrubError(err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Warn("plan failed", "err", err)
		return false, t.failRun(r, "plan: "+err.Error())
	}
	if waiting {
		return true, t.wait(ctx, log, r, what)
	}
	t.doneWaiting(r.ID)
	span.SetAttributes(telemetry.AttrTasks.Int(len(plan.Partitions)))
	if _, err := apply(c, runPlannedCmd{Run: r.ID, Partitions: plan.Partitions, Watermark: plan.Watermark, Schema: plan.Schema, Holds: holds,
		Window: plan.Window, Time: now()}); err != nil {
		return false, err
	}
	log.Info("run planned", "tasks", len(plan.Partitions), "attempt", r.attempt())
	return false, nil
}

// planSource asks src for the plan of r: Plan, or, for a run of a
// passthrough pipeline, PlanUnits with what the run's sink says its
// target holds (connectors.Inventoried), the plan then reaching the
// watermark the sink's commit records.
func (t *leaderTerm) planSource(ctx context.Context, r *runState, src connectors.Source, req connectors.PlanRequest) (connectors.Plan, error) {
	if !t.c.inUnits(r) {
		return src.Plan(ctx, req)
	}
	// A transform's units go through its contract on the workers.
	req.Transform = r.Transform && r.Contract.Changes()
	if req.Transform {
		req.TextColumns, req.Binary = r.Contract.TextColumns()
	}
	us, ok := src.(connectors.UnitSource)
	if !ok {
		return connectors.Plan{}, connectors.Permanent(fmt.Errorf("a %s source cannot be the source of a passthrough", r.Source.Kind))
	}
	sink, err := t.c.reg.OpenSink(ctx, r.Sink.Kind, r.Sink.Config)
	if err != nil {
		return connectors.Plan{}, fmt.Errorf("ask the sink what its target holds: %w", err)
	}
	defer sink.Close()
	next := ""
	if inv, ok := sink.(connectors.Inventoried); ok {
		req.Target, next, err = inv.Inventory(ctx, connectors.InventoryRequest{Pipeline: r.Pipeline, RunID: r.ID, Watermark: req.Watermark})
		if err != nil {
			return connectors.Plan{}, fmt.Errorf("sink %s: what its target holds: %w", r.Sink.Kind, err)
		}
	}
	plan, err := us.PlanUnits(ctx, req)
	if err == nil && plan.Watermark == "" {
		plan.Watermark = next
	}
	return plan, err
}

// wait records that run r waits for what (once, or when what changed),
// fails it when its ready timeout has passed, and otherwise schedules the
// next check.
func (t *leaderTerm) wait(ctx context.Context, log *slog.Logger, r *runState, what string) error {
	c := t.c
	if what == "" { // a failed check: keep what the run waits for
		what = cmp.Or(r.WaitingFor, "source input")
	}
	tm := now()
	since := r.WaitingSince
	if r.State != protocol.RunWaiting || r.WaitingFor != what {
		if _, err := apply(c, runWaitingCmd{Run: r.ID, What: what, Time: tm}); err != nil {
			return err
		}
		if r.State != protocol.RunWaiting {
			since = tm
			log.Info("run waiting for its source input", "for", what)
		}
	}
	every := r.ReadyCheck
	if every <= 0 {
		every = pipeline.DefaultReadyCheck
	}
	if r.ReadyTimeout > 0 {
		deadline := since.Add(r.ReadyTimeout)
		if !tm.Before(deadline) {
			t.doneWaiting(r.ID)
			log.Warn("run not ready in time", "for", what, "ready_timeout", r.ReadyTimeout)
			return t.failRun(r, fmt.Sprintf("ready_timeout: %s is still not ready after %s (waiting since %s)",
				what, r.ReadyTimeout, since.Format(time.RFC3339)))
		}
		every = min(every, deadline.Sub(tm))
	}
	t.recheck(ctx, r.ID, every)
	return nil
}

// notYet reports whether run id waits and its next check is not due (a
// kick from the sweep, or from an event, between two checks).
func (t *leaderTerm) notYet(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.checkAt[id]
	return ok && time.Now().Before(at)
}

// recheck kicks run id again after d, once: a run has at most one timer.
func (t *leaderTerm) recheck(ctx context.Context, id string, d time.Duration) {
	t.mu.Lock()
	t.checkAt[id] = time.Now().Add(d)
	if t.rechecking[id] {
		t.mu.Unlock()
		return
	}
	t.rechecking[id] = true
	t.mu.Unlock()
	ok := t.spawn(func() {
		awake := sleep(ctx, d)
		for awake {
			t.mu.Lock()
			at := t.checkAt[id]
			t.mu.Unlock()
			if wait := time.Until(at); wait > 0 {
				awake = sleep(ctx, wait) // moved by a check meanwhile
				continue
			}
			break
		}
		t.mu.Lock()
		delete(t.rechecking, id)
		t.mu.Unlock()
		if awake {
			t.kick(ctx, id)
		}
	})
	if !ok {
		t.mu.Lock()
		delete(t.rechecking, id)
		t.mu.Unlock()
	}
}

// doneWaiting forgets the checks of run id.
func (t *leaderTerm) doneWaiting(id string) {
	t.mu.Lock()
	delete(t.checkAt, id)
	t.mu.Unlock()
}

// checkTrim checks the window a plan read for a capped window of integer
// values (connectors.PlanRequest.Trim): the same low bound and a high
// bound within the cap. A plan for a window that was not capped keeps the
// run's window.
func checkTrim(r *runState, req connectors.PlanRequest, plan *connectors.Plan) error {
	if req.Trim == nil {
		plan.Window = nil
		return nil
	}
	w := plan.Window
	if w == nil || !w.Values || w.Lo != req.Window.Lo || w.Hi > req.Window.Hi || w.Hi < w.Lo {
		return connectors.Permanent(fmt.Errorf("source %s did not end the capped window %s where its values end (its plan says %v): it cannot read windows of integer values", r.Source.Kind, req.Window, w))
	}
	return nil
}

// checkSchema checks the schema of r's plan before any task is published:
// that it is well formed, and, when r's sink needs typed columns
// (connectors.SchemaChecker), that the sink can hold it. An error fails
// the run; it names the source or the sink.
func (t *leaderTerm) checkSchema(ctx context.Context, r *runState, s *protocol.Schema) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("source %s: %w", r.Source.Kind, err)
	}
	sink, err := t.c.reg.OpenSink(ctx, r.Sink.Kind, r.Sink.Config)
	if err != nil {
		return fmt.Errorf("check the schema: %w", err)
	}
	defer sink.Close()
	sc, ok := sink.(connectors.SchemaChecker)
	if !ok {
		return nil
	}
	if err := sc.CheckSchema(ctx, s); err != nil {
		return fmt.Errorf("sink %s refuses the schema: %w", r.Sink.Kind, err)
	}
	return nil
}
