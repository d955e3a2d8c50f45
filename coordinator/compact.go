package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// Compaction runs go through the machinery of every run: the leader plans
// them (the dataset's sink lists its rewrite groups, one task each:
// connectors.Compactor), workers rewrite the groups, and the leader
// commits the run once, through the sink's CommitCompaction instead of its
// Commit. A compaction makes no version of its dataset: the FSM moves no
// version or watermark when it commits. A run of a compact pipeline is a
// compaction; so is a run of another pipeline created by `sluice compact
// <pipeline>` (runCreateCmd.Compact), which compacts that pipeline's sink
// with the default settings and starts no downstream run.
//
// Whatever changes one dataset (the commits of the pipelines writing it,
// their rollbacks, compactions and vacuums) reaches its sink one at a time
// on the leader: under the dataset's lock, named by Compactor.Dataset,
// taken inside the pipeline's lock, never the other way round.

// compactSettings returns the compaction settings of run r, defaults
// filled in.
func (r *runState) compactSettings() protocol.CompactSettings {
	var s protocol.CompactSettings
	if r.Compact != nil {
		s = *r.Compact
	}
	return s.WithDefaults()
}

// datasetLock returns the lock of the dataset sink writes, and a function
// that releases it; a sink that is no Compactor has no dataset lock (its
// commits are serialised by the pipeline's lock only).
func (t *leaderTerm) datasetLock(sink connectors.Sink) func() {
	cp, ok := sink.(connectors.Compactor)
	if !ok {
		return func() {}
	}
	key := cp.Dataset()
	t.mu.Lock()
	if t.datasetMu == nil {
		t.datasetMu = map[string]*sync.Mutex{}
	}
	mu, ok := t.datasetMu[key]
	if !ok {
		mu = &sync.Mutex{}
		t.datasetMu[key] = mu
	}
	t.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// openCompactor opens the sink ep as a Compactor; close closes it. A
// sink without the capability is a permanent refusal.
func (t *leaderTerm) openCompactor(ctx context.Context, log *slog.Logger, ep protocol.Endpoint) (cp connectors.Compactor, close func(), err error) {
	sink, err := t.c.reg.OpenSink(ctx, ep.Kind, ep.Config)
	if err != nil {
		return nil, nil, err
	}
	close = func() {
		if err := sink.Close(); err != nil {
			log.Warn("close sink after compaction", "err", err)
		}
	}
	cp, ok := sink.(connectors.Compactor)
	if !ok {
		close()
		return nil, nil, connectors.Permanent(refuse(refusedInvalid, "a %s sink does not compact its dataset", ep.Kind))
	}
	return cp, close, nil
}

// planCompaction plans compaction run r: its dataset's rewrite groups
// become its tasks. A dataset with nothing to compact plans no task (the
// run commits at once). A failed plan fails the run.
func (t *leaderTerm) planCompaction(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	sctx, span := c.tracer.Start(runContext(ctx, r), telemetry.SpanPlan, trace.WithAttributes(
		telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID), telemetry.AttrAttempt.Int(r.attempt())))
	defer span.End()
	plan, dataset, err := t.compactionPlan(sctx, log, r.Sink, connectors.CompactRequest{
		RunID: r.ID, Pipeline: r.Pipeline, Settings: r.compactSettings(), Now: now()})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = c.reg.ScrubError(err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Warn("plan failed", "err", err)
		return t.failRun(r, "plan: "+err.Error())
	}
	span.SetAttributes(telemetry.AttrTasks.Int(len(plan.Groups)))
	if _, err := apply(c, runPlannedCmd{Run: r.ID, Partitions: plan.Groups, Time: now()}); err != nil {
		return err
	}
	files := 0
	for _, n := range plan.Files {
		files += n
	}
	log.Info("compaction planned", "dataset", dataset, "groups", len(plan.Groups), "inputs", files, "attempt", r.attempt())
	return nil
}

// compactionPlan asks the sink ep for the rewrite groups req describes,
// and names its dataset.
func (t *leaderTerm) compactionPlan(ctx context.Context, log *slog.Logger, ep protocol.Endpoint, req connectors.CompactRequest) (connectors.CompactPlan, string, error) {
	cp, closeSink, err := t.openCompactor(ctx, log, ep)
	if err != nil {
		return connectors.CompactPlan{}, "", err
	}
	defer closeSink()
	plan, err := cp.PlanCompaction(ctx, req)
	if err == nil && len(plan.Files) != len(plan.Groups) {
		err = fmt.Errorf("plan compaction of %s: %d groups, %d file counts", cp.Dataset(), len(plan.Groups), len(plan.Files))
	}
	return plan, cp.Dataset(), err
}

// commitCompaction swaps the rewritten groups of compaction run r in, on
// sink (opened by commit, which holds the dataset's lock).
func (t *leaderTerm) commitCompaction(ctx context.Context, log *slog.Logger, r *runState, sink connectors.Sink) (connectors.CommitResult, error) {
	cp, ok := sink.(connectors.Compactor)
	if !ok {
		return connectors.CommitResult{}, connectors.Permanent(fmt.Errorf("a %s sink does not compact its dataset", r.Sink.Kind))
	}
	req := connectors.CompactCommit{RunID: r.ID, Pipeline: r.Pipeline, Settings: r.compactSettings()}
	for _, ts := range r.Tasks {
		req.Groups = append(req.Groups, connectors.CompactedGroup{Group: ts.Partition,
			Output: connectors.TaskOutput{Rows: ts.Rows, Bytes: ts.Bytes, Checksum: ts.checksum(), Location: ts.Location}})
	}
	res, err := cp.CommitCompaction(ctx, req)
	if err != nil {
		return connectors.CommitResult{}, err
	}
	log.Info("compaction committed", "dataset", cp.Dataset(), "partitions", res.Partitions,
		"files_before", res.FilesBefore, "files_after", res.FilesAfter, "skipped", len(res.Skipped))
	for _, s := range res.Skipped {
		log.Warn("compaction group left out", "group", s)
	}
	return connectors.CommitResult{Location: res.Location}, nil
}

// afterCompaction vacuums the dataset of committed compaction run r
// unless its settings say not to. The commit stands whatever happens: an
// error is logged, and the next vacuum goes on from there.
func (t *leaderTerm) afterCompaction(ctx context.Context, log *slog.Logger, r *runState) {
	settings := r.compactSettings()
	if !settings.VacuumAfter() {
		return
	}
	rep, err := t.vacuum(ctx, log, r.Pipeline, r.Sink, settings, false)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("vacuum after compaction", "err", err)
		}
		return
	}
	var bytes int64
	for _, it := range rep.Removed {
		bytes += it.Bytes
	}
	log.Info("vacuumed after compaction", "removed", len(rep.Removed), "bytes", bytes, "kept_versions", len(rep.Kept))
}

// oneOffCompaction reports whether r compacts the dataset of a pipeline
// that is not a compact pipeline: its commit is no news for the
// pipelines that run after that one.
func (t *leaderTerm) oneOffCompaction(r *runState) bool {
	if r.Pattern != protocol.PatternCompact {
		return false
	}
	p, ok := t.c.fsm.pipeline(r.Pipeline)
	return ok && p.Spec.Pattern != protocol.PatternCompact
}

// vacuum vacuums the dataset sink ep of pipeline name writes, under the
// dataset's lock. The caller holds the pipeline's lock.
func (t *leaderTerm) vacuum(ctx context.Context, log *slog.Logger, name string, ep protocol.Endpoint, settings protocol.CompactSettings, dry bool) (connectors.VacuumReport, error) {
	sink, err := t.c.reg.OpenSink(ctx, ep.Kind, ep.Config)
	if err != nil {
		return connectors.VacuumReport{}, fmt.Errorf("vacuum %s: %w", name, err)
	}
	defer func() {
		if err := sink.Close(); err != nil {
			log.Warn("close sink after vacuum", "err", err)
		}
	}()
	v, ok := sink.(connectors.Vacuumer)
	if !ok {
		return connectors.VacuumReport{}, refuse(refusedInvalid, "vacuum %s: a %s sink leaves nothing to vacuum", name, ep.Kind)
	}
	defer t.datasetLock(sink)()
	return v.Vacuum(ctx, connectors.VacuumRequest{Pipeline: name, Settings: settings, DryRun: dry, Now: now(),
		Active: func(ctx context.Context) ([]string, error) { return t.activeRuns(ctx, log, sink, ep), nil }})
}

// activeRuns returns the IDs of the runs in flight that may write the
// dataset of sink (opened from ep): those whose sink is ep, or names the
// same dataset; for a sink that names none (no Compactor), every run in
// flight of its kind.
func (t *leaderTerm) activeRuns(ctx context.Context, log *slog.Logger, sink connectors.Sink, ep protocol.Endpoint) []string {
	key := ""
	if cp, ok := sink.(connectors.Compactor); ok {
		key = cp.Dataset()
	}
	var ids []string
	for _, r := range t.c.fsm.runs(func(r *runState) bool { return !r.finished() && r.Sink.Kind == ep.Kind }) {
		if string(r.Sink.Config) == string(ep.Config) {
			ids = append(ids, r.ID)
			continue
		}
		if key == "" {
			// A sink that names no dataset: any run of its kind may
			// write there.
			ids = append(ids, r.ID)
			continue
		}
		other, err := t.c.reg.OpenSink(ctx, r.Sink.Kind, r.Sink.Config)
		if err != nil {
			// Whether it writes here is unknown: keep what it may own.
			ids = append(ids, r.ID)
			continue
		}
		if cp, ok := other.(connectors.Compactor); !ok || cp.Dataset() == key {
			ids = append(ids, r.ID)
		}
		if err := other.Close(); err != nil {
			log.Warn("close sink", "err", err)
		}
	}
	return ids
}

// apiCompact serves the compact verb: a run of a compact pipeline, or a
// compaction of another pipeline's dataset; DryRun only plans it.
func (t *leaderTerm) apiCompact(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.CompactRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, err := t.pipelineNamed(req.Pipeline)
	if err != nil {
		return nil, err
	}
	ep := p.Spec.Sink
	if p.Spec.Pattern != protocol.PatternCompact && (p.Spec.Streamed() || !c.reg.Has(ep.Kind, connectors.RoleDataset)) {
		return nil, invalid("compact %s: its %s sink (%s) is no dataset Sluice compacts (kinds: %v); apply a compact pipeline naming the dataset instead",
			req.Pipeline, p.Spec.Pattern, kindOrNone(ep.Kind), c.reg.KindsOf(connectors.RoleDataset))
	}
	reply := protocol.CompactReply{Pipeline: req.Pipeline, Groups: []protocol.CompactGroup{}}
	log := c.log.With("pipeline", req.Pipeline)
	if req.DryRun {
		settings := p.Spec.CompactSettings()
		plan, dataset, err := t.compactionPlan(ctx, log, ep, connectors.CompactRequest{Pipeline: req.Pipeline, Settings: settings, Now: now()})
		if err != nil {
			return nil, invalid("compact %s --dry-run: %v", req.Pipeline, err)
		}
		reply.Dataset = dataset
		for i, g := range plan.Groups {
			reply.Groups = append(reply.Groups, protocol.CompactGroup{Key: g.Key, Files: plan.Files[i], Bytes: g.Bytes})
		}
		return reply, nil
	}
	id := ""
	if req.RequestID != "" {
		id, _ = c.fsm.requestRun(req.RequestID)
	}
	if id == "" {
		out, err := t.createRun(ctx, runCreateCmd{Pipeline: req.Pipeline, RequestID: req.RequestID, Time: now(),
			Compact: p.Spec.Pattern != protocol.PatternCompact})
		if err != nil {
			return nil, err
		}
		id = out.RunID
	}
	reply.RunID = id
	// Reply once the run is planned (or failed planning), with its groups.
	wctx, cancel := context.WithTimeout(ctx, planWait)
	defer cancel()
	for {
		changed := c.fsm.watch()
		r, ok := c.fsm.run(id)
		if !ok || r.Planned || r.finished() {
			if ok {
				for _, ts := range r.Tasks {
					reply.Groups = append(reply.Groups, protocol.CompactGroup{Key: ts.Partition.Key, Bytes: ts.Partition.Bytes})
				}
			}
			return reply, nil
		}
		select {
		case <-changed:
		case <-wctx.Done():
			return reply, nil
		}
	}
}

// pipelineNamed returns the pipeline a request names.
func (t *leaderTerm) pipelineNamed(name string) (*pipelineState, error) {
	if !protocol.ValidName(name) {
		return nil, invalid("pipeline: %q is not a valid pipeline name", name)
	}
	p, ok := t.c.fsm.pipeline(name)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", name)
	}
	return p, nil
}

func kindOrNone(kind string) string {
	if kind == "" {
		return "none"
	}
	return kind
}

// apiVacuum serves the vacuum verb: the dataset of a compact pipeline,
// with its settings, or the sink of another pipeline, with the defaults;
// under the pipeline's lock, so that none of its commits or rollbacks
// runs meanwhile.
func (t *leaderTerm) apiVacuum(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.VacuumRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, err := t.pipelineNamed(req.Pipeline)
	if err != nil {
		return nil, err
	}
	if p.Spec.Streamed() {
		return nil, invalid("vacuum %s: a %s pipeline has no dataset of runs to vacuum; vacuum a change log with a compact pipeline naming it", req.Pipeline, p.Spec.Pattern)
	}
	log := c.log.With("pipeline", req.Pipeline)
	mu := t.pipelineLock(req.Pipeline)
	mu.Lock()
	defer mu.Unlock()
	rep, err := t.vacuum(ctx, log, req.Pipeline, p.Spec.Sink, p.Spec.CompactSettings(), req.DryRun)
	if err != nil {
		if refusalOf(err) != nil {
			return nil, err
		}
		return nil, fmt.Errorf("vacuum %s: %w", req.Pipeline, err)
	}
	reply := protocol.VacuumReply{Pipeline: req.Pipeline, DryRun: req.DryRun, Removed: rep.Removed, Kept: rep.Kept}
	if reply.Removed == nil {
		reply.Removed = []protocol.VacuumItem{}
	}
	for _, it := range rep.Removed {
		reply.Bytes += it.Bytes
		reply.Files += it.Files
	}
	if !req.DryRun {
		log.Info("vacuumed", "removed", len(rep.Removed), "bytes", reply.Bytes, "kept_versions", len(rep.Kept))
	}
	return reply, nil
}
