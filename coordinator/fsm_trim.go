package coordinator

import (
	"maps"
	"slices"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// maxKeptFailedWindows bounds the failed windows a trimmed backfill keeps
// (with their errors); the others are only counted.
const maxKeptFailedWindows = 100

// applyTo trims the state (see stateTrimCmd). A deleted pipeline stays
// while a run of it waits for its end to be announced. Each step is independent of
// map order, so the same entry trims the same on every node.
func (c stateTrimCmd) applyTo(s *state) (stateTrimReply, error) {
	var reply stateTrimReply
	if c.CleanupExpiry > 0 {
		deadline := c.Time.Add(-c.CleanupExpiry)
		s.Cleanups = slices.DeleteFunc(s.Cleanups, func(cl cleanup) bool {
			if cl.Created.Before(deadline) {
				reply.Expired = append(reply.Expired, cl)
				return true
			}
			return false
		})
	}
	for _, name := range slices.Sorted(maps.Keys(s.Pipelines)) {
		if p := s.Pipelines[name]; !p.Deleted.IsZero() && !s.cleaningUp(name) && !s.announcing(name) {
			s.retire(name, p)
			reply.Dropped = append(reply.Dropped, name)
		}
	}
	for _, r := range s.Runs {
		if r.finished() && r.Notified && r.stripPartitions() {
			reply.Runs++
		}
	}
	for _, b := range s.Backfills {
		if b.State == protocol.BackfillDone && b.Summary == nil {
			b.summarize()
			reply.Backfills++
		}
	}
	return reply, nil
}

// cleaningUp reports whether a cleanup of pipeline name is pending.
func (s *state) cleaningUp(name string) bool {
	return slices.ContainsFunc(s.Cleanups, func(cl cleanup) bool { return cl.Pipeline == name })
}

// announcing reports whether a run of pipeline name ended and its end
// is not announced yet (event, dead letters, the sink's abort).
func (s *state) announcing(name string) bool {
	for _, r := range s.Runs {
		if r.Pipeline == name && !r.Notified {
			return true
		}
	}
	return false
}

// retire drops deleted pipeline p, its runs and backfills (and their
// request ids), and keeps its numbers under Retired.
func (s *state) retire(name string, p *pipelineState) {
	gone := map[string]bool{}
	for id, r := range s.Runs {
		if r.Pipeline == name {
			gone[id] = true
			delete(s.Runs, id)
		}
	}
	for id, b := range s.Backfills {
		if b.Pipeline == name {
			gone[id] = true
			delete(s.Backfills, id)
		}
	}
	maps.DeleteFunc(s.Requests, func(_, id string) bool { return gone[id] })
	kept := &pipelineState{
		Spec: pipeline.Spec{Name: name}, Revision: p.Revision, Version: p.Version, VersionSeq: p.VersionSeq,
		Watermark: p.Watermark, Loaded: p.Loaded, BackfillSeq: p.BackfillSeq, RunSeq: p.RunSeq,
		Stream: p.Stream, Created: p.Created, Updated: p.Updated, Deleted: p.Deleted,
	}
	if s.Retired == nil {
		s.Retired = map[string]*pipelineState{}
	}
	s.Retired[name] = kept
	delete(s.Pipelines, name)
}

// stripPartitions drops the connector-specific bounds of r's tasks (file
// lists, key ranges), which nothing reads once r ended and its end was
// announced; keys, counts and sizes stay. It reports whether there were
// any.
func (r *runState) stripPartitions() bool {
	if !slices.ContainsFunc(r.Tasks, func(t taskState) bool { return hasBounds(t.Partition) }) {
		return false
	}
	tasks := slices.Clone(r.Tasks)
	for i := range tasks {
		tasks[i].Partition.Spec = nil
	}
	r.Tasks = tasks
	return true
}

// hasBounds reports whether p has its connector-specific bounds (a
// stripped partition restored from a snapshot has a JSON null).
func hasBounds(p protocol.Partition) bool {
	return len(p.Spec) > 0 && string(p.Spec) != "null"
}

// summarize counts the windows of a finished backfill and keeps only the
// first maxKeptFailedWindows failed ones.
func (b *backfillState) summarize() {
	sum := &windowCounts{Total: len(b.Windows)}
	var kept []protocol.BackfillWindow
	for _, w := range b.Windows {
		switch w.State {
		case protocol.WindowCommitted:
			sum.Committed++
			sum.Rows += w.Rows
		case protocol.WindowFailed:
			sum.Failed++
			if len(kept) < maxKeptFailedWindows {
				kept = append(kept, w)
			}
		case protocol.WindowSkipped:
			sum.Skipped++
		default:
			sum.Other++
		}
	}
	b.Windows, b.Summary = kept, sum
	b.recount()
}
