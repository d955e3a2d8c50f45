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
	cmdPipelinePut   cmdType = 1
	cmdRunCreate     cmdType = 2
	cmdRunPlanned    cmdType = 3
	cmdRunPublished  cmdType = 4
	cmdTaskResult    cmdType = 5
	cmdRunCommitting cmdType = 6
	cmdRunCommitted  cmdType = 7
	cmdRunFailed     cmdType = 8
	cmdRunNotified   cmdType = 9
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
	}
	return fmt.Sprintf("command %d", byte(t))
}

// Command bodies. Every time in them is put there by the leader: Apply
// never reads a clock.

type pipelinePutCmd struct {
	Spec pipeline.Spec `json:"spec"`
	Time time.Time     `json:"time"`
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
	// Requests maps a run request id to the run it created.
	Requests map[string]string `json:"requests"`
}

func newState() *state {
	return &state{Pipelines: map[string]*pipelineState{}, Runs: map[string]*runState{}, Requests: map[string]string{}}
}

type pipelineState struct {
	Spec     pipeline.Spec `json:"spec"`
	Revision int64         `json:"revision"`
	// Version is the dataset version exposed; VersionSeq the last version
	// assigned to a committing run.
	Version    int64           `json:"version"`
	VersionSeq int64           `json:"version_seq"`
	Versions   []versionRecord `json:"versions,omitempty"`
	Watermark  string          `json:"watermark,omitempty"`
	RunSeq     int64           `json:"run_seq"`
	LastRun    string          `json:"last_run,omitempty"`
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
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
	return &c
}

// Errors returned by Apply, as the response of a log entry.
var (
	errNoPipeline = errors.New("no such pipeline")
	errNoRun      = errors.New("no such run")
	errRunState   = errors.New("run is not in the state the command needs")
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
	p.Spec = c.Spec
	p.Revision++
	p.Updated = c.Time
	return applyResult{Revision: p.Revision, Created: !ok}
}

func (s *state) runCreate(c runCreateCmd) any {
	if c.RequestID != "" {
		if id, ok := s.Requests[c.RequestID]; ok {
			return applyResult{RunID: id, Reused: true}
		}
	}
	p, ok := s.Pipelines[c.Pipeline]
	if !ok {
		return fmt.Errorf("create run of %q: %w", c.Pipeline, errNoPipeline)
	}
	p.RunSeq++
	r := &runState{
		ID:           fmt.Sprintf("%s-%06d", c.Pipeline, p.RunSeq),
		Pipeline:     c.Pipeline,
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
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = c.MaxAttempts
	}
	if r.Backoff == 0 {
		r.Backoff = c.Backoff
	}
	s.Runs[r.ID] = r
	p.LastRun = r.ID
	if c.RequestID != "" {
		s.Requests[c.RequestID] = r.ID
	}
	return applyResult{RunID: r.ID}
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

func (s *state) runPlanned(c runPlannedCmd) any {
	r, err := s.runIn(c.Run, protocol.RunPlanning)
	if err != nil {
		return err
	}
	r.Tasks = make([]taskState, len(c.Partitions))
	for i, p := range c.Partitions {
		r.Tasks[i] = taskState{ID: fmt.Sprintf("t%05d", i), Partition: p, Enqueue: 1, State: protocol.TaskPending}
	}
	r.Planned = true
	r.Watermark = c.Watermark
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
	s.prune(r.Pipeline, 0)
	return applyResult{Changed: true, RunFailed: true}
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
			if r.Watermark != "" {
				p.Watermark = r.Watermark
			}
		}
		p.Versions = append(p.Versions, versionRecord{Version: r.Version, Run: r.ID, Location: c.Location, Time: c.Time})
		if c.Keep > 0 && len(p.Versions) > c.Keep {
			p.Versions = slices.Clone(p.Versions[len(p.Versions)-c.Keep:])
		}
	}
	s.prune(r.Pipeline, c.Keep)
	return applyResult{Changed: true, Version: r.Version}
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
	s.prune(r.Pipeline, c.Keep)
	return applyResult{Changed: true, RunFailed: true}
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
	p, ok := f.st.Pipelines[name]
	if !ok {
		return nil, false
	}
	return p.clone(), true
}

func (f *fsm) pipelines() []*pipelineState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pipelineState, 0, len(f.st.Pipelines))
	for _, p := range f.st.Pipelines {
		out = append(out, p.clone())
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
