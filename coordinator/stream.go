package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
)

const (
	// streamTick is how often the leader looks after the streams.
	streamTick = 500 * time.Millisecond
	// assignTimeout bounds a worker's answer to an assignment.
	assignTimeout = 5 * time.Second
	// maxSnapshotBackoff bounds the wait before a failed snapshot is tried
	// again.
	maxSnapshotBackoff = 2 * time.Minute
)

// leaseSeen is what the leader knows of a stream's lease beyond the FSM:
// when it was last renewed (or granted, or this term began) and the
// holder's last report.
type leaseSeen struct {
	renewed time.Time
	status  protocol.StreamStatus
}

// streams looks after the streams of the cdc and cdc_apply pipelines
// while leading: runs the initial snapshot of a cdc pipeline, then grants
// the stream to a live worker whenever nobody holds a lease on it.
func (t *leaderTerm) streams(ctx context.Context) {
	log := t.c.log.With("role", "leader")
	tick := time.NewTicker(streamTick)
	defer tick.Stop()
	for {
		for _, p := range t.c.fsm.pipelines() {
			if !p.Spec.Streamed() {
				continue
			}
			if err := t.tendStream(ctx, log.With("pipeline", p.Spec.Name), p); err != nil && ctx.Err() == nil {
				log.Warn("stream", "pipeline", p.Spec.Name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// seen returns the lease bookkeeping of a pipeline. A pipeline this term
// has not seen yet gets a whole lease of grace from now: the holder of the
// last term's lease may still be streaming.
func (t *leaderTerm) seen(name string) leaseSeen {
	t.leaseMu.Lock()
	defer t.leaseMu.Unlock()
	s, ok := t.leases[name]
	if !ok {
		s = leaseSeen{renewed: time.Now()}
		t.leases[name] = s
	}
	return s
}

func (t *leaderTerm) tendStream(ctx context.Context, log *slog.Logger, p *pipelineState) error {
	st := p.Stream
	if p.Spec.InitialSnapshot() && (st == nil || !st.SnapshotDone) {
		return t.tendSnapshot(ctx, log, p)
	}
	if err := t.tendTables(log, p); err != nil {
		return err
	}
	if p, _ = t.c.fsm.pipeline(p.Spec.Name); p == nil {
		return nil
	}
	st = p.Stream
	seen := t.seen(p.Spec.Name)
	lease := p.Spec.LeaseDuration()
	if st != nil && st.Worker != "" && time.Since(seen.renewed) <= lease {
		return nil
	}
	w, ok := t.pickWorker(p)
	if !ok {
		return nil // no live worker: try again next tick
	}
	if err := t.ensureTargetStream(ctx, p); err != nil {
		return err
	}
	epoch := uint64(1)
	if st != nil {
		epoch = st.Epoch + 1
	}
	if _, err := apply(t.c, leaseGrantCmd{Pipeline: p.Spec.Name, Worker: w, Epoch: epoch, Revision: p.Revision, Time: now()}); err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	t.leaseMu.Lock()
	t.leases[p.Spec.Name] = leaseSeen{renewed: time.Now(), status: protocol.StreamStatus{State: protocol.StreamStarting, Time: now()}}
	t.leaseMu.Unlock()
	prev := ""
	if st != nil {
		prev = st.Worker
	}
	log.Info("stream lease granted", "worker", w, "epoch", epoch, "previous", prev)
	ct, err := p.Spec.ContractJSON()
	if err != nil {
		return err
	}
	settings := p.Spec.StreamSettings()
	if p.Stream != nil {
		settings.Snapshots = p.Stream.Snapshots
	}
	a := protocol.StreamAssignment{
		Pipeline: p.Spec.Name, Pattern: p.Spec.Pattern, Epoch: epoch, Revision: p.Revision,
		Source: p.Spec.Source, Sink: p.Spec.Sink, Settings: settings, Lease: lease, Contract: ct,
		Trace: t.c.snapshotTrace(p),
	}
	data, err := protocol.Encode(a)
	if err != nil {
		return err
	}
	// A worker that does not answer keeps the lease until it expires;
	// then the stream goes to another.
	actx, cancel := context.WithTimeout(ctx, assignTimeout)
	defer cancel()
	req := nats.NewMsg(protocol.WorkerStreamSubject(w))
	req.Data = data
	t.c.sign(signing.KindAssign, req)
	msg, err := t.c.nc.RequestMsgWithContext(actx, req)
	if err != nil {
		return fmt.Errorf("assign stream to worker %s: %w", w, err)
	}
	var reply protocol.AssignReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || !reply.OK {
		return fmt.Errorf("worker %s refused the stream: %s", w, cmp.Or(reply.Error, fmt.Sprint(err)))
	}
	return nil
}

// targetStream returns the configuration of the JetStream stream the
// target of cdc_apply pipeline p keeps (connectors.CDCTarget.Stream); ok
// is false when it keeps none.
func (t *leaderTerm) targetStream(p *pipelineState) (jetstream.StreamConfig, bool, error) {
	if p.Spec.Pattern != protocol.PatternCDCApply {
		return jetstream.StreamConfig{}, false, nil
	}
	return t.c.reg.TargetStream(p.Spec.Sink.Kind, connectors.StreamRequest{
		Pipeline: p.Spec.Name, Config: p.Spec.Sink.Config, Settings: p.Spec.StreamSettings()})
}

// ensureTargetStream creates or updates the stream the target of a
// cdc_apply pipeline keeps, before its lease is granted: a worker may
// only write into it.
func (t *leaderTerm) ensureTargetStream(ctx context.Context, p *pipelineState) error {
	cfg, ok, err := t.targetStream(p)
	if err != nil || !ok {
		return err
	}
	if _, err := t.c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return nil
}

// leaseHolder returns cdc_apply pipeline name when worker holds its lease
// at epoch, or why not.
func (t *leaderTerm) leaseHolder(name, worker string, epoch uint64) (*pipelineState, string) {
	p, ok := t.c.fsm.pipeline(name)
	switch {
	case !ok:
		return nil, fmt.Sprintf("pipeline %q not found", name)
	case p.Spec.Pattern != protocol.PatternCDCApply:
		return nil, fmt.Sprintf("%s is not a cdc_apply pipeline", name)
	case p.Stream == nil || p.Stream.Epoch != epoch || p.Stream.Worker != worker:
		return nil, fmt.Sprintf("%s does not hold the lease of %s at epoch %d", worker, name, epoch)
	}
	return p, ""
}

// maxConsumerAckPending bounds the messages a cdc_apply consumer holds
// unacknowledged.
const maxConsumerAckPending = 1 << 20

// apiStreamConsumer creates the consumer on SLUICE_CDC of a cdc_apply
// pipeline, for the worker holding the pipeline's lease.
func (t *leaderTerm) apiStreamConsumer(ctx context.Context, data []byte) (any, error) {
	var req protocol.StreamConsumerRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, why := t.leaseHolder(req.Pipeline, req.Worker, req.Epoch)
	if p == nil {
		return protocol.StreamOpReply{Reason: why}, nil
	}
	if req.MaxAckPending < 1 || req.MaxAckPending > maxConsumerAckPending {
		return nil, invalid("max_ack_pending: want 1 to %d, not %d", maxConsumerAckPending, req.MaxAckPending)
	}
	if err := connectors.EnsureCDCApplyConsumer(ctx, t.c.js, p.Spec.Name, p.Spec.ApplyUpstream(), req.MaxAckPending, req.Recreate); err != nil {
		return nil, err
	}
	return protocol.StreamOpReply{OK: true}, nil
}

// apiStreamPurge purges subjects of the stream a cdc_apply pipeline's
// target keeps, for the worker holding the pipeline's lease.
func (t *leaderTerm) apiStreamPurge(ctx context.Context, data []byte) (any, error) {
	var req protocol.StreamPurgeRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, why := t.leaseHolder(req.Pipeline, req.Worker, req.Epoch)
	if p == nil {
		return protocol.StreamOpReply{Reason: why}, nil
	}
	cfg, ok, err := t.targetStream(p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return protocol.StreamOpReply{Reason: fmt.Sprintf("the target of %s keeps no stream", req.Pipeline)}, nil
	}
	if !slices.ContainsFunc(cfg.Subjects, func(s string) bool { return subjectWithin(req.Subject, s) }) {
		return protocol.StreamOpReply{Reason: fmt.Sprintf("%q is not a subject of stream %s", req.Subject, cfg.Name)}, nil
	}
	s, err := t.c.js.Stream(ctx, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(req.Subject)); err != nil {
		return nil, fmt.Errorf("purge %s of %s: %w", req.Subject, cfg.Name, err)
	}
	t.c.log.Debug("stream purged", "pipeline", req.Pipeline, "worker", req.Worker, "stream", cfg.Name, "subject", req.Subject)
	return protocol.StreamOpReply{OK: true}, nil
}

// subjectWithin reports whether every subject filter matches is one
// pattern matches too: each token of filter is the same as pattern's, or
// pattern has a wildcard there ('*' one token, '>' one or more).
func subjectWithin(filter, pattern string) bool {
	f, p := strings.Split(filter, "."), strings.Split(pattern, ".")
	for i, pt := range p {
		switch {
		case pt == ">":
			return len(f) > i
		case i >= len(f):
			return false
		case pt == "*":
			if f[i] == ">" {
				return false
			}
		case f[i] != pt:
			return false
		}
	}
	return len(f) == len(p)
}

// pickWorker chooses the live worker holding the fewest streams, avoiding
// the last holder of p's lease when another is live.
func (t *leaderTerm) pickWorker(p *pipelineState) (string, bool) {
	live := t.c.liveWorkers()
	if len(live) == 0 {
		return "", false
	}
	load := map[string]int{}
	for _, q := range t.c.fsm.pipelines() {
		if q.Stream != nil && q.Stream.Worker != "" && q.Spec.Name != p.Spec.Name {
			load[q.Stream.Worker]++
		}
	}
	last := ""
	if p.Stream != nil {
		last = p.Stream.Worker
	}
	names := make([]string, 0, len(live))
	for _, w := range live {
		names = append(names, w.Worker)
	}
	slices.SortStableFunc(names, func(a, b string) int {
		if (a == last) != (b == last) {
			if a == last {
				return 1
			}
			return -1
		}
		return cmp.Compare(load[a], load[b])
	})
	return names[0], true
}

// tendSnapshot starts the initial snapshot run of a cdc pipeline when none
// runs, after a backoff when the last one failed. The run machinery plans,
// publishes and commits it; its commit marks the snapshot done.
func (t *leaderTerm) tendSnapshot(ctx context.Context, log *slog.Logger, p *pipelineState) error {
	c := t.c
	attempts := 0
	if st := p.Stream; st != nil && st.SnapshotRun != "" {
		attempts = st.SnapshotAttempts
		if r, ok := c.fsm.run(st.SnapshotRun); ok {
			if !r.finished() {
				return nil
			}
			backoff := min(time.Duration(1<<min(attempts, 7))*time.Second, maxSnapshotBackoff)
			if time.Since(r.Finished) < backoff {
				return nil
			}
			log.Warn("initial snapshot failed: starting it again on a new slot", "run", r.ID, "error", r.Error, "attempt", attempts+1)
		}
	}
	src, sink, err := snapshotEndpoints(t.c.reg, p.Spec)
	if err != nil {
		return err
	}
	// The tables the snapshot captures: a table added to the spec from now
	// on gets an incremental snapshot once the pipeline streams.
	if tables, ok, err := t.c.reg.CDCTables(p.Spec.Source.Kind, p.Spec.Source.Config); err != nil {
		return fmt.Errorf("tables of %s: %w", p.Spec.Name, err)
	} else if ok {
		if _, err := apply(t.c, streamTablesCmd{Pipeline: p.Spec.Name, Tables: tables, Time: now()}); err != nil {
			return fmt.Errorf("record the tables of the snapshot: %w", err)
		}
	}
	_, err = t.createRun(ctx, runCreateCmd{
		Pipeline: p.Spec.Name, Snapshot: true, Source: &src, Sink: &sink,
		Params: map[string]string{"snapshot_attempt": fmt.Sprint(attempts + 1)},
	})
	if err != nil {
		if refused(err, refusedConflict) {
			return nil
		}
		return fmt.Errorf("create snapshot run: %w", err)
	}
	return nil
}

// tendTables compares the tables of a streaming cdc pipeline's spec with
// those it has a snapshot of: the tables added get an incremental
// snapshot (unless the pipeline takes no snapshots), which the reader
// takes once the next lease, or the renewal that finds it missing,
// restarts the stream; the tables removed are forgotten, so that one
// added again gets a snapshot again.
func (t *leaderTerm) tendTables(log *slog.Logger, p *pipelineState) error {
	if p.Spec.Pattern != protocol.PatternCDC {
		return nil
	}
	tables, ok, err := t.c.reg.CDCTables(p.Spec.Source.Kind, p.Spec.Source.Config)
	if err != nil || !ok {
		return err
	}
	cmd := streamTablesCmd{Pipeline: p.Spec.Name, Tables: tables, Time: now()}
	if p.Stream != nil && p.Stream.Tables != nil {
		known := p.Stream.Tables
		var added []string
		for _, tb := range tables {
			if !slices.Contains(known, tb) {
				added = append(added, tb)
			}
		}
		if len(added) == 0 && !slices.ContainsFunc(known, func(tb string) bool { return !slices.Contains(tables, tb) }) {
			return nil
		}
		if p.Spec.InitialSnapshot() {
			for i, tb := range added {
				cmd.Add = append(cmd.Add, protocol.TableSnapshot{ID: snapshotID(i), Table: tb, Reason: protocol.SnapshotAdded})
			}
		}
		if len(added) > 0 {
			log.Info("tables added to a streaming cdc pipeline", "tables", added, "incremental_snapshots", len(cmd.Add) > 0)
		}
	}
	if _, err := apply(t.c, cmd); err != nil {
		return fmt.Errorf("record the tables of %s: %w", p.Spec.Name, err)
	}
	return nil
}

// snapshotID names a new incremental snapshot: the leader's clock and i,
// the place of the snapshot among those asked for at once.
func snapshotID(i int) string {
	return fmt.Sprintf("s%s-%d", strconv.FormatInt(time.Now().UnixNano(), 36), i)
}

// snapshotEndpoints asks the registry for the source and sink of the
// initial snapshot run of a cdc pipeline: its source kind says how the run
// is made. The configurations keep the spec's ${ENV} references, expanded
// where they are opened.
func snapshotEndpoints(reg *connectors.Registry, spec pipeline.Spec) (src, sink protocol.Endpoint, err error) {
	ep, err := reg.InitialSnapshot(spec.Source.Kind, connectors.SnapshotRequest{
		Pipeline: spec.Name, Config: spec.Source.Config, Settings: spec.StreamSettings(),
	})
	if err != nil {
		return src, sink, err
	}
	return ep.Source, ep.Sink, nil
}

// apiLeaseRenew renews a stream lease. A renewal is refused when the lease
// moved to another epoch or the pipeline was revised or removed: the
// worker then stops, and the stream is granted again (with the new spec)
// a whole lease after the last renewal.
func (t *leaderTerm) apiLeaseRenew(data []byte) (any, error) {
	var req protocol.LeaseRenewRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, ok := t.c.fsm.pipeline(req.Pipeline)
	switch {
	case !ok:
		return protocol.LeaseRenewReply{Reason: fmt.Sprintf("pipeline %q not found", req.Pipeline)}, nil
	case p.Stream == nil || p.Stream.Epoch != req.Epoch || p.Stream.Worker != req.Worker:
		holder, epoch := "", uint64(0)
		if p.Stream != nil {
			holder, epoch = p.Stream.Worker, p.Stream.Epoch
		}
		return protocol.LeaseRenewReply{Reason: fmt.Sprintf("lease lost: epoch %d is held by %s", epoch, holder)}, nil
	case p.Stream.Revision != p.Revision:
		return protocol.LeaseRenewReply{Reason: fmt.Sprintf("pipeline revised (revision %d): the stream restarts with the new spec", p.Revision)}, nil
	}
	if reason, err := t.recordSnapshots(p, req.Status); err != nil || reason != "" {
		return protocol.LeaseRenewReply{Reason: reason}, err
	}
	req.Status.Time = now()
	t.leaseMu.Lock()
	t.leases[req.Pipeline] = leaseSeen{renewed: time.Now(), status: req.Status}
	t.leaseMu.Unlock()
	return protocol.LeaseRenewReply{OK: true}, nil
}

// recordSnapshots records the incremental snapshots a renewal reports
// taken (or failed), and returns why the renewal is refused when the
// stream does not know of a snapshot pending: it then restarts with them.
func (t *leaderTerm) recordSnapshots(p *pipelineState, st protocol.StreamStatus) (string, error) {
	if p.Stream == nil || len(p.Stream.Snapshots) == 0 {
		return "", nil
	}
	known := map[string]bool{}
	for _, tb := range st.Tables {
		if tb.Snapshot == "" {
			continue
		}
		known[tb.Snapshot] = true
		if tb.State != protocol.TableSnapshotted && tb.State != protocol.TableSnapshotFailed {
			continue
		}
		if !slices.ContainsFunc(p.Stream.Snapshots, func(ts protocol.TableSnapshot) bool { return ts.ID == tb.Snapshot }) {
			continue
		}
		if _, err := apply(t.c, snapshotDoneCmd{Pipeline: p.Spec.Name, ID: tb.Snapshot, Rows: tb.Rows, Error: tb.Error, Throttled: tb.Throttled, ThrottledSeconds: tb.ThrottledSeconds, Time: now()}); err != nil {
			return "", err
		}
		t.c.log.Info("incremental snapshot taken", "pipeline", p.Spec.Name, "table", tb.Table, "snapshot", tb.Snapshot, "rows", tb.Rows, "error", tb.Error)
	}
	if st.State != protocol.StreamStreaming {
		return "", nil
	}
	p, ok := t.c.fsm.pipeline(p.Spec.Name)
	if !ok || p.Stream == nil {
		return "", nil
	}
	for _, ts := range p.Stream.Snapshots {
		if !known[ts.ID] {
			return fmt.Sprintf("incremental snapshot %s of %s requested: the stream restarts to take it", ts.ID, ts.Table), nil
		}
	}
	return "", nil
}

// apiCDCResnapshot asks a cdc pipeline's reader for an incremental
// snapshot of one of its tables (`sluice cdc resnapshot`).
func (t *leaderTerm) apiCDCResnapshot(data []byte) (any, error) {
	var req protocol.ResnapshotRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	p, ok := t.c.fsm.pipeline(req.Pipeline)
	if !ok {
		return nil, refuse(refusedNotFound, "pipeline %q not found", req.Pipeline)
	}
	if p.Spec.Pattern != protocol.PatternCDC {
		return nil, refuse(refusedInvalid, "%q is a %s pipeline: resnapshot a table of the cdc pipeline it applies (%s)", req.Pipeline, p.Spec.Pattern, p.Spec.ApplyUpstream())
	}
	tables, ok, err := t.c.reg.CDCTables(p.Spec.Source.Kind, p.Spec.Source.Config)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(refusedInvalid, "a cdc source of kind %q takes no incremental snapshots", p.Spec.Source.Kind)
	}
	if !slices.Contains(tables, req.Table) {
		return nil, refuse(refusedInvalid, "table %q is not one of %s's tables (%s)", req.Table, req.Pipeline, strings.Join(tables, ", "))
	}
	if p.Spec.InitialSnapshot() && (p.Stream == nil || !p.Stream.SnapshotDone) {
		return nil, refuse(refusedConflict, "%s is still taking its initial snapshot, which reads %s", req.Pipeline, req.Table)
	}
	if p.Stream == nil || p.Stream.Tables == nil {
		if _, err := apply(t.c, streamTablesCmd{Pipeline: req.Pipeline, Tables: tables, Time: now()}); err != nil {
			return nil, err
		}
	}
	out, err := apply(t.c, streamTablesCmd{Pipeline: req.Pipeline, Time: now(),
		Add: []protocol.TableSnapshot{{ID: snapshotID(0), Table: req.Table, Reason: protocol.SnapshotResnapshot}}})
	if err != nil {
		return nil, err
	}
	reply := protocol.ResnapshotReply{Pipeline: req.Pipeline, Table: req.Table}
	for _, ts := range out.Pending {
		if ts.Table == req.Table {
			reply.Snapshot = ts
		}
	}
	return reply, nil
}

// snapshotProgress is how far a snapshot run got: its chunk tasks, and its
// tables (partition groups), each done when all its chunks are.
func snapshotProgress(r *runState) *protocol.SnapshotProgress {
	p := &protocol.SnapshotProgress{Run: r.ID, State: r.State, Chunks: len(r.Tasks)}
	pending := map[string]bool{} // table -> a chunk of it is not done
	for _, ts := range r.Tasks {
		done := ts.State == protocol.TaskSucceeded
		if done {
			p.ChunksDone++
		}
		p.Rows += ts.Rows
		if g := ts.Partition.Group; g != "" {
			pending[g] = pending[g] || !done
		}
	}
	p.Tables = len(pending)
	for _, left := range pending {
		if !left {
			p.TablesDone++
		}
	}
	return p
}

// apiCDCStatus lists the streams.
func (t *leaderTerm) apiCDCStatus() (any, error) {
	out := protocol.CDCStatusReply{Streams: []protocol.StreamInfo{}}
	for _, p := range t.c.fsm.pipelines() {
		if !p.Spec.Streamed() {
			continue
		}
		info := protocol.StreamInfo{Pipeline: p.Spec.Name, Pattern: p.Spec.Pattern, Phase: "streaming"}
		if p.Spec.Pattern == protocol.PatternCDC {
			info.Slot = p.Spec.SlotName()
		}
		if p.Spec.Pattern == protocol.PatternCDCApply {
			info.Upstream = p.Spec.ApplyUpstream()
		}
		if st := p.Stream; st != nil {
			info.Worker, info.Epoch = st.Worker, st.Epoch
			info.SnapshotRun, info.ConsistentLSN = st.SnapshotRun, st.ConsistentLSN
			info.Snapshots = st.Snapshots
			for _, done := range st.Snapshotted {
				state := protocol.TableSnapshotted
				if done.Error != "" {
					state = protocol.TableSnapshotFailed
				}
				info.Snapshotted = append(info.Snapshotted, protocol.TableStatus{Table: done.Table, State: state, Error: done.Error,
					Since: done.Done, Snapshot: done.ID, Rows: done.Rows, Throttled: done.Throttled, ThrottledSeconds: done.ThrottledSeconds})
			}
			if r, ok := t.c.fsm.run(st.SnapshotRun); ok {
				info.Snapshot = snapshotProgress(r)
			}
		}
		if p.Spec.InitialSnapshot() && (p.Stream == nil || !p.Stream.SnapshotDone) {
			info.Phase = "snapshot"
		}
		t.leaseMu.Lock()
		if s, ok := t.leases[p.Spec.Name]; ok && info.Worker != "" {
			info.Renewed = s.renewed.UTC()
			info.Status = s.status
		}
		t.leaseMu.Unlock()
		out.Streams = append(out.Streams, info)
	}
	for _, cl := range t.c.fsm.cleanups() {
		out.Cleanups = append(out.Cleanups, protocol.CleanupInfo{Pipeline: cl.Pipeline, What: cl.what(), Deleted: cl.Created.UTC()})
	}
	return out, nil
}
