package coordinator

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/protocol"
)

// startWindows creates the runs of the queued windows of backfill id, in
// order, while fewer than its concurrency run, each through createRun
// with a run-create entry naming the backfill and the window: the FSM
// checks every one (the window still queued, the concurrency not reached)
// and marks the window running in the same entry. It is called when the
// backfill starts, when one of its runs ends, and on every sweep, so a new
// leader goes on from where the FSM says. A backfill of an earlier
// version's log starts its windows in the FSM: its running window runs are
// only kicked. started counts the runs created.
func (t *leaderTerm) startWindows(ctx context.Context, id string) (started int, err error) {
	t.windowsMu.Lock()
	defer t.windowsMu.Unlock()
	for ctx.Err() == nil {
		// Only the next window is read: a backfill may have 100,000.
		b, win, ok, found := t.c.fsm.nextWindow(id)
		if !found {
			return started, nil
		}
		if !b.LeaderStarts {
			if b, ok := t.c.fsm.backfillByID(id); ok {
				for _, w := range b.Windows {
					if w.State == protocol.WindowRunning {
						t.kick(ctx, w.Run)
					}
				}
			}
			return started, nil
		}
		if !ok {
			return started, nil
		}
		if _, err := t.createRun(ctx, runCreateCmd{Pipeline: b.Pipeline, Backfill: b.ID, Window: &win,
			MaxAttempts: b.MaxAttempts, Backoff: b.Backoff}); err != nil {
			return started, fmt.Errorf("start window %s of backfill %s: %w", win, b.ID, err)
		}
		started++
	}
	return started, ctx.Err()
}

// startAllWindows starts the queued windows of every running backfill.
func (t *leaderTerm) startAllWindows(ctx context.Context) {
	for _, id := range t.c.fsm.runningBackfills() {
		if _, err := t.startWindows(ctx, id); err != nil && ctx.Err() == nil {
			t.c.log.Warn("start backfill windows", "backfill", id, "err", err)
		}
	}
}
