package coordinator

import (
	"cmp"
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

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

// runHead returns run id as runState.head copies it: without its tasks.
func (f *fsm) runHead(id string) (*runState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.st.Runs[id]
	if !ok {
		return nil, false
	}
	return r.head(), true
}

// taskPending reports whether task taskID of run runID waits for its
// result: the run is running and the task pending.
func (f *fsm) taskPending(runID, taskID string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.st.Runs[runID]
	if !ok || r.State != protocol.RunRunning {
		return false
	}
	t := r.task(taskID)
	return t != nil && t.State == protocol.TaskPending
}

// runIDs lists the ids of the runs that keep returns true for, sorted.
func (f *fsm) runIDs(keep func(*runState) bool) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for id, r := range f.st.Runs {
		if keep(r) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// nextWindow returns what the leader needs to start the next window of
// backfill id: its pipeline and settings, and the window (ok false when
// none is to start now). found is false when there is no such backfill.
func (f *fsm) nextWindow(id string) (b backfillState, win protocol.Window, ok, found bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	bf, found := f.st.Backfills[id]
	if !found {
		return b, win, false, false
	}
	b = *bf
	b.Windows, b.Summary, b.Range = nil, nil, nil
	win, ok = bf.nextWindow()
	return b, win, ok, true
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

// runningBackfills lists the ids of the running backfills, sorted.
func (f *fsm) runningBackfills() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for id, b := range f.st.Backfills {
		if b.State == protocol.BackfillRunning {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fsm) requestBackfill(requestID string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.st.Requests["backfill:"+requestID]
	return id, ok
}

// pendingRollbacks lists the live pipelines with a rollback recorded and
// not finished, by name.
func (f *fsm) pendingRollbacks() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for name, p := range f.st.Pipelines {
		if p.Deleted.IsZero() && p.Rollback.pending() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
