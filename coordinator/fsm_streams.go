package coordinator

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
