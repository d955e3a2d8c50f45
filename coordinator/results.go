package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// maxDeliveriesSubject is the advisory JetStream sends when a task message
// reached the workers' consumer's MaxDeliver.
var maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + protocol.StreamTasks + "." + protocol.ConsumerWorkers

// onResult records one task result, then acks it.
func (t *leaderTerm) onResult(ctx context.Context, m jetstream.Msg) {
	c := t.c
	res, err := protocol.Decode[protocol.Result](m.Data())
	if err != nil {
		c.log.Warn("drop undecodable result", "subject", m.Subject(), "err", err)
		m.Term()
		return
	}
	// A result without its task's token was not made by a worker that
	// read the task: it is dropped, counted, and changes nothing.
	if c.resultForged(res) {
		c.log.Warn("drop forged result", "run", res.RunID, "task", res.TaskID, "attempt", res.Attempt, "worker", res.Worker)
		m.Term()
		return
	}
	// A result the FSM would ignore (unknown or finished run, task already
	// done: a task may run twice) needs no log entry. The leader's FSM is
	// current: the term started with a barrier.
	if !c.fsm.taskPending(res.RunID, res.TaskID) {
		// Only a leader's FSM can tell: a node that lost leadership
		// (its term not stopped yet) may not hold the entries of the
		// runs a new leader made, and a result of one of them, acked
		// here, would be gone and its run would wait for it forever.
		// Left unacked, the result goes to the leader.
		if !c.stillLeader() {
			c.log.Debug("result of a task this node does not know, and it is not the leader: left for the leader", "run", res.RunID, "task", res.TaskID)
			if err := m.NakWithDelay(time.Second); err != nil {
				c.log.Debug("nak result", "run", res.RunID, "task", res.TaskID, "err", err)
			}
			return
		}
		c.log.Debug("ignore result", "run", res.RunID, "task", res.TaskID)
		if err := m.Ack(); err != nil {
			c.log.Warn("ack result", "run", res.RunID, "task", res.TaskID, "err", err)
		}
		return
	}
	out, err := apply(c, taskResultCmd{
		Run: res.RunID, Task: res.TaskID, Attempt: res.Attempt, Worker: res.Worker,
		Rows: res.Rows, Bytes: res.Bytes, Checksum: res.Checksum, Location: res.Location,
		ErrorClass: res.ErrorClass, Error: res.Error, Time: now(),
	})
	if err != nil {
		c.log.Warn("record result", "run", res.RunID, "task", res.TaskID, "err", err)
		m.NakWithDelay(time.Second)
		return
	}
	if err := m.Ack(); err != nil {
		c.log.Warn("ack result", "run", res.RunID, "task", res.TaskID, "err", err)
	}
	if out.Changed {
		t.kick(ctx, res.RunID)
	}
}

// maxDeliveries is the part of the JetStream advisory Sluice reads.
type maxDeliveries struct {
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// onMaxDeliveries fails the task whose message JetStream gave up on, then
// removes the message from the work queue. The advisory comes once: a step
// that fails (a request timing out on a loaded server, a Raft apply during
// an election) is tried again while the term lasts, or the task would stay
// pending, and its run open, for ever.
func (t *leaderTerm) onMaxDeliveries(ctx context.Context, m *nats.Msg) {
	c := t.c
	var adv maxDeliveries
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		c.log.Warn("bad max-deliveries advisory", "err", err)
		return
	}
	// Only the server publishes advisories (no role may: natsauth); one
	// claiming fewer deliveries than the consumer allows is forged.
	if adv.Deliveries < c.cfg.MaxDeliver {
		c.forged.advisories.Add(1)
		c.log.Warn("drop forged max-deliveries advisory", "seq", adv.StreamSeq, "deliveries", adv.Deliveries)
		return
	}
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		done, err := t.deadTask(ctx, adv)
		if done {
			return
		}
		c.log.Warn("max deliveries: will try again", "seq", adv.StreamSeq, "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// deadTask records the task of the advisory's message as failed and
// deletes the message; done is false when a step failed and is worth
// trying again.
func (t *leaderTerm) deadTask(ctx context.Context, adv maxDeliveries) (done bool, err error) {
	c := t.c
	stream, err := c.js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		return false, fmt.Errorf("open tasks stream: %w", err)
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return true, nil
		}
		return false, fmt.Errorf("get task message %d: %w", adv.StreamSeq, err)
	}
	task, err := protocol.Decode[protocol.Task](raw.Data)
	if err == nil {
		out, err := apply(c, taskResultCmd{
			Run: task.RunID, Task: task.TaskID, Attempt: adv.Deliveries, Final: true,
			ErrorClass: protocol.ErrorRetryable,
			Error:      fmt.Sprintf("delivered %d times without a result", adv.Deliveries), Time: now(),
		})
		if err != nil {
			return false, fmt.Errorf("record the failure of task %s of %s: %w", task.TaskID, task.RunID, err)
		}
		if out.Changed {
			c.log.Warn("task dead after max deliveries", "run", task.RunID, "task", task.TaskID, "deliveries", adv.Deliveries)
			t.kick(ctx, task.RunID)
		}
	} else {
		c.log.Warn("max deliveries: undecodable task message", "seq", adv.StreamSeq, "err", err)
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		// Recorded: the run goes on; the message stays in the work queue
		// (delivered no more).
		c.log.Warn("max deliveries: delete task message", "seq", adv.StreamSeq, "err", err)
	}
	return true, nil
}
