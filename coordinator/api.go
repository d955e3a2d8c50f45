package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// API error codes, as in protocol.APIError.
const (
	codeInvalid   = "invalid"
	codeNotFound  = "not_found"
	codeNotLeader = "not_leader"
	codeInternal  = "internal"
	// codeConflict: the request does not fit the pipeline's state now
	// (a live incremental run or a backfill still in flight).
	codeConflict = "conflict"
)

// maxBackfillConcurrency bounds the windows of one backfill loading at
// once; defaultBackfillConcurrency is used when the request sets none.
const (
	maxBackfillConcurrency     = 64
	defaultBackfillConcurrency = 2
)

// planWait bounds how long a run request waits for the run's plan before
// it replies.
const planWait = 30 * time.Second

// invalid refuses a request that asks for something impossible.
func invalid(format string, args ...any) error {
	return refuse(refusedInvalid, format, args...)
}

// apiCode is the API error code (protocol.APIError.Code) of a refusal.
func apiCode(c refusalCode) string {
	switch c {
	case refusedNotFound:
		return codeNotFound
	case refusedInvalid:
		return codeInvalid
	case refusedConflict, refusedRunState:
		return codeConflict
	}
	return codeInternal
}

func respondError(m *nats.Msg, code, msg string) {
	b, _ := json.Marshal(protocol.APIError{Error: msg, Code: code})
	m.Respond(b)
}

// serveAPI handles one control API request.
func (t *leaderTerm) serveAPI(ctx context.Context, m *nats.Msg) {
	c := t.c
	verb := strings.TrimPrefix(m.Subject, protocol.SubjectAPIPrefix)
	var reply any
	var err error
	switch verb {
	case protocol.VerbApply:
		reply, err = t.apiApply(ctx, m.Data)
	case protocol.VerbRun:
		reply, err = t.apiRun(ctx, m.Data)
	case protocol.VerbStatus:
		reply, err = t.apiStatus(m.Data)
	case protocol.VerbRunStatus:
		reply, err = t.apiRunGet(m.Data)
	case protocol.VerbPipelines:
		reply, err = t.apiPipelines()
	case protocol.VerbBackfill:
		reply, err = t.apiBackfill(ctx, m.Data)
	case protocol.VerbBackfillGet:
		reply, err = t.apiBackfillGet(m.Data)
	case protocol.VerbBackfills:
		reply, err = t.apiBackfills(m.Data)
	case protocol.VerbLeaseRenew:
		reply, err = t.apiLeaseRenew(m.Data)
	case protocol.VerbCDCStatus:
		reply, err = t.apiCDCStatus()
	case protocol.VerbStreamPurge:
		reply, err = t.apiStreamPurge(ctx, m.Data)
	case protocol.VerbStreamConsumer:
		reply, err = t.apiStreamConsumer(ctx, m.Data)
	case protocol.VerbCDCResnapshot:
		reply, err = t.apiCDCResnapshot(m.Data)
	case protocol.VerbDelete:
		reply, err = t.apiDelete(m.Data)
	case protocol.VerbRollback:
		reply, err = t.apiRollback(ctx, m.Data)
	case protocol.VerbPipelineGet:
		reply, err = t.apiPipelineGet(m.Data)
	case protocol.VerbCheck:
		reply, err = t.apiCheck(ctx, m.Data)
	case protocol.VerbCompact:
		reply, err = t.apiCompact(ctx, m.Data)
	case protocol.VerbVacuum:
		reply, err = t.apiVacuum(ctx, m.Data)
	default:
		err = refuse(refusedNotFound, "unknown API verb %q", verb)
	}
	if err != nil {
		rf := refusalOf(err)
		switch {
		case rf != nil:
			respondError(m, apiCode(rf.code), rf.msg)
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			respondError(m, codeNotLeader, err.Error())
		default:
			c.log.Warn("control API", "verb", verb, "err", err)
			respondError(m, codeInternal, err.Error())
		}
		return
	}
	b, err := json.Marshal(reply)
	if err != nil {
		respondError(m, codeInternal, err.Error())
		return
	}
	if err := m.Respond(b); err != nil {
		c.log.Debug("respond", "verb", verb, "err", err)
	}
}

func decodeRequest(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return invalid("request: %v", err)
	}
	return nil
}

// checkSpec checks a spec as the leader stores it: the fields every spec
// has, then the connector configurations against the registry.
func checkSpec(spec pipeline.Spec, reg *connectors.Registry) error {
	var problems []pipeline.Problem
	if err := spec.Validate(reg, os.LookupEnv); err != nil {
		var pe *pipeline.Error
		if !errors.As(err, &pe) {
			return err
		}
		problems = append(problems, pe.Problems...)
	}
	if len(problems) > 0 {
		return &pipeline.Error{File: spec.Name, Problems: problems}
	}
	return nil
}

// apiApply stores a spec, checked first against the connectors when the
// request asks (nothing is stored when a check fails), or only checked for
// a dry run.
func (t *leaderTerm) apiApply(ctx context.Context, data []byte) (any, error) {
	var req protocol.ApplyRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if len(req.Spec) == 0 {
		return nil, invalid("spec: is required")
	}
	var spec pipeline.Spec
	if err := json.Unmarshal(req.Spec, &spec); err != nil {
		return nil, invalid("spec: %v", err)
	}
	if err := checkSpec(spec, t.c.reg); err != nil {
		return nil, invalid("%v", err)
	}
	if spec.Pattern == protocol.PatternCDCApply {
		// A misspelt upstream would apply nothing, silently, forever.
		upstream := spec.ApplyUpstream()
		if up, ok := t.c.fsm.pipeline(upstream); (!ok || up.Spec.Pattern != protocol.PatternCDC) && !(req.DryRun && req.Along[upstream] == protocol.PatternCDC) {
			return nil, invalid("%s: source.pipeline: %q is not a cdc pipeline of this cluster (apply it first)", spec.Name, upstream)
		}
	}
	for _, cl := range t.c.fsm.cleanups() {
		// A cleanup would drop what the new pipeline uses.
		if cl.Pipeline == spec.Name || spec.Pattern == protocol.PatternCDC && cl.Slot == spec.SlotName() {
			return nil, refuse(refusedConflict, "%s: the deleted pipeline %s is still being cleaned up (%s); apply again once `sluice cdc status` no longer lists that", spec.Name, cl.Pipeline, cl.what())
		}
	}
	var checked []string
	if req.Check {
		found, err := checkConnectors(ctx, t.c.reg, spec)
		if err != nil {
			return nil, invalid("%v", err)
		}
		checked = found
	}
	if req.DryRun {
		return protocol.ApplyReply{Pipeline: spec.Name, Checked: checked, DryRun: true}, nil
	}
	out, err := apply(t.c, pipelinePutCmd{Spec: spec, Time: now()})
	if err != nil {
		return nil, err
	}
	t.c.log.Info("pipeline applied", "pipeline", spec.Name, "revision", out.Revision)
	return protocol.ApplyReply{Pipeline: spec.Name, Revision: out.Revision, Created: out.Created, Checked: checked}, nil
}

func (t *leaderTerm) apiDelete(data []byte) (any, error) {
	var req protocol.DeleteRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if _, ok := t.c.fsm.pipeline(req.Pipeline); !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	out, err := apply(t.c, pipelineDeleteCmd{Name: req.Pipeline, Time: now()})
	if err != nil {
		return nil, err
	}
	reply := protocol.DeleteReply{Pipeline: req.Pipeline}
	for _, cl := range t.c.fsm.cleanups() {
		if cl.Pipeline == req.Pipeline {
			reply.Cleanup = cl.what()
		}
	}
	t.c.log.Info("pipeline deleted", "pipeline", req.Pipeline, "revision", out.Revision, "cleanup", reply.Cleanup)
	return reply, nil
}

func (t *leaderTerm) apiRun(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.RunRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	id, upToDate, err := t.startRun(ctx, req, nil)
	if err != nil || upToDate != nil {
		return upToDate, err
	}
	// Reply once the run is planned (or failed planning).
	wctx, cancel := context.WithTimeout(ctx, planWait)
	defer cancel()
	for {
		changed := c.fsm.watch()
		r, ok := c.fsm.run(id)
		if !ok {
			return protocol.RunReply{RunID: id}, nil
		}
		if r.Planned || r.finished() {
			return protocol.RunReply{RunID: id, Tasks: len(r.Tasks), Window: r.Window}, nil
		}
		if r.State == protocol.RunWaiting {
			return protocol.RunReply{RunID: id, Window: r.Window, WaitingFor: r.WaitingFor}, nil
		}
		select {
		case <-changed:
		case <-wctx.Done():
			return protocol.RunReply{RunID: id, Window: r.Window}, nil
		}
	}
}

func (t *leaderTerm) apiBackfill(ctx context.Context, data []byte) (any, error) {
	c := t.c
	var req protocol.BackfillRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if !protocol.ValidName(req.Pipeline) {
		return nil, invalid("pipeline: %q is not a valid pipeline name", req.Pipeline)
	}
	if req.RequestID != "" {
		if id, ok := c.fsm.requestBackfill(req.RequestID); ok {
			if b, ok := c.fsm.backfillByID(id); ok {
				return backfillStatus(b), nil
			}
		}
	}
	p, ok := c.fsm.pipeline(req.Pipeline)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	if p.Spec.RunPattern() != protocol.PatternIncremental || p.Spec.Incremental == nil {
		return nil, invalid("pipeline %s is %s: only an incremental pipeline can be backfilled", req.Pipeline, p.Spec.Pattern)
	}
	if inc := p.Spec.Incremental; inc.Positioned() {
		return nil, invalid("pipeline %s is read by its source's position (incremental.by: %s): it has no windows to backfill; each run loads what is new since the watermark", req.Pipeline, inc.By)
	}
	cmd := backfillCmd{Pipeline: req.Pipeline, Replace: req.Replace, RequestID: req.RequestID, MaxAttempts: c.cfg.DefaultMaxAttempts,
		Backoff: c.cfg.DefaultBackoff, LeaderStarts: true}
	if inc := p.Spec.Incremental; inc.Values() {
		switch r := req.Range; {
		case inc.Span <= 0:
			return nil, invalid("pipeline %s has no window of values to split a backfill by: set incremental.window (a number of values)", req.Pipeline)
		case r == nil || !r.Values || r.Empty():
			return nil, invalid("range: want integer bounds lo < hi (the delta column of %s holds integers), not %v", req.Pipeline, r)
		}
		rg := protocol.ValueWindow(req.Range.Lo, req.Range.Hi)
		cmd.Range = &rg
	} else {
		from, to := req.From.UTC(), req.To.UTC()
		if req.Range != nil || from.IsZero() || !from.Before(to) {
			return nil, invalid("from and to: want times from < to, not [%s, %s)", formatWatermark(from), formatWatermark(to))
		}
		if limit := now().Add(-inc.Lag); to.After(limit) {
			return nil, invalid("to: %s is past now - lag (%s): the windows there may still receive rows; let live runs load them",
				formatWatermark(to), formatWatermark(limit))
		}
		if inc.PartitionBased() && (!onPartition(from, inc.Window) || !onPartition(to, inc.Window)) {
			return nil, invalid("from and to: [%s, %s) does not start and end on partitions of %s: the source of %s is partition-based (one partition per window)",
				formatWatermark(from), formatWatermark(to), inc.Window, req.Pipeline)
		}
		cmd.From, cmd.To = from, to
	}
	if req.Concurrency == 0 {
		req.Concurrency = defaultBackfillConcurrency
	}
	if req.Concurrency < 1 || req.Concurrency > maxBackfillConcurrency {
		return nil, invalid("concurrency: want 1 to %d, not %d", maxBackfillConcurrency, req.Concurrency)
	}
	cmd.Concurrency, cmd.Time = req.Concurrency, now()
	out, err := apply(c, cmd)
	if err != nil {
		return nil, err
	}
	// The reply shows the first windows running; what could not start now
	// starts on the next sweep.
	started, err := t.startWindows(ctx, out.Backfill)
	if err != nil {
		c.log.Warn("start backfill windows", "backfill", out.Backfill, "err", err)
	}
	b, ok := c.fsm.backfillByID(out.Backfill)
	if !ok {
		return nil, fmt.Errorf("backfill %s vanished", out.Backfill)
	}
	if !out.Reused {
		c.log.Info("backfill started", "backfill", b.ID, "windows", len(b.Windows), "started", started)
	}
	return backfillStatus(b), nil
}

func (t *leaderTerm) apiBackfillGet(data []byte) (any, error) {
	var req protocol.BackfillGetRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	b, ok := t.c.fsm.backfillByID(req.ID)
	if !ok {
		return nil, refuse(refusedNotFound, "backfill %q not found", req.ID)
	}
	return backfillStatus(b), nil
}

func backfillStatus(b *backfillState) protocol.BackfillStatus {
	s := protocol.BackfillStatus{ID: b.ID, Pipeline: b.Pipeline, From: b.From, To: b.To, Window: b.Window, Range: b.Range, Span: b.Span,
		Concurrency: b.Concurrency, Replace: b.Replace, State: b.State, Windows: b.Windows,
		Total: len(b.Windows), Created: b.Created, Finished: b.Finished}
	for _, w := range b.Windows {
		switch w.State {
		case protocol.WindowQueued:
			s.Queued++
		case protocol.WindowRunning:
			s.Running++
		case protocol.WindowCommitted:
			s.Committed++
			s.Rows += w.Rows
		case protocol.WindowFailed:
			s.Failed++
		case protocol.WindowSkipped:
			s.Skipped++
		}
	}
	if sum := b.Summary; sum != nil {
		// trimmed: only some failed windows are left
		s.Total, s.Committed, s.Failed, s.Skipped, s.Rows = sum.Total, sum.Committed, sum.Failed, sum.Skipped, sum.Rows
	}
	if len(s.Windows) > protocol.MaxWindowList {
		// the failed and running windows first: what to look at
		rank := func(w protocol.BackfillWindow) int {
			switch w.State {
			case protocol.WindowFailed, protocol.WindowRunning:
				return 0
			case protocol.WindowQueued:
				return 1
			}
			return 2
		}
		var listed []protocol.BackfillWindow
		for r := 0; r < 3 && len(listed) < protocol.MaxWindowList; r++ {
			for _, w := range b.Windows {
				if rank(w) == r {
					if listed = append(listed, w); len(listed) == protocol.MaxWindowList {
						break
					}
				}
			}
		}
		slices.SortFunc(listed, func(a, b protocol.BackfillWindow) int { return a.Window.Compare(b.Window) })
		s.Windows = listed
	}
	return s
}

func (t *leaderTerm) apiStatus(data []byte) (any, error) {
	c := t.c
	var req protocol.StatusRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if req.Limit <= 0 {
		req.Limit = 20
	}
	req.Limit = min(req.Limit, protocol.MaxStatusRuns)
	reply := protocol.StatusReply{Leader: c.LeaderID(), Pipelines: []protocol.PipelineStatus{}, Runs: []protocol.RunStatus{}, Workers: c.liveWorkers()}
	if r := c.raftNode(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				reply.Nodes = append(reply.Nodes, protocol.NodeStatus{ID: string(s.ID), Address: string(s.Address),
					Suffrage: s.Suffrage.String(), Leader: string(s.ID) == reply.Leader})
			}
		}
	}
	for _, p := range c.fsm.pipelines() {
		if req.Pipeline == "" || p.Spec.Name == req.Pipeline {
			reply.Pipelines = append(reply.Pipelines, t.pipelineStatus(p))
		}
	}
	if req.Pipeline != "" && len(reply.Pipelines) == 0 {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	runs := c.fsm.runs(func(r *runState) bool { return req.Pipeline == "" || r.Pipeline == req.Pipeline })
	for i, r := range runs {
		if i == req.Limit {
			break
		}
		reply.Runs = append(reply.Runs, t.c.withUnit(runStatus(r, false), r))
	}
	return reply, nil
}

func (t *leaderTerm) apiRunGet(data []byte) (any, error) {
	var req protocol.RunGetRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	r, ok := t.c.fsm.run(req.RunID)
	if !ok {
		return nil, refuse(refusedNotFound, "run %q not found", req.RunID)
	}
	return t.c.withUnit(runStatus(r, true), r), nil
}

// withUnit names what s.Rows counts when a passthrough run's units are
// not rows (files, records), as the source's kind calls them.
func (c *Coordinator) withUnit(s protocol.RunStatus, r *runState) protocol.RunStatus {
	if r.passthrough() {
		s.Unit = c.reg.UnitNoun(r.Source.Kind)
	}
	return s
}

func (t *leaderTerm) apiPipelines() (any, error) {
	out := []protocol.PipelineStatus{}
	for _, p := range t.c.fsm.pipelines() {
		out = append(out, t.pipelineStatus(p))
	}
	return out, nil
}

// apiPipelineGet returns a pipeline's status and its spec as stored:
// `${ENV}` references as written, never expanded (they are expanded only
// where a connector opens).
func (t *leaderTerm) apiPipelineGet(data []byte) (any, error) {
	var req protocol.PipelineGetRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, ok := t.c.fsm.pipeline(req.Pipeline)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	spec, err := json.Marshal(p.Spec)
	if err != nil {
		return nil, fmt.Errorf("encode the spec of %s: %w", req.Pipeline, err)
	}
	return protocol.PipelineGetReply{Status: t.pipelineStatus(p), Spec: spec}, nil
}

// pipelineStatus is p's status with what this term counted of its
// external trigger's events.
func (t *leaderTerm) pipelineStatus(p *pipelineState) protocol.PipelineStatus {
	s := pipelineStatus(p)
	if p.Spec.Trigger.External() {
		s.Events = t.ext.get(p.Spec.Name)
	}
	if s.Ready != nil {
		s.Ready.Checks, s.Ready.Checked = t.checks.get(p.Spec.Name)
	}
	if p.Spec.Pattern == protocol.PatternPassthrough || p.Spec.Incremental.Positioned() {
		ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
		defer cancel()
		n, ok, err := t.c.reg.Lag(ctx, p.Spec.Source.Kind, p.Spec.Source.Config, p.Watermark)
		switch {
		case err != nil:
			s.LagError = err.Error()
		case ok:
			s.Lag = &n
		}
	}
	return s
}

// lagTimeout bounds asking a source for a pipeline's lag in a status.
const lagTimeout = 3 * time.Second

func pipelineStatus(p *pipelineState) protocol.PipelineStatus {
	s := protocol.PipelineStatus{Name: p.Spec.Name, Pattern: p.Spec.Pattern, Revision: p.Revision,
		Schedule: p.Spec.Schedule, Version: p.Version, LastRun: p.LastRun, Watermark: p.Watermark}
	if p.Spec.Trigger != nil {
		s.After = p.Spec.Trigger.After
	}
	if p.Rollback.pending() {
		s.RollbackTo = p.Rollback.To
	}
	if p.Spec.Pattern == protocol.PatternReadiness {
		s.Ready, s.Watermark = &protocol.ReadyStatus{}, p.readyNext().Format(time.RFC3339)
		if r := p.Ready; r != nil {
			s.Ready.Announced = r.Seq
			if r.Last != nil {
				s.Ready.Last, s.Ready.LastTime = r.Last.Partition, r.Last.Announced
			}
			if r.Pending != nil {
				s.Ready.Pending = r.Pending.Partition
			}
		}
	}
	if p.Spec.Schedule != "" {
		if m := p.Scheduled; m != nil && m.Schedule == p.Spec.Schedule {
			s.LastTick = m.Tick
		}
		if sched, err := pipeline.ParseSchedule(p.Spec.Schedule); err == nil {
			s.NextTick = sched.Next(scheduleBase(p))
		}
	}
	return s
}

func runStatus(r *runState, tasks bool) protocol.RunStatus {
	s := protocol.RunStatus{RunID: r.ID, Pipeline: r.Pipeline, State: r.State, Tasks: len(r.Tasks),
		Version: r.Version, Location: r.Location, Marker: r.Marker, Error: r.Error,
		TraceID: telemetry.TraceID(r.Trace), Created: r.Created, Finished: r.Finished, LogicalTime: r.LogicalTime,
		Window: r.Window, Live: r.Live, Backfill: r.Backfill, Trigger: r.Trigger,
		Attempt: r.attempt(), Replans: slices.Clone(r.Replans), Notified: r.Notified}
	if r.positioned() || r.passthrough() {
		s.Since, s.Reaches = r.Since, r.Watermark
	}
	if r.State == protocol.RunWaiting {
		s.WaitingFor, s.WaitingSince = r.WaitingFor, r.WaitingSince
		if r.ReadyTimeout > 0 {
			s.ReadyDeadline = r.WaitingSince.Add(r.ReadyTimeout)
		}
	}
	for _, ts := range r.Tasks {
		switch ts.State {
		case protocol.TaskSucceeded:
			s.TasksDone++
		case protocol.TaskFailed:
			s.TasksFailed++
		}
		s.Rows += ts.Rows
		s.Bytes += ts.Bytes
		if tasks {
			s.TaskList = append(s.TaskList, protocol.TaskStatus{TaskID: ts.ID, Partition: ts.Partition.Key, State: ts.State,
				Attempts: ts.Attempts, Worker: ts.Worker, Rows: ts.Rows, Bytes: ts.Bytes, Error: ts.Error})
		}
	}
	if len(s.TaskList) > protocol.MaxTaskList {
		// the failed tasks first: they say why the run failed
		failedFirst := func(t protocol.TaskStatus) int {
			if t.State == protocol.TaskFailed {
				return 0
			}
			return 1
		}
		slices.SortStableFunc(s.TaskList, func(a, b protocol.TaskStatus) int { return cmp.Compare(failedFirst(a), failedFirst(b)) })
		s.TaskList = slices.Clip(s.TaskList[:protocol.MaxTaskList])
	}
	if s.TasksDone > 0 {
		s.Checksum = r.checksum().String()
	}
	return s
}
