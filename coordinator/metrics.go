package coordinator

import (
	"context"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// observeRun records the end of run r in the metrics (the leader, once the
// end is announced).
func (c *Coordinator) observeRun(r *runState) {
	m := c.cfg.Metrics
	if m == nil {
		return
	}
	var rows, bytes int64
	attempts := make([]int, 0, len(r.Tasks))
	for _, ts := range r.Tasks {
		rows += ts.Rows
		bytes += ts.Bytes
		attempts = append(attempts, ts.Attempts)
	}
	m.RunEnded(r.Pipeline, r.State, r.Finished.Sub(r.Created), rows, bytes, attempts)
}

// clusterState is what the metrics report of the cluster at a scrape:
// the leader's view of the Sluice streams, the runs and the workers.
func (c *Coordinator) clusterState(ctx context.Context) telemetry.ClusterState {
	s := telemetry.ClusterState{Leading: c.IsLeader()}
	if !s.Leading {
		return s
	}
	s.Streams = map[string]uint64{}
	for _, name := range []string{protocol.StreamTasks, protocol.StreamResults, protocol.StreamDLQ, protocol.StreamTriggers, protocol.StreamCDC} {
		// Looking a stream up fetches its info.
		st, err := c.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		s.Streams[name] = st.CachedInfo().State.Msgs
	}
	s.ActiveRuns = c.fsm.activeRuns()
	for _, w := range c.liveWorkers() {
		s.Workers++
		s.Slots += w.Slots
		s.Busy += w.Busy
	}
	return s
}

// activeRuns counts the runs not finished, by pipeline.
func (f *fsm) activeRuns() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[string]int{}
	for _, r := range f.st.Runs {
		if !r.finished() {
			out[r.Pipeline]++
		}
	}
	return out
}

// observeLeader counts the Raft leader changes r sees until the returned
// function is called.
func (c *Coordinator) observeLeader(r *raft.Raft) (stop func()) {
	m := c.cfg.Metrics
	if m == nil {
		return func() {}
	}
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		last := raft.ServerID("")
		for {
			select {
			case <-done:
				return
			case o := <-ch:
				lo := o.Data.(raft.LeaderObservation)
				if lo.LeaderID != "" && lo.LeaderID != last {
					m.LeaderChanged()
				}
				if lo.LeaderID != "" {
					last = lo.LeaderID
				}
			}
		}
	}()
	return func() {
		r.DeregisterObserver(obs)
		close(done)
		<-exited
	}
}

// upstreamLink is the link of a run started by `after:` to the trace of
// its upstream run, when the FSM still holds that run.
func (c *Coordinator) upstreamLink(ctx context.Context, trig *protocol.TriggerContext) (trace.Link, bool) {
	if trig == nil || trig.After == nil {
		return trace.Link{}, false
	}
	up, ok := c.fsm.run(trig.After.RunID)
	if !ok {
		return trace.Link{}, false
	}
	sc := trace.SpanContextFromContext(telemetry.ExtractMap(ctx, up.Trace))
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
		telemetry.AttrLink.String(telemetry.LinkUpstream), telemetry.AttrPipeline.String(up.Pipeline), telemetry.AttrRun.String(up.ID)}}, true
}

// snapshotTrace is the trace context of the snapshot run of cdc pipeline
// p (for a cdc_apply pipeline, of its upstream's), which the spans of the
// stream's batches link to; nil when the FSM holds no such run.
func (c *Coordinator) snapshotTrace(p *pipelineState) map[string]string {
	if p.Spec.Pattern == protocol.PatternCDCApply {
		up, ok := c.fsm.pipeline(p.Spec.StreamSettings().Upstream)
		if !ok {
			return nil
		}
		p = up
	}
	if p.Stream == nil || p.Stream.SnapshotRun == "" {
		return nil
	}
	r, ok := c.fsm.run(p.Stream.SnapshotRun)
	if !ok {
		return nil
	}
	return r.Trace
}
