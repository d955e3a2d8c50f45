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
