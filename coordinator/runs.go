package coordinator

import (
	"context"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// createRun is the one way a run comes to be, whoever asks for it (the
// API, a trigger, a schedule, an upstream commit, a cdc pipeline's initial
// snapshot, a backfill's window). It starts the run's span, the root of
// the run's trace (or a child of the trace context the run's trigger
// carried), logs the run-create entry with the span's context, keeps the
// span until the run ends, and kicks the run. The leader's retry defaults
// and the time are filled in where cmd has none. A run the request id
// created before is kicked again and returned as Reused.
func (t *leaderTerm) createRun(ctx context.Context, cmd runCreateCmd) (runCreateReply, error) {
	c := t.c
	pctx, opts := ctx, []trace.SpanStartOption{trace.WithNewRoot(),
		trace.WithAttributes(telemetry.AttrPipeline.String(cmd.Pipeline))}
	if cmd.Trigger != nil && len(cmd.Trigger.Trace) > 0 {
		pctx, opts = telemetry.ExtractMap(ctx, cmd.Trigger.Trace), opts[1:]
	}
	if l, ok := c.upstreamLink(ctx, cmd.Trigger); ok {
		opts = append(opts, trace.WithLinks(l))
	}
	sctx, span := c.tracer.Start(pctx, telemetry.SpanRun, opts...)
	cmd.Trace = telemetry.InjectMap(sctx)
	if cmd.MaxAttempts == 0 {
		cmd.MaxAttempts = c.cfg.DefaultMaxAttempts
	}
	if cmd.Backoff == 0 {
		cmd.Backoff = c.cfg.DefaultBackoff
	}
	if cmd.Time.IsZero() {
		cmd.Time = now()
	}
	out, err := apply(c, cmd)
	if err != nil {
		span.End()
		return out, err
	}
	if out.Reused {
		span.End()
	} else {
		span.SetAttributes(telemetry.AttrRun.String(out.RunID))
		c.keepSpan(out.RunID, span)
		c.log.Info("run created", runAttrs(out.RunID, cmd)...)
	}
	t.kick(ctx, out.RunID)
	return out, nil
}

// runAttrs are the log attributes of a run created by cmd.
func runAttrs(id string, cmd runCreateCmd) []any {
	attrs := []any{"run", id, "pipeline", cmd.Pipeline}
	if cmd.RequestID != "" {
		attrs = append(attrs, "request", cmd.RequestID)
	}
	if cmd.Window != nil {
		attrs = append(attrs, "window", cmd.Window.String(), "live", cmd.Live)
	}
	if cmd.Backfill != "" {
		attrs = append(attrs, "backfill", cmd.Backfill)
	}
	if cmd.Snapshot {
		attrs = append(attrs, "snapshot_attempt", cmd.Params["snapshot_attempt"])
	}
	if cmd.Trigger != nil && cmd.Trigger.Source != "" {
		attrs = append(attrs, "trigger", cmd.Trigger.Source)
	}
	return attrs
}

// startRun creates the run req asks for, or finds the one its RequestID
// created before, and kicks it; trig, when not nil, is the context of the
// trigger that asked (its processing time and handler version are set
// here). For an incremental pipeline that is up to date no run is created
// and upToDate is the reply.
func (t *leaderTerm) startRun(ctx context.Context, req protocol.RunRequest, trig *protocol.TriggerContext) (id string, upToDate *protocol.RunReply, err error) {
	c := t.c
	if !protocol.ValidName(req.Pipeline) {
		return "", nil, invalid("pipeline: %q is not a valid pipeline name", req.Pipeline)
	}
	if req.RequestID != "" {
		id, _ = c.fsm.requestRun(req.RequestID)
	}
	if id == "" {
		p, ok := c.fsm.pipeline(req.Pipeline)
		if !ok {
			return "", nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
		}
		req, err := t.runParams(p, req)
		if err != nil {
			return "", nil, err
		}
		win, live, err := runWindow(p, req.Window, now())
		if err != nil {
			return "", nil, err
		}
		windowed := p.Spec.RunPattern() == protocol.PatternIncremental && !p.Spec.Incremental.Positioned()
		if windowed && win.Empty() {
			// Nothing to load yet: no run. The next window opens once
			// now - lag passes the watermark.
			return "", &protocol.RunReply{UpToDate: true, Window: &win}, nil
		}
		var window *protocol.Window
		if windowed {
			window = &win
		}
		tm := now()
		if trig != nil {
			trig.ProcessingTime = tm
			trig.HandlerVersion = fmt.Sprintf("sluice protocol v%d, pipeline %s revision %d", protocol.Version, p.Spec.Name, p.Revision)
		}
		out, err := t.createRun(ctx, runCreateCmd{
			Pipeline: req.Pipeline, Params: req.Params, LogicalTime: req.LogicalTime, RequestID: req.RequestID,
			Window: window, Live: live, Trigger: trig, Time: tm,
			Schedule: scheduleOf(trig), Tick: tickOf(trig, req),
		})
		if err != nil {
			return "", nil, err
		}
		id = out.RunID
	}
	return id, nil, nil
}

// runWindow returns the window of a new run of p at time now: for an
// incremental pipeline the requested window (an explicit re-run: not
// live), or [lo, hi) with lo the watermark (incremental.start before the
// first commit) and hi = min(now - lag, lo + window), truncated to the
// second (live: its commit moves the watermark to hi). hi <= lo means the
// pipeline is up to date. A run by position has no window and is live
// (its commit moves the watermark to the position its plan reaches).
// Other patterns have no window.
func runWindow(p *pipelineState, asked *protocol.Window, now time.Time) (protocol.Window, bool, error) {
	inc := p.Spec.Incremental
	if p.Spec.RunPattern() != protocol.PatternIncremental || inc == nil {
		if asked != nil {
			return protocol.Window{}, false, invalid("window: pipeline %s is %s; a window is only for an incremental load (pattern incremental, or transform with an incremental section)", p.Spec.Name, p.Spec.Pattern)
		}
		return protocol.Window{}, false, nil
	}
	if inc.Positioned() {
		if asked != nil {
			return protocol.Window{}, false, invalid("window: pipeline %s is read by its source's position (incremental.by: %s): its runs have no window; each loads what is new since the watermark", p.Spec.Name, inc.By)
		}
		return protocol.Window{}, true, nil
	}
	if inc.Values() {
		return valueWindow(p, asked)
	}
	if asked != nil {
		if asked.Values {
			return protocol.Window{}, false, invalid("window: %s is a range of integer values; the delta column of %s is a time (want RFC 3339 bounds)", asked, p.Spec.Name)
		}
		w := protocol.Window{From: asked.From.UTC(), To: asked.To.UTC()}
		if w.From.IsZero() || w.Empty() {
			return w, false, invalid("window: %s is empty: want from < to", w)
		}
		if inc.PartitionBased() && (!onPartition(w.From, inc.Window) || w.To.Sub(w.From) != inc.Window) {
			return w, false, invalid("window: %s is not one partition of %s: the source of %s is partition-based (partitions start every %s from midnight UTC)",
				w, inc.Window, p.Spec.Name, inc.Window)
		}
		return w, false, nil
	}
	from, err := p.nextFrom()
	if err != nil {
		return protocol.Window{}, false, invalid("%v", err)
	}
	hi := now.Add(-inc.Lag).Truncate(time.Second).UTC()
	if end := from.Add(inc.Window); end.Before(hi) {
		hi = end
	} else if inc.PartitionBased() && end.After(hi) {
		// A partition is loaded whole, once its time is over (and lag
		// more): until then the pipeline is up to date.
		hi = from
	}
	w := protocol.Window{From: from, To: hi}
	if inc.Lookback > 0 && !w.Empty() {
		// The closed windows before the watermark are read again.
		start, err := p.liveStart()
		if err != nil {
			return protocol.Window{}, false, invalid("%v", err)
		}
		w.From = start.From
	}
	return w, true, nil
}

// valueWindow is runWindow for a pipeline of integer windows: the asked
// window (a re-run), or [lo, lo + span) with lo the watermark
// (incremental.start before the first commit) less lookback windows,
// live. Its high bound only caps the run: the source ends the window
// where the column's values end when it plans the run (Trim), and the
// run's commit moves the watermark there. Without a span the cap is the
// largest integer (the run is bounded by max_rows_per_run).
func valueWindow(p *pipelineState, asked *protocol.Window) (protocol.Window, bool, error) {
	inc := p.Spec.Incremental
	if asked != nil {
		if !asked.Values || asked.Empty() {
			return protocol.Window{}, false, invalid("window: %s of pipeline %s: want integer bounds [lo, hi) with lo < hi (its delta column holds integer values)", asked, p.Spec.Name)
		}
		return protocol.ValueWindow(asked.Lo, asked.Hi), false, nil
	}
	lo, err := p.nextValue()
	if err != nil {
		return protocol.Window{}, false, invalid("%v", err)
	}
	hi := int64(math.MaxInt64)
	if inc.Span > 0 && lo <= math.MaxInt64-inc.Span {
		hi = lo + inc.Span
	}
	start, err := p.liveStart()
	if err != nil {
		return protocol.Window{}, false, invalid("%v", err)
	}
	return protocol.ValueWindow(start.Lo, hi), true, nil
}

// onPartition reports whether t is where a partition of size starts
// (partitions start every size from midnight UTC).
func onPartition(t time.Time, size time.Duration) bool {
	return t.UTC().Truncate(size).Equal(t)
}
