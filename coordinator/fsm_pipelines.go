package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// applyTo creates or revises a pipeline.
func (c pipelinePutCmd) applyTo(s *state) (pipelinePutReply, error) {
	p, ok := s.Pipelines[c.Spec.Name]
	if old, retired := s.Retired[c.Spec.Name]; !ok && retired {
		// dropped by a trim after its delete: it goes on from its numbers
		p, ok = old, true
		delete(s.Retired, c.Spec.Name)
		s.Pipelines[c.Spec.Name] = p
	}
	if !ok {
		p = &pipelineState{Created: c.Time}
		s.Pipelines[c.Spec.Name] = p
	}
	created := !ok || !p.Deleted.IsZero()
	if created && ok {
		// applied again after a delete: a new pipeline, with the old
		// one's run and version numbers
		p.Created, p.Deleted = c.Time, time.Time{}
	}
	p.Spec = c.Spec
	p.Revision++
	p.Updated = c.Time
	return pipelinePutReply{Revision: p.Revision, Created: created}, nil
}

// applyTo deletes a pipeline that has no run or backfill in
// progress and no cdc_apply pipeline applying its events: it is no longer
// listed, scheduled, triggered or streamed (its lease's next renewal is
// refused), and what a streamed pipeline left outside the state is queued
// as a cleanup.
func (c pipelineDeleteCmd) applyTo(s *state) (pipelineDeleteReply, error) {
	p, ok := s.live(c.Name)
	if !ok {
		return pipelineDeleteReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Name)
	}
	for _, id := range slices.Sorted(maps.Keys(s.Runs)) {
		if r := s.Runs[id]; r.Pipeline == c.Name && !r.finished() {
			return pipelineDeleteReply{}, refuse(refusedConflict, "delete %q: run %s is %s; wait for it to end", c.Name, r.ID, r.State)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.Backfills)) {
		if b := s.Backfills[id]; b.Pipeline == c.Name && b.State == protocol.BackfillRunning {
			return pipelineDeleteReply{}, refuse(refusedConflict, "delete %q: backfill %s is running; wait for it to end", c.Name, b.ID)
		}
	}
	if p.Rollback.pending() {
		return pipelineDeleteReply{}, refuse(refusedConflict, "delete %q: its rollback to version %d is not finished yet; wait for it to end", c.Name, p.Rollback.To)
	}
	if deps := s.appliersOf(c.Name); len(deps) > 0 {
		return pipelineDeleteReply{}, refuse(refusedConflict, "delete %q: the cdc_apply pipelines %v apply its events; delete them first", c.Name, deps)
	}
	switch p.Spec.Pattern {
	case protocol.PatternCDC, protocol.PatternCDCApply:
		s.CleanupSeq++
		cl := cleanup{ID: fmt.Sprintf("cleanup-%06d", s.CleanupSeq), Pipeline: c.Name, Pattern: p.Spec.Pattern, Lease: p.Spec.LeaseDuration(), Created: c.Time}
		if p.Spec.Pattern == protocol.PatternCDC {
			cl.SourceKind, cl.Source, cl.Slot, cl.Publication = p.Spec.Source.Kind, p.Spec.Source.Config, p.Spec.SlotName(), p.Spec.PublicationName()
		}
		s.Cleanups = append(s.Cleanups, cl)
	}
	p.Deleted, p.Updated = c.Time, c.Time
	p.Revision++
	p.Scheduled = nil
	if p.Stream != nil {
		// Applied again, the pipeline starts over (a new snapshot, no
		// holder), with epochs after the old ones: a holder of the old
		// stream is never taken for one of the new.
		p.Stream = &streamState{Epoch: p.Stream.Epoch}
	}
	return pipelineDeleteReply{Revision: p.Revision}, nil
}

// appliersOf lists the live cdc_apply pipelines applying the events of
// the cdc pipeline name, sorted.
func (s *state) appliersOf(name string) []string {
	var out []string
	for n, p := range s.Pipelines {
		if p.Deleted.IsZero() && p.Spec.Pattern == protocol.PatternCDCApply && p.Spec.ApplyUpstream() == name {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// applyTo forgets a cleanup the leader carried out.
func (c cleanupDoneCmd) applyTo(s *state) (noReply, error) {
	s.Cleanups = slices.DeleteFunc(s.Cleanups, func(cl cleanup) bool { return cl.ID == c.ID })
	return noReply{}, nil
}

// applyTo records a schedule tick as handled.
func (c scheduleTickCmd) applyTo(s *state) (noReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return noReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	p.markTick(c.Schedule, c.Tick)
	return noReply{}, nil
}
