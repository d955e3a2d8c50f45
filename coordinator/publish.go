package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
	"github.com/sluicehq/sluice/telemetry"
)

// taskOf builds the task message of one task of r.
func (t *leaderTerm) taskOf(r *runState, ts taskState) (protocol.Task, error) {
	ct, err := r.Contract.JSON()
	return protocol.Task{
		RunID: r.ID, TaskID: ts.ID, Pipeline: r.Pipeline, Pattern: r.Pattern,
		Source: r.Source, Sink: r.Sink, Partition: ts.Partition, Enqueue: ts.Enqueue,
		Trace: r.Trace, Params: r.Params, LogicalTime: r.LogicalTime,
		MaxAttempts: r.MaxAttempts, Backoff: r.Backoff, Schema: r.Schema, Contract: ct, Units: t.c.inUnits(r),
	}, err
}

// maxPublishing bounds the task publications in flight (below
// jetstream's default of 4,000 pending asynchronous publications).
const maxPublishing = 2048

// errTaskEncode is wrapped by the error of a task that cannot be encoded.
var errTaskEncode = errors.New("encode task")

// permanentPublish reports whether a publication that failed with err can
// never succeed as it is: a task that does not encode, a message larger
// than the server or SLUICE_TASKS takes, or a SLUICE_TASKS that is full
// (it refuses new tasks rather than drop some: see EnsureStreams).
func permanentPublish(err error) bool {
	if errors.Is(err, errTaskEncode) || errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum ||
		strings.Contains(apiErr.Description, "maximum bytes exceeded") ||
		strings.Contains(apiErr.Description, "maximum messages exceeded")
}

// publish publishes every pending task of r with its msg id (a second
// publication inside the duplicate window is dropped), waits for all acks
// and records that the run is published. It retries until ctx ends, but
// for a permanent error (permanentPublish): then it fails the run, saying
// why.
func (t *leaderTerm) publish(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	tctx := runContext(ctx, r)
	for attempt := 0; ; attempt++ {
		err := func() error {
			var futs []jetstream.PubAckFuture
			waited := 0
			// wait waits for the acks of futs up to n.
			wait := func(n int) error {
				for ; waited < n; waited++ {
					f := futs[waited]
					select {
					case <-f.Ok():
					case err := <-f.Err():
						return fmt.Errorf("publish task %s: %w", f.Msg().Header.Get(protocol.HeaderTask), err)
					case <-ctx.Done():
						return ctx.Err()
					}
					futs[waited] = nil // its message is stored: let it go
				}
				return nil
			}
			for _, ts := range r.Tasks {
				if ts.State != protocol.TaskPending {
					continue
				}
				task, err := t.taskOf(r, ts)
				if err != nil {
					return fmt.Errorf("%w %s: %w", errTaskEncode, ts.ID, err)
				}
				c.signTask(&task)
				data, err := protocol.Encode(task)
				if err != nil {
					return fmt.Errorf("%w %s: %w", errTaskEncode, ts.ID, err)
				}
				m := nats.NewMsg(protocol.TaskSubject(r.Pipeline, r.ID))
				m.Data = data
				c.sign(signing.KindTask, m)
				m.Header.Set(protocol.HeaderMsgID, protocol.TaskMsgID(r.ID, ts.ID, ts.Enqueue))
				m.Header.Set(protocol.HeaderRun, r.ID)
				m.Header.Set(protocol.HeaderTask, ts.ID)
				m.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
				telemetry.Inject(tctx, m.Header)
				f, err := c.js.PublishMsgAsync(m)
				if err != nil {
					return fmt.Errorf("publish task %s: %w", ts.ID, err)
				}
				futs = append(futs, f)
				// A run of many tasks is published maxPublishing at
				// most in flight: past the client's limit of pending
				// publications a publish fails.
				if len(futs)-waited >= maxPublishing {
					if err := wait(len(futs) - maxPublishing/2); err != nil {
						return err
					}
				}
			}
			return wait(len(futs))
		}()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanentPublish(err) {
			log.Warn("publish tasks: giving up the run", "attempt", attempt+1, "err", err)
			return t.failRun(r, fmt.Sprintf("publish tasks: %v", err))
		}
		log.Warn("publish tasks", "attempt", attempt+1, "err", err)
		if !sleep(ctx, min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)) {
			return ctx.Err()
		}
	}
	if _, err := apply(c, runPublishedCmd{Run: r.ID, Time: now()}); err != nil {
		return err
	}
	log.Info("run published", "tasks", len(r.Tasks))
	return nil
}
