package coordinator

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// cmdType is the first byte of every Raft log entry; a JSON body follows.
type cmdType byte

// Command types. Values are stored in the Raft log: never renumber them.
const (
	cmdPipelinePut    cmdType = 1
	cmdRunCreate      cmdType = 2
	cmdRunPlanned     cmdType = 3
	cmdRunPublished   cmdType = 4
	cmdTaskResult     cmdType = 5
	cmdRunCommitting  cmdType = 6
	cmdRunCommitted   cmdType = 7
	cmdRunFailed      cmdType = 8
	cmdRunNotified    cmdType = 9
	cmdBackfill       cmdType = 10
	cmdRunWaiting     cmdType = 11
	cmdScheduleTick   cmdType = 12
	cmdLeaseGrant     cmdType = 13
	cmdPipelineDelete cmdType = 14
	cmdCleanupDone    cmdType = 15
)

func (t cmdType) String() string {
	switch t {
	case cmdPipelinePut:
		return "pipeline put"
	case cmdRunCreate:
		return "run create"
	case cmdRunPlanned:
		return "run planned"
	case cmdRunPublished:
		return "run published"
	case cmdTaskResult:
		return "task result"
	case cmdRunCommitting:
		return "run committing"
	case cmdRunCommitted:
		return "run committed"
	case cmdRunFailed:
		return "run failed"
	case cmdRunNotified:
		return "run notified"
	case cmdBackfill:
		return "backfill"
	case cmdRunWaiting:
		return "run waiting"
	case cmdScheduleTick:
		return "schedule tick"
	case cmdLeaseGrant:
		return "lease grant"
	case cmdPipelineDelete:
		return "pipeline delete"
	case cmdCleanupDone:
		return "cleanup done"
	}
	return fmt.Sprintf("command %d", byte(t))
}

// Command bodies. Every time in them is put there by the leader: Apply
// never reads a clock.

type pipelinePutCmd struct {
	Spec pipeline.Spec `json:"spec"`
	Time time.Time     `json:"time"`
}

type pipelineDeleteCmd struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
}

type cleanupDoneCmd struct {
	ID string `json:"id"`
}

type runCreateCmd struct {
	Pipeline    string            `json:"pipeline"`
	Params      map[string]string `json:"params,omitempty"`
	LogicalTime time.Time         `json:"logical_time,omitzero"`
	RequestID   string            `json:"request_id,omitempty"`
	Trace       map[string]string `json:"trace,omitempty"`
	// MaxAttempts and Backoff are the leader's defaults, used when the
	// spec sets none.
	MaxAttempts int           `json:"max_attempts"`
	Backoff     time.Duration `json:"backoff"`
	// Window is the window of a run of an incremental pipeline, computed
	// by the leader from the watermark and its clock (or given by the
	// request); Live marks a window that starts at the watermark: the
	// run's commit moves the watermark to Window.To.
	Window *protocol.Window `json:"window,omitempty"`
	Live   bool             `json:"live,omitempty"`
	// Trigger is the context of the trigger that asked for the run.
	Trigger *protocol.TriggerContext `json:"trigger,omitempty"`
	// Schedule and Tick are set for a scheduled run: the pipeline's last
	// scheduled tick moves to Tick in the same entry.
	Schedule string    `json:"schedule,omitempty"`
	Tick     time.Time `json:"tick,omitzero"`
	// Snapshot marks the initial snapshot run of a cdc pipeline, whose
	// Source and Sink the leader derives from the spec (the snapshot
	// source on the slot's exported snapshot, the SLUICE_CDC events sink).
	Snapshot bool               `json:"snapshot,omitempty"`
	Source   *protocol.Endpoint `json:"source,omitempty"`
	Sink     *protocol.Endpoint `json:"sink,omitempty"`
	Time     time.Time          `json:"time"`
}

// leaseGrantCmd gives the stream of a cdc or cdc_apply pipeline to a
// worker under a new epoch. Epoch must be the current epoch + 1: two
// grants computed from the same state cannot both apply.
type leaseGrantCmd struct {
	Pipeline string    `json:"pipeline"`
	Worker   string    `json:"worker"`
	Epoch    uint64    `json:"epoch"`
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
}

// scheduleTickCmd records a schedule tick that started no run (an
// incremental pipeline up to date): the tick is done all the same.
type scheduleTickCmd struct {
	Pipeline string    `json:"pipeline"`
	Schedule string    `json:"schedule"`
	Tick     time.Time `json:"tick"`
	Time     time.Time `json:"time"`
}

// backfillCmd starts a backfill: the FSM splits [From, To) into windows,
// marks those already loaded as skipped (unless Replace) and creates runs
// for the first Concurrency windows; each run's end starts the next.
type backfillCmd struct {
	Pipeline    string        `json:"pipeline"`
	From        time.Time     `json:"from"`
	To          time.Time     `json:"to"`
	Concurrency int           `json:"concurrency"`
	Replace     bool          `json:"replace,omitempty"`
	RequestID   string        `json:"request_id,omitempty"`
	MaxAttempts int           `json:"max_attempts"`
	Backoff     time.Duration `json:"backoff"`
	Time        time.Time     `json:"time"`
}

type runPlannedCmd struct {
	Run        string               `json:"run"`
	Partitions []protocol.Partition `json:"partitions"`
	Watermark  string               `json:"watermark,omitempty"`
	Time       time.Time            `json:"time"`
}

type runCmd struct {
	Run  string    `json:"run"`
	Time time.Time `json:"time"`
}

// runWaitingCmd records that a run's source input is not ready: the run
// waits (no task published) for What, a partition's path.
type runWaitingCmd struct {
	Run  string    `json:"run"`
	What string    `json:"what"`
	Time time.Time `json:"time"`
}

type taskResultCmd struct {
	Run        string              `json:"run"`
	Task       string              `json:"task"`
	Attempt    int                 `json:"attempt"`
	Worker     string              `json:"worker,omitempty"`
	Rows       int64               `json:"rows"`
	Bytes      int64               `json:"bytes"`
	Checksum   string              `json:"checksum,omitempty"`
	Location   string              `json:"location,omitempty"`
	ErrorClass protocol.ErrorClass `json:"error_class,omitempty"`
	Error      string              `json:"error,omitempty"`
	// Final marks a failure as the task's last: no delivery will follow
	// (the max-deliveries advisory).
	Final bool      `json:"final,omitempty"`
	Time  time.Time `json:"time"`
}

type runCommittedCmd struct {
	Run      string    `json:"run"`
	Location string    `json:"location,omitempty"`
	Marker   string    `json:"marker,omitempty"`
	Keep     int       `json:"keep"`
	Time     time.Time `json:"time"`
}

type runFailedCmd struct {
	Run   string    `json:"run"`
	Error string    `json:"error"`
	Keep  int       `json:"keep"`
	Time  time.Time `json:"time"`
}

// state is everything the FSM holds. It is encoded whole in snapshots.
type state struct {
	Pipelines map[string]*pipelineState `json:"pipelines"`
	Runs      map[string]*runState      `json:"runs"`
	// Requests maps a run request id to the run it created, and
	// "backfill:"+id to the backfill a backfill request created.
	Requests map[string]string `json:"requests"`
	// Backfills are the backfills of incremental pipelines, by id.
	Backfills map[string]*backfillState `json:"backfills,omitempty"`
	// Cleanups are what deleted pipelines left outside the cluster's
	// state, for the leader to remove, oldest first.
	Cleanups []cleanup `json:"cleanups,omitempty"`
	// CleanupSeq numbers the cleanups.
	CleanupSeq int64 `json:"cleanup_seq,omitempty"`
}

// cleanup is what a deleted streamed pipeline left behind: a cdc
// pipeline's replication slot and publication (and its events in
// SLUICE_CDC), a cdc_apply pipeline's durable consumer.
type cleanup struct {
	ID       string           `json:"id"`
	Pipeline string           `json:"pipeline"`
	Pattern  protocol.Pattern `json:"pattern"`
	// SourceKind and Source are a cdc pipeline's source kind and
	// configuration, ${ENV} references unexpanded; Slot and Publication its
	// names.
	SourceKind  string          `json:"source_kind,omitempty"`
	Source      json.RawMessage `json:"source,omitempty"`
	Slot        string          `json:"slot,omitempty"`
	Publication string          `json:"publication,omitempty"`
	// Lease is the deleted pipeline's: its holder may go on for that long
	// after the delete, so the cleanup waits as long.
	Lease   time.Duration `json:"lease"`
	Created time.Time     `json:"created"`
}

func newState() *state {
	return &state{Pipelines: map[string]*pipelineState{}, Runs: map[string]*runState{}, Requests: map[string]string{}, Backfills: map[string]*backfillState{}}
}

// backfillState is one backfill: its windows and their progress.
type backfillState struct {
	ID          string                    `json:"id"`
	Pipeline    string                    `json:"pipeline"`
	Seq         int64                     `json:"seq"`
	From        time.Time                 `json:"from"`
	To          time.Time                 `json:"to"`
	Window      time.Duration             `json:"window"`
	Concurrency int                       `json:"concurrency"`
	Replace     bool                      `json:"replace,omitempty"`
	RequestID   string                    `json:"request_id,omitempty"`
	MaxAttempts int                       `json:"max_attempts"`
	Backoff     time.Duration             `json:"backoff"`
	Windows     []protocol.BackfillWindow `json:"windows"`
	State       string                    `json:"state"`
	Created     time.Time                 `json:"created"`
	Finished    time.Time                 `json:"finished,omitzero"`
}

func (b *backfillState) clone() *backfillState {
	c := *b
	c.Windows = slices.Clone(b.Windows)
	return &c
}

// maxBackfillWindows bounds the windows of one backfill, and
// keepBackfills the finished backfills kept per pipeline.
const (
	maxBackfillWindows = 100_000
	keepBackfills      = 10
)

type pipelineState struct {
	Spec     pipeline.Spec `json:"spec"`
	Revision int64         `json:"revision"`
	// Version is the dataset version exposed; VersionSeq the last version
	// assigned to a committing run.
	Version    int64           `json:"version"`
	VersionSeq int64           `json:"version_seq"`
	Versions   []versionRecord `json:"versions,omitempty"`
	Watermark  string          `json:"watermark,omitempty"`
	// Loaded are the time ranges committed by the runs of an incremental
	// pipeline (live runs, re-runs, backfills), merged and sorted: a
	// backfill skips the windows they cover.
	Loaded      []protocol.Window `json:"loaded,omitempty"`
	BackfillSeq int64             `json:"backfill_seq,omitempty"`
	RunSeq      int64             `json:"run_seq"`
	LastRun     string            `json:"last_run,omitempty"`
	// Scheduled is the last schedule tick handled (a run started, or
	// none needed) and the schedule it was a tick of. A new leader
	// starts from there: a tick is never started twice, and a missed
	// tick is caught up.
	Scheduled *scheduleMark `json:"scheduled,omitempty"`
	// Stream is the lease and snapshot state of a cdc or cdc_apply
	// pipeline.
	Stream  *streamState `json:"stream,omitempty"`
	Created time.Time    `json:"created"`
	Updated time.Time    `json:"updated"`
	// Deleted is set while the pipeline is deleted: it is kept, unlisted,
	// so that applying it again goes on from its run and version numbers
	// (a new run or version never reuses an old one's name).
	Deleted time.Time `json:"deleted,omitzero"`
}

// streamState is the lease of a streamed pipeline and, for a cdc
// pipeline, the progress of its initial snapshot. Lease renewals are not
// entries: the leader keeps them in memory and gives a whole lease of grace
// to every stream when it starts leading.
type streamState struct {
	Worker   string    `json:"worker,omitempty"`
	Epoch    uint64    `json:"epoch"`
	Revision int64     `json:"revision,omitempty"`
	Granted  time.Time `json:"granted,omitzero"`
	// SnapshotRun is the last snapshot run created; SnapshotAttempts
	// counts them; SnapshotDone is set when one committed, with the slot
	// position its snapshot is consistent with.
	SnapshotRun      string `json:"snapshot_run,omitempty"`
	SnapshotAttempts int    `json:"snapshot_attempts,omitempty"`
	SnapshotDone     bool   `json:"snapshot_done,omitempty"`
	ConsistentLSN    string `json:"consistent_lsn,omitempty"`
}

// scheduleMark is the last handled tick of a schedule.
type scheduleMark struct {
	Schedule string    `json:"schedule"`
	Tick     time.Time `json:"tick"`
}

// markTick records tick of schedule as handled; a tick never moves back.
func (p *pipelineState) markTick(schedule string, tick time.Time) {
	if schedule == "" || tick.IsZero() {
		return
	}
	if m := p.Scheduled; m != nil && m.Schedule == schedule && !tick.After(m.Tick) {
		return
	}
	p.Scheduled = &scheduleMark{Schedule: schedule, Tick: tick.UTC()}
}

type versionRecord struct {
	Version  int64     `json:"version"`
	Run      string    `json:"run"`
	Location string    `json:"location,omitempty"`
	Time     time.Time `json:"time"`
}

type runState struct {
	ID          string            `json:"id"`
	Pipeline    string            `json:"pipeline"`
	Seq         int64             `json:"seq"`
	RequestID   string            `json:"request_id,omitempty"`
	Params      map[string]string `json:"params,omitempty"`
	LogicalTime time.Time         `json:"logical_time,omitzero"`
	Created     time.Time         `json:"created"`
	Finished    time.Time         `json:"finished,omitzero"`
	State       string            `json:"state"`
	Trace       map[string]string `json:"trace,omitempty"`
	// The pipeline as it was when the run was created.
	Pattern      protocol.Pattern        `json:"pattern"`
	Source       protocol.Endpoint       `json:"source"`
	Sink         protocol.Endpoint       `json:"sink"`
	Partitioning connectors.Partitioning `json:"partitioning,omitzero"`
	MaxAttempts  int                     `json:"max_attempts"`
	Backoff      time.Duration           `json:"backoff"`
	// Window is the window of an incremental run, DeltaColumn the column
	// it bounds; Live tells that the commit moves the watermark to
	// Window.To; Backfill names the backfill the run loads a window of.
	Window      *protocol.Window `json:"window,omitempty"`
	DeltaColumn string           `json:"delta_column,omitempty"`
	Live        bool             `json:"live,omitempty"`
	Backfill    string           `json:"backfill,omitempty"`
	// ReadyTimeout and ReadyCheck are the spec's incremental.ready_timeout
	// and ready_check. WaitingFor is what a waiting run waits for (a
	// partition's path), WaitingSince when it started waiting: the ready
	// timeout counts from there, on any leader.
	ReadyTimeout time.Duration `json:"ready_timeout,omitempty"`
	ReadyCheck   time.Duration `json:"ready_check,omitempty"`
	WaitingFor   string        `json:"waiting_for,omitempty"`
	WaitingSince time.Time     `json:"waiting_since,omitzero"`
	// Trigger is the context of the trigger that started the run; the FSM
	// never changes it after creation.
	Trigger *protocol.TriggerContext `json:"trigger,omitempty"`

	Planned   bool        `json:"planned"`
	Tasks     []taskState `json:"tasks,omitempty"`
	Watermark string      `json:"watermark,omitempty"`
	Published bool        `json:"published"`
	Version   int64       `json:"version,omitempty"`
	Location  string      `json:"location,omitempty"`
	Marker    string      `json:"marker,omitempty"`
	Error     string      `json:"error,omitempty"`
	// Notified is set once the leader published the run's end (event, dead
	// letters, sink abort).
	Notified bool `json:"notified"`
}

type taskState struct {
	ID        string             `json:"id"`
	Partition protocol.Partition `json:"partition"`
	Enqueue   int                `json:"enqueue"`
	State     string             `json:"state"`
	Attempts  int                `json:"attempts"`
	Worker    string             `json:"worker,omitempty"`
	Rows      int64              `json:"rows"`
	Bytes     int64              `json:"bytes"`
	Checksum  string             `json:"checksum,omitempty"`
	Location  string             `json:"location,omitempty"`
	Error     string             `json:"error,omitempty"`
}

func (r *runState) finished() bool {
	return r.State == protocol.RunCommitted || r.State == protocol.RunFailed
}

// allSucceeded reports whether every task of a planned run succeeded.
func (r *runState) allSucceeded() bool {
	if !r.Planned {
		return false
	}
	for _, t := range r.Tasks {
		if t.State != protocol.TaskSucceeded {
			return false
		}
	}
	return true
}

func (r *runState) task(id string) *taskState {
	for i := range r.Tasks {
		if r.Tasks[i].ID == id {
			return &r.Tasks[i]
		}
	}
	return nil
}

// clone copies r deeply enough that the copy can be read without the FSM
// lock (the FSM replaces, never mutates in place, maps and partitions).
func (r *runState) clone() *runState {
	c := *r
	c.Tasks = slices.Clone(r.Tasks)
	c.Params = maps.Clone(r.Params)
	c.Trace = maps.Clone(r.Trace)
	return &c
}

func (p *pipelineState) clone() *pipelineState {
	c := *p
	c.Versions = slices.Clone(p.Versions)
	c.Loaded = slices.Clone(p.Loaded)
	if p.Scheduled != nil {
		m := *p.Scheduled
		c.Scheduled = &m
	}
	if p.Stream != nil {
		st := *p.Stream
		c.Stream = &st
	}
	return &c
}

// nextFrom returns where the next live window of an incremental pipeline
// starts: its watermark, or incremental.start before the first commit.
func (p *pipelineState) nextFrom() (time.Time, error) {
	if p.Watermark != "" {
		t, err := time.Parse(time.RFC3339Nano, p.Watermark)
		if err != nil {
			return time.Time{}, fmt.Errorf("pipeline %s: watermark %q is not a time (was the pipeline another pattern before?)", p.Spec.Name, p.Watermark)
		}
		return t.UTC(), nil
	}
	if p.Spec.Incremental == nil || p.Spec.Incremental.Start.IsZero() {
		return time.Time{}, fmt.Errorf("pipeline %s has no watermark yet: set incremental.start", p.Spec.Name)
	}
	return p.Spec.Incremental.Start.UTC(), nil
}

// formatWatermark renders an incremental watermark.
func formatWatermark(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// addLoaded merges w into the sorted, disjoint ranges of loaded.
func addLoaded(loaded []protocol.Window, w protocol.Window) []protocol.Window {
	out := make([]protocol.Window, 0, len(loaded)+1)
	for _, l := range loaded {
		switch {
		case l.To.Before(w.From) || w.To.Before(l.From):
			out = append(out, l)
		default: // overlapping or touching: absorb
			if l.From.Before(w.From) {
				w.From = l.From
			}
			if l.To.After(w.To) {
				w.To = l.To
			}
		}
	}
	out = append(out, w)
	slices.SortFunc(out, func(a, b protocol.Window) int { return a.From.Compare(b.From) })
	return out
}

// covered reports whether loaded covers all of w.
func covered(loaded []protocol.Window, w protocol.Window) bool {
	for _, l := range loaded {
		if !l.From.After(w.From) && !l.To.Before(w.To) {
			return true
		}
	}
	return false
}

// Errors returned by Apply, as the response of a log entry.
var (
	errNoPipeline = errors.New("no such pipeline")
	errNoRun      = errors.New("no such run")
	errRunState   = errors.New("run is not in the state the command needs")
	// errConflict: the command does not fit the pipeline's state (a live
	// window that no longer starts at the watermark, a second live run or
	// backfill in flight).
	errConflict = errors.New("conflict")
	// errInvalidCmd: the command asks for something the pipeline cannot do.
	errInvalidCmd = errors.New("invalid")
)

// applyResult is the response of an applied entry.
type applyResult struct {
	// Pipeline put.
	Revision int64
	Created  bool
	// Run create.
	RunID  string
	Reused bool
	// Task result: Changed is false when the result was ignored;
	// RunFailed when it failed the run.
	Changed   bool
	RunFailed bool
	// Run committing.
	Version int64
	// Started counts the runs an entry created besides RunID: backfill
	// windows taken from the queue.
	Started int
	// Backfill is the id of the backfill a backfill entry created or found.
	Backfill string
}

// fsm is the Raft state machine. Apply, Snapshot and Restore are called by
// Raft; the leader and the API read the state through the query methods,
// which return copies.
type fsm struct {
	mu sync.RWMutex
	st *state
	// changed is closed and replaced after every applied entry.
	changed chan struct{}
}

func newFSM() *fsm { return &fsm{st: newState(), changed: make(chan struct{})} }

// encodeCmd builds a log entry: the type byte, then the JSON body.
func encodeCmd(t cmdType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, b...), nil
}

// Apply applies one log entry. It is deterministic: the same entries give
// the same state on every node. An unknown command type or a body that
// does not decode panics: diverging state is worse than a crash.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("coordinator fsm: empty log entry at index %d", l.Index))
	}
	t, body := cmdType(l.Data[0]), l.Data[1:]
	f.mu.Lock()
	defer func() {
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	switch t {
	case cmdPipelinePut:
		return f.st.pipelinePut(decodeBody[pipelinePutCmd](t, body, l.Index))
	case cmdRunCreate:
		return f.st.runCreate(decodeBody[runCreateCmd](t, body, l.Index))
	case cmdRunPlanned:
		return f.st.runPlanned(decodeBody[runPlannedCmd](t, body, l.Index))
	case cmdRunPublished:
		return f.st.runPublished(decodeBody[runCmd](t, body, l.Index))
	case cmdTaskResult:
		return f.st.taskResult(decodeBody[taskResultCmd](t, body, l.Index))
	case cmdRunCommitting:
		return f.st.runCommitting(decodeBody[runCmd](t, body, l.Index))
	case cmdRunCommitted:
		return f.st.runCommitted(decodeBody[runCommittedCmd](t, body, l.Index))
	case cmdRunFailed:
		return f.st.runFailed(decodeBody[runFailedCmd](t, body, l.Index))
	case cmdRunNotified:
		return f.st.runNotified(decodeBody[runCmd](t, body, l.Index))
	case cmdBackfill:
		return f.st.backfill(decodeBody[backfillCmd](t, body, l.Index))
	case cmdRunWaiting:
		return f.st.runWaiting(decodeBody[runWaitingCmd](t, body, l.Index))
	case cmdScheduleTick:
		return f.st.scheduleTick(decodeBody[scheduleTickCmd](t, body, l.Index))
	case cmdLeaseGrant:
		return f.st.leaseGrant(decodeBody[leaseGrantCmd](t, body, l.Index))
	case cmdPipelineDelete:
		return f.st.pipelineDelete(decodeBody[pipelineDeleteCmd](t, body, l.Index))
	case cmdCleanupDone:
		return f.st.cleanupDone(decodeBody[cleanupDoneCmd](t, body, l.Index))
	}
	panic(fmt.Sprintf("coordinator fsm: unknown command type %d at index %d", byte(t), l.Index))
}

func decodeBody[T any](t cmdType, body []byte, index uint64) T {
	var c T
	if err := json.Unmarshal(body, &c); err != nil {
		panic(fmt.Sprintf("coordinator fsm: decode %s at index %d: %v", t, index, err))
	}
	return c
}

func (s *state) pipelinePut(c pipelinePutCmd) any {
	p, ok := s.Pipelines[c.Spec.Name]
	if !ok {
		p = &pipelineState{Created: c.Time}
		s.Pipelines[c.Spec.Name] = p
	}
	created := !ok || !p.Deleted.IsZero()
	if created && ok {
		// applied again after a delete: a new pipeline, with the old
		// one's run and version numbers
		p.Created, p.Deleted = c.Time, time.Time{}
	}
	p.Spec = c.Spec
	p.Revision++
	p.Updated = c.Time
	return applyResult{Revision: p.Revision, Created: created}
}

// pipelineDelete deletes a pipeline that has no run or backfill in
// progress and no cdc_apply pipeline applying its events: it is no longer
// listed, scheduled, triggered or streamed (its lease's next renewal is
// refused), and what a streamed pipeline left outside the state is queued
// as a cleanup.
func (s *state) pipelineDelete(c pipelineDeleteCmd) any {
	p, ok := s.live(c.Name)
	if !ok {
		return fmt.Errorf("delete %q: %w", c.Name, errNoPipeline)
	}
	for _, id := range slices.Sorted(maps.Keys(s.Runs)) {
		if r := s.Runs[id]; r.Pipeline == c.Name && !r.finished() {
			return fmt.Errorf("delete %q: run %s is %s; wait for it to end: %w", c.Name, r.ID, r.State, errConflict)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.Backfills)) {
		if b := s.Backfills[id]; b.Pipeline == c.Name && b.State == protocol.BackfillRunning {
			return fmt.Errorf("delete %q: backfill %s is running; wait for it to end: %w", c.Name, b.ID, errConflict)
		}
	}
	if deps := s.appliersOf(c.Name); len(deps) > 0 {
		return fmt.Errorf("delete %q: the cdc_apply pipelines %v apply its events; delete them first: %w", c.Name, deps, errConflict)
	}
	switch p.Spec.Pattern {
	case protocol.PatternCDC, protocol.PatternCDCApply:
		s.CleanupSeq++
		cl := cleanup{ID: fmt.Sprintf("cleanup-%06d", s.CleanupSeq), Pipeline: c.Name, Pattern: p.Spec.Pattern, Lease: p.Spec.LeaseDuration(), Created: c.Time}
		if p.Spec.Pattern == protocol.PatternCDC {
			cl.SourceKind, cl.Source, cl.Slot, cl.Publication = p.Spec.Source.Kind, p.Spec.Source.Config, p.Spec.SlotName(), p.Spec.PublicationName()
		}
		s.Cleanups = append(s.Cleanups, cl)
	}
	p.Deleted, p.Updated = c.Time, c.Time
	p.Revision++
	p.Scheduled = nil
	if p.Stream != nil {
		// Applied again, the pipeline starts over (a new snapshot, no
		// holder), with epochs after the old ones: a holder of the old
		// stream is never taken for one of the new.
		p.Stream = &streamState{Epoch: p.Stream.Epoch}
	}
	return applyResult{Revision: p.Revision}
}

// appliersOf lists the live cdc_apply pipelines applying the events of
// the cdc pipeline name, sorted.
func (s *state) appliersOf(name string) []string {
	var out []string
	for n, p := range s.Pipelines {
		if p.Deleted.IsZero() && p.Spec.Pattern == protocol.PatternCDCApply && p.Spec.ApplyUpstream() == name {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (s *state) cleanupDone(c cleanupDoneCmd) any {
	s.Cleanups = slices.DeleteFunc(s.Cleanups, func(cl cleanup) bool { return cl.ID == c.ID })
	return applyResult{}
}

// live returns the pipeline name unless it is missing or deleted.
func (s *state) live(name string) (*pipelineState, bool) {
	p, ok := s.Pipelines[name]
	if !ok || !p.Deleted.IsZero() {
		return nil, false
	}
	return p, true
}

func (s *state) runCreate(c runCreateCmd) any {
	if c.RequestID != "" {
		if id, ok := s.Requests[c.RequestID]; ok {
			return applyResult{RunID: id, Reused: true}
		}
	}
	p, ok := s.live(c.Pipeline)
	if !ok {
		return fmt.Errorf("create run of %q: %w", c.Pipeline, errNoPipeline)
	}
	if p.Spec.Pattern == protocol.PatternIncremental {
		if c.Window == nil || c.Window.Empty() {
			return fmt.Errorf("create run of %q: an incremental run needs a non-empty window: %w", c.Pipeline, errInvalidCmd)
		}
		if c.Live {
			from, err := p.nextFrom()
			if err != nil {
				return fmt.Errorf("create run: %v: %w", err, errInvalidCmd)
			}
			if !from.Equal(c.Window.From) {
				return fmt.Errorf("create run of %q: window %s does not start at the watermark %s: %w", c.Pipeline, c.Window, formatWatermark(from), errConflict)
			}
			if r := s.liveRun(c.Pipeline); r != nil {
				return fmt.Errorf("run %s of %q is still loading window %s: an incremental pipeline loads one live window at a time: %w", r.ID, c.Pipeline, r.Window, errConflict)
			}
		}
	} else if c.Window != nil {
		return fmt.Errorf("create run of %q: a window is only for pattern incremental: %w", c.Pipeline, errInvalidCmd)
	}
	switch {
	case c.Snapshot:
		if !p.Spec.InitialSnapshot() || c.Source == nil || c.Sink == nil {
			return fmt.Errorf("create snapshot run of %q: not a cdc pipeline with an initial snapshot: %w", c.Pipeline, errInvalidCmd)
		}
		st := p.stream()
		if st.SnapshotDone {
			return fmt.Errorf("create snapshot run of %q: the snapshot is done: %w", c.Pipeline, errConflict)
		}
		if r, ok := s.Runs[st.SnapshotRun]; ok && !r.finished() {
			return fmt.Errorf("create snapshot run of %q: run %s is loading it: %w", c.Pipeline, r.ID, errConflict)
		}
	case p.Spec.Streamed():
		return fmt.Errorf("pipeline %q of pattern %s streams continuously: it has no runs to start (see sluice cdc status): %w", c.Pipeline, p.Spec.Pattern, errInvalidCmd)
	}
	r := s.newRun(p, c)
	if c.Snapshot {
		st := p.stream()
		st.SnapshotRun = r.ID
		st.SnapshotAttempts++
	}
	if c.RequestID != "" {
		s.Requests[c.RequestID] = r.ID
	}
	p.markTick(c.Schedule, c.Tick)
	return applyResult{RunID: r.ID}
}

// stream returns the stream state of p, creating it.
func (p *pipelineState) stream() *streamState {
	if p.Stream == nil {
		p.Stream = &streamState{}
	}
	return p.Stream
}

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

func (s *state) scheduleTick(c scheduleTickCmd) any {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return fmt.Errorf("schedule tick of %q: %w", c.Pipeline, errNoPipeline)
	}
	p.markTick(c.Schedule, c.Tick)
	return applyResult{Changed: true}
}

// newRun adds a run of p in state planning.
func (s *state) newRun(p *pipelineState, c runCreateCmd) *runState {
	p.RunSeq++
	name := p.Spec.Name
	r := &runState{
		ID:           fmt.Sprintf("%s-%06d", name, p.RunSeq),
		Pipeline:     name,
		Seq:          p.RunSeq,
		RequestID:    c.RequestID,
		Params:       c.Params,
		LogicalTime:  c.LogicalTime,
		Created:      c.Time,
		State:        protocol.RunPlanning,
		Trace:        c.Trace,
		Pattern:      p.Spec.Pattern,
		Source:       p.Spec.Source,
		Sink:         p.Spec.Sink,
		Partitioning: p.Spec.Partition,
		MaxAttempts:  p.Spec.Retry.MaxAttempts,
		Backoff:      p.Spec.Retry.Backoff,
		Trigger:      c.Trigger,
	}
	if c.Source != nil {
		r.Source = *c.Source
	}
	if c.Sink != nil {
		r.Sink = *c.Sink
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = c.MaxAttempts
	}
	if r.Backoff == 0 {
		r.Backoff = c.Backoff
	}
	if c.Window != nil {
		w := *c.Window
		r.Window = &w
		r.Live = c.Live
		if inc := p.Spec.Incremental; inc != nil {
			r.DeltaColumn = inc.DeltaColumn
			r.ReadyTimeout, r.ReadyCheck = inc.ReadyTimeout, inc.ReadyCheck
		}
		if c.Live {
			// The position this run reaches; stored with its commit.
			r.Watermark = formatWatermark(w.To)
		}
	}
	s.Runs[r.ID] = r
	p.LastRun = r.ID
	return r
}

// liveRun returns the unfinished live run of a pipeline, or nil.
func (s *state) liveRun(pipelineName string) *runState {
	var found *runState
	for _, r := range s.Runs {
		if r.Pipeline == pipelineName && r.Live && !r.finished() && (found == nil || r.Seq < found.Seq) {
			found = r
		}
	}
	return found
}

// backfill creates a backfill and starts its first windows.
func (s *state) backfill(c backfillCmd) any {
	if c.RequestID != "" {
		if id, ok := s.Requests["backfill:"+c.RequestID]; ok {
			return applyResult{Backfill: id, Reused: true}
		}
	}
	p, ok := s.live(c.Pipeline)
	if !ok {
		return fmt.Errorf("backfill %q: %w", c.Pipeline, errNoPipeline)
	}
	if p.Spec.Pattern != protocol.PatternIncremental || p.Spec.Incremental == nil || p.Spec.Incremental.Window <= 0 {
		return fmt.Errorf("backfill %q: only an incremental pipeline can be backfilled: %w", c.Pipeline, errInvalidCmd)
	}
	if !c.From.Before(c.To) || c.Concurrency < 1 {
		return fmt.Errorf("backfill %q: want from < to and a concurrency of at least 1: %w", c.Pipeline, errInvalidCmd)
	}
	size := p.Spec.Incremental.Window
	if n := c.To.Sub(c.From) / size; n >= maxBackfillWindows {
		return fmt.Errorf("backfill %q: [%s, %s) makes more than %d windows of %s: %w", c.Pipeline,
			formatWatermark(c.From), formatWatermark(c.To), maxBackfillWindows, size, errInvalidCmd)
	}
	for _, b := range s.Backfills {
		if b.Pipeline == c.Pipeline && b.State == protocol.BackfillRunning {
			return fmt.Errorf("backfill %s of %q is still running: %w", b.ID, c.Pipeline, errConflict)
		}
	}
	p.BackfillSeq++
	b := &backfillState{
		ID: fmt.Sprintf("%s-bf%04d", c.Pipeline, p.BackfillSeq), Pipeline: c.Pipeline, Seq: p.BackfillSeq,
		From: c.From.UTC(), To: c.To.UTC(), Window: size, Concurrency: c.Concurrency, Replace: c.Replace,
		RequestID: c.RequestID, MaxAttempts: c.MaxAttempts, Backoff: c.Backoff,
		State: protocol.BackfillRunning, Created: c.Time,
	}
	for lo := b.From; lo.Before(b.To); {
		hi := lo.Add(size)
		if hi.After(b.To) {
			hi = b.To
		}
		w := protocol.BackfillWindow{Window: protocol.Window{From: lo, To: hi}, State: protocol.WindowQueued}
		if !c.Replace && covered(p.Loaded, w.Window) {
			w.State = protocol.WindowSkipped
		}
		b.Windows = append(b.Windows, w)
		lo = hi
	}
	s.Backfills[b.ID] = b
	if c.RequestID != "" {
		s.Requests["backfill:"+c.RequestID] = b.ID
	}
	s.pruneBackfills(c.Pipeline)
	return applyResult{Backfill: b.ID, Started: len(s.pump(b, c.Time))}
}

// pump starts queued windows of b while fewer than its concurrency run,
// and marks b done when none is queued or running.
func (s *state) pump(b *backfillState, t time.Time) []string {
	p, ok := s.live(b.Pipeline)
	running := 0
	for _, w := range b.Windows {
		if w.State == protocol.WindowRunning {
			running++
		}
	}
	var started []string
	for i := range b.Windows {
		if running >= b.Concurrency || !ok {
			break
		}
		w := &b.Windows[i]
		if w.State != protocol.WindowQueued {
			continue
		}
		win := w.Window
		r := s.newRun(p, runCreateCmd{Pipeline: b.Pipeline, Window: &win, MaxAttempts: b.MaxAttempts, Backoff: b.Backoff, Time: t})
		r.Backfill = b.ID
		w.State, w.Run = protocol.WindowRunning, r.ID
		started = append(started, r.ID)
		running++
	}
	if running == 0 && b.State == protocol.BackfillRunning {
		queued := slices.ContainsFunc(b.Windows, func(w protocol.BackfillWindow) bool { return w.State == protocol.WindowQueued })
		if !queued || !ok {
			b.State = protocol.BackfillDone
			b.Finished = t
		}
	}
	return started
}

// runEnded records the end of a backfill run in its window and starts
// the next queued windows.
func (s *state) runEnded(r *runState, t time.Time) []string {
	if r.Backfill == "" {
		return nil
	}
	b, ok := s.Backfills[r.Backfill]
	if !ok {
		return nil
	}
	for i := range b.Windows {
		w := &b.Windows[i]
		if w.Run != r.ID || w.State != protocol.WindowRunning {
			continue
		}
		if r.State == protocol.RunCommitted {
			w.State = protocol.WindowCommitted
			for _, ts := range r.Tasks {
				w.Rows += ts.Rows
			}
		} else {
			w.State = protocol.WindowFailed
			w.Error = r.Error
		}
	}
	return s.pump(b, t)
}

// pruneBackfills keeps the newest keepBackfills finished backfills of a
// pipeline.
func (s *state) pruneBackfills(pipelineName string) {
	var done []*backfillState
	for _, b := range s.Backfills {
		if b.Pipeline == pipelineName && b.State == protocol.BackfillDone {
			done = append(done, b)
		}
	}
	if len(done) <= keepBackfills {
		return
	}
	slices.SortFunc(done, func(a, b *backfillState) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, b := range done[:len(done)-keepBackfills] {
		delete(s.Backfills, b.ID)
		if b.RequestID != "" && s.Requests["backfill:"+b.RequestID] == b.ID {
			delete(s.Requests, "backfill:"+b.RequestID)
		}
	}
}

func (s *state) runIn(id string, states ...string) (*runState, error) {
	r, ok := s.Runs[id]
	if !ok {
		return nil, fmt.Errorf("run %q: %w", id, errNoRun)
	}
	if !slices.Contains(states, r.State) {
		return nil, fmt.Errorf("run %q is %s, want %v: %w", id, r.State, states, errRunState)
	}
	return r, nil
}

// runWaiting moves a planning run to waiting, or changes what a waiting
// run waits for; WaitingSince stays the time it first waited.
func (s *state) runWaiting(c runWaitingCmd) any {
	r, err := s.runIn(c.Run, protocol.RunPlanning, protocol.RunWaiting)
	if err != nil {
		return err
	}
	if r.State == protocol.RunWaiting && r.WaitingFor == c.What {
		return applyResult{}
	}
	if r.State == protocol.RunPlanning {
		r.WaitingSince = c.Time
	}
	r.State, r.WaitingFor = protocol.RunWaiting, c.What
	return applyResult{Changed: true}
}

func (s *state) runPlanned(c runPlannedCmd) any {
	r, err := s.runIn(c.Run, protocol.RunPlanning, protocol.RunWaiting)
	if err != nil {
		return err
	}
	r.Tasks = make([]taskState, len(c.Partitions))
	for i, p := range c.Partitions {
		r.Tasks[i] = taskState{ID: fmt.Sprintf("t%05d", i), Partition: p, Enqueue: 1, State: protocol.TaskPending}
	}
	r.Planned = true
	if r.Window == nil {
		// An incremental run's position is its window, set at creation.
		r.Watermark = c.Watermark
	}
	r.State = protocol.RunRunning
	return applyResult{Changed: true}
}

func (s *state) runPublished(c runCmd) any {
	r, err := s.runIn(c.Run, protocol.RunRunning, protocol.RunCommitting, protocol.RunCommitted, protocol.RunFailed)
	if err != nil {
		return err
	}
	r.Published = true
	return applyResult{Changed: true}
}

func (s *state) taskResult(c taskResultCmd) any {
	r, ok := s.Runs[c.Run]
	if !ok || r.State != protocol.RunRunning {
		return applyResult{}
	}
	t := r.task(c.Task)
	if t == nil || t.State != protocol.TaskPending {
		return applyResult{}
	}
	t.Attempts = max(t.Attempts, c.Attempt)
	t.Worker = c.Worker
	if c.ErrorClass == protocol.ErrorNone && c.Error == "" && !c.Final {
		t.State = protocol.TaskSucceeded
		t.Rows, t.Bytes, t.Checksum, t.Location, t.Error = c.Rows, c.Bytes, c.Checksum, c.Location, ""
		return applyResult{Changed: true}
	}
	t.Error = c.Error
	if !c.Final && c.ErrorClass != protocol.ErrorPermanent && c.Attempt < r.MaxAttempts {
		// The worker retries it.
		return applyResult{Changed: true}
	}
	t.State = protocol.TaskFailed
	r.State = protocol.RunFailed
	r.Error = fmt.Sprintf("task %s (%s) failed after %d attempt(s): %s", t.ID, t.Partition.Key, t.Attempts, c.Error)
	r.Finished = c.Time
	started := s.runEnded(r, c.Time)
	s.prune(r.Pipeline, 0)
	return applyResult{Changed: true, RunFailed: true, Started: len(started)}
}

func (s *state) runCommitting(c runCmd) any {
	r, err := s.runIn(c.Run, protocol.RunRunning, protocol.RunCommitting)
	if err != nil {
		return err
	}
	if r.State == protocol.RunCommitting {
		return applyResult{Version: r.Version}
	}
	if !r.allSucceeded() {
		return fmt.Errorf("commit run %q before all its tasks succeeded: %w", c.Run, errRunState)
	}
	p, ok := s.Pipelines[r.Pipeline]
	if !ok {
		return fmt.Errorf("commit run %q: %w", c.Run, errNoPipeline)
	}
	p.VersionSeq = max(p.VersionSeq, p.Version) + 1
	r.Version = p.VersionSeq
	r.State = protocol.RunCommitting
	return applyResult{Version: r.Version}
}

func (s *state) runCommitted(c runCommittedCmd) any {
	r, err := s.runIn(c.Run, protocol.RunCommitting)
	if err != nil {
		return err
	}
	r.State = protocol.RunCommitted
	r.Location, r.Marker = c.Location, c.Marker
	r.Finished = c.Time
	if p, ok := s.Pipelines[r.Pipeline]; ok {
		// The version and the watermark move in the same entry
		// (DESIGN rule 4); a run committed out of order does not hide a
		// newer version.
		if r.Version > p.Version {
			p.Version = r.Version
			if r.Window == nil && r.Watermark != "" {
				p.Watermark = r.Watermark
			}
		}
		if r.Window != nil {
			p.Loaded = addLoaded(p.Loaded, *r.Window)
			// Only a live window moves the watermark, and only forward.
			if r.Live {
				if cur, err := p.nextFrom(); err != nil || r.Window.To.After(cur) || p.Watermark == "" {
					p.Watermark = formatWatermark(r.Window.To)
				}
			}
		}
		if st := p.Stream; st != nil && st.SnapshotRun == r.ID {
			st.SnapshotDone = true
			st.ConsistentLSN = r.Watermark
		}
		p.Versions = append(p.Versions, versionRecord{Version: r.Version, Run: r.ID, Location: c.Location, Time: c.Time})
		if c.Keep > 0 && len(p.Versions) > c.Keep {
			p.Versions = slices.Clone(p.Versions[len(p.Versions)-c.Keep:])
		}
	}
	started := s.runEnded(r, c.Time)
	s.prune(r.Pipeline, c.Keep)
	return applyResult{Changed: true, Version: r.Version, Started: len(started)}
}

func (s *state) runFailed(c runFailedCmd) any {
	r, ok := s.Runs[c.Run]
	if !ok {
		return fmt.Errorf("fail run %q: %w", c.Run, errNoRun)
	}
	if r.finished() {
		return applyResult{}
	}
	r.State = protocol.RunFailed
	r.Error = c.Error
	r.Finished = c.Time
	started := s.runEnded(r, c.Time)
	s.prune(r.Pipeline, c.Keep)
	return applyResult{Changed: true, RunFailed: true, Started: len(started)}
}

func (s *state) runNotified(c runCmd) any {
	r, ok := s.Runs[c.Run]
	if !ok {
		// Pruned already: nothing left to mark.
		return applyResult{}
	}
	r.Notified = true
	return applyResult{Changed: true}
}

// prune keeps the newest keep finished runs of a pipeline (by run
// sequence); keep <= 0 changes nothing.
func (s *state) prune(pipelineName string, keep int) {
	if keep <= 0 {
		return
	}
	var done []*runState
	for _, r := range s.Runs {
		if r.Pipeline == pipelineName && r.finished() {
			done = append(done, r)
		}
	}
	if len(done) <= keep {
		return
	}
	slices.SortFunc(done, func(a, b *runState) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, r := range done[:len(done)-keep] {
		delete(s.Runs, r.ID)
		if r.RequestID != "" && s.Requests[r.RequestID] == r.ID {
			delete(s.Requests, r.RequestID)
		}
	}
}

// Snapshot captures the state as encoded bytes: an immutable copy that
// Persist writes while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, fmt.Errorf("snapshot fsm: %w", err)
	}
	return fsmSnapshot(b), nil
}

// Restore replaces the state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st := newState()
	if err := json.NewDecoder(rc).Decode(st); err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	if st.Pipelines == nil {
		st.Pipelines = map[string]*pipelineState{}
	}
	if st.Runs == nil {
		st.Runs = map[string]*runState{}
	}
	if st.Requests == nil {
		st.Requests = map[string]string{}
	}
	if st.Backfills == nil {
		st.Backfills = map[string]*backfillState{}
	}
	f.mu.Lock()
	f.st = st
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}

// Queries. Each returns copies the caller may keep.

// watch returns a channel closed at the next applied entry.
func (f *fsm) watch() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

func (f *fsm) pipeline(name string) (*pipelineState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.st.live(name)
	if !ok {
		return nil, false
	}
	return p.clone(), true
}

// cleanups returns the pending cleanups, oldest first.
func (f *fsm) cleanups() []cleanup {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.Cleanups)
}

func (f *fsm) pipelines() []*pipelineState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pipelineState, 0, len(f.st.Pipelines))
	for _, p := range f.st.Pipelines {
		if p.Deleted.IsZero() {
			out = append(out, p.clone())
		}
	}
	slices.SortFunc(out, func(a, b *pipelineState) int { return cmp.Compare(a.Spec.Name, b.Spec.Name) })
	return out
}

func (f *fsm) run(id string) (*runState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.st.Runs[id]
	if !ok {
		return nil, false
	}
	return r.clone(), true
}

func (f *fsm) requestRun(requestID string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.st.Requests[requestID]
	return id, ok
}

// runs lists the runs that keep returns true for, newest first (by
// creation time, then id).
func (f *fsm) runs(keep func(*runState) bool) []*runState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*runState
	for _, r := range f.st.Runs {
		if keep(r) {
			out = append(out, r.clone())
		}
	}
	slices.SortFunc(out, func(a, b *runState) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out
}

func (f *fsm) backfillByID(id string) (*backfillState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, ok := f.st.Backfills[id]
	if !ok {
		return nil, false
	}
	return b.clone(), true
}

func (f *fsm) requestBackfill(requestID string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.st.Requests["backfill:"+requestID]
	return id, ok
}
