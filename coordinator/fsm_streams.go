package coordinator

import (
	"fmt"
)

func (s *state) leaseGrant(c leaseGrantCmd) any {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return fmt.Errorf("grant lease of %q: %w", c.Pipeline, errNoPipeline)
	}
	if !p.Spec.Streamed() {
		return fmt.Errorf("grant lease of %q: pattern %s does not stream: %w", c.Pipeline, p.Spec.Pattern, errInvalidCmd)
	}
	st := p.stream()
	if c.Epoch != st.Epoch+1 {
		return fmt.Errorf("grant lease of %q: epoch %d, want %d: %w", c.Pipeline, c.Epoch, st.Epoch+1, errConflict)
	}
	st.Worker, st.Epoch, st.Revision, st.Granted = c.Worker, c.Epoch, c.Revision, c.Time
	return applyResult{Changed: true}
}
