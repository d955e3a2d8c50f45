package coordinator

import (
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

// The stream state of cdc and cdc_apply pipelines: leases and the initial
// snapshot.

// applyTo grants the lease of a streamed pipeline under the next epoch.
func (c leaseGrantCmd) applyTo(s *state) (noReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return noReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	if !p.Spec.Streamed() {
		return noReply{}, refuse(refusedInvalid, "grant lease of %q: pattern %s does not stream", c.Pipeline, p.Spec.Pattern)
	}
	st := p.stream()
	if c.Epoch != st.Epoch+1 {
		return noReply{}, refuse(refusedConflict, "grant lease of %q: epoch %d, want %d", c.Pipeline, c.Epoch, st.Epoch+1)
	}
	st.Worker, st.Epoch, st.Revision, st.Granted = c.Worker, c.Epoch, c.Revision, c.Time
	return noReply{}, nil
}

// stream returns the stream state of p, creating it.
func (p *pipelineState) stream() *streamState {
	if p.Stream == nil {
		p.Stream = &streamState{}
	}
	return p.Stream
}

// checkSnapshotRun refuses the initial snapshot run c of pipeline p unless
// p is a cdc pipeline with an initial snapshot still to load and no run
// loading it.
func (s *state) checkSnapshotRun(p *pipelineState, c runCreateCmd) error {
	if !p.Spec.InitialSnapshot() || c.Source == nil || c.Sink == nil {
		return refuse(refusedInvalid, "create snapshot run of %q: not a cdc pipeline with an initial snapshot", c.Pipeline)
	}
	st := p.stream()
	if st.SnapshotDone {
		return refuse(refusedConflict, "create snapshot run of %q: the snapshot is done", c.Pipeline)
	}
	if r, ok := s.Runs[st.SnapshotRun]; ok && !r.finished() {
		return refuse(refusedConflict, "create snapshot run of %q: run %s is loading it", c.Pipeline, r.ID)
	}
	return nil
}

// snapshotStarted records run id as the latest attempt at the snapshot.
func (st *streamState) snapshotStarted(id string) {
	st.SnapshotRun = id
	st.SnapshotAttempts++
}

// maxSnapshotted bounds the incremental snapshots a stream's state keeps
// after they were taken.
const maxSnapshotted = 20

// applyTo records the tables of a cdc pipeline and adds snapshots to take.
func (c streamTablesCmd) applyTo(s *state) (streamTablesReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return streamTablesReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	if p.Spec.Pattern != protocol.PatternCDC {
		return streamTablesReply{}, refuse(refusedInvalid, "%q is a %s pipeline: only a cdc pipeline has tables to snapshot", c.Pipeline, p.Spec.Pattern)
	}
	st := p.stream()
	if c.Tables != nil {
		st.Tables = slices.Clone(c.Tables)
		// A snapshot of a table no longer captured is dropped.
		st.Snapshots = slices.DeleteFunc(slices.Clone(st.Snapshots), func(ts protocol.TableSnapshot) bool { return !slices.Contains(c.Tables, ts.Table) })
	}
	for _, a := range c.Add {
		if a.ID == "" || slices.ContainsFunc(st.Snapshots, func(ts protocol.TableSnapshot) bool { return ts.Table == a.Table || ts.ID == a.ID }) {
			continue
		}
		if a.Requested.IsZero() {
			a.Requested = c.Time
		}
		st.Snapshots = append(slices.Clip(st.Snapshots), a)
	}
	for _, a := range c.Unread {
		if a.Requested.IsZero() {
			a.Requested = c.Time
		}
		st.Snapshotted = append(slices.Clip(st.Snapshotted), snapshotTaken{TableSnapshot: a, Done: c.Time})
		if n := len(st.Snapshotted); n > maxSnapshotted {
			st.Snapshotted = slices.Clone(st.Snapshotted[n-maxSnapshotted:])
		}
	}
	if len(st.Snapshots) == 0 {
		st.Snapshots = nil // as a restored state has it
	}
	return streamTablesReply{Pending: slices.Clone(st.Snapshots)}, nil
}

// applyTo moves an incremental snapshot from pending to taken.
func (c snapshotDoneCmd) applyTo(s *state) (noReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok || p.Stream == nil {
		return noReply{}, refuse(refusedNotFound, "pipeline %q has no stream", c.Pipeline)
	}
	st := p.Stream
	i := slices.IndexFunc(st.Snapshots, func(ts protocol.TableSnapshot) bool { return ts.ID == c.ID })
	if i < 0 {
		return noReply{}, nil // recorded before
	}
	st.Snapshotted = append(slices.Clip(st.Snapshotted), snapshotTaken{TableSnapshot: st.Snapshots[i], Rows: c.Rows, Error: c.Error, Throttled: c.Throttled, ThrottledSeconds: c.ThrottledSeconds, Done: c.Time})
	if n := len(st.Snapshotted); n > maxSnapshotted {
		st.Snapshotted = slices.Clone(st.Snapshotted[n-maxSnapshotted:])
	}
	st.Snapshots = slices.Delete(slices.Clone(st.Snapshots), i, i+1)
	if len(st.Snapshots) == 0 {
		st.Snapshots = nil // as a restored state has it
	}
	return noReply{}, nil
}
