package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// A run survives its planner (DESIGN rule 10). A plan that holds
// something (the source's exported snapshot, runState.Holds) can only be
// read while the leader term that planned it lives: the term releases what
// it holds when it ends, and a killed leader takes it along. A leader that
// finds a running run whose plan it does not hold, or whose task found
// the hold gone (runState.Replan), gives up the run's attempt and plans the
// run again as its next attempt: a fresh plan, new task IDs, the earlier
// attempt's queued tasks purged and its staging discarded before anything
// of the new attempt is published. A run whose tasks all succeeded needs
// nothing held: it commits. A late result or staging write of the earlier
// attempt carries an old task ID, which the FSM ignores and no commit
// lists.

// runAttempts bounds the attempts of a run: giving up the last one fails
// the run, naming why.
const runAttempts = 3

// discardTimeout bounds the removal of a given-up attempt's staging.
const discardTimeout = 30 * time.Second

// replanReason returns why run r must be planned again by this term, or ""
// when it need not: a task found what its plan held gone, or the plan
// holds something this term does not (its planner is gone). A run whose
// tasks all succeeded needs nothing held to commit.
func (t *leaderTerm) replanReason(r *runState) string {
	switch {
	case r.allSucceeded():
		return ""
	case r.Replan != "":
		return r.Replan
	case r.Holds && !t.holds(r.ID):
		return fmt.Sprintf("the leader that planned attempt %d is gone, and what the plan held (the %s source's snapshot) with it", r.attempt(), r.Source.Kind)
	}
	return ""
}

// holds reports whether this term holds what run id's plan holds.
func (t *leaderTerm) holds(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.held[id]
	return ok
}

// replan gives up the current attempt of r for reason, and lets go of
// what the term holds for it. The run plans again as its next attempt
// (advance goes on with it), or fails once its attempts are used up. An
// entry that overtook this one (another attempt, every task done) leaves
// the run to advance's next look.
func (t *leaderTerm) replan(log *slog.Logger, r *runState, reason string) error {
	out, err := apply(t.c, runReplanCmd{Run: r.ID, Attempt: r.attempt(), Reason: reason, Limit: runAttempts, Keep: t.c.cfg.KeepRuns, KeepUnannounced: true, Time: now()})
	if refused(err, refusedRunState) {
		return nil
	}
	if err != nil {
		return err
	}
	t.release(log, r.ID)
	if out.Failed {
		log.Warn("run failed: its plan can no longer be read", "attempt", out.Attempt, "reason", reason)
		return nil
	}
	log.Warn("run planned again as a new attempt", "attempt", out.Attempt, "reason", reason)
	return nil
}

// discard removes what the given-up attempts of r left before its current
// attempt is planned: their queued tasks, which must not run, and their
// staging output, which no commit would take. Queued tasks must be gone
// before the new attempt's tasks are published on the same subject, so an
// error purging them stops the plan. Removing the staging is best effort
// and bounded: a task writer of the old attempt may hold it (a worker
// stalled mid-task); what is left carries task IDs no commit lists, and the
// sink's commit or abort of the run removes it. Each attempt is discarded
// once per term.
func (t *leaderTerm) discard(ctx context.Context, log *slog.Logger, r *runState) error {
	t.mu.Lock()
	done := t.discarded[r.ID] == r.attempt()
	t.mu.Unlock()
	if done {
		return nil
	}
	if err := t.purgeTasks(ctx, r); err != nil {
		return fmt.Errorf("purge the tasks of the attempt given up: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, discardTimeout)
	defer cancel()
	if err := t.abort(actx, r); err != nil && ctx.Err() == nil {
		log.Warn("discard the staging of the attempt given up", "err", err)
	}
	t.mu.Lock()
	t.discarded[r.ID] = r.attempt()
	t.mu.Unlock()
	return nil
}
