package coordinator

import (
	"fmt"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// applyTo records a rollback's intent, or its outcome. An intent is
// refused for a pipeline whose pattern keeps no versions, for a version
// never assigned, and while another rollback of the pipeline is pending;
// an intent repeating the request id of the pipeline's last rollback
// changes nothing and replies Reused. The outcome of a rollback the sink
// carried out exposes To; one with an Error leaves the version as it was.
func (c pipelineRollbackCmd) applyTo(s *state) (pipelineRollbackReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return pipelineRollbackReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	last := p.Rollback
	if c.Done {
		if !last.pending() || last.To != c.To {
			return pipelineRollbackReply{}, refuse(refusedConflict, "rollback of %q to version %d: no such rollback is in progress", c.Pipeline, c.To)
		}
		last.Done, last.Error, last.Finished = true, c.Error, c.Time
		if c.Error == "" {
			p.Version = c.To
		}
		return pipelineRollbackReply{From: last.From, Version: p.Version}, nil
	}
	if c.RequestID != "" && last != nil && last.RequestID == c.RequestID {
		return pipelineRollbackReply{From: last.From, Version: p.Version, Reused: true}, nil
	}
	if msg := rollbackRefusal(p.Spec); msg != "" {
		return pipelineRollbackReply{}, refuse(refusedInvalid, "%s", msg)
	}
	if last.pending() {
		return pipelineRollbackReply{}, refuse(refusedConflict, "rollback of %q to version %d: its rollback to version %d is not finished yet", c.Pipeline, c.To, last.To)
	}
	if newest := max(p.VersionSeq, p.Version); c.To < 1 || c.To > newest {
		return pipelineRollbackReply{}, refuse(refusedInvalid, "rollback of %q: version %d was never committed (newest: %d)", c.Pipeline, c.To, newest)
	}
	p.Rollback = &rollbackState{To: c.To, From: p.Version, RequestID: c.RequestID, Sink: p.Spec.Sink, Requested: c.Time}
	return pipelineRollbackReply{From: p.Version, Version: p.Version}, nil
}

// rollbackRefusal says, in the user's terms, why the dataset of a pipeline
// of spec's pattern cannot be rolled back; "" when it can (a full load:
// each run commits a new version of the whole dataset).
func rollbackRefusal(spec pipeline.Spec) string {
	switch {
	case spec.RunPattern() == protocol.PatternFullLoad:
		return ""
	case spec.RunPattern() == protocol.PatternIncremental:
		return fmt.Sprintf("pipeline %s is incremental: each run replaces the rows of its window in one dataset, which keeps no versions to roll back to (load a window again with `sluice run %s --window FROM,TO`)", spec.Name, spec.Name)
	case spec.Streamed():
		return fmt.Sprintf("pipeline %s streams changes continuously (pattern %s): its target keeps no versions to roll back to", spec.Name, spec.Pattern)
	}
	return fmt.Sprintf("pipeline %s (pattern %s) keeps no dataset versions to roll back to", spec.Name, spec.Pattern)
}
