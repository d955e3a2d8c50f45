package protocol

import (
	"encoding/json"
	"time"
)

// The control API is request/reply over NATS on sluice.api.<verb>, served by
// the coordinator leader only. Requests and replies are JSON. A reply that
// failed is an APIError.

// API verbs.
const (
	VerbApply     = "apply"
	VerbRun       = "run"
	VerbStatus    = "status"
	VerbRunStatus = "run.get"
	VerbPipelines = "pipelines"
	// VerbBackfill starts a backfill of an incremental pipeline;
	// VerbBackfillGet reports one.
	VerbBackfill    = "backfill"
	VerbBackfillGet = "backfill.get"
	// VerbDelete deletes a pipeline.
	VerbDelete = "delete"
)

// APIError is the reply of a request that failed.
type APIError struct {
	Error string `json:"error"`
	// Code is a short machine-readable reason: "invalid", "not_found",
	// "not_leader", "internal".
	Code string `json:"code"`
}

// ApplyRequest stores or replaces a pipeline. Spec is the pipeline spec as
// JSON (the coordinator validates it again).
type ApplyRequest struct {
	Spec json.RawMessage `json:"spec"`
	// Check asks the leader to connect to the spec's source and sink and
	// check what it names (tables, columns, keys, replica identity, paths)
	// before storing it; a failed check stores nothing.
	Check bool `json:"check,omitempty"`
	// DryRun validates (and with Check, checks) the spec and stores
	// nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Along names the other pipelines of the same dry run, with their
	// patterns: stored before this one when the whole batch is applied, a
	// cdc pipeline among them may be this cdc_apply pipeline's upstream.
	Along map[string]Pattern `json:"along,omitempty"`
}

// ApplyReply tells what was stored.
type ApplyReply struct {
	Pipeline string `json:"pipeline"`
	// Revision counts how many times the pipeline was applied.
	Revision int64 `json:"revision"`
	Created  bool  `json:"created"`
	// Checked says what a Check found, one line per connector checked
	// (or not: a kind without a check says so).
	Checked []string `json:"checked,omitempty"`
	// DryRun: nothing was stored.
	DryRun bool `json:"dry_run,omitempty"`
}

// DeleteRequest deletes a pipeline that has no run or backfill in
// progress (and, for a cdc pipeline, no cdc_apply pipeline applying its
// events).
type DeleteRequest struct {
	Pipeline string `json:"pipeline"`
}

// DeleteReply tells what the delete left for the leader to clean up, if
// anything: a cdc pipeline's slot and publication (dropped once the worker
// streaming it let go) and its events in SLUICE_CDC, a cdc_apply
// pipeline's consumer.
type DeleteReply struct {
	Pipeline string `json:"pipeline"`
	Cleanup  string `json:"cleanup,omitempty"`
}

// RunRequest asks for a run of a pipeline now.
type RunRequest struct {
	Pipeline    string            `json:"pipeline"`
	Params      map[string]string `json:"params,omitempty"`
	LogicalTime time.Time         `json:"logical_time,omitzero"`
	// RequestID makes the request idempotent: the same id gives the same run.
	RequestID string `json:"request_id,omitempty"`
	// Window, for an incremental pipeline, asks for exactly this window
	// (a re-run: its rows in the target are replaced, never doubled)
	// instead of the next one after the watermark. A run with an explicit
	// window never moves the watermark.
	Window *Window `json:"window,omitempty"`
}

// RunReply names the run that was started. For an incremental pipeline
// whose next window is empty (the watermark has reached now - lag), no run
// is started: RunID is empty, UpToDate is true and Window is the empty
// window [watermark, now - lag).
//
// A run whose source input is not ready yet is replied to while it waits:
// Tasks is 0 and WaitingFor names the input (a partition's path).
type RunReply struct {
	RunID      string  `json:"run"`
	Tasks      int     `json:"tasks"`
	UpToDate   bool    `json:"up_to_date,omitempty"`
	Window     *Window `json:"window,omitempty"`
	WaitingFor string  `json:"waiting_for,omitempty"`
}

// MaxStatusRuns caps the runs a status lists; MaxTaskList the tasks a
// run.get lists; MaxWindowList the windows a backfill's status lists: a
// status polled often stays small however many runs, tasks and windows
// there are.
const (
	MaxStatusRuns = 1000
	MaxTaskList   = 1000
	MaxWindowList = 1000
)

// StatusRequest filters a status reply; empty fields mean all.
type StatusRequest struct {
	Pipeline string `json:"pipeline,omitempty"`
	// Limit caps the number of runs listed, newest first (default 20, at
	// most MaxStatusRuns).
	Limit int `json:"limit,omitempty"`
}

// StatusReply describes the cluster.
type StatusReply struct {
	Leader    string           `json:"leader"`
	Nodes     []NodeStatus     `json:"nodes,omitempty"`
	Pipelines []PipelineStatus `json:"pipelines"`
	Runs      []RunStatus      `json:"runs"`
	Workers   []Heartbeat      `json:"workers"`
}

// NodeStatus is one coordinator in the Raft configuration.
type NodeStatus struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// PipelineStatus is one pipeline.
type PipelineStatus struct {
	Name     string  `json:"name"`
	Pattern  Pattern `json:"pattern"`
	Revision int64   `json:"revision"`
	Schedule string  `json:"schedule,omitempty"`
	// After names the pipeline whose commits start runs of this one.
	After string `json:"after,omitempty"`
	// LastTick is the last schedule tick a run was started for (the
	// run's logical time); NextTick the next one due.
	LastTick time.Time `json:"last_tick,omitzero"`
	NextTick time.Time `json:"next_tick,omitzero"`
	// Version is the dataset version currently exposed (0 before any).
	Version   int64  `json:"version"`
	LastRun   string `json:"last_run,omitempty"`
	Watermark string `json:"watermark,omitempty"`
	// Lag counts what the source of a pipeline read by position (or of a
	// passthrough) holds past the watermark, for sources that can say
	// (Kafka: the records not copied yet, as a consumer group's lag);
	// LagError says why it could not be counted.
	Lag      *int64 `json:"lag,omitempty"`
	LagError string `json:"lag_error,omitempty"`
	// RollbackTo is the version a rollback recorded but not finished yet
	// exposes (0: none pending); the leader finishes it before it commits
	// anything of the pipeline.
	RollbackTo int64 `json:"rollback_to,omitempty"`
	// Events counts the events of an external trigger (a subject of
	// another system, a feed) that the current leader handled.
	Events *TriggerEvents `json:"events,omitempty"`
	// Ready is where a readiness pipeline is; its Watermark is then where
	// the next partition it checks starts.
	Ready *ReadyStatus `json:"ready,omitempty"`
}

// ReadyStatus is what a readiness pipeline announced.
type ReadyStatus struct {
	// Announced counts the partitions announced; Last is the last one.
	Announced int64     `json:"announced"`
	Last      string    `json:"last,omitempty"`
	LastTime  time.Time `json:"last_time,omitzero"`
	// Pending is a partition found complete whose announcement the leader
	// has not recorded yet.
	Pending string `json:"pending,omitempty"`
	// Checks counts the checks of the pipeline's next partitions the
	// leader completed since it leads; Checked is when the last one
	// started. A check started after a change to the source has seen it.
	Checks  int64     `json:"checks"`
	Checked time.Time `json:"checked,omitzero"`
}

// TriggerEvents counts what the leader did with the events of a
// pipeline's external trigger since it leads.
type TriggerEvents struct {
	// Source names where the events come from ("subject s3.events",
	// "kafka feed").
	Source string `json:"source"`
	// Runs counts the events that started a run (or found the run an
	// earlier delivery started); Filtered those the filter rejected;
	// DeadLettered those dead-lettered with their reason.
	Runs         int64     `json:"runs"`
	Filtered     int64     `json:"filtered"`
	DeadLettered int64     `json:"dead_lettered"`
	Last         time.Time `json:"last,omitzero"`
	// Error is the last error reading the events, if they cannot be read.
	Error string `json:"error,omitempty"`
}

// Run states. A run is waiting (between planning and running) while its
// source input is not ready yet, such as a time partition without its
// _SUCCESS: no task is published and no worker slot is held.
const (
	RunPlanning   = "planning"
	RunWaiting    = "waiting"
	RunRunning    = "running"
	RunCommitting = "committing"
	RunCommitted  = "committed"
	RunFailed     = "failed"
)

// Task states.
const (
	TaskPending   = "pending"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
)

// RunStatus is one run.
type RunStatus struct {
	RunID    string `json:"run"`
	Pipeline string `json:"pipeline"`
	State    string `json:"state"`
	Tasks    int    `json:"tasks"`
	// TasksDone counts succeeded tasks, TasksFailed dead ones.
	TasksDone   int `json:"tasks_done"`
	TasksFailed int `json:"tasks_failed"`
	// Rows counts the rows written, or, where Unit is set, those units
	// (a passthrough run's "files" or "records").
	Rows     int64     `json:"rows"`
	Unit     string    `json:"unit,omitempty"`
	Bytes    int64     `json:"bytes"`
	Checksum string    `json:"checksum,omitempty"`
	Version  int64     `json:"version,omitempty"`
	Location string    `json:"location,omitempty"`
	Marker   string    `json:"marker,omitempty"`
	Error    string    `json:"error,omitempty"`
	TraceID  string    `json:"trace_id,omitempty"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Notified tells that the leader has published the end of the run
	// (its event on SLUICE_EVENTS) and started the runs of the pipelines
	// that run after it.
	Notified bool `json:"notified,omitempty"`
	// LogicalTime is the run's logical time (a scheduled run's tick).
	LogicalTime time.Time `json:"logical_time,omitzero"`
	// Window is the window of an incremental run; Live tells whether the
	// run advances the watermark (a window after it) or not (an explicit
	// window: a re-run or a backfill). Backfill names the backfill the
	// run belongs to.
	Window   *Window `json:"window,omitempty"`
	Live     bool    `json:"live,omitempty"`
	Backfill string  `json:"backfill,omitempty"`
	// Since and Reaches are the positions a run by position (an
	// incremental run of a source that keeps its own position) reads
	// from and, once planned, reaches: its commit moves the pipeline's
	// watermark from Since to Reaches. Since is empty for a first run.
	Since   string `json:"since,omitempty"`
	Reaches string `json:"reaches,omitempty"`
	// WaitingFor names the source input a waiting run waits for (a
	// partition's path), and WaitingSince when it started waiting; both
	// are set in state waiting only. ReadyDeadline is when the run fails
	// if the input is still not ready (zero: no limit).
	WaitingFor    string    `json:"waiting_for,omitempty"`
	WaitingSince  time.Time `json:"waiting_since,omitzero"`
	ReadyDeadline time.Time `json:"ready_deadline,omitzero"`
	// Trigger is the context of the trigger that started the run (nil for
	// a run started through the API).
	Trigger *TriggerContext `json:"trigger,omitempty"`
	// Attempt numbers the run's plans: 1, and one more each time the run
	// was planned again because what its plan held was gone (the source's
	// snapshot, held by a leader that stopped). Tasks and TaskList are the
	// current attempt's. Replans says why each earlier attempt was given
	// up, oldest first.
	Attempt int      `json:"attempt,omitempty"`
	Replans []Replan `json:"replans,omitempty"`
	// TaskList is filled by run.get only, with at most MaxTaskList tasks:
	// the failed ones first, then in task order (fewer than Tasks when
	// cut).
	TaskList []TaskStatus `json:"task_list,omitempty"`
}

// Replan is one attempt of a run given up and planned again: which
// attempt, why and when.
type Replan struct {
	Attempt int       `json:"attempt"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
}

// TaskStatus is one task of a run.
type TaskStatus struct {
	TaskID    string `json:"task"`
	Partition string `json:"partition"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Worker    string `json:"worker,omitempty"`
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	Error     string `json:"error,omitempty"`
}

// RunGetRequest asks for one run with its tasks.
type RunGetRequest struct {
	RunID string `json:"run"`
}

// BackfillRequest asks for a backfill of an incremental pipeline: [From,
// To) is split into windows of the pipeline's incremental.window (the last
// one may be shorter), each loaded by its own run, at most Concurrency at
// once (the leader queues the rest). Windows already committed for the
// pipeline (by a live run or an earlier backfill) are skipped unless
// Replace is set, when they are loaded again and replace their rows.
// Backfill runs never move the watermark.
//
// For a pipeline of integer windows, Range is the range of values [Lo,
// Hi) to backfill (Values set), split into windows of its
// incremental.window; From and To are then unused.
type BackfillRequest struct {
	Pipeline    string    `json:"pipeline"`
	From        time.Time `json:"from,omitzero"`
	To          time.Time `json:"to,omitzero"`
	Range       *Window   `json:"range,omitempty"`
	Concurrency int       `json:"concurrency,omitempty"`
	Replace     bool      `json:"replace,omitempty"`
	// RequestID makes the request idempotent: the same id gives the same
	// backfill.
	RequestID string `json:"request_id,omitempty"`
}

// BackfillGetRequest asks for one backfill.
type BackfillGetRequest struct {
	ID string `json:"id"`
}

// Backfill states, of a whole backfill and of its windows.
const (
	BackfillRunning = "running"
	BackfillDone    = "done"
	// Window states: queued (waiting for a slot), running (its run is in
	// flight), committed, failed, skipped (committed before; not loaded).
	WindowQueued    = "queued"
	WindowRunning   = "running"
	WindowCommitted = "committed"
	WindowFailed    = "failed"
	WindowSkipped   = "skipped"
)

// BackfillStatus describes a backfill.
type BackfillStatus struct {
	ID       string        `json:"id"`
	Pipeline string        `json:"pipeline"`
	From     time.Time     `json:"from,omitzero"`
	To       time.Time     `json:"to,omitzero"`
	Window   time.Duration `json:"window"`
	// Range and Span are the range of values and the window size of a
	// backfill of integer windows (From, To and Window then zero).
	Range       *Window `json:"range,omitempty"`
	Span        int64   `json:"span,omitempty"`
	Concurrency int     `json:"concurrency"`
	Replace     bool    `json:"replace,omitempty"`
	State       string  `json:"state"`
	// Windows lists at most MaxWindowList windows, in order: the failed
	// and running ones first, then the queued ones, then the others; the
	// counts are of all of them.
	Windows []BackfillWindow `json:"windows"`
	// Counts of Windows by state, and the rows of committed windows.
	Total     int       `json:"total"`
	Queued    int       `json:"queued"`
	Running   int       `json:"running"`
	Committed int       `json:"committed"`
	Failed    int       `json:"failed"`
	Skipped   int       `json:"skipped"`
	Rows      int64     `json:"rows"`
	Created   time.Time `json:"created"`
	Finished  time.Time `json:"finished,omitzero"`
}

// BackfillWindow is one window of a backfill.
type BackfillWindow struct {
	Window
	State string `json:"state"`
	Run   string `json:"run,omitempty"`
	Rows  int64  `json:"rows,omitempty"`
	Error string `json:"error,omitempty"`
}

// VerbRollback exposes an earlier kept version of a pipeline's dataset
// again; VerbPipelineGet returns a pipeline's stored spec.
const (
	VerbRollback    = "rollback"
	VerbPipelineGet = "pipeline.get"
)

// RollbackRequest asks the leader to expose version To of a pipeline's
// dataset again; To 0 means the newest kept version older than the exposed
// one. Only a full_load pipeline whose sink keeps versions can be rolled
// back.
type RollbackRequest struct {
	Pipeline string `json:"pipeline"`
	To       int64  `json:"to,omitempty"`
	// RequestID makes the request idempotent: a request repeated with the
	// same id (after a lost reply) is answered with the rollback the first
	// one made, and rolls back no further.
	RequestID string `json:"request_id,omitempty"`
}

// RollbackReply tells what a rollback exposed.
type RollbackReply struct {
	Pipeline string `json:"pipeline"`
	// From is the version exposed before the rollback, Version the one
	// exposed now; they are equal when the version asked for was exposed
	// already.
	From    int64 `json:"from"`
	Version int64 `json:"version"`
	// Versions are the versions the sink keeps now, oldest first.
	Versions []DatasetVersion `json:"versions"`
}

// DatasetVersion is one version of a dataset that a sink keeps.
type DatasetVersion struct {
	Version int64  `json:"version"`
	Run     string `json:"run,omitempty"`
	Rows    int64  `json:"rows"`
	// Location is where the version's data lies: a directory, a table.
	Location string `json:"location,omitempty"`
	// Time is when the version was committed.
	Time time.Time `json:"time,omitzero"`
	// Exposed tells whether readers see this version now.
	Exposed bool `json:"exposed,omitempty"`
}

// PipelineGetRequest asks for one pipeline.
type PipelineGetRequest struct {
	Pipeline string `json:"pipeline"`
}

// PipelineGetReply is a pipeline's status and its spec as the cluster
// stores it (a pipeline.Spec as JSON, with the YAML it was applied from
// under "text"): `${ENV}` references stay as written, never expanded, and
// relative paths are resolved against the directory of the spec file.
type PipelineGetReply struct {
	Status PipelineStatus  `json:"status"`
	Spec   json.RawMessage `json:"spec"`
}

// VerbCheck compares an incremental pipeline's source and target window by
// window (sluice check).
const VerbCheck = "check"

// CheckRequest asks the leader to count and checksum, for each window of
// [From, To) (or of Range, for integer windows) split as a backfill would
// be, the source's rows and the target's, and to list the windows where
// they differ. With Repair those windows are loaded again by a backfill
// that replaces (or merges) them, Concurrency at once.
type CheckRequest struct {
	Pipeline    string    `json:"pipeline"`
	From        time.Time `json:"from,omitzero"`
	To          time.Time `json:"to,omitzero"`
	Range       *Window   `json:"range,omitempty"`
	Repair      bool      `json:"repair,omitempty"`
	Concurrency int       `json:"concurrency,omitempty"`
}

// CheckReply lists the windows checked.
type CheckReply struct {
	Pipeline string        `json:"pipeline"`
	Windows  []CheckWindow `json:"windows"`
	// Differ counts the windows whose source and target differ.
	Differ int `json:"differ"`
	// Backfill is the backfill that loads them again (Repair).
	Backfill string `json:"backfill,omitempty"`
}

// CheckWindow is one window checked: the rows and checksum of the source
// and of the target. Checksums of two forms (a PostgreSQL source, a JSONL
// dataset) do not compare: then only the counts do (ChecksumsCompared
// false).
type CheckWindow struct {
	Window
	SourceRows        int64  `json:"source_rows"`
	SourceChecksum    string `json:"source_checksum"`
	TargetRows        int64  `json:"target_rows"`
	TargetChecksum    string `json:"target_checksum"`
	ChecksumsCompared bool   `json:"checksums_compared"`
	Same              bool   `json:"same"`
}
