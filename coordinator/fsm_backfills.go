package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// applyTo creates a backfill, its windows queued (those loaded already
// skipped, unless Replace), or finds the backfill its request id created
// before. The leader starts the windows (windowRun); a backfill entry of
// an earlier version's log starts its first windows here (pump).
func (c backfillCmd) applyTo(s *state) (backfillReply, error) {
	if c.RequestID != "" {
		if id, ok := s.Requests["backfill:"+c.RequestID]; ok {
			return backfillReply{Backfill: id, Reused: true}, nil
		}
	}
	p, ok := s.live(c.Pipeline)
	if !ok {
		return backfillReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	inc := p.Spec.Incremental
	if p.Spec.RunPattern() != protocol.PatternIncremental || inc == nil || inc.Window <= 0 && inc.Span <= 0 {
		return backfillReply{}, refuse(refusedInvalid, "backfill %q: only an incremental pipeline with a window can be backfilled", c.Pipeline)
	}
	windows, err := backfillWindows(c, inc.Window, inc.Span)
	if err != nil {
		return backfillReply{}, err
	}
	for _, b := range s.Backfills {
		if b.Pipeline == c.Pipeline && b.State == protocol.BackfillRunning {
			return backfillReply{}, refuse(refusedConflict, "backfill %s of %q is still running", b.ID, c.Pipeline)
		}
	}
	p.BackfillSeq++
	b := &backfillState{
		ID: fmt.Sprintf("%s-bf%04d", c.Pipeline, p.BackfillSeq), Pipeline: c.Pipeline, Seq: p.BackfillSeq,
		Concurrency: c.Concurrency, Replace: c.Replace,
		RequestID: c.RequestID, MaxAttempts: c.MaxAttempts, Backoff: c.Backoff, LeaderStarts: c.LeaderStarts,
		State: protocol.BackfillRunning, Created: c.Time,
	}
	if c.Range != nil {
		r := *c.Range
		b.Range, b.Span = &r, inc.Span
	} else {
		b.From, b.To, b.Window = c.From.UTC(), c.To.UTC(), inc.Window
	}
	for _, win := range windows {
		w := protocol.BackfillWindow{Window: win, State: protocol.WindowQueued}
		if !c.Replace && covered(p.Loaded, w.Window) {
			w.State = protocol.WindowSkipped
		}
		b.Windows = append(b.Windows, w)
	}
	b.recount()
	s.Backfills[b.ID] = b
	if c.RequestID != "" {
		s.Requests["backfill:"+c.RequestID] = b.ID
	}
	s.pruneBackfills(c.Pipeline)
	s.pump(b, c.Time)
	return backfillReply{Backfill: b.ID}, nil
}

// backfillWindows splits the range of a backfill into windows of size (a
// time range) or span (a range of values), the last one maybe shorter.
func backfillWindows(c backfillCmd, size time.Duration, span int64) ([]protocol.Window, error) {
	if c.Concurrency < 1 {
		return nil, refuse(refusedInvalid, "backfill %q: want a concurrency of at least 1", c.Pipeline)
	}
	all, err := splitRange(c, size, span)
	if err != nil || len(c.Windows) == 0 {
		return all, err
	}
	// Only the windows asked for, each one of the range's.
	for _, w := range c.Windows {
		if !slices.ContainsFunc(all, w.Equal) {
			return nil, refuse(refusedInvalid, "backfill %q: %s is not one of the windows of its range", c.Pipeline, w)
		}
	}
	return slices.DeleteFunc(all, func(w protocol.Window) bool { return !slices.ContainsFunc(c.Windows, w.Equal) }), nil
}

// ceilDiv is the number of windows of size d makes of a range of n.
func ceilDiv(n, d uint64) uint64 {
	q := n / d
	if n%d != 0 {
		q++
	}
	return q
}

// splitRange splits the range of a backfill into windows of size (a time
// range) or span (a range of values), the last one maybe shorter.
func splitRange(c backfillCmd, size time.Duration, span int64) ([]protocol.Window, error) {
	var out []protocol.Window
	if span > 0 {
		r := c.Range
		if r == nil || !r.Values || r.Empty() {
			return nil, refuse(refusedInvalid, "backfill %q: want a range of integer values lo < hi (its delta column holds integers)", c.Pipeline)
		}
		if n := ceilDiv(uint64(r.Hi)-uint64(r.Lo), uint64(span)); n > maxBackfillWindows {
			return nil, refuse(refusedInvalid, "backfill %q: %s makes more than %d windows of %d values", c.Pipeline, r, maxBackfillWindows, span)
		}
		for lo := r.Lo; lo < r.Hi; {
			hi := r.Hi
			if lo <= r.Hi-span {
				hi = lo + span
			}
			out = append(out, protocol.ValueWindow(lo, hi))
			lo = hi
		}
		return out, nil
	}
	if c.Range != nil || !c.From.Before(c.To) {
		return nil, refuse(refusedInvalid, "backfill %q: want a time range from < to (its delta column is a time)", c.Pipeline)
	}
	if n := ceilDiv(uint64(c.To.Sub(c.From)), uint64(size)); n > maxBackfillWindows {
		return nil, refuse(refusedInvalid, "backfill %q: [%s, %s) makes more than %d windows of %s", c.Pipeline,
			formatWatermark(c.From), formatWatermark(c.To), maxBackfillWindows, size)
	}
	from, to := c.From.UTC(), c.To.UTC()
	for lo := from; lo.Before(to); {
		hi := lo.Add(size)
		if hi.After(to) {
			hi = to
		}
		out = append(out, protocol.Window{From: lo, To: hi})
		lo = hi
	}
	return out, nil
}

// windowRun creates the run of window c.Window of backfill c.Backfill: the
// window must be queued and fewer than the backfill's concurrency running.
// The window is marked running, with its run, in the same entry.
func (s *state) windowRun(p *pipelineState, c runCreateCmd) (runCreateReply, error) {
	b, ok := s.Backfills[c.Backfill]
	if !ok || b.Pipeline != c.Pipeline {
		return runCreateReply{}, refuse(refusedNotFound, "backfill %q of %q not found", c.Backfill, c.Pipeline)
	}
	if !b.LeaderStarts {
		return runCreateReply{}, refuse(refusedInvalid, "backfill %s starts its window runs itself", b.ID)
	}
	if b.State != protocol.BackfillRunning {
		return runCreateReply{}, refuse(refusedConflict, "backfill %s is %s", b.ID, b.State)
	}
	if c.Window == nil || c.Live {
		return runCreateReply{}, refuse(refusedInvalid, "create run of backfill %s: want one of its windows, not live", b.ID)
	}
	i := b.windowAt(*c.Window)
	if i < 0 {
		return runCreateReply{}, refuse(refusedInvalid, "backfill %s has no window %s", b.ID, c.Window)
	}
	w := &b.Windows[i]
	if w.State != protocol.WindowQueued {
		return runCreateReply{}, refuse(refusedConflict, "window %s of backfill %s is %s", w.Window, b.ID, w.State)
	}
	if n := b.running(); n >= b.Concurrency {
		return runCreateReply{}, refuse(refusedConflict, "backfill %s loads %d windows at once already (its concurrency)", b.ID, n)
	}
	r := s.newRun(p, c)
	r.Backfill = b.ID
	w.State, w.Run = protocol.WindowRunning, r.ID
	b.started()
	return runCreateReply{RunID: r.ID}, nil
}

// pump starts the queued windows of a backfill of an earlier version's
// log (not LeaderStarts) while fewer than its concurrency run, creating
// their runs in Apply as that version did, so that its log replays to the
// same state; then it settles b. The leader starts the windows of every
// other backfill (windowRun).
func (s *state) pump(b *backfillState, t time.Time) {
	p, ok := s.live(b.Pipeline)
	for running := b.running(); ok && !b.LeaderStarts && running < b.Concurrency; running++ {
		i := b.firstQueued()
		if i < 0 {
			break
		}
		w := &b.Windows[i]
		win := w.Window
		r := s.newRun(p, runCreateCmd{Pipeline: b.Pipeline, Window: &win, MaxAttempts: b.MaxAttempts, Backoff: b.Backoff, Time: t})
		r.Backfill = b.ID
		w.State, w.Run = protocol.WindowRunning, r.ID
		b.started()
	}
	s.settle(b, t)
}

// settle marks b done when none of its windows runs and none is queued
// (or its pipeline is gone).
func (s *state) settle(b *backfillState, t time.Time) {
	if b.State != protocol.BackfillRunning || b.running() > 0 {
		return
	}
	_, live := s.live(b.Pipeline)
	if !live || b.firstQueued() < 0 {
		b.State = protocol.BackfillDone
		b.Finished = t
	}
}

// runEnded records the end of a backfill run in its window and settles
// the backfill (a backfill of an earlier version's log starts its next
// windows).
func (s *state) runEnded(r *runState, t time.Time) {
	if r.Backfill == "" {
		return
	}
	b, ok := s.Backfills[r.Backfill]
	if !ok {
		return
	}
	end := func(w *protocol.BackfillWindow) {
		b.active--
		if r.State == protocol.RunCommitted {
			w.State = protocol.WindowCommitted
			for _, ts := range r.Tasks {
				w.Rows += ts.Rows
			}
		} else {
			w.State = protocol.WindowFailed
			w.Error = r.Error
		}
	}
	// The run's window is found where it lies; a window is ended only by
	// its running run.
	if r.Window != nil {
		if i := b.windowAt(*r.Window); i >= 0 && b.Windows[i].Run == r.ID && b.Windows[i].State == protocol.WindowRunning {
			end(&b.Windows[i])
		}
	}
	s.pump(b, t)
}

// pruneBackfills keeps the newest keepBackfills finished backfills of a
// pipeline.
func (s *state) pruneBackfills(pipelineName string) {
	var done []*backfillState
	for _, b := range s.Backfills {
		if b.Pipeline == pipelineName && b.State == protocol.BackfillDone {
			done = append(done, b)
		}
	}
	if len(done) <= keepBackfills {
		return
	}
	slices.SortFunc(done, func(a, b *backfillState) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, b := range done[:len(done)-keepBackfills] {
		delete(s.Backfills, b.ID)
		if b.RequestID != "" && s.Requests["backfill:"+b.RequestID] == b.ID {
			delete(s.Requests, "backfill:"+b.RequestID)
		}
	}
}
