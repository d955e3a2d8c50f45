package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// applyTo creates a run of a pipeline, or finds the one its request id
// created before.
func (c runCreateCmd) applyTo(s *state) (runCreateReply, error) {
	if c.RequestID != "" {
		if id, ok := s.Requests[c.RequestID]; ok {
			return runCreateReply{RunID: id, Reused: true}, nil
		}
	}
	p, ok := s.live(c.Pipeline)
	if !ok {
		return runCreateReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	if c.Backfill != "" {
		return s.windowRun(p, c)
	}
	if c.Compact {
		if c.Window != nil || c.Live || c.Snapshot || p.Spec.Streamed() {
			return runCreateReply{}, refuse(refusedInvalid, "create run of %q: a compaction of a %s pipeline's dataset runs without a window or a snapshot", c.Pipeline, p.Spec.Pattern)
		}
	} else if p.Spec.RunPattern() == protocol.PatternIncremental && p.Spec.Incremental.Positioned() {
		// A run by position plans from the watermark: one at a time, so
		// that two runs never plan from the same position.
		if c.Window != nil || !c.Live {
			return runCreateReply{}, refuse(refusedInvalid, "create run of %q: a run by position (incremental.by: %s) has no window and moves the watermark", c.Pipeline, p.Spec.Incremental.By)
		}
		if r := s.liveRun(c.Pipeline); r != nil {
			return runCreateReply{}, refuse(refusedConflict, "run %s of %q is still loading: an incremental pipeline loads one run at a time (the next starts from the position it reaches)", r.ID, c.Pipeline)
		}
	} else if p.Spec.RunPattern() == protocol.PatternIncremental {
		if c.Window == nil || c.Window.Empty() {
			return runCreateReply{}, refuse(refusedInvalid, "create run of %q: an incremental run needs a non-empty window", c.Pipeline)
		}
		if c.Window.Values != p.Spec.Incremental.Values() {
			return runCreateReply{}, refuse(refusedInvalid, "create run of %q: window %s is not of the kind of its delta column", c.Pipeline, c.Window)
		}
		if c.Live {
			start, err := p.liveStart()
			if err != nil {
				return runCreateReply{}, refuse(refusedInvalid, "create run: %v", err)
			}
			if !startsAt(*c.Window, start) {
				return runCreateReply{}, refuse(refusedConflict, "create run of %q: window %s does not start at the watermark (less lookback) %s", c.Pipeline, c.Window, start)
			}
			if r := s.liveRun(c.Pipeline); r != nil {
				return runCreateReply{}, refuse(refusedConflict, "run %s of %q is still loading window %s: an incremental pipeline loads one live window at a time", r.ID, c.Pipeline, r.Window)
			}
		}
	} else if c.Window != nil {
		return runCreateReply{}, refuse(refusedInvalid, "create run of %q: a window is only for an incremental load (pattern incremental, or transform with an incremental section)", c.Pipeline)
	} else if p.Spec.Pattern == protocol.PatternPassthrough {
		// Each run plans from what the previous one committed.
		if r := s.liveRun(c.Pipeline); r != nil {
			return runCreateReply{}, refuse(refusedConflict, "run %s of %q is still copying: a passthrough pipeline copies one run at a time (the next copies what is new or changed since it)", r.ID, c.Pipeline)
		}
	}
	switch {
	case c.Snapshot:
		if err := s.checkSnapshotRun(p, c); err != nil {
			return runCreateReply{}, err
		}
	case p.Spec.Streamed():
		return runCreateReply{}, refuse(refusedInvalid, "pipeline %q of pattern %s streams continuously: it has no runs to start (see sluice cdc status)", c.Pipeline, p.Spec.Pattern)
	case p.Spec.Pattern == protocol.PatternReadiness:
		return runCreateReply{}, refuse(refusedInvalid, "pipeline %q of pattern readiness watches a dataset: it has no runs to start (its ready events are on %s)", c.Pipeline, protocol.ReadyEventSubject(c.Pipeline))
	}
	r := s.newRun(p, c)
	if c.Snapshot {
		p.stream().snapshotStarted(r.ID)
	}
	if c.RequestID != "" {
		s.Requests[c.RequestID] = r.ID
	}
	p.markTick(c.Schedule, c.Tick)
	return runCreateReply{RunID: r.ID}, nil
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
		Pattern:      p.Spec.RunPattern(),
		Transform:    p.Spec.Pattern == protocol.PatternTransform,
		Source:       p.Spec.Source,
		Sink:         p.Spec.Sink,
		Partitioning: p.Spec.Partition,
		MaxAttempts:  p.Spec.Retry.MaxAttempts,
		Backoff:      p.Spec.Retry.Backoff,
		Trigger:      c.Trigger,
		Contract:     p.Spec.Contract,
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
	if c.Compact || p.Spec.Pattern == protocol.PatternCompact {
		// A compaction rewrites its dataset (the pipeline's sink) in
		// place; its settings are the spec's, as they were now.
		r.Pattern, r.Source = protocol.PatternCompact, protocol.Endpoint{}
		settings := protocol.CompactSettings{}
		if p.Spec.Compact != nil && !c.Compact {
			settings = *p.Spec.Compact
		}
		r.Compact = &settings
	} else if c.Window == nil && c.Live && p.Spec.Incremental.Positioned() || p.Spec.Pattern == protocol.PatternPassthrough {
		// A run by position, or of a passthrough: it plans from the
		// watermark and its commit moves the watermark to where its plan
		// reaches.
		r.Live, r.Since = true, p.Watermark
	}
	if c.Window != nil {
		w := *c.Window
		r.Window = &w
		r.Live = c.Live
		if inc := p.Spec.Incremental; inc != nil {
			r.DeltaColumn = inc.DeltaColumn
			r.ReadyTimeout, r.ReadyCheck = inc.ReadyTimeout, inc.ReadyCheck
			r.Merge = inc.Merge
		}
		if c.Live {
			// The position this run reaches; stored with its commit.
			r.Watermark = watermarkOf(w)
			if inc := p.Spec.Incremental; w.Values && inc != nil {
				// The window's high bound caps the run: its plan ends it
				// where the column's values end.
				from, _ := p.nextValue()
				r.Trim = &trimState{From: from, MaxRows: inc.MaxRows}
			}
		}
	}
	s.Runs[r.ID] = r
	p.LastRun = r.ID
	return r
}

// applyTo moves a planning run to waiting, or changes what a waiting
// run waits for; WaitingSince stays the time it first waited.
func (c runWaitingCmd) applyTo(s *state) (runWaitingReply, error) {
	r, err := s.runIn(c.Run, protocol.RunPlanning, protocol.RunWaiting)
	if err != nil {
		return runWaitingReply{}, err
	}
	if r.State == protocol.RunWaiting && r.WaitingFor == c.What {
		return runWaitingReply{}, nil
	}
	if r.State == protocol.RunPlanning {
		r.WaitingSince = c.Time
	}
	r.State, r.WaitingFor = protocol.RunWaiting, c.What
	return runWaitingReply{Changed: true}, nil
}

// applyTo records the tasks of a run, one per partition of its plan, and
// starts running it.
func (c runPlannedCmd) applyTo(s *state) (noReply, error) {
	r, err := s.runIn(c.Run, protocol.RunPlanning, protocol.RunWaiting)
	if err != nil {
		return noReply{}, err
	}
	tasks := make([]taskState, len(c.Partitions))
	for i, p := range c.Partitions {
		tasks[i] = taskState{ID: taskID(r.attempt(), i), Partition: p, Enqueue: 1, State: protocol.TaskPending}
	}
	r.setTasks(tasks)
	switch {
	case r.Trim != nil:
		// The plan ends the capped window where the column's values end.
		if w := c.Window; w == nil || !w.Values || w.Lo != r.Window.Lo || w.Hi > r.Window.Hi || w.Hi < w.Lo {
			return noReply{}, refuse(refusedInvalid, "plan of run %q: window %v does not end the capped window %s", c.Run, c.Window, r.Window)
		}
		w := *c.Window
		r.Window, r.Trim = &w, nil
		if r.Live {
			r.Watermark = watermarkOf(w)
		}
	case c.Window != nil:
		return noReply{}, refuse(refusedInvalid, "plan of run %q: window %s given, the run's %v was not capped", c.Run, c.Window, r.Window)
	}
	r.Planned = true
	r.Schema = c.Schema
	r.Holds = c.Holds
	if r.Window == nil {
		// An incremental run's position is its window, set at creation.
		r.Watermark = c.Watermark
	}
	r.State = protocol.RunRunning
	return noReply{}, nil
}

// applyTo marks a run published.
func (c runPublishedCmd) applyTo(s *state) (noReply, error) {
	r, err := s.runIn(c.Run, protocol.RunRunning, protocol.RunCommitting, protocol.RunCommitted, protocol.RunFailed)
	if err != nil {
		return noReply{}, err
	}
	r.Published = true
	return noReply{}, nil
}

// applyTo records the result of a task attempt: a success, a failure the
// worker retries, a failure that asks for a new plan of the run (the
// leader then gives up the run's attempt: runReplanCmd), or the task's
// last failure, which fails the run. A result for a task that is not
// pending is ignored (a task may run twice), as is one for a task of an
// earlier attempt of the run (its ID is not the current attempt's).
func (c taskResultCmd) applyTo(s *state) (taskResultReply, error) {
	r, ok := s.Runs[c.Run]
	if !ok || r.State != protocol.RunRunning {
		return taskResultReply{}, nil
	}
	t := r.task(c.Task)
	if t == nil || t.State != protocol.TaskPending {
		return taskResultReply{}, nil
	}
	t.Attempts = max(t.Attempts, c.Attempt)
	t.Worker = c.Worker
	if c.ErrorClass == protocol.ErrorNone && c.Error == "" && !c.Final {
		t.State = protocol.TaskSucceeded
		r.succeeded++
		t.Rows, t.Bytes, t.Checksum, t.Location, t.Error = c.Rows, c.Bytes, c.Checksum, c.Location, ""
		return taskResultReply{Changed: true}, nil
	}
	t.Error = c.Error
	if c.ErrorClass == protocol.ErrorReplan && !c.Final {
		// No attempt of the task can succeed; a new plan of the run can.
		if r.Replan == "" {
			r.Replan = fmt.Sprintf("task %s (%s) found what the run was planned on gone: %s", t.ID, t.Partition.Key, c.Error)
		}
		return taskResultReply{Changed: true}, nil
	}
	if !c.Final && c.ErrorClass != protocol.ErrorPermanent && c.Attempt < r.MaxAttempts {
		// The worker retries it.
		return taskResultReply{Changed: true}, nil
	}
	t.State = protocol.TaskFailed
	s.failRun(r, fmt.Sprintf("task %s (%s) failed after %d attempt(s): %s", t.ID, t.Partition.Key, t.Attempts, c.Error), 0, false, c.Time)
	return taskResultReply{Changed: true, RunFailed: true}, nil
}

// applyTo gives up the current attempt of a running run: the run goes
// back to planning as its next attempt, with what it was created with (its
// window and the position it reaches, its trace), or fails once Limit
// attempts were given up. The initial snapshot of a cdc pipeline fails at
// once: it starts again as a new run, on a new slot (tendSnapshot). A
// command for another attempt (an older leader's) or for a run whose tasks
// all succeeded (it needs nothing held to commit) is refused.
func (c runReplanCmd) applyTo(s *state) (runReplanReply, error) {
	r, err := s.runIn(c.Run, protocol.RunRunning)
	if err != nil {
		return runReplanReply{}, err
	}
	attempt := r.attempt()
	if c.Attempt != attempt {
		return runReplanReply{}, refuse(refusedRunState, "plan run %q again: attempt %d is not the run's, %d", c.Run, c.Attempt, attempt)
	}
	if r.allSucceeded() {
		return runReplanReply{}, refuse(refusedRunState, "plan run %q again: every task of attempt %d succeeded", c.Run, attempt)
	}
	r.Replans = append(slices.Clone(r.Replans), protocol.Replan{Attempt: attempt, Reason: c.Reason, Time: c.Time})
	switch {
	case s.snapshotRun(r):
		s.failRun(r, c.Reason+" (an initial snapshot starts again as a new run, on a new slot)", c.Keep, c.KeepUnannounced, c.Time)
		return runReplanReply{Attempt: attempt, Failed: true}, nil
	case attempt >= c.Limit:
		s.failRun(r, fmt.Sprintf("given up after %d attempts: %s", attempt, c.Reason), c.Keep, c.KeepUnannounced, c.Time)
		return runReplanReply{Attempt: attempt, Failed: true}, nil
	}
	r.Attempt = attempt + 1
	r.State = protocol.RunPlanning
	r.Planned, r.Published, r.Holds = false, false, false
	r.setTasks(nil)
	r.Schema, r.Replan = nil, ""
	r.WaitingFor, r.WaitingSince = "", time.Time{}
	if r.Window == nil {
		// The position of a run without a window comes from its plan.
		r.Watermark = ""
	}
	return runReplanReply{Attempt: r.Attempt}, nil
}

// snapshotRun reports whether r is the initial snapshot run of a cdc
// pipeline.
func (s *state) snapshotRun(r *runState) bool {
	p, ok := s.Pipelines[r.Pipeline]
	return ok && p.Stream != nil && p.Stream.SnapshotRun == r.ID
}

// failRun fails run r with msg at time t, keeping the newest keep
// finished runs of its pipeline (keep <= 0: all), and with
// keepUnannounced those whose end was not announced.
func (s *state) failRun(r *runState, msg string, keep int, keepUnannounced bool, t time.Time) {
	r.State = protocol.RunFailed
	r.Error = msg
	r.Finished = t
	s.runEnded(r, t)
	s.prune(r.Pipeline, keep, keepUnannounced)
}

// applyTo assigns a run whose tasks all succeeded the next dataset
// version; again, it keeps the version assigned.
func (c runCommittingCmd) applyTo(s *state) (runCommittingReply, error) {
	r, err := s.runIn(c.Run, protocol.RunRunning, protocol.RunCommitting)
	if err != nil {
		return runCommittingReply{}, err
	}
	if r.State == protocol.RunCommitting {
		return runCommittingReply{Version: r.Version}, nil
	}
	if !r.allSucceeded() {
		return runCommittingReply{}, refuse(refusedRunState, "commit run %q before all its tasks succeeded", c.Run)
	}
	p, ok := s.Pipelines[r.Pipeline]
	if !ok {
		return runCommittingReply{}, refuse(refusedNotFound, "commit run %q: its pipeline %q is not found", c.Run, r.Pipeline)
	}
	if r.Pattern == protocol.PatternCompact {
		// A compaction rewrites the dataset's files and makes no
		// version of it.
		r.State = protocol.RunCommitting
		return runCommittingReply{}, nil
	}
	p.VersionSeq = max(p.VersionSeq, p.Version) + 1
	r.Version = p.VersionSeq
	r.State = protocol.RunCommitting
	return runCommittingReply{Version: r.Version}, nil
}

// applyTo records a run's commit: its version is exposed and its
// watermark moves, in this one entry.
func (c runCommittedCmd) applyTo(s *state) (noReply, error) {
	r, err := s.runIn(c.Run, protocol.RunCommitting)
	if err != nil {
		return noReply{}, err
	}
	r.State = protocol.RunCommitted
	r.Location, r.Marker = c.Location, c.Marker
	r.Finished = c.Time
	if p, ok := s.Pipelines[r.Pipeline]; ok && r.Pattern != protocol.PatternCompact {
		// The version and the watermark move in the same entry
		// (DESIGN rule 4); a run committed out of order does not hide a
		// newer version.
		if r.Version > p.Version {
			p.Version = r.Version
			// A run without a window moves the watermark to where its
			// plan reached (a run by position, or a full load whose
			// source keeps one); a run by position is the only one of
			// its pipeline in flight, so its version is the newest.
			if r.Window == nil && r.Watermark != "" {
				p.Watermark = r.Watermark
			}
		}
		if r.Window != nil {
			p.Loaded = addLoaded(p.Loaded, *r.Window)
			// Only a live window moves the watermark, and only forward.
			if r.Live {
				p.advance(*r.Window)
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
	s.runEnded(r, c.Time)
	s.prune(r.Pipeline, c.Keep, c.KeepUnannounced)
	return noReply{}, nil
}

// applyTo fails a run that has not ended; the version and watermark stay.
func (c runFailedCmd) applyTo(s *state) (noReply, error) {
	r, ok := s.Runs[c.Run]
	if !ok {
		return noReply{}, refuse(refusedNotFound, "run %q not found", c.Run)
	}
	if r.finished() {
		return noReply{}, nil
	}
	s.failRun(r, c.Error, c.Keep, c.KeepUnannounced, c.Time)
	return noReply{}, nil
}

// applyTo marks a run's end announced.
func (c runNotifiedCmd) applyTo(s *state) (noReply, error) {
	r, ok := s.Runs[c.Run]
	if !ok {
		// Pruned already: nothing left to mark.
		return noReply{}, nil
	}
	r.Notified = true
	s.prune(r.Pipeline, c.Keep, true)
	return noReply{}, nil
}

// prune keeps the newest keep finished runs of a pipeline (by run
// sequence), and with keepUnannounced every one whose end was not
// announced yet; keep <= 0 changes nothing.
func (s *state) prune(pipelineName string, keep int, keepUnannounced bool) {
	if keep <= 0 {
		return
	}
	var done []*runState
	for _, r := range s.Runs {
		if r.Pipeline == pipelineName && r.finished() && (r.Notified || !keepUnannounced) {
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
