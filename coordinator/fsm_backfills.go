package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// applyTo creates a backfill and starts its first windows, or finds the
// backfill its request id created before.
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
	if p.Spec.Pattern != protocol.PatternIncremental || p.Spec.Incremental == nil || p.Spec.Incremental.Window <= 0 {
		return backfillReply{}, refuse(refusedInvalid, "backfill %q: only an incremental pipeline can be backfilled", c.Pipeline)
	}
	if !c.From.Before(c.To) || c.Concurrency < 1 {
		return backfillReply{}, refuse(refusedInvalid, "backfill %q: want from < to and a concurrency of at least 1", c.Pipeline)
	}
	size := p.Spec.Incremental.Window
	if n := c.To.Sub(c.From) / size; n >= maxBackfillWindows {
		return backfillReply{}, refuse(refusedInvalid, "backfill %q: [%s, %s) makes more than %d windows of %s", c.Pipeline,
			formatWatermark(c.From), formatWatermark(c.To), maxBackfillWindows, size)
	}
	for _, b := range s.Backfills {
		if b.Pipeline == c.Pipeline && b.State == protocol.BackfillRunning {
			return backfillReply{}, refuse(refusedConflict, "backfill %s of %q is still running", b.ID, c.Pipeline)
		}
	}
	p.BackfillSeq++
	b := &backfillState{
		ID: fmt.Sprintf("%s-bf%04d", c.Pipeline, p.BackfillSeq), Pipeline: c.Pipeline, Seq: p.BackfillSeq,
		From: c.From.UTC(), To: c.To.UTC(), Window: size, Concurrency: c.Concurrency, Replace: c.Replace,
		RequestID: c.RequestID, MaxAttempts: c.MaxAttempts, Backoff: c.Backoff,
		State: protocol.BackfillRunning, Created: c.Time,
	}
	for lo := b.From; lo.Before(b.To); {
		hi := lo.Add(size)
		if hi.After(b.To) {
			hi = b.To
		}
		w := protocol.BackfillWindow{Window: protocol.Window{From: lo, To: hi}, State: protocol.WindowQueued}
		if !c.Replace && covered(p.Loaded, w.Window) {
			w.State = protocol.WindowSkipped
		}
		b.Windows = append(b.Windows, w)
		lo = hi
	}
	s.Backfills[b.ID] = b
	if c.RequestID != "" {
		s.Requests["backfill:"+c.RequestID] = b.ID
	}
	s.pruneBackfills(c.Pipeline)
	return backfillReply{Backfill: b.ID, Started: len(s.pump(b, c.Time))}, nil
}

// pump starts queued windows of b while fewer than its concurrency run,
// and marks b done when none is queued or running.
func (s *state) pump(b *backfillState, t time.Time) []string {
	p, ok := s.live(b.Pipeline)
	running := 0
	for _, w := range b.Windows {
		if w.State == protocol.WindowRunning {
			running++
		}
	}
	var started []string
	for i := range b.Windows {
		if running >= b.Concurrency || !ok {
			break
		}
		w := &b.Windows[i]
		if w.State != protocol.WindowQueued {
			continue
		}
		win := w.Window
		r := s.newRun(p, runCreateCmd{Pipeline: b.Pipeline, Window: &win, MaxAttempts: b.MaxAttempts, Backoff: b.Backoff, Time: t})
		r.Backfill = b.ID
		w.State, w.Run = protocol.WindowRunning, r.ID
		started = append(started, r.ID)
		running++
	}
	if running == 0 && b.State == protocol.BackfillRunning {
		queued := slices.ContainsFunc(b.Windows, func(w protocol.BackfillWindow) bool { return w.State == protocol.WindowQueued })
		if !queued || !ok {
			b.State = protocol.BackfillDone
			b.Finished = t
		}
	}
	return started
}

// runEnded records the end of a backfill run in its window and starts
// the next queued windows.
func (s *state) runEnded(r *runState, t time.Time) []string {
	if r.Backfill == "" {
		return nil
	}
	b, ok := s.Backfills[r.Backfill]
	if !ok {
		return nil
	}
	for i := range b.Windows {
		w := &b.Windows[i]
		if w.Run != r.ID || w.State != protocol.WindowRunning {
			continue
		}
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
	return s.pump(b, t)
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
