package coordinator

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

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
	// Retired are the deleted pipelines a trim dropped, by name: only
	// their numbers (run and version sequences, stream epoch, watermark)
	// are kept, so that a pipeline applied again under the name goes on
	// from them and never reuses a run's or a version's name.
	Retired map[string]*pipelineState `json:"retired,omitempty"`
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
	From        time.Time                 `json:"from,omitzero"`
	To          time.Time                 `json:"to,omitzero"`
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
	// Summary counts the windows of a finished backfill whose windows a
	// trim dropped (all but the first maxKeptFailedWindows failed ones).
	Summary *windowCounts `json:"summary,omitempty"`
	// LeaderStarts is set when the leader creates the window runs, each
	// through a run-create entry naming the backfill and its window. A
	// backfill of an earlier version's log has it unset: Apply starts its
	// windows (state.pump), as that version did.
	LeaderStarts bool `json:"leader_starts,omitempty"`
	// Range and Span are the range of values and the window size of a
	// backfill of integer windows (From, To and Window then zero).
	Range *protocol.Window `json:"range,omitempty"`
	Span  int64            `json:"span,omitempty"`

	// active counts the windows running, and queuedFrom is the index of
	// the first window that may be queued (a window leaves queued, never
	// to return), so that starting and ending a window does not scan
	// 100,000 of them. Kept by the handlers that change Windows, not
	// stored: a restore counts them again (state.recount).
	active     int
	queuedFrom int
}

// recount counts again what the handlers keep beside the stored state:
// the succeeded tasks of each run, the running windows of each backfill
// and where its queued windows start.
func (s *state) recount() {
	for _, r := range s.Runs {
		r.setTasks(r.Tasks)
	}
	for _, b := range s.Backfills {
		b.recount()
	}
}

// recount counts b's running windows and finds its first queued one.
func (b *backfillState) recount() {
	b.active, b.queuedFrom = 0, len(b.Windows)
	for i, w := range b.Windows {
		switch w.State {
		case protocol.WindowRunning:
			b.active++
		case protocol.WindowQueued:
			b.queuedFrom = min(b.queuedFrom, i)
		}
	}
}

// started counts a window of b that was queued and now runs.
func (b *backfillState) started() {
	b.active++
	b.firstQueued()
}

// firstQueued returns the index of b's first queued window, or -1.
func (b *backfillState) firstQueued() int {
	for b.queuedFrom < len(b.Windows) && b.Windows[b.queuedFrom].State != protocol.WindowQueued {
		b.queuedFrom++
	}
	if b.queuedFrom < len(b.Windows) {
		return b.queuedFrom
	}
	return -1
}

// windowAt returns the index of window w in b, or -1. The windows of a
// backfill are sorted and apart (splitRange), so it is searched for.
func (b *backfillState) windowAt(w protocol.Window) int {
	i, _ := slices.BinarySearchFunc(b.Windows, w, func(bw protocol.BackfillWindow, w protocol.Window) int {
		return bw.Window.Compare(w)
	})
	if i < len(b.Windows) && b.Windows[i].Window.Equal(w) {
		return i
	}
	return slices.IndexFunc(b.Windows, func(bw protocol.BackfillWindow) bool { return bw.Window.Equal(w) })
}

// windowCounts counts a backfill's windows by state, and the rows of the
// committed ones.
type windowCounts struct {
	Total     int   `json:"total"`
	Committed int   `json:"committed,omitempty"`
	Failed    int   `json:"failed,omitempty"`
	Skipped   int   `json:"skipped,omitempty"`
	Other     int   `json:"other,omitempty"`
	Rows      int64 `json:"rows,omitempty"`
}

// running counts the windows of b that are running.
func (b *backfillState) running() int { return b.active }

// nextWindow returns the first queued window of b, while fewer than its
// concurrency run; false when none is to start now.
func (b *backfillState) nextWindow() (protocol.Window, bool) {
	if b.State != protocol.BackfillRunning || b.running() >= b.Concurrency {
		return protocol.Window{}, false
	}
	if i := b.firstQueued(); i >= 0 {
		return b.Windows[i].Window, true
	}
	return protocol.Window{}, false
}

func (b *backfillState) clone() *backfillState {
	c := *b
	c.Windows = slices.Clone(b.Windows)
	if b.Summary != nil {
		sum := *b.Summary
		c.Summary = &sum
	}
	if b.Range != nil {
		r := *b.Range
		c.Range = &r
	}
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
	// Rollback is the pipeline's last rollback, pending from its intent
	// entry until its outcome entry.
	Rollback *rollbackState `json:"rollback,omitempty"`
	// Ready is what a readiness pipeline announced and has still to.
	Ready *readyState `json:"ready,omitempty"`
}

// rollbackState is a rollback of a pipeline's dataset to version To.
type rollbackState struct {
	To   int64 `json:"to"`
	From int64 `json:"from"`
	// RequestID names the request that asked for it.
	RequestID string `json:"request_id,omitempty"`
	// Sink is the pipeline's sink when the rollback was asked for: the
	// leader that finishes it exposes To there.
	Sink      protocol.Endpoint `json:"sink"`
	Requested time.Time         `json:"requested"`
	// Done is set by the outcome entry; Error when the sink refused.
	Done     bool      `json:"done,omitempty"`
	Error    string    `json:"error,omitempty"`
	Finished time.Time `json:"finished,omitzero"`
}

// pending reports whether r was asked for and is not finished.
func (r *rollbackState) pending() bool { return r != nil && !r.Done }

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
	// Tables are the tables of a cdc pipeline that have a snapshot (the
	// initial one's, or an incremental one's, pending or taken), as
	// "schema.table"; nil until recorded. A table of the spec not among
	// them gets an incremental snapshot.
	Tables []string `json:"tables,omitempty"`
	// Snapshots are the incremental snapshots the reader is to take, in
	// order; Snapshotted the last ones it took (at most maxSnapshotted).
	Snapshots   []protocol.TableSnapshot `json:"snapshots,omitempty"`
	Snapshotted []snapshotTaken          `json:"snapshotted,omitempty"`
}

// snapshotTaken is an incremental snapshot a reader took.
type snapshotTaken struct {
	protocol.TableSnapshot
	Rows             int64     `json:"rows"`
	Error            string    `json:"error,omitempty"`
	Throttled        int       `json:"throttled,omitempty"`
	ThrottledSeconds float64   `json:"throttled_seconds,omitempty"`
	Done             time.Time `json:"done"`
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
	// Contract is the pipeline's data contract, which every task carries
	// to the worker that applies it; nil without one.
	Contract *contract.Spec `json:"contract,omitempty"`
	// Transform marks a run of a Transformation Replicator (pattern
	// transform), which Pattern names by how it loads.
	Transform bool `json:"transform,omitempty"`
	// Window is the window of an incremental run, DeltaColumn the column
	// it bounds; Live tells that the commit moves the watermark to
	// Window.To; Backfill names the backfill the run loads a window of.
	Window      *protocol.Window `json:"window,omitempty"`
	DeltaColumn string           `json:"delta_column,omitempty"`
	Live        bool             `json:"live,omitempty"`
	Backfill    string           `json:"backfill,omitempty"`
	// Since is where a run by position (a live incremental run without a
	// window) plans from: the pipeline's watermark when the run was
	// created; Watermark is where its plan reaches.
	Since string `json:"since,omitempty"`
	// Trim is set while the window of a live run of integer values is
	// capped: its plan ends it where the delta column's values end.
	Trim *trimState `json:"trim,omitempty"`
	// Merge is the spec's incremental.merge when the run was created: its
	// commit merges the window's rows by key.
	Merge *connectors.Merge `json:"merge,omitempty"`
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
	// Compact holds the settings of a compaction run (Pattern compact),
	// as its pipeline's spec had them when it was created (defaults not
	// filled in).
	Compact *protocol.CompactSettings `json:"compact,omitempty"`

	Planned bool `json:"planned"`
	// Attempt numbers the run's plans: 1 (0 in a run of an earlier
	// version's log) for the first, one more each time the run is planned
	// again because its plan can no longer be read; Replans says why each
	// earlier attempt was given up. Holds tells that the current plan can
	// only be read while the leader that planned it holds what it was
	// planned on (the source's snapshot), which dies with that leader.
	// Replan is set once a task found it gone (protocol.ErrorReplan): the
	// leader then plans the run again.
	Attempt int               `json:"attempt,omitempty"`
	Replans []protocol.Replan `json:"replans,omitempty"`
	Holds   bool              `json:"holds,omitempty"`
	Replan  string            `json:"replan,omitempty"`
	// Tasks are the current attempt's.
	Tasks []taskState `json:"tasks,omitempty"`
	// Schema is the schema of the run's rows, from its plan: every task
	// and the commit carry it. Nil when the source gave none.
	Schema    *protocol.Schema `json:"schema,omitempty"`
	Watermark string           `json:"watermark,omitempty"`
	Published bool             `json:"published"`
	Version   int64            `json:"version,omitempty"`
	Location  string           `json:"location,omitempty"`
	Marker    string           `json:"marker,omitempty"`
	Error     string           `json:"error,omitempty"`
	// Notified is set once the leader published the run's end (event, dead
	// letters, sink abort).
	Notified bool `json:"notified"`

	// succeeded counts the Tasks that succeeded, so that a result's
	// entry and the leader's look at a run do not scan its tasks. It is
	// kept by the handlers that change Tasks and is not stored: a restore
	// counts it again (state.recount).
	succeeded int
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
	Checksum  protocol.Sum       `json:"checksum,omitempty"`
	Location  string             `json:"location,omitempty"`
	Error     string             `json:"error,omitempty"`
}

// checksum is the checksum of the rows the task wrote.
func (t taskState) checksum() connectors.Checksum {
	return connectors.Checksum{Sum: uint64(t.Checksum), Rows: t.Rows}
}

// sinkSchema is the schema of the rows r writes: its plan's schema, with
// r's data contract applied (columns dropped, hashed ones text). A strict
// contract that does not classify a column of the plan is an error naming
// it.
func (r *runState) sinkSchema() (*protocol.Schema, error) {
	return r.Contract.Schema(r.Schema)
}

// checksum is the checksum of the rows r's tasks wrote.
func (r *runState) checksum() connectors.Checksum {
	var sum connectors.Checksum
	for _, t := range r.Tasks {
		sum.Merge(t.checksum())
	}
	return sum
}

// trimState is how the plan of a live run of integer values ends its
// capped window: after the greatest value, and after MaxRows rows from
// From (the watermark) when MaxRows is set.
type trimState struct {
	From    int64 `json:"from"`
	MaxRows int64 `json:"max_rows,omitempty"`
}

// positioned reports whether r is a run by position: a live incremental
// run without a window, planned from Since.
func (r *runState) positioned() bool {
	return r.Pattern == protocol.PatternIncremental && r.Window == nil && r.Live
}

// passthrough reports whether r is a run of a passthrough pipeline: live,
// the only one of its pipeline in flight, planned from Since (what the
// previous run committed) and reaching the position its plan says.
func (r *runState) passthrough() bool { return r.Pattern == protocol.PatternPassthrough }

// inUnits reports whether r runs in units: a passthrough's run, or a
// transform's without an incremental section whose source and sink
// exchange units of rows (connectors.Registry.TransformsUnits). It is
// planned with PlanUnits, its tasks read and write units (the contract
// applied to them on the workers) and it commits with CommitUnits.
func (c *Coordinator) inUnits(r *runState) bool {
	return r.passthrough() || r.Transform && r.Window == nil && !r.Live &&
		c.reg.TransformsUnits(r.Source, r.Sink)
}

// attempt returns the number of r's current attempt.
func (r *runState) attempt() int { return max(r.Attempt, 1) }

// taskID names task i of attempt: t00000, t00001, ... for the first
// attempt, a<N>-t00000, ... for attempt N, so that nothing an earlier
// attempt left behind (a task message, a late result, a late staging
// write) is ever taken for a task of a later one.
func taskID(attempt, i int) string {
	if attempt <= 1 {
		return fmt.Sprintf("t%05d", i)
	}
	return fmt.Sprintf("a%d-t%05d", attempt, i)
}

func (r *runState) finished() bool {
	return r.State == protocol.RunCommitted || r.State == protocol.RunFailed
}

// allSucceeded reports whether every task of a planned run succeeded.
func (r *runState) allSucceeded() bool {
	return r.Planned && r.succeeded == len(r.Tasks)
}

// setTasks replaces r's tasks and counts the succeeded ones.
func (r *runState) setTasks(tasks []taskState) {
	r.Tasks, r.succeeded = tasks, 0
	for _, t := range tasks {
		if t.State == protocol.TaskSucceeded {
			r.succeeded++
		}
	}
}

// task returns r's task id, or nil. Task i of a run is named taskID(attempt,
// i) (runPlannedCmd), so the number in id says where it is; an id of
// another form is looked for.
func (r *runState) task(id string) *taskState {
	if i, ok := taskIndex(id); ok {
		if i < len(r.Tasks) && r.Tasks[i].ID == id {
			return &r.Tasks[i]
		}
		return nil
	}
	for i := range r.Tasks {
		if r.Tasks[i].ID == id {
			return &r.Tasks[i]
		}
	}
	return nil
}

// taskIndex returns i of a task id made by taskID(attempt, i); false for
// an id of another form.
func taskIndex(id string) (int, bool) {
	if attempt, rest, ok := strings.Cut(id, "-"); ok {
		n, err := strconv.Atoi(strings.TrimPrefix(attempt, "a"))
		if !strings.HasPrefix(attempt, "a") || err != nil || n < 2 {
			return 0, false
		}
		id = rest
	}
	num, ok := strings.CutPrefix(id, "t")
	if !ok || len(num) < 5 || num[0] == '+' || num[0] == '-' {
		return 0, false
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 {
		return 0, false
	}
	return i, true
}

// clone copies r deeply enough that the copy can be read without the FSM
// lock (the FSM replaces, never mutates in place, maps and partitions).
func (r *runState) clone() *runState {
	c := r.head()
	c.Tasks, c.succeeded = slices.Clone(r.Tasks), r.succeeded
	return c
}

// head copies r as clone does but for its tasks, which a run may have by
// the hundred thousand: the copy's Tasks is nil, and only its
// allSucceeded tells of them (what r's tells). The leader reads a run
// this way on each of its results.
func (r *runState) head() *runState {
	c := *r
	c.Tasks, c.succeeded = nil, 0
	if !r.allSucceeded() {
		c.succeeded = -1 // never len(nil)
	}
	c.Replans = slices.Clone(r.Replans)
	c.Params = maps.Clone(r.Params)
	c.Trace = maps.Clone(r.Trace)
	if r.Trim != nil {
		t := *r.Trim
		c.Trim = &t
	}
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
		st.Tables = slices.Clone(p.Stream.Tables)
		st.Snapshots = slices.Clone(p.Stream.Snapshots)
		st.Snapshotted = slices.Clone(p.Stream.Snapshotted)
		c.Stream = &st
	}
	if p.Rollback != nil {
		rb := *p.Rollback
		c.Rollback = &rb
	}
	if p.Ready != nil {
		c.Ready = p.Ready.clone()
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

// nextValue returns where the next live window of integer values
// starts: the pipeline's watermark, or incremental.start before the first
// commit.
func (p *pipelineState) nextValue() (int64, error) {
	if p.Watermark != "" {
		n, err := strconv.ParseInt(p.Watermark, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pipeline %s: watermark %q is not an integer (was its delta column a time before?)", p.Spec.Name, p.Watermark)
		}
		return n, nil
	}
	if p.Spec.Incremental == nil || p.Spec.Incremental.StartValue == nil {
		return 0, fmt.Errorf("pipeline %s has no watermark yet: set incremental.start", p.Spec.Name)
	}
	return *p.Spec.Incremental.StartValue, nil
}

// liveStart returns where the next live window of p starts, as the empty
// window at that point: the watermark (incremental.start before the
// first commit), less incremental.lookback windows, never before
// incremental.start. With lookback a live run reads that many closed
// windows again.
func (p *pipelineState) liveStart() (protocol.Window, error) {
	inc := p.Spec.Incremental
	if inc.Values() {
		lo, err := p.nextValue()
		if err != nil {
			return protocol.Window{}, err
		}
		if back := int64(inc.Lookback) * inc.Span; back > 0 {
			if lo > math.MinInt64+back {
				lo -= back
			} else {
				lo = math.MinInt64
			}
			if inc.StartValue != nil {
				lo = max(lo, *inc.StartValue)
			}
		}
		return protocol.ValueWindow(lo, lo), nil
	}
	from, err := p.nextFrom()
	if err != nil {
		return protocol.Window{}, err
	}
	if inc.Lookback > 0 {
		from = from.Add(-time.Duration(inc.Lookback) * inc.Window)
		if !inc.Start.IsZero() && from.Before(inc.Start) {
			from = inc.Start.UTC()
		}
	}
	return protocol.Window{From: from, To: from}, nil
}

// startsAt reports whether w starts where the empty window at does.
func startsAt(w, at protocol.Window) bool {
	if w.Values || at.Values {
		return w.Values == at.Values && w.Lo == at.Lo
	}
	return w.From.Equal(at.From)
}

// advance moves p's watermark to the end of the live window w, only
// forward.
func (p *pipelineState) advance(w protocol.Window) {
	if w.Values {
		if cur, err := p.nextValue(); err != nil || w.Hi > cur || p.Watermark == "" {
			p.Watermark = strconv.FormatInt(w.Hi, 10)
		}
		return
	}
	if cur, err := p.nextFrom(); err != nil || w.To.After(cur) || p.Watermark == "" {
		p.Watermark = formatWatermark(w.To)
	}
}

// watermarkOf renders the position the end of window w is.
func watermarkOf(w protocol.Window) string {
	if w.Values {
		return strconv.FormatInt(w.Hi, 10)
	}
	return formatWatermark(w.To)
}

// formatWatermark renders an incremental watermark.
func formatWatermark(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// addLoaded merges w into the sorted, disjoint ranges of loaded (ranges of
// another kind, left by an earlier spec of the pipeline, stay apart). An
// empty window adds nothing.
func addLoaded(loaded []protocol.Window, w protocol.Window) []protocol.Window {
	if w.Empty() {
		return loaded
	}
	out := make([]protocol.Window, 0, len(loaded)+1)
	for _, l := range loaded {
		if l.Touches(w) {
			w = w.Union(l) // overlapping or touching: absorb
			continue
		}
		out = append(out, l)
	}
	out = append(out, w)
	slices.SortFunc(out, protocol.Window.Compare)
	return out
}

// covered reports whether loaded covers all of w.
func covered(loaded []protocol.Window, w protocol.Window) bool {
	return slices.ContainsFunc(loaded, func(l protocol.Window) bool { return l.Covers(w) })
}

// live returns the pipeline name unless it is missing or deleted.
func (s *state) live(name string) (*pipelineState, bool) {
	p, ok := s.Pipelines[name]
	if !ok || !p.Deleted.IsZero() {
		return nil, false
	}
	return p, true
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

func (s *state) runIn(id string, states ...string) (*runState, error) {
	r, ok := s.Runs[id]
	if !ok {
		return nil, refuse(refusedNotFound, "run %q not found", id)
	}
	if !slices.Contains(states, r.State) {
		return nil, refuse(refusedRunState, "run %q is %s, want %v", id, r.State, states)
	}
	return r, nil
}
