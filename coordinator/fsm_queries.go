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
