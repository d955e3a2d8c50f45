package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// checkWait bounds a `sluice check`: the leader counts and checksums the
// source's and the target's rows of every window of the range.
const checkWait = 10 * time.Minute

// maxCheckWindows bounds the windows of one check.
const maxCheckWindows = 10_000

// apiCheck compares an incremental pipeline's source and target window by
// window: the range is split as a backfill's would be, it must end at or
// before the watermark (the windows after it are not loaded yet), and
// both connectors must count and checksum a window's rows
// (connectors.WindowSummer). With Repair the windows that differ are
// loaded again by a backfill of exactly them, replacing (or merging)
// their rows.
func (t *leaderTerm) apiCheck(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.CheckRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, ok := c.fsm.pipeline(req.Pipeline)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	inc := p.Spec.Incremental
	if p.Spec.RunPattern() != protocol.PatternIncremental || inc == nil || inc.Positioned() || inc.Window <= 0 && inc.Span <= 0 {
		return nil, invalid("pipeline %s has no windows to check: only an incremental pipeline with a window (a delta column or time partitions) has", req.Pipeline)
	}
	if p.Watermark == "" {
		return nil, invalid("pipeline %s has loaded nothing yet: no window to check", req.Pipeline)
	}
	cmd := backfillCmd{Pipeline: req.Pipeline, Concurrency: max(req.Concurrency, defaultBackfillConcurrency)}
	if inc.Values() {
		if r := req.Range; r == nil || !r.Values || r.Empty() {
			return nil, invalid("range: want integer bounds lo < hi (the delta column of %s holds integers), not %v", req.Pipeline, req.Range)
		}
		rg := protocol.ValueWindow(req.Range.Lo, req.Range.Hi)
		if wm, _ := p.nextValue(); rg.Hi > wm {
			return nil, invalid("to: %d is past the watermark %d: the windows after it are not loaded yet", rg.Hi, wm)
		}
		cmd.Range = &rg
	} else {
		from, to := req.From.UTC(), req.To.UTC()
		if req.Range != nil || from.IsZero() || !from.Before(to) {
			return nil, invalid("from and to: want times from < to, not [%s, %s)", formatWatermark(from), formatWatermark(to))
		}
		if wm, _ := p.nextFrom(); to.After(wm) {
			return nil, invalid("to: %s is past the watermark %s: the windows after it are not loaded yet", formatWatermark(to), formatWatermark(wm))
		}
		cmd.From, cmd.To = from, to
	}
	windows, err := splitRange(cmd, inc.Window, inc.Span)
	if err != nil {
		return nil, err
	}
	if len(windows) > maxCheckWindows {
		return nil, invalid("the range makes %d windows, more than %d: check a shorter one", len(windows), maxCheckWindows)
	}
	reply, err := t.checkWindows(ctx, p, windows)
	if err != nil || !req.Repair || reply.Differ == 0 {
		return reply, err
	}
	for _, w := range reply.Windows {
		if !w.Same {
			cmd.Windows = append(cmd.Windows, w.Window)
		}
	}
	cmd.Replace, cmd.LeaderStarts = true, true
	cmd.MaxAttempts, cmd.Backoff, cmd.Time = c.cfg.DefaultMaxAttempts, c.cfg.DefaultBackoff, now()
	out, err := apply(c, cmd)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	reply.Backfill = out.Backfill
	if _, err := t.startWindows(ctx, out.Backfill); err != nil {
		c.log.Warn("start repair windows", "backfill", out.Backfill, "err", err)
	}
	c.log.Info("check repairs windows", "pipeline", req.Pipeline, "windows", len(cmd.Windows), "backfill", out.Backfill)
	return reply, nil
}

// checkWindows counts and checksums each window's rows at p's source and
// sink.
func (t *leaderTerm) checkWindows(ctx context.Context, p *pipelineState, windows []protocol.Window) (protocol.CheckReply, error) {
	reply := protocol.CheckReply{Pipeline: p.Spec.Name, Windows: []protocol.CheckWindow{}}
	ctx, cancel := context.WithTimeout(ctx, checkWait)
	defer cancel()
	src, err := t.c.reg.OpenSource(ctx, p.Spec.Source.Kind, p.Spec.Source.Config)
	if err != nil {
		return reply, err
	}
	defer src.Close()
	sink, err := t.c.reg.OpenSink(ctx, p.Spec.Sink.Kind, p.Spec.Sink.Config)
	if err != nil {
		return reply, err
	}
	defer sink.Close()
	ss, ok1 := src.(connectors.WindowSummer)
	ts, ok2 := sink.(connectors.WindowSummer)
	if !ok1 || !ok2 {
		return reply, invalid("check %s: a %s source and a %s sink cannot both count a window's rows (connectors.WindowSummer)", p.Spec.Name, p.Spec.Source.Kind, p.Spec.Sink.Kind)
	}
	inc := p.Spec.Incremental
	req := connectors.SumRequest{DeltaColumn: inc.DeltaColumn}
	if inc.Merge != nil {
		req.Deleted = inc.Merge.Deleted
	}
	for _, w := range windows {
		req.Window, req.Columns = w, nil
		a, err := ss.SumWindow(ctx, req)
		if err != nil {
			return reply, fmt.Errorf("check window %s: source: %w", w, err)
		}
		req.Columns = a.Columns
		b, err := ts.SumWindow(ctx, req)
		if err != nil {
			return reply, fmt.Errorf("check window %s: sink: %w", w, err)
		}
		cw := protocol.CheckWindow{Window: w, SourceRows: a.Checksum.Rows, SourceChecksum: a.Checksum.String(),
			TargetRows: b.Checksum.Rows, TargetChecksum: b.Checksum.String(), ChecksumsCompared: a.Form == b.Form}
		cw.Same = cw.SourceRows == cw.TargetRows && (!cw.ChecksumsCompared || a.Checksum == b.Checksum)
		if !cw.Same {
			reply.Differ++
		}
		reply.Windows = append(reply.Windows, cw)
	}
	return reply, nil
}
