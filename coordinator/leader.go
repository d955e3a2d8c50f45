package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// maxDeliveriesSubject is the advisory JetStream sends when a task message
// reached the workers' consumer's MaxDeliver.
var maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + protocol.StreamTasks + "." + protocol.ConsumerWorkers

const (
	sweepEvery     = 5 * time.Second
	commitAttempts = 5
)

// leaderTerm is the work of one leadership term. Its goroutines stop when
// the term's context ends; stop waits for all of them.
type leaderTerm struct {
	c      *Coordinator
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
	// driving maps the runs being advanced to "kicked again meanwhile".
	driving map[string]bool
	// commitMu serialises sink commits per pipeline.
	commitMu map[string]*sync.Mutex
	// held are the sources kept open for their runs (connectors.RunHolder).
	held map[string]connectors.Source
	// checkAt is when the input of a waiting run is checked next;
	// rechecking marks the waiting runs with a timer that kicks them then.
	checkAt    map[string]time.Time
	rechecking map[string]bool
	// leases are the stream leases' renewals seen this term.
	leaseMu sync.Mutex
	leases  map[string]leaseSeen
}

func (c *Coordinator) startTerm(parent context.Context) *leaderTerm {
	ctx, cancel := context.WithCancel(parent)
	t := &leaderTerm{c: c, cancel: cancel, done: make(chan struct{}), driving: map[string]bool{}, commitMu: map[string]*sync.Mutex{}, held: map[string]connectors.Source{},
		checkAt: map[string]time.Time{}, rechecking: map[string]bool{}, leases: map[string]leaseSeen{}}
	go func() {
		defer close(t.done)
		t.lead(ctx)
	}()
	return t
}

func (t *leaderTerm) stop() {
	t.cancel()
	<-t.done
}

// spawn runs f in a goroutine the term waits for; false once the term is
// closing.
func (t *leaderTerm) spawn(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// lead runs the term: catch up with the log, ensure the streams, serve the
// API, consume results and advance every unfinished run.
func (t *leaderTerm) lead(ctx context.Context) {
	c := t.c
	log := c.log.With("role", "leader")
	defer func() {
		t.mu.Lock()
		t.closing = true
		t.mu.Unlock()
		t.wg.Wait()
		for id := range t.held {
			t.release(log, id)
		}
	}()
	// The FSM must hold every entry committed by earlier leaders before
	// this one acts on it.
	for {
		err := c.raftNode().Barrier(applyTimeout).Error()
		if err == nil {
			break
		}
		log.Warn("raft barrier", "err", err)
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
	for {
		err := EnsureStreams(ctx, c.js, StreamConfig{Replicas: c.cfg.StreamReplicas, AckWait: c.cfg.AckWait, MaxDeliver: c.cfg.MaxDeliver})
		if err == nil {
			break
		}
		log.Warn("ensure streams", "err", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}

	apiSub, err := c.nc.QueueSubscribe(protocol.SubjectAPIPrefix+">", protocol.QueueLeader, func(m *nats.Msg) {
		if !t.spawn(func() { t.serveAPI(ctx, m) }) {
			respondError(m, "not_leader", "this coordinator is stepping down")
		}
	})
	if err != nil {
		log.Error("subscribe control API", "err", err)
	} else {
		defer apiSub.Unsubscribe()
	}

	advSub, err := c.nc.Subscribe(maxDeliveriesSubject, func(m *nats.Msg) {
		t.spawn(func() { t.onMaxDeliveries(ctx, m) })
	})
	if err != nil {
		log.Error("subscribe max-deliveries advisory", "err", err)
	} else {
		defer advSub.Unsubscribe()
	}

	var cc jetstream.ConsumeContext
	for cc == nil {
		cons, err := c.js.Consumer(ctx, protocol.StreamResults, protocol.ConsumerLeader)
		if err == nil {
			cc, err = cons.Consume(func(m jetstream.Msg) { t.onResult(ctx, m) },
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
					log.Debug("consume results", "err", err)
				}))
		}
		if err != nil {
			log.Warn("consume results", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
		}
	}
	defer func() {
		cc.Stop()
		<-cc.Closed()
	}()

	tadvSub, err := c.nc.Subscribe(triggerMaxDeliveriesSubject, func(m *nats.Msg) {
		t.spawn(func() { t.onTriggerMaxDeliveries(ctx, m) })
	})
	if err != nil {
		log.Error("subscribe trigger max-deliveries advisory", "err", err)
	} else {
		defer tadvSub.Unsubscribe()
	}
	// Triggers are consumed while leading, one at a time: each is a Raft
	// entry, acked after it.
	var tc jetstream.ConsumeContext
	for tc == nil {
		cons, err := c.js.Consumer(ctx, protocol.StreamTriggers, protocol.ConsumerTriggers)
		if err == nil {
			tc, err = cons.Consume(func(m jetstream.Msg) { t.onTrigger(ctx, m) },
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
					log.Debug("consume triggers", "err", err)
				}))
		}
		if err != nil {
			log.Warn("consume triggers", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
		}
	}
	defer func() {
		tc.Stop()
		<-tc.Closed()
	}()

	log.Info("leading")
	t.spawn(func() { t.schedule(ctx) })
	t.spawn(func() { t.streams(ctx) })
	t.spawn(func() { t.cleanUps(ctx) })
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		// Recovery: every run not finished, or whose end was not
		// announced, is advanced from where the FSM says it is.
		for _, r := range c.fsm.runs(func(r *runState) bool { return !r.finished() || !r.Notified }) {
			t.kick(ctx, r.ID)
		}
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
		}
	}
}

// kick makes sure a goroutine advances run id; if one already does, it
// makes another pass when done.
func (t *leaderTerm) kick(ctx context.Context, id string) {
	t.mu.Lock()
	if _, ok := t.driving[id]; ok {
		t.driving[id] = true
		t.mu.Unlock()
		return
	}
	t.driving[id] = false
	t.mu.Unlock()
	ok := t.spawn(func() {
		for {
			t.advance(ctx, id)
			t.mu.Lock()
			again := t.driving[id]
			if !again || ctx.Err() != nil {
				delete(t.driving, id)
				t.mu.Unlock()
				return
			}
			t.driving[id] = false
			t.mu.Unlock()
		}
	})
	if !ok {
		t.mu.Lock()
		delete(t.driving, id)
		t.mu.Unlock()
	}
}

// advance moves a run forward as far as it can without waiting for task
// results.
func (t *leaderTerm) advance(ctx context.Context, id string) {
	c := t.c
	log := c.log.With("run", id)
	for ctx.Err() == nil {
		r, ok := c.fsm.run(id)
		if !ok {
			return
		}
		var err error
		switch {
		case r.State == protocol.RunPlanning || r.State == protocol.RunWaiting:
			var waiting bool
			waiting, err = t.plan(ctx, log, r)
			if waiting && err == nil {
				return // checked again by a timer
			}
		case r.State == protocol.RunRunning && !r.Published:
			err = t.publish(ctx, log, r)
		case r.State == protocol.RunRunning && r.allSucceeded():
			_, err = c.apply(cmdRunCommitting, runCmd{Run: id, Time: now()})
		case r.State == protocol.RunRunning:
			return // waiting for results
		case r.State == protocol.RunCommitting:
			err = t.commit(ctx, log, r)
		case r.finished() && !r.Notified:
			err = t.announce(ctx, log, r)
		default:
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("advance run", "state", r.State, "err", err)
			}
			return
		}
	}
}

func now() time.Time { return time.Now().UTC() }

// runContext returns ctx carrying the run's stored span context, so spans
// started from it join the run's trace on any leader.
func runContext(ctx context.Context, r *runState) context.Context {
	return telemetry.ExtractMap(ctx, r.Trace)
}

func (t *leaderTerm) failRun(ctx context.Context, r *runState, msg string) error {
	out, err := t.c.apply(cmdRunFailed, runFailedCmd{Run: r.ID, Error: msg, Keep: t.c.cfg.KeepRuns, Time: now()})
	t.kickStarted(ctx, r.Pipeline, out)
	return err
}

// kickStarted kicks the unfinished runs of a pipeline when an entry
// started runs (backfill windows taken from the queue).
func (t *leaderTerm) kickStarted(ctx context.Context, pipelineName string, out applyResult) {
	if out.Started == 0 {
		return
	}
	for _, r := range t.c.fsm.runs(func(r *runState) bool { return r.Pipeline == pipelineName && !r.finished() }) {
		t.kick(ctx, r.ID)
	}
}

// plan asks the source for the run's partitions and records them. A
// source that implements connectors.Readiness is asked first whether the
// run's input is complete: while it is not, the run waits (recorded in
// Raft once, with what it waits for), no task is published, and a timer
// kicks the run again after its ready check interval; waiting is true
// then. A run waiting longer than its ready timeout fails, naming what it
// waited for.
func (t *leaderTerm) plan(ctx context.Context, log *slog.Logger, r *runState) (waiting bool, err error) {
	c := t.c
	if t.notYet(r.ID) {
		return true, nil
	}
	p, ok := c.fsm.pipeline(r.Pipeline)
	watermark := ""
	if ok {
		watermark = p.Watermark
	}
	req := connectors.PlanRequest{
		RunID: r.ID, Pipeline: r.Pipeline, Params: r.Params, LogicalTime: r.LogicalTime,
		Watermark: watermark, Partitioning: r.Partitioning,
		Window: r.Window, DeltaColumn: r.DeltaColumn,
	}
	rctx := runContext(ctx, r)
	var span trace.Span
	var what string
	plan, err := func() (connectors.Plan, error) {
		src, err := c.reg.OpenSource(rctx, r.Source.Kind, r.Source.Config)
		if err != nil {
			return connectors.Plan{}, err
		}
		if rd, ok := src.(connectors.Readiness); ok {
			var ready bool
			ready, what, err = rd.Ready(rctx, req)
			switch {
			case err != nil && !connectors.IsPermanent(err):
				log.Warn("check source readiness", "err", err)
				waiting, err = true, nil
			case err == nil && !ready:
				waiting = true
			}
			if waiting || err != nil {
				if cerr := src.Close(); cerr != nil {
					log.Warn("close source after readiness check", "err", cerr)
				}
				return connectors.Plan{}, err
			}
		}
		// The plan span starts once the input is ready: a long wait is
		// no span per check.
		var sctx context.Context
		sctx, span = c.tracer.Start(rctx, telemetry.SpanPlan, trace.WithAttributes(
			telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID)))
		plan, err := src.Plan(sctx, req)
		if _, holds := src.(connectors.RunHolder); holds && err == nil {
			// The source holds the run's snapshot until the run ends.
			t.mu.Lock()
			t.held[r.ID] = src
			t.mu.Unlock()
			return plan, nil
		}
		if cerr := src.Close(); cerr != nil {
			log.Warn("close source after planning", "err", cerr)
		}
		return plan, err
	}()
	if span != nil {
		defer span.End()
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if span == nil { // failed before planning: opening or checking the source
			_, span = c.tracer.Start(rctx, telemetry.SpanPlan, trace.WithAttributes(
				telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID)))
			defer span.End()
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Warn("plan failed", "err", err)
		return false, t.failRun(ctx, r, "plan: "+err.Error())
	}
	if waiting {
		return true, t.wait(ctx, log, r, what)
	}
	t.doneWaiting(r.ID)
	span.SetAttributes(telemetry.AttrTasks.Int(len(plan.Partitions)))
	if _, err := c.apply(cmdRunPlanned, runPlannedCmd{Run: r.ID, Partitions: plan.Partitions, Watermark: plan.Watermark, Time: now()}); err != nil {
		return false, err
	}
	log.Info("run planned", "tasks", len(plan.Partitions))
	return false, nil
}

// wait records that run r waits for what (once, or when what changed),
// fails it when its ready timeout has passed, and otherwise schedules the
// next check.
func (t *leaderTerm) wait(ctx context.Context, log *slog.Logger, r *runState, what string) error {
	c := t.c
	if what == "" { // a failed check: keep what the run waits for
		what = cmp.Or(r.WaitingFor, "source input")
	}
	tm := now()
	since := r.WaitingSince
	if r.State != protocol.RunWaiting || r.WaitingFor != what {
		if _, err := c.apply(cmdRunWaiting, runWaitingCmd{Run: r.ID, What: what, Time: tm}); err != nil {
			return err
		}
		if r.State != protocol.RunWaiting {
			since = tm
			log.Info("run waiting for its source input", "for", what)
		}
	}
	every := r.ReadyCheck
	if every <= 0 {
		every = pipeline.DefaultReadyCheck
	}
	if r.ReadyTimeout > 0 {
		deadline := since.Add(r.ReadyTimeout)
		if !tm.Before(deadline) {
			t.doneWaiting(r.ID)
			log.Warn("run not ready in time", "for", what, "ready_timeout", r.ReadyTimeout)
			return t.failRun(ctx, r, fmt.Sprintf("ready_timeout: %s is still not ready after %s (waiting since %s)",
				what, r.ReadyTimeout, since.Format(time.RFC3339)))
		}
		every = min(every, deadline.Sub(tm))
	}
	t.recheck(ctx, r.ID, every)
	return nil
}

// notYet reports whether run id waits and its next check is not due (a
// kick from the sweep, or from an event, between two checks).
func (t *leaderTerm) notYet(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.checkAt[id]
	return ok && time.Now().Before(at)
}

// recheck kicks run id again after d, once: a run has at most one timer.
func (t *leaderTerm) recheck(ctx context.Context, id string, d time.Duration) {
	t.mu.Lock()
	t.checkAt[id] = time.Now().Add(d)
	if t.rechecking[id] {
		t.mu.Unlock()
		return
	}
	t.rechecking[id] = true
	t.mu.Unlock()
	ok := t.spawn(func() {
		awake := sleep(ctx, d)
		for awake {
			t.mu.Lock()
			at := t.checkAt[id]
			t.mu.Unlock()
			if wait := time.Until(at); wait > 0 {
				awake = sleep(ctx, wait) // moved by a check meanwhile
				continue
			}
			break
		}
		t.mu.Lock()
		delete(t.rechecking, id)
		t.mu.Unlock()
		if awake {
			t.kick(ctx, id)
		}
	})
	if !ok {
		t.mu.Lock()
		delete(t.rechecking, id)
		t.mu.Unlock()
	}
}

// doneWaiting forgets the checks of run id.
func (t *leaderTerm) doneWaiting(id string) {
	t.mu.Lock()
	delete(t.checkAt, id)
	t.mu.Unlock()
}

// taskOf builds the task message of one task of r.
func (t *leaderTerm) taskOf(r *runState, ts taskState) protocol.Task {
	return protocol.Task{
		RunID: r.ID, TaskID: ts.ID, Pipeline: r.Pipeline, Pattern: r.Pattern,
		Source: r.Source, Sink: r.Sink, Partition: ts.Partition, Enqueue: ts.Enqueue,
		Trace: r.Trace, Params: r.Params, LogicalTime: r.LogicalTime,
		MaxAttempts: r.MaxAttempts, Backoff: r.Backoff,
	}
}

// publish publishes every pending task of r with its msg id (a second
// publication inside the duplicate window is dropped), waits for all acks
// and records that the run is published. It retries until ctx ends.
func (t *leaderTerm) publish(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	tctx := runContext(ctx, r)
	for attempt := 0; ; attempt++ {
		err := func() error {
			var futs []jetstream.PubAckFuture
			for _, ts := range r.Tasks {
				if ts.State != protocol.TaskPending {
					continue
				}
				data, err := protocol.Encode(t.taskOf(r, ts))
				if err != nil {
					return err
				}
				m := nats.NewMsg(protocol.TaskSubject(r.Pipeline, r.ID))
				m.Data = data
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
			}
			for _, f := range futs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return fmt.Errorf("publish task %s: %w", f.Msg().Header.Get(protocol.HeaderTask), err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("publish tasks", "attempt", attempt+1, "err", err)
		if !sleep(ctx, min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)) {
			return ctx.Err()
		}
	}
	if _, err := c.apply(cmdRunPublished, runCmd{Run: r.ID, Time: now()}); err != nil {
		return err
	}
	log.Info("run published", "tasks", len(r.Tasks))
	return nil
}

// onResult records one task result, then acks it.
func (t *leaderTerm) onResult(ctx context.Context, m jetstream.Msg) {
	c := t.c
	res, err := protocol.Decode[protocol.Result](m.Data())
	if err != nil {
		c.log.Warn("drop undecodable result", "subject", m.Subject(), "err", err)
		m.Term()
		return
	}
	// A result the FSM would ignore (unknown or finished run, task already
	// done: a task may run twice) needs no log entry. The leader's FSM is
	// current: the term started with a barrier.
	if r, ok := c.fsm.run(res.RunID); !ok || r.State != protocol.RunRunning || !taskPending(r, res.TaskID) {
		c.log.Debug("ignore result", "run", res.RunID, "task", res.TaskID)
		if err := m.Ack(); err != nil {
			c.log.Warn("ack result", "run", res.RunID, "task", res.TaskID, "err", err)
		}
		return
	}
	out, err := c.apply(cmdTaskResult, taskResultCmd{
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
	t.kickStarted(ctx, res.Pipeline, out)
}

// maxDeliveries is the part of the JetStream advisory Sluice reads.
type maxDeliveries struct {
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// onMaxDeliveries fails the task whose message JetStream gave up on, then
// removes the message from the work queue.
func (t *leaderTerm) onMaxDeliveries(ctx context.Context, m *nats.Msg) {
	c := t.c
	var adv maxDeliveries
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		c.log.Warn("bad max-deliveries advisory", "err", err)
		return
	}
	stream, err := c.js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		c.log.Warn("max deliveries: open tasks stream", "err", err)
		return
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			c.log.Warn("max deliveries: get task message", "seq", adv.StreamSeq, "err", err)
		}
		return
	}
	task, err := protocol.Decode[protocol.Task](raw.Data)
	if err == nil {
		out, err := c.apply(cmdTaskResult, taskResultCmd{
			Run: task.RunID, Task: task.TaskID, Attempt: adv.Deliveries, Final: true,
			ErrorClass: protocol.ErrorRetryable,
			Error:      fmt.Sprintf("delivered %d times without a result", adv.Deliveries), Time: now(),
		})
		if err != nil {
			c.log.Warn("max deliveries: record task failure", "run", task.RunID, "task", task.TaskID, "err", err)
			return
		}
		if out.Changed {
			c.log.Warn("task dead after max deliveries", "run", task.RunID, "task", task.TaskID, "deliveries", adv.Deliveries)
			t.kick(ctx, task.RunID)
		}
		t.kickStarted(ctx, task.Pipeline, out)
	} else {
		c.log.Warn("max deliveries: undecodable task message", "seq", adv.StreamSeq, "err", err)
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		c.log.Warn("max deliveries: delete task message", "seq", adv.StreamSeq, "err", err)
	}
}

// commit publishes the run through its sink, with the version recorded in
// the committing entry, and records the commit. A failing commit is retried
// with backoff; then the run fails.
func (t *leaderTerm) commit(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	mu := t.pipelineLock(r.Pipeline)
	mu.Lock()
	defer mu.Unlock()
	req := connectors.CommitRequest{RunID: r.ID, Pipeline: r.Pipeline, Version: r.Version, Watermark: r.Watermark}
	if r.Window != nil {
		req.Mode, req.Window, req.DeltaColumn = connectors.ModeAppend, r.Window, r.DeltaColumn
	}
	for _, ts := range r.Tasks {
		sum, err := connectors.ParseChecksum(ts.Checksum, ts.Rows)
		if err != nil {
			return t.failRun(ctx, r, fmt.Sprintf("commit: task %s: %v", ts.ID, err))
		}
		req.Tasks = append(req.Tasks, connectors.TaskOutput{Rows: ts.Rows, Bytes: ts.Bytes, Checksum: sum, Location: ts.Location})
	}
	cctx, span := c.tracer.Start(runContext(ctx, r), telemetry.SpanCommit, trace.WithAttributes(
		telemetry.AttrPipeline.String(r.Pipeline), telemetry.AttrRun.String(r.ID),
		telemetry.AttrVersion.Int64(r.Version), telemetry.AttrTasks.Int(len(r.Tasks))))
	defer span.End()
	var lastErr error
	backoff := 250 * time.Millisecond
	for attempt := 1; attempt <= commitAttempts; attempt++ {
		res, err := func() (connectors.CommitResult, error) {
			sink, err := c.reg.OpenSink(cctx, r.Sink.Kind, r.Sink.Config)
			if err != nil {
				return connectors.CommitResult{}, err
			}
			defer func() {
				if err := sink.Close(); err != nil {
					log.Warn("close sink after commit", "err", err)
				}
			}()
			return sink.Commit(cctx, req)
		}()
		if err == nil {
			out, err := c.apply(cmdRunCommitted, runCommittedCmd{Run: r.ID, Location: res.Location, Marker: res.Marker, Keep: c.cfg.KeepRuns, Time: now()})
			if err != nil {
				return err
			}
			t.kickStarted(ctx, r.Pipeline, out)
			log.Info("run committed", "version", r.Version, "location", res.Location)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
		log.Warn("commit", "attempt", attempt, "err", err)
		if connectors.IsPermanent(err) || attempt == commitAttempts {
			break
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff *= 2
	}
	span.RecordError(lastErr)
	span.SetStatus(codes.Error, lastErr.Error())
	return t.failRun(ctx, r, "commit: "+lastErr.Error())
}

func (t *leaderTerm) pipelineLock(name string) *sync.Mutex {
	t.mu.Lock()
	defer t.mu.Unlock()
	mu, ok := t.commitMu[name]
	if !ok {
		mu = &sync.Mutex{}
		t.commitMu[name] = mu
	}
	return mu
}

// announce tells the world a run ended: for a failed run the sink's
// staging output is removed and each failed task goes to the dead-letter
// stream; then a run event is published and the FSM records that it was.
func (t *leaderTerm) announce(ctx context.Context, log *slog.Logger, r *runState) error {
	c := t.c
	t.release(log, r.ID)
	traceID := telemetry.TraceID(r.Trace)
	ev := protocol.RunEvent{RunID: r.ID, Pipeline: r.Pipeline, Outcome: r.State, Location: r.Location,
		Error: r.Error, Time: r.Finished, TraceID: traceID, Trigger: r.Trigger}
	var sum connectors.Checksum
	for _, ts := range r.Tasks {
		ev.Rows += ts.Rows
		ev.Bytes += ts.Bytes
		if cs, err := connectors.ParseChecksum(ts.Checksum, ts.Rows); err == nil {
			sum.Merge(cs)
		}
	}
	if r.State == protocol.RunCommitted {
		ev.DatasetVersion = r.Version
		ev.Checksum = sum.String()
	}
	if r.State == protocol.RunFailed {
		if r.Planned {
			// Tasks of the run still queued would only write staging
			// output nobody commits: drop them before removing staging.
			if err := t.purgeTasks(ctx, r); err != nil {
				log.Warn("purge queued tasks of failed run", "err", err)
			}
			if err := t.abort(ctx, r); err != nil {
				log.Warn("abort sink staging of failed run", "err", err)
			}
		}
		for _, ts := range r.Tasks {
			if ts.State != protocol.TaskFailed {
				continue
			}
			if err := t.deadLetter(ctx, r, ts, traceID); err != nil {
				return fmt.Errorf("dead-letter task %s: %w", ts.ID, err)
			}
		}
	}
	data, err := protocol.Encode(ev)
	if err != nil {
		return err
	}
	m := nats.NewMsg(protocol.RunEventSubject(r.Pipeline, r.State))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, "event:"+r.ID)
	m.Header.Set(protocol.HeaderRun, r.ID)
	telemetry.Inject(runContext(ctx, r), m.Header)
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish run event: %w", err)
	}
	if r.State == protocol.RunCommitted {
		if err := t.startDownstream(ctx, log, r); err != nil {
			return err
		}
	}
	if _, err := c.apply(cmdRunNotified, runCmd{Run: r.ID, Time: now()}); err != nil {
		return err
	}
	c.endSpan(r.ID)
	return nil
}

// release lets go of what a source holds for run id, if anything.
func (t *leaderTerm) release(log *slog.Logger, id string) {
	t.mu.Lock()
	src, ok := t.held[id]
	delete(t.held, id)
	t.mu.Unlock()
	if !ok {
		return
	}
	if err := src.(connectors.RunHolder).ReleaseRun(id); err != nil {
		log.Warn("release source hold", "run", id, "err", err)
	}
	if err := src.Close(); err != nil {
		log.Warn("close source", "run", id, "err", err)
	}
}

func (t *leaderTerm) purgeTasks(ctx context.Context, r *runState) error {
	s, err := t.c.js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(protocol.TaskSubject(r.Pipeline, r.ID)))
}

func (t *leaderTerm) abort(ctx context.Context, r *runState) error {
	sink, err := t.c.reg.OpenSink(ctx, r.Sink.Kind, r.Sink.Config)
	if err != nil {
		return err
	}
	defer sink.Close()
	return sink.Abort(ctx, r.ID)
}

func (t *leaderTerm) deadLetter(ctx context.Context, r *runState, ts taskState, traceID string) error {
	data, err := protocol.Encode(t.taskOf(r, ts))
	if err != nil {
		return err
	}
	m := nats.NewMsg(protocol.DLQSubject("task", r.Pipeline))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, "dlq:"+r.ID+":"+ts.ID)
	m.Header.Set(protocol.HeaderRun, r.ID)
	m.Header.Set(protocol.HeaderTask, ts.ID)
	m.Header.Set(protocol.HeaderReason, ts.Error)
	m.Header.Set(protocol.HeaderAttempts, strconv.Itoa(ts.Attempts))
	m.Header.Set(protocol.HeaderOrigSubject, protocol.TaskSubject(r.Pipeline, r.ID))
	if traceID != "" {
		m.Header.Set(protocol.HeaderTraceID, traceID)
	}
	telemetry.Inject(runContext(ctx, r), m.Header)
	if _, err := t.c.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	return nil
}

func taskPending(r *runState, taskID string) bool {
	t := r.task(taskID)
	return t != nil && t.State == protocol.TaskPending
}
