package coordinator

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// fsm is the Raft state machine. Apply, Snapshot and Restore are called by
// Raft; the leader and the API read the state through the query methods,
// which return copies.
type fsm struct {
	mu sync.RWMutex
	st *state
	// changed is closed and replaced after every applied entry.
	changed chan struct{}
}

// The FSM takes the entries Raft commits together as one batch.
var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM() *fsm { return &fsm{st: newState(), changed: make(chan struct{})} }

// encodeCmd builds the log entry of a command: its type byte, then its
// JSON body.
func encodeCmd(c commandBody) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.cmdType(), err)
	}
	return append([]byte{byte(c.cmdType())}, b...), nil
}

// Apply applies one log entry. It is deterministic: the same entries give
// the same state on every node. Its response is the handler's reply, or
// the *refusal of a command that did not apply. An unknown command type
// or a body that does not decode panics: diverging state is worse than a
// crash.
func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.applied()
	return f.apply(l)
}

// ApplyBatch applies the entries Raft committed together, as Apply would
// one by one, under one hold of the lock (raft.BatchingFSM): the leader
// commits the results of many tasks at once.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.mu.Lock()
	defer f.applied()
	for i, l := range logs {
		out[i] = f.apply(l)
	}
	return out
}

// applied tells the watchers that entries were applied, and unlocks.
func (f *fsm) applied() {
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// apply applies entry l; the caller holds f.mu.
func (f *fsm) apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("coordinator fsm: empty log entry at index %d", l.Index))
	}
	t := cmdType(l.Data[0])
	switch t {
	case cmdPipelinePut:
		return dispatch[pipelinePutCmd](f.st, l)
	case cmdRunCreate:
		return dispatch[runCreateCmd](f.st, l)
	case cmdRunPlanned:
		return dispatch[runPlannedCmd](f.st, l)
	case cmdRunPublished:
		return dispatch[runPublishedCmd](f.st, l)
	case cmdTaskResult:
		return dispatch[taskResultCmd](f.st, l)
	case cmdRunCommitting:
		return dispatch[runCommittingCmd](f.st, l)
	case cmdRunCommitted:
		return dispatch[runCommittedCmd](f.st, l)
	case cmdRunFailed:
		return dispatch[runFailedCmd](f.st, l)
	case cmdRunNotified:
		return dispatch[runNotifiedCmd](f.st, l)
	case cmdBackfill:
		return dispatch[backfillCmd](f.st, l)
	case cmdRunWaiting:
		return dispatch[runWaitingCmd](f.st, l)
	case cmdScheduleTick:
		return dispatch[scheduleTickCmd](f.st, l)
	case cmdLeaseGrant:
		return dispatch[leaseGrantCmd](f.st, l)
	case cmdPipelineDelete:
		return dispatch[pipelineDeleteCmd](f.st, l)
	case cmdCleanupDone:
		return dispatch[cleanupDoneCmd](f.st, l)
	case cmdPipelineRollback:
		return dispatch[pipelineRollbackCmd](f.st, l)
	case cmdStreamTables:
		return dispatch[streamTablesCmd](f.st, l)
	case cmdSnapshotDone:
		return dispatch[snapshotDoneCmd](f.st, l)
	case cmdRunReplan:
		return dispatch[runReplanCmd](f.st, l)
	case cmdStateTrim:
		return dispatch[stateTrimCmd](f.st, l)
	case cmdReadyFound:
		return dispatch[readyFoundCmd](f.st, l)
	case cmdReadyAnnounced:
		return dispatch[readyAnnouncedCmd](f.st, l)
	}
	panic(fmt.Sprintf("coordinator fsm: unknown command type %d at index %d", byte(t), l.Index))
}

// dispatch decodes the body of entry l as a C and applies it to s. A C
// whose own type byte is not the entry's (a wrong case in Apply) panics,
// as does a body that does not decode.
func dispatch[C command[R], R any](s *state, l *raft.Log) any {
	var c C
	if t := cmdType(l.Data[0]); c.cmdType() != t {
		panic(fmt.Sprintf("coordinator fsm: entry of type %s at index %d dispatched as %T, a %s", t, l.Index, c, c.cmdType()))
	}
	if err := json.Unmarshal(l.Data[1:], &c); err != nil {
		panic(fmt.Sprintf("coordinator fsm: decode %s at index %d: %v", c.cmdType(), l.Index, err))
	}
	r, err := c.applyTo(s)
	if err != nil {
		return err
	}
	return r
}
