package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

const (
	// pullWait is how long one pull request waits for a task. A pull that
	// expires on the server is never lost; one cancelled by the client may
	// race with a delivery, which then waits for AckWait. So a stopping
	// worker lets its pulls expire instead of cancelling them, and pullWait
	// bounds how long stopping takes when no task is in flight.
	pullWait = time.Second
	// requeueDelay is the Nak delay of a task interrupted by shutdown: short,
	// so that another worker takes it at once.
	requeueDelay = 100 * time.Millisecond
	// settleTimeout bounds publishing a result and acknowledging its task.
	settleTimeout = 30 * time.Second
	// maxBackoff caps the delay before a retry of a failed task.
	maxBackoff = 5 * time.Minute
	// defaultMaxAttempts applies when a task does not say.
	defaultMaxAttempts = 3
)

// Stats counts what a worker did since it started.
type Stats struct {
	// Done counts tasks that succeeded and whose result was published.
	Done int64
	// Failed counts task attempts that failed, whether they will be retried
	// or were reported dead. Attempts interrupted by shutdown are not counted.
	Failed int64
	// Busy is the number of tasks running now.
	Busy int
}

// Worker pulls tasks from the shared durable consumer and runs them. Create
// one with New and call Run once.
type Worker struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	tracer  trace.Tracer
	host    string
	started time.Time

	reg     *connectors.Registry
	sources *openCache[connectors.Source]
	sinks   *openCache[connectors.Sink]

	done   atomic.Int64
	failed atomic.Int64
	forged forgedCounts
	ran    atomic.Bool
	killed atomic.Bool

	mu      sync.Mutex
	kill    context.CancelFunc // cancels everything Run started; set while Run runs
	running map[uint64]string  // "run/task" by stream sequence of the task message
	streams map[string]*held   // the streams held, by pipeline
}

// New returns a worker that pulls tasks over nc and opens connectors from
// reg. log and tp may be nil. The worker does no I/O before Run.
func New(cfg Config, nc *nats.Conn, reg *connectors.Registry, log *slog.Logger, tp trace.TracerProvider) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	if nc == nil {
		return nil, errors.New("worker: nats connection is nil")
	}
	if reg == nil {
		return nil, errors.New("worker: connector registry is nil")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream context: %w", err)
	}
	cfg = cfg.withDefaults()
	host, _ := os.Hostname()
	return &Worker{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     log.With("worker", cfg.ID),
		tracer:  tp.Tracer(telemetry.TracerName),
		host:    host,
		reg:     reg,
		sources: newOpenCache(reg.OpenSource),
		sinks:   newOpenCache(reg.OpenSink),
		running: map[uint64]string{},
		streams: map[string]*held{},
	}, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	busy := len(w.running)
	w.mu.Unlock()
	return Stats{Done: w.done.Load(), Failed: w.failed.Load(), Busy: busy}
}

// Run pulls and runs tasks until ctx is cancelled. It waits, retrying, until
// the coordinator leader has created the task stream and its consumer. When
// ctx is cancelled Run stops pulling, lets the tasks in flight finish for up
// to DrainTimeout (then cancels them and hands them back to JetStream for
// another worker), publishes their results, acknowledges them, closes the
// connectors it opened and returns nil. It returns an error when the NATS
// connection is closed under it. After Kill, Run returns nil at once without
// settling any task.
func (w *Worker) Run(ctx context.Context) error {
	if !w.ran.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	// base outlives ctx so that in-flight tasks can drain and settle; only
	// Kill and the return of Run cancel it.
	base, kill := context.WithCancel(context.WithoutCancel(ctx))
	defer kill()
	w.mu.Lock()
	w.kill = kill
	w.mu.Unlock()
	if w.killed.Load() {
		return nil
	}
	w.started = time.Now()

	// fetchCtx ends pulling: on shutdown or Kill.
	fetchCtx, stopFetch := context.WithCancel(base)
	defer stopFetch()
	stopAfter := context.AfterFunc(ctx, stopFetch)
	defer stopAfter()
	// taskCtx bounds the tasks: cancelled DrainTimeout after shutdown began.
	taskCtx, cancelTasks := context.WithCancel(base)
	defer cancelTasks()

	// Streams stop with pulling: on shutdown they stop renewing their
	// leases, and the leader gives them to other workers.
	assignSub, err := w.nc.Subscribe(protocol.WorkerStreamSubject(w.cfg.ID), func(m *nats.Msg) { w.onAssign(fetchCtx, m) })
	if err != nil {
		return fmt.Errorf("worker: subscribe stream assignments: %w", err)
	}
	defer w.stopStreams()
	defer assignSub.Unsubscribe()

	w.log.Info("worker starting", "slots", w.cfg.Slots)
	w.cfg.Metrics.WorkerSlots(w.cfg.ID, w.cfg.Slots, 0)
	defer w.cfg.Metrics.WorkerGone(w.cfg.ID)
	var aux errgroup.Group
	slotsDone := make(chan struct{})
	aux.Go(func() error { w.heartbeats(base, slotsDone); return nil })
	aux.Go(func() error {
		w.drainTimer(fetchCtx, base, slotsDone, cancelTasks)
		return nil
	})

	err = w.runSlots(fetchCtx, taskCtx, base)
	close(slotsDone)
	_ = aux.Wait()

	if cerr := errors.Join(w.sources.close(), w.sinks.close()); cerr != nil {
		w.log.Warn("close connectors", "err", cerr)
	}
	if w.killed.Load() {
		return nil
	}
	if err != nil {
		return err
	}
	w.log.Info("worker stopped", "done", w.done.Load(), "failed", w.failed.Load())
	return nil
}

// runSlots waits for the consumer, then runs one pull loop per slot until
// pulling stops and every slot's task is settled.
func (w *Worker) runSlots(fetchCtx, taskCtx, base context.Context) error {
	cons, err := w.waitConsumer(fetchCtx)
	if err != nil {
		if fetchCtx.Err() != nil {
			return nil
		}
		return err
	}
	var g errgroup.Group
	for range w.cfg.Slots {
		g.Go(func() error { return w.slot(fetchCtx, taskCtx, base, cons) })
	}
	return g.Wait()
}

// waitConsumer returns the shared task consumer, waiting with backoff until
// it exists.
func (w *Worker) waitConsumer(ctx context.Context) (jetstream.Consumer, error) {
	delay := 100 * time.Millisecond
	logged := false
	for {
		cons, err := w.js.Consumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers)
		if err == nil {
			if logged {
				w.log.Info("task consumer found")
			}
			return cons, nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil, fmt.Errorf("look up task consumer: %w", err)
		}
		if !logged {
			w.log.Info("waiting for the task consumer", "stream", protocol.StreamTasks,
				"consumer", protocol.ConsumerWorkers, "err", err)
			logged = true
		}
		if !sleep(ctx, delay) {
			return nil, ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// slot pulls one task at a time and runs it, so that a worker never holds
// more task messages than it has slots.
func (w *Worker) slot(fetchCtx, taskCtx, base context.Context, cons jetstream.Consumer) error {
	delay := 100 * time.Millisecond
	failing := false
	for fetchCtx.Err() == nil {
		msg, err := cons.Next(jetstream.FetchMaxWait(pullWait))
		if err != nil {
			switch {
			case errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages):
			case w.killed.Load():
				return nil
			case errors.Is(err, nats.ErrConnectionClosed):
				return fmt.Errorf("pull task: %w", err)
			default:
				// The consumer may be gone for a moment (leader change, a
				// coordinator recreating it): keep pulling, with backoff.
				if !failing {
					w.log.Warn("pull task", "err", err)
					failing = true
				}
				sleep(fetchCtx, delay)
				delay = min(2*delay, 5*time.Second)
			}
			continue
		}
		if failing {
			w.log.Info("pulling tasks again")
			failing = false
		}
		delay = 100 * time.Millisecond
		if fetchCtx.Err() != nil {
			// Delivered after shutdown began: hand it to another worker.
			if !w.killed.Load() {
				if err := msg.NakWithDelay(requeueDelay); err != nil {
					w.log.Warn("hand back task pulled during shutdown", "err", err)
				}
			}
			return nil
		}
		w.handle(taskCtx, base, msg)
	}
	return nil
}

// drainTimer cancels the tasks DrainTimeout after shutdown began, unless the
// slots finished first.
func (w *Worker) drainTimer(fetchCtx, base context.Context, slotsDone <-chan struct{}, cancelTasks context.CancelFunc) {
	select {
	case <-slotsDone:
		return
	case <-fetchCtx.Done():
	}
	if w.killed.Load() {
		return
	}
	if busy := w.Stats().Busy; busy > 0 {
		w.log.Info("draining tasks", "busy", busy, "timeout", w.cfg.DrainTimeout)
	}
	t := time.NewTimer(w.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-slotsDone:
	case <-base.Done():
	case <-t.C:
		w.log.Warn("drain timeout: cancelling tasks in flight", "busy", w.Stats().Busy)
		cancelTasks()
	}
}

// heartbeats publishes a heartbeat now and every HeartbeatEvery until the
// slots are done or the worker is killed.
func (w *Worker) heartbeats(base context.Context, slotsDone <-chan struct{}) {
	t := time.NewTicker(w.cfg.HeartbeatEvery)
	defer t.Stop()
	failing := false
	for {
		err := w.heartbeat()
		switch {
		case err != nil && !failing && !w.killed.Load():
			w.log.Warn("publish heartbeat", "err", err)
			failing = true
		case err == nil:
			failing = false
		}
		select {
		case <-slotsDone:
			return
		case <-base.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) heartbeat() error {
	w.mu.Lock()
	tasks := make([]string, 0, len(w.running)+len(w.streams))
	for _, t := range w.running {
		tasks = append(tasks, t)
	}
	busy := len(tasks) // streams hold no task slot
	for p, h := range w.streams {
		tasks = append(tasks, fmt.Sprintf("stream %s (epoch %d)", p, h.epoch))
	}
	w.mu.Unlock()
	slices.Sort(tasks)
	data, err := protocol.Encode(protocol.Heartbeat{
		Worker:  w.cfg.ID,
		Host:    w.host,
		Slots:   w.cfg.Slots,
		Busy:    busy,
		Tasks:   tasks,
		Done:    w.done.Load(),
		Failed:  w.failed.Load(),
		Started: w.started,
		Time:    time.Now(),
	})
	if err != nil {
		return err
	}
	return w.nc.Publish(protocol.SubjectHeartbeat, data)
}

// Kill simulates a crash, for tests: it closes the NATS connection and stops
// everything at once. Tasks in flight are abandoned without ack, nak or
// result; JetStream redelivers them after AckWait. Run returns soon after.
func (w *Worker) Kill() {
	w.killed.Store(true)
	w.nc.Close()
	w.mu.Lock()
	kill := w.kill
	w.mu.Unlock()
	if kill != nil {
		kill()
	}
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
