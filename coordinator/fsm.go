package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

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
