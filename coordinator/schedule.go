package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// scheduleEvery is how often the leader looks for due schedule ticks, and
// scheduleRetry how long it leaves a pipeline alone after a tick could not
// start its run (a live incremental run still loading, a Raft error).
const (
	scheduleEvery = 250 * time.Millisecond
	scheduleRetry = 2 * time.Second
)

// scheduleRequestID is the run request id of a schedule tick: the same
// tick, on any leader, finds the run the first one created.
func scheduleRequestID(pipelineName string, tick time.Time) string {
	return "schedule:" + pipelineName + ":" + tick.UTC().Format(time.RFC3339)
}

func scheduleOf(trig *protocol.TriggerContext) string {
	if trig == nil {
		return ""
	}
	return trig.Schedule
}

func tickOf(trig *protocol.TriggerContext, req protocol.RunRequest) time.Time {
	if scheduleOf(trig) == "" {
		return time.Time{}
	}
	return req.LogicalTime
}

// scheduleBase is the time the next tick of p's schedule follows: the
// last tick handled, or, for a schedule without one (new, or changed),
// the time the spec was applied.
func scheduleBase(p *pipelineState) time.Time {
	if m := p.Scheduled; m != nil && m.Schedule == p.Spec.Schedule {
		return m.Tick
	}
	return p.Updated.UTC()
}

// dueTick returns the latest tick of sched after base that is not after
// now, or false when none is due. Ticks missed while no leader ran are not
// started one by one: only the latest is.
func dueTick(sched cron.Schedule, base, now time.Time) (time.Time, bool) {
	next := sched.Next(base)
	if next.IsZero() || next.After(now) {
		return time.Time{}, false
	}
	if d, ok := sched.(cron.ConstantDelaySchedule); ok {
		return next.Add((now.Sub(next) / d.Delay) * d.Delay), true
	}
	// A cron tick is a wall-clock time: after a long gap the scan may
	// start from a week ago without finding other ticks.
	const horizon = 7 * 24 * time.Hour
	if now.Sub(next) > horizon {
		if n := sched.Next(now.Add(-horizon)); !n.IsZero() && !n.After(now) {
			next = n
		}
	}
	for {
		n := sched.Next(next)
		if n.IsZero() || n.After(now) {
			return next, true
		}
		next = n
	}
}

// schedule starts the runs of due schedule ticks while the term lasts.
// Each run's request id derives from its pipeline and tick, and the tick
// is recorded in the entry that creates the run: a tick started by one
// leader is never started again by the next, and a tick missed between
// two leaders is started by the new one (the latest missed tick only).
func (t *leaderTerm) schedule(ctx context.Context) {
	c := t.c
	parsed := map[string]cron.Schedule{}
	retryAt := map[string]time.Time{}
	tk := time.NewTicker(scheduleEvery)
	defer tk.Stop()
	for {
		tm := now()
		for _, p := range c.fsm.pipelines() {
			spec := p.Spec.Schedule
			if spec == "" || tm.Before(retryAt[p.Spec.Name]) {
				continue
			}
			sched, ok := parsed[spec]
			if !ok {
				var err error
				if sched, err = pipeline.ParseSchedule(spec); err != nil {
					c.log.Warn("bad schedule: not started", "pipeline", p.Spec.Name, "schedule", spec, "err", err)
					retryAt[p.Spec.Name] = tm.Add(time.Minute)
					continue
				}
				parsed[spec] = sched
			}
			tick, due := dueTick(sched, scheduleBase(p), tm)
			if !due {
				continue
			}
			if err := t.startTick(ctx, p.Spec.Name, spec, tick); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Warn("scheduled run not started; tried again later", "pipeline", p.Spec.Name, "tick", tick, "err", err)
				retryAt[p.Spec.Name] = tm.Add(scheduleRetry)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// startTick starts the run of one tick of a pipeline's schedule, or
// records the tick when an incremental pipeline is up to date.
func (t *leaderTerm) startTick(ctx context.Context, name, spec string, tick time.Time) error {
	c := t.c
	trig := &protocol.TriggerContext{Source: "schedule", Schedule: spec, EventTime: tick}
	req := protocol.RunRequest{Pipeline: name, LogicalTime: tick, RequestID: scheduleRequestID(name, tick)}
	id, upToDate, err := t.startRun(ctx, req, trig)
	if err != nil {
		if refused(err, refusedInvalid) {
			// The run cannot be started for this tick: the tick is done.
			c.log.Warn("scheduled run refused: tick skipped", "pipeline", name, "tick", tick, "err", err)
			return t.markTick(name, spec, tick)
		}
		return err
	}
	if upToDate != nil {
		c.log.Info("schedule: pipeline up to date, no run", "pipeline", name, "tick", tick)
		return t.markTick(name, spec, tick)
	}
	c.log.Info("scheduled run", "pipeline", name, "tick", tick, "run", id)
	return nil
}

func (t *leaderTerm) markTick(name, spec string, tick time.Time) error {
	if _, err := apply(t.c, scheduleTickCmd{Pipeline: name, Schedule: spec, Tick: tick, Time: now()}); err != nil {
		return fmt.Errorf("record schedule tick: %w", err)
	}
	return nil
}
