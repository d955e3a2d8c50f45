package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/protocol"
)

// runSample is one timed run.
type runSample struct {
	Tasks   int     `json:"tasks"`
	Workers int     `json:"workers"`
	Seconds float64 `json:"seconds"`
	// DispatchSeconds is the time from the run request until the leader
	// had put its last task on SLUICE_TASKS.
	DispatchSeconds    float64 `json:"dispatch_seconds"`
	DispatchedPerSec   float64 `json:"dispatched_per_sec"`
	CommittedPerSec    float64 `json:"committed_per_sec"`
	CoordinatorCPU     float64 `json:"coordinator_cpu_seconds"`
	CoordinatorPeakRSS float64 `json:"coordinator_peak_rss_mib"`
	// RecordedPerSec is the rate at which the leader recorded results
	// (acked them on SLUICE_RESULTS after their Raft entry), per tenth of
	// the run's tasks: flat when the cost of a result does not grow with
	// the run.
	RecordedPerSec []float64 `json:"recorded_per_sec_by_tenth,omitempty"`
	Rows           int64     `json:"rows"`
	Bytes          int64     `json:"bytes"`
	// taskMsg and resultMsg are a task and a result message of the run.
	taskMsg, resultMsg *nats.Msg
}

// events subscribes to the run events of pipeline; the channel gets each
// run's end.
func (c *cluster) events(pipeline string) (<-chan protocol.RunEvent, func(), error) {
	ch := make(chan protocol.RunEvent, 1024)
	sub, err := c.nc.Subscribe(protocol.RunEventSubject(pipeline, "*"), func(m *nats.Msg) {
		if ev, err := protocol.Decode[protocol.RunEvent](m.Data); err == nil {
			ch <- ev
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return ch, func() { sub.Unsubscribe() }, c.nc.Flush()
}

// sampleMessages keeps the first task and the first result message
// published while it runs (a plain subscription sees what JetStream
// stores), for the baseline to send the same.
func (c *cluster) sampleMessages() (get func() (task, result *nats.Msg), stop func(), err error) {
	var mu sync.Mutex
	var task, result *nats.Msg
	s1, err := c.nc.Subscribe(protocol.SubjectTasksAll, func(m *nats.Msg) {
		mu.Lock()
		if task == nil {
			task = m
		}
		mu.Unlock()
	})
	if err != nil {
		return nil, nil, err
	}
	s2, err := c.nc.Subscribe(protocol.SubjectResultsAll, func(m *nats.Msg) {
		mu.Lock()
		if result == nil {
			result = m
		}
		mu.Unlock()
	})
	if err != nil {
		s1.Unsubscribe()
		return nil, nil, err
	}
	s1.AutoUnsubscribe(1)
	s2.AutoUnsubscribe(1)
	return func() (*nats.Msg, *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			return task, result
		}, func() {
			s1.Unsubscribe()
			s2.Unsubscribe()
		}, c.nc.Flush()
}

// timeRun starts a run of pipeline, which plans tasks tasks, and follows
// it to its end: when its last task reached SLUICE_TASKS, when the leader
// recorded each tenth of its results, when its end event came. A run that
// does not commit is an error.
func (c *cluster) timeRun(ctx context.Context, pipeline string, tasks int) (runSample, error) {
	s := runSample{Tasks: tasks, Workers: len(c.workers)}
	evs, stopEvents, err := c.events(pipeline)
	if err != nil {
		return s, err
	}
	defer stopEvents()
	getMsgs, stopMsgs, err := c.sampleMessages()
	if err != nil {
		return s, err
	}
	defer stopMsgs()
	tasks0, err := c.lastSeq(ctx, protocol.StreamTasks)
	if err != nil {
		return s, err
	}
	results0, err := c.lastSeq(ctx, protocol.StreamResults)
	if err != nil {
		return s, err
	}
	cpu0 := cpuOf(c.coord.cmd.Process.Pid)
	start := time.Now()
	if _, err := c.client.Run(ctx, protocol.RunRequest{Pipeline: pipeline}); err != nil {
		return s, fmt.Errorf("run %s: %w", pipeline, err)
	}
	tenth := make([]float64, 0, 10) // seconds at which each tenth was recorded
	deadline := start.Add(time.Duration(tasks)*10*time.Millisecond + 2*time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev := <-evs:
			secs := time.Since(start).Seconds()
			if ev.Outcome != protocol.RunCommitted {
				return s, fmt.Errorf("run %s %s: %s", ev.RunID, ev.Outcome, ev.Error)
			}
			s.Seconds = measure.Round(secs, 3)
			s.Rows, s.Bytes = ev.Rows, ev.Bytes
			s.CommittedPerSec = measure.Round(float64(tasks)/secs, 0)
			if s.DispatchSeconds == 0 {
				s.DispatchSeconds = s.Seconds
			}
			s.DispatchedPerSec = measure.Round(float64(tasks)/s.DispatchSeconds, 0)
			s.CoordinatorCPU = measure.Round(cpuOf(c.coord.cmd.Process.Pid)-cpu0, 2)
			s.CoordinatorPeakRSS = measure.Round(memoryOf(c.coord.cmd.Process.Pid).Peak, 1)
			prev := 0.0
			for _, t := range tenth {
				if t > prev {
					s.RecordedPerSec = append(s.RecordedPerSec, measure.Round(float64(tasks)/10/(t-prev), 0))
				}
				prev = t
			}
			s.taskMsg, s.resultMsg = getMsgs()
			return s, nil
		case <-tick.C:
		case <-ctx.Done():
			return s, ctx.Err()
		}
		if err := c.checkAlive(); err != nil {
			return s, err
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("run of %s did not end within %s", pipeline, deadline.Sub(start).Round(time.Second))
		}
		now := time.Since(start).Seconds()
		if s.DispatchSeconds == 0 {
			seq, err := c.lastSeq(ctx, protocol.StreamTasks)
			if err == nil && seq-tasks0 >= uint64(tasks) {
				s.DispatchSeconds = measure.Round(now, 3)
			}
		}
		if len(tenth) < 10 {
			seq, err1 := c.lastSeq(ctx, protocol.StreamResults)
			open, err2 := c.unsettled(ctx)
			if err1 == nil && err2 == nil && seq >= results0+open {
				recorded := seq - results0 - open
				for len(tenth) < 10 && recorded*10 >= uint64(tasks)*uint64(len(tenth)+1) {
					tenth = append(tenth, now)
				}
			}
		}
	}
}
