package coordinator

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
