package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// A rollback exposes an earlier kept version of a full load's dataset
// again, through the sink's connectors.Versioned capability. The leader
// serialises it with the pipeline's commits (the pipeline lock) and
// records it in two entries, its intent before the sink is asked and its
// outcome after (pipelineRollbackCmd), so that `sluice status` shows the
// exposed version at once and a leader that dies in between leaves the
// rollback to the next one, which finishes it before it commits anything
// of the pipeline. Version numbers stay unique: the next commit gets the
// next new number.

// apiRollback serves the rollback verb: it exposes version req.To of the
// pipeline's dataset, or the newest kept version older than the exposed
// one, and replies with the versions the sink keeps.
func (t *leaderTerm) apiRollback(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.RollbackRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if !protocol.ValidName(req.Pipeline) {
		return nil, invalid("pipeline: %q is not a valid pipeline name", req.Pipeline)
	}
	if req.To < 0 {
		return nil, invalid("to: want a version number of at least 1, not %d", req.To)
	}
	name := req.Pipeline
	p, ok := c.fsm.pipeline(name)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", name)
	}
	if msg := rollbackRefusal(p.Spec); msg != "" {
		return nil, invalid("%s", msg)
	}
	log := c.log.With("pipeline", name)
	mu := t.pipelineLock(name)
	mu.Lock()
	defer mu.Unlock()

	// A rollback recorded before this request goes first: this request
	// repeated, or another one whose leader died before its outcome.
	if _, err := t.finishRollback(ctx, log, name); err != nil && refusalOf(err) == nil {
		return nil, steppingDown(ctx, name, err)
	}
	if p, ok = c.fsm.pipeline(name); !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", name)
	}
	if last := p.Rollback; req.RequestID != "" && last != nil && last.RequestID == req.RequestID {
		return t.rollbackReply(ctx, log, p, *last)
	}

	vs, closeSink, err := t.openVersioned(ctx, log, name, p.Spec.Sink)
	if err != nil {
		return nil, err
	}
	kept, err := vs.Versions(ctx)
	closeSink()
	if err != nil {
		return nil, steppingDown(ctx, name, fmt.Errorf("rollback %s: list the versions of its sink: %w", name, err))
	}
	exposed := p.Version
	for _, k := range kept {
		if k.Exposed {
			exposed = k.Version
		}
	}
	to, err := rollbackTarget(p, req.To, exposed, kept)
	if err != nil {
		return nil, err
	}
	if to == exposed && to == p.Version {
		return protocol.RollbackReply{Pipeline: name, From: to, Version: to, Versions: kept}, nil
	}
	if _, err := apply(c, pipelineRollbackCmd{Pipeline: name, To: to, RequestID: req.RequestID, Time: now()}); err != nil {
		return nil, err
	}
	log.Info("rollback recorded", "from", p.Version, "to", to)
	last, err := t.finishRollback(ctx, log, name)
	if err != nil {
		return nil, steppingDown(ctx, name, err)
	}
	if p, ok = c.fsm.pipeline(name); !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", name)
	}
	return t.rollbackReply(ctx, log, p, last)
}

// rollbackTarget returns the version a rollback of p exposes: asked, or
// when asked is 0 the newest kept version older than exposed. A version the
// sink does not keep is refused, saying why as far as the cluster knows.
func rollbackTarget(p *pipelineState, asked, exposed int64, kept []connectors.Version) (int64, error) {
	name := p.Spec.Name
	if len(kept) == 0 {
		return 0, invalid("rollback %s: its sink keeps no version yet: nothing was committed", name)
	}
	if asked == 0 {
		var to int64
		for _, k := range kept {
			if k.Version < exposed {
				to = k.Version
			}
		}
		if to == 0 {
			return 0, invalid("rollback %s: no kept version older than the exposed version %d (%s)", name, exposed, connectors.DescribeKept(kept))
		}
		return to, nil
	}
	if slices.ContainsFunc(kept, func(k connectors.Version) bool { return k.Version == asked }) {
		return asked, nil
	}
	why := "is not kept: pruned by keep_versions, or its run did not commit"
	newest := max(p.VersionSeq, p.Version, kept[len(kept)-1].Version)
	switch {
	case asked > newest:
		why = fmt.Sprintf("was never committed (newest: %d)", newest)
	case slices.ContainsFunc(p.Versions, func(r versionRecord) bool { return r.Version == asked }):
		why = "is not kept: pruned by keep_versions"
	}
	return 0, invalid("rollback %s: version %d %s (%s)", name, asked, why, connectors.DescribeKept(kept))
}

// finishRollback finishes the rollback of pipeline name recorded and not
// finished, if any: it asks the sink to expose the version (retrying
// transient failures) and records the outcome. The caller holds the
// pipeline's lock. It returns the rollback as finished (the zero value
// when none was pending). A rollback the sink refused is recorded as such,
// the exposed version unchanged, and returned as a refusal; one that
// failed otherwise stays pending, for the next call.
func (t *leaderTerm) finishRollback(ctx context.Context, log *slog.Logger, name string) (rollbackState, error) {
	p, ok := t.c.fsm.pipeline(name)
	if !ok || !p.Rollback.pending() {
		return rollbackState{}, nil
	}
	rb := *p.Rollback
	err := t.expose(ctx, log, name, rb)
	if err != nil && !connectors.IsPermanent(err) {
		return rb, fmt.Errorf("rollback %s to version %d (recorded, the leader finishes it): %w", name, rb.To, err)
	}
	cmd := pipelineRollbackCmd{Pipeline: name, To: rb.To, Done: true, Time: now()}
	if err != nil {
		cmd.Error = t.c.reg.Scrub(err.Error())
	}
	if _, aerr := apply(t.c, cmd); aerr != nil {
		return rb, aerr
	}
	rb.Done, rb.Error, rb.Finished = true, cmd.Error, cmd.Time
	if err != nil {
		log.Warn("rollback refused by the sink", "to", rb.To, "err", err)
		return rb, refuse(refusedInvalid, "rollback %s to version %d: %v", name, rb.To, err)
	}
	log.Info("rollback done", "from", rb.From, "version", rb.To)
	return rb, nil
}

// expose asks the sink of rollback rb to expose its version, retrying
// transient failures with backoff.
func (t *leaderTerm) expose(ctx context.Context, log *slog.Logger, name string, rb rollbackState) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := func() error {
			vs, closeSink, err := t.openVersioned(ctx, log, name, rb.Sink)
			if err != nil {
				return err
			}
			defer closeSink()
			if sink, ok := vs.(connectors.Sink); ok {
				defer t.datasetLock(sink)()
			}
			return vs.Expose(ctx, rb.To)
		}()
		if err == nil || connectors.IsPermanent(err) || ctx.Err() != nil || attempt == commitAttempts {
			return err
		}
		log.Warn("expose version", "to", rb.To, "attempt", attempt, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff *= 2
	}
}

// openVersioned opens sink ep of pipeline name and returns its Versioned
// capability and a function that closes it. A sink without the capability
// is refused (a permanent refusal: no attempt will change it).
func (t *leaderTerm) openVersioned(ctx context.Context, log *slog.Logger, name string, ep protocol.Endpoint) (connectors.Versioned, func(), error) {
	sink, err := t.c.reg.OpenSink(ctx, ep.Kind, ep.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("rollback %s: %w", name, err)
	}
	closeSink := func() {
		if err := sink.Close(); err != nil {
			log.Warn("close sink after rollback", "err", err)
		}
	}
	vs, ok := sink.(connectors.Versioned)
	if !ok {
		closeSink()
		return nil, nil, connectors.Permanent(refuse(refusedInvalid, "pipeline %s: its %s sink keeps no earlier versions, so there is nothing to roll back to", name, ep.Kind))
	}
	return vs, closeSink, nil
}

// rollbackReply answers a rollback request with rollback rb of p: the
// versions the sink keeps now, or the sink's refusal.
func (t *leaderTerm) rollbackReply(ctx context.Context, log *slog.Logger, p *pipelineState, rb rollbackState) (protocol.RollbackReply, error) {
	name := p.Spec.Name
	if rb.Error != "" {
		return protocol.RollbackReply{}, invalid("rollback %s to version %d: %s", name, rb.To, rb.Error)
	}
	reply := protocol.RollbackReply{Pipeline: name, From: rb.From, Version: p.Version, Versions: []connectors.Version{}}
	vs, closeSink, err := t.openVersioned(ctx, log, name, rb.Sink)
	if err != nil {
		return reply, err
	}
	defer closeSink()
	if kept, err := vs.Versions(ctx); err == nil {
		reply.Versions = kept
	} else {
		log.Warn("list versions after rollback", "err", err)
	}
	return reply, nil
}

// finishRollbacks finishes the rollbacks recorded and not finished, each
// under its pipeline's lock; a pipeline whose lock a commit or a rollback
// holds is left to that one, which finishes it first.
func (t *leaderTerm) finishRollbacks(ctx context.Context) {
	for _, name := range t.c.fsm.pendingRollbacks() {
		mu := t.pipelineLock(name)
		if !mu.TryLock() {
			continue
		}
		log := t.c.log.With("pipeline", name)
		_, err := t.finishRollback(ctx, log, name)
		mu.Unlock()
		if err != nil && refusalOf(err) == nil && ctx.Err() == nil {
			log.Warn("finish rollback", "err", err)
		}
	}
}

// steppingDown returns err, or, when the term ended meanwhile (this
// leader is stepping down), an error the control API answers as "not
// leader", so that the client asks the next leader, which finishes the
// rollback.
func steppingDown(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("rollback %s: %w (%v)", name, raft.ErrLeadershipLost, err)
	}
	return err
}
