package coordinator

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

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
