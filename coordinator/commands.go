package coordinator

import (
	"fmt"
	"time"

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
	// A rollback's intent or its outcome.
	cmdPipelineRollback cmdType = 16
	cmdRunReplan        cmdType = 17
	// The tables of a cdc pipeline and its incremental snapshots to take.
	cmdStreamTables cmdType = 20
	// An incremental snapshot the reader took.
	cmdSnapshotDone cmdType = 21
	// The leader's periodic trim of what the state no longer needs.
	cmdStateTrim cmdType = 40
	// A partition a readiness pipeline watches found complete, then
	// announced.
	cmdReadyFound     cmdType = 44
	cmdReadyAnnounced cmdType = 45
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
	case cmdPipelineRollback:
		return "pipeline rollback"
	case cmdStreamTables:
		return "stream tables"
	case cmdSnapshotDone:
		return "snapshot done"
	case cmdRunReplan:
		return "run replan"
	case cmdStateTrim:
		return "state trim"
	case cmdReadyFound:
		return "ready found"
	case cmdReadyAnnounced:
		return "ready announced"
	}
	return fmt.Sprintf("command %d", byte(t))
}

// commandBody is what every command body is: it names its command's type
// byte, so that a body is always logged under its own.
type commandBody interface {
	cmdType() cmdType
}

// command is a command body whose handler replies R. apply logs a command
// with its own type byte and returns its handler's reply; the FSM's Apply
// decodes the body the byte names and calls the handler.
//
// Adding a command: a new type byte (the next number, never a reused one),
// its name in String, a body type with cmdType and applyTo, a reply type
// (noReply when the caller needs none), a case in Apply, and the body in
// the tests' allCommands.
type command[R any] interface {
	commandBody
	// applyTo applies the command to s. It is deterministic: no clock,
	// no randomness, no I/O (every time comes in the body). A command
	// that cannot apply returns a *refusal and leaves s as it was.
	applyTo(s *state) (R, error)
}

// noReply is the reply of a command whose caller needs none.
type noReply struct{}

// Command bodies. Every time in them is put there by the leader: Apply
// never reads a clock.

// pipelinePutCmd stores a pipeline's spec, as a new pipeline or a new
// revision.
type pipelinePutCmd struct {
	Spec pipeline.Spec `json:"spec"`
	Time time.Time     `json:"time"`
}

func (pipelinePutCmd) cmdType() cmdType { return cmdPipelinePut }

// pipelinePutReply is the pipeline's new revision; Created is set when
// the entry created it (or applied it again after a delete).
type pipelinePutReply struct {
	Revision int64
	Created  bool
}

// pipelineDeleteCmd deletes a pipeline.
type pipelineDeleteCmd struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
}

func (pipelineDeleteCmd) cmdType() cmdType { return cmdPipelineDelete }

// pipelineDeleteReply is the deleted pipeline's last revision.
type pipelineDeleteReply struct {
	Revision int64
}

// cleanupDoneCmd records that the leader removed what a deleted pipeline
// left behind.
type cleanupDoneCmd struct {
	ID string `json:"id"`
}

func (cleanupDoneCmd) cmdType() cmdType { return cmdCleanupDone }

// stateTrimCmd drops from the state what nothing needs any more, so that
// it stays bounded however many runs and pipelines come and go: the
// deleted pipelines whose cleanup is over (keeping only their numbers),
// the partitions of the finished runs whose end was announced, the windows
// of finished backfills (counted, the failed ones kept), and the cleanups
// pending since before Time - CleanupExpiry (given up; 0: none).
type stateTrimCmd struct {
	CleanupExpiry time.Duration `json:"cleanup_expiry,omitempty"`
	Time          time.Time     `json:"time"`
}

func (stateTrimCmd) cmdType() cmdType { return cmdStateTrim }

// stateTrimReply says what a trim dropped: the deleted pipelines, the
// cleanups given up (for the leader to log what is left to remove), and
// how many runs and backfills it stripped.
type stateTrimReply struct {
	Dropped   []string  `json:"dropped,omitempty"`
	Expired   []cleanup `json:"expired,omitempty"`
	Runs      int       `json:"runs,omitempty"`
	Backfills int       `json:"backfills,omitempty"`
}

// changed reports whether the trim dropped anything.
func (r stateTrimReply) changed() bool {
	return len(r.Dropped)+len(r.Expired)+r.Runs+r.Backfills > 0
}

// runCreateCmd creates a run; the leader sends it through createRun only.
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
	// Backfill names the backfill whose window Window the run loads (not
	// live): the window must be queued and fewer than the backfill's
	// concurrency running; it is marked running in the same entry.
	Backfill string `json:"backfill,omitempty"`
	// Compact makes the run a compaction of the pipeline's dataset (its
	// sink), with the default settings (`sluice compact` naming a pipeline
	// that is not a compact pipeline). Every run of a compact pipeline is
	// a compaction without it.
	Compact bool `json:"compact,omitempty"`
}

func (runCreateCmd) cmdType() cmdType { return cmdRunCreate }

// runCreateReply names the run created, or the one the request id
// created before (Reused).
type runCreateReply struct {
	RunID  string
	Reused bool
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

func (leaseGrantCmd) cmdType() cmdType { return cmdLeaseGrant }

// scheduleTickCmd records a schedule tick that started no run (an
// incremental pipeline up to date): the tick is done all the same.
type scheduleTickCmd struct {
	Pipeline string    `json:"pipeline"`
	Schedule string    `json:"schedule"`
	Tick     time.Time `json:"tick"`
	Time     time.Time `json:"time"`
}

func (scheduleTickCmd) cmdType() cmdType { return cmdScheduleTick }

// backfillCmd starts a backfill: the FSM splits [From, To) into windows
// and marks those already loaded as skipped (unless Replace). With
// LeaderStarts the other windows stay queued, and the leader creates their
// runs, Concurrency at a time, with run-create entries naming the backfill
// (runCreateCmd.Backfill). A backfill entry of an earlier version has no
// LeaderStarts: the FSM creates the runs of its first Concurrency windows,
// and each run's end starts the next, as that version did.
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
	// LeaderStarts is set by this version's leader: it starts the windows.
	LeaderStarts bool `json:"leader_starts,omitempty"`
	// Range is the range of values [Lo, Hi) of a backfill of integer
	// windows (From and To zero).
	Range *protocol.Window `json:"range,omitempty"`
	// Windows, when set, are the windows to load (sorted, apart, inside
	// the range), instead of all the range's: a repair of the windows
	// sluice check found different.
	Windows []protocol.Window `json:"windows,omitempty"`
}

func (backfillCmd) cmdType() cmdType { return cmdBackfill }

// backfillReply names the backfill created, or the one the request id
// created before (Reused).
type backfillReply struct {
	Backfill string
	Reused   bool
}

// runPlannedCmd records a run's plan: a task per partition, the position
// the run reaches and the schema of its rows.
type runPlannedCmd struct {
	Run        string               `json:"run"`
	Partitions []protocol.Partition `json:"partitions"`
	Watermark  string               `json:"watermark,omitempty"`
	Time       time.Time            `json:"time"`
	// Schema is the plan's schema; nil when the source gave none.
	Schema *protocol.Schema `json:"schema,omitempty"`
	// Holds tells that the plan's partitions can only be read while the
	// leader that planned them holds what they were planned on (the
	// source's snapshot: connectors.Plan.Holds).
	Holds bool `json:"holds,omitempty"`
	// Window is the window a run of integer values was planned for: its
	// capped window ended where the column's values end (Plan.Window).
	Window *protocol.Window `json:"window,omitempty"`
}

func (runPlannedCmd) cmdType() cmdType { return cmdRunPlanned }

// runReplanCmd gives up attempt Attempt of a running run whose plan can
// no longer be read (what it held is gone: Reason says how it was found
// out). The run plans again as its next attempt, or fails once Limit
// attempts were given up.
type runReplanCmd struct {
	Run     string `json:"run"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
	Limit   int    `json:"limit"`
	Keep    int    `json:"keep"`
	// KeepUnannounced is runCommittedCmd's.
	KeepUnannounced bool      `json:"keep_unannounced,omitempty"`
	Time            time.Time `json:"time"`
}

func (runReplanCmd) cmdType() cmdType { return cmdRunReplan }

// runReplanReply is the run's attempt after the entry: the next one, or
// the one given up when the run Failed.
type runReplanReply struct {
	Attempt int
	Failed  bool
}

// runRef names a run, with the leader's time: the body of the commands
// that need nothing more.
type runRef struct {
	Run  string    `json:"run"`
	Time time.Time `json:"time"`
}

// runPublishedCmd records that every pending task of a run is published.
type runPublishedCmd runRef

func (runPublishedCmd) cmdType() cmdType { return cmdRunPublished }

// runCommittingCmd assigns a run whose tasks all succeeded its dataset
// version, before the sink's commit.
type runCommittingCmd runRef

func (runCommittingCmd) cmdType() cmdType { return cmdRunCommitting }

// runCommittingReply is the dataset version the run commits as.
type runCommittingReply struct {
	Version int64
}

// runNotifiedCmd records that the leader announced a run's end, keeping
// the newest Keep finished runs of its pipeline whose end was announced
// (0, in an entry of an earlier version: all).
type runNotifiedCmd struct {
	Run  string    `json:"run"`
	Keep int       `json:"keep,omitempty"`
	Time time.Time `json:"time"`
}

func (runNotifiedCmd) cmdType() cmdType { return cmdRunNotified }

// runWaitingCmd records that a run's source input is not ready: the run
// waits (no task published) for What, a partition's path.
type runWaitingCmd struct {
	Run  string    `json:"run"`
	What string    `json:"what"`
	Time time.Time `json:"time"`
}

func (runWaitingCmd) cmdType() cmdType { return cmdRunWaiting }

// runWaitingReply tells whether the entry changed the run (false when it
// already waited for the same input).
type runWaitingReply struct {
	Changed bool
}

// taskResultCmd records the result of one task attempt, or (Final) that
// the task will get no more deliveries.
type taskResultCmd struct {
	Run        string              `json:"run"`
	Task       string              `json:"task"`
	Attempt    int                 `json:"attempt"`
	Worker     string              `json:"worker,omitempty"`
	Rows       int64               `json:"rows"`
	Bytes      int64               `json:"bytes"`
	Checksum   protocol.Sum        `json:"checksum,omitempty"`
	Location   string              `json:"location,omitempty"`
	ErrorClass protocol.ErrorClass `json:"error_class,omitempty"`
	Error      string              `json:"error,omitempty"`
	// Final marks a failure as the task's last: no delivery will follow
	// (the max-deliveries advisory).
	Final bool      `json:"final,omitempty"`
	Time  time.Time `json:"time"`
}

func (taskResultCmd) cmdType() cmdType { return cmdTaskResult }

// taskResultReply tells whether the result was recorded (false when it was
// ignored: an unknown or finished run, a task already done) and whether it
// failed the run.
type taskResultReply struct {
	Changed   bool
	RunFailed bool
}

// runCommittedCmd records that the run's sink committed it, keeping the
// newest Keep finished runs and versions of its pipeline.
type runCommittedCmd struct {
	Run      string `json:"run"`
	Location string `json:"location,omitempty"`
	Marker   string `json:"marker,omitempty"`
	Keep     int    `json:"keep"`
	// KeepUnannounced keeps, beyond Keep, the finished runs whose end the
	// leader has not announced yet (its run-notified entry prunes them):
	// a run that ends while more than Keep others end is announced all the
	// same. Unset in an entry of an earlier version.
	KeepUnannounced bool      `json:"keep_unannounced,omitempty"`
	Time            time.Time `json:"time"`
}

func (runCommittedCmd) cmdType() cmdType { return cmdRunCommitted }

// runFailedCmd fails a run with Error.
type runFailedCmd struct {
	Run   string `json:"run"`
	Error string `json:"error"`
	Keep  int    `json:"keep"`
	// KeepUnannounced is runCommittedCmd's.
	KeepUnannounced bool      `json:"keep_unannounced,omitempty"`
	Time            time.Time `json:"time"`
}

func (runFailedCmd) cmdType() cmdType { return cmdRunFailed }

// pipelineRollbackCmd records a rollback of a pipeline's dataset to
// version To in two entries: the intent, before the leader asks the sink
// to expose To, and the outcome (Done), after. A leader that finds an
// intent without its outcome (the one before it died in between, or the
// sink failed) finishes it before it commits anything of the pipeline.
type pipelineRollbackCmd struct {
	Pipeline string `json:"pipeline"`
	To       int64  `json:"to"`
	// RequestID, on an intent, names the request that asked for it: the
	// same request again is answered with this rollback.
	RequestID string `json:"request_id,omitempty"`
	// Done marks the outcome: the sink exposes To, or, with Error, it
	// refused and the version exposed before stays.
	Done  bool      `json:"done,omitempty"`
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time"`
}

func (pipelineRollbackCmd) cmdType() cmdType { return cmdPipelineRollback }

// pipelineRollbackReply is the version exposed before the rollback (From)
// and the version exposed after the entry. Reused is set when the
// intent's request id asked for the pipeline's last rollback already.
type pipelineRollbackReply struct {
	From    int64
	Version int64
	Reused  bool
}

// streamTablesCmd records the tables a cdc pipeline captures with a
// snapshot (when Tables is not nil) and adds incremental snapshots for its
// reader to take (of tables added to it, or asked for again).
type streamTablesCmd struct {
	Pipeline string `json:"pipeline"`
	// Tables, when not nil, replaces the tables recorded.
	Tables []string `json:"tables,omitempty"`
	// Add are snapshots to take; one of a table that has one pending
	// already is left out.
	Add []protocol.TableSnapshot `json:"add,omitempty"`
	// Unread are tables added to a pipeline that takes no snapshots
	// (cdc.snapshot: never, Reason protocol.SnapshotNever): recorded
	// among the snapshots taken, as none taken, so that the status says
	// their rows from before were not read.
	Unread []protocol.TableSnapshot `json:"unread,omitempty"`
	Time   time.Time                `json:"time"`
}

func (streamTablesCmd) cmdType() cmdType { return cmdStreamTables }

// streamTablesReply is the pipeline's pending snapshots after the entry.
type streamTablesReply struct {
	Pending []protocol.TableSnapshot
}

// snapshotDoneCmd records that the reader of a cdc pipeline took the
// incremental snapshot ID.
type snapshotDoneCmd struct {
	Pipeline string `json:"pipeline"`
	ID       string `json:"id"`
	Rows     int64  `json:"rows"`
	// Error says why the reader could not take it (the snapshot is given
	// up).
	Error string `json:"error,omitempty"`
	// Throttled counts the times cdc.max_lag held it back, and
	// ThrottledSeconds for how long in all.
	Throttled        int       `json:"throttled,omitempty"`
	ThrottledSeconds float64   `json:"throttled_seconds,omitempty"`
	Time             time.Time `json:"time"`
}

func (snapshotDoneCmd) cmdType() cmdType { return cmdSnapshotDone }
