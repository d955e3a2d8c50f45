package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

const (
	sweepEvery     = 5 * time.Second
	commitAttempts = 5
	// resultWorkers is how many task results the leader records at once.
	resultWorkers = 64
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
	// commitMu serialises sink commits per pipeline; datasetMu, made when
	// first needed, what changes one dataset (datasetLock).
	commitMu  map[string]*sync.Mutex
	datasetMu map[string]*sync.Mutex
	// held are the sources kept open for their runs (connectors.RunHolder).
	held map[string]connectors.Source
	// discarded maps a run planned again to the attempt whose
	// predecessors' tasks and staging this term removed (discard).
	discarded map[string]int
	// checkAt is when the input of a waiting run is checked next;
	// rechecking marks the waiting runs with a timer that kicks them then.
	checkAt    map[string]time.Time
	rechecking map[string]bool
	// leases are the stream leases' renewals seen this term.
	leaseMu sync.Mutex
	leases  map[string]leaseSeen
	// windowsMu serialises the starts of backfill windows.
	windowsMu sync.Mutex
	// ext counts the events of external triggers (external.go).
	ext externalStats
	// checks counts the readiness checks (readiness.go).
	checks readyChecks
}

func (c *Coordinator) startTerm(parent context.Context) *leaderTerm {
	ctx, cancel := context.WithCancel(parent)
	t := &leaderTerm{c: c, cancel: cancel, done: make(chan struct{}), driving: map[string]bool{}, commitMu: map[string]*sync.Mutex{}, held: map[string]connectors.Source{},
		discarded: map[string]int{}, checkAt: map[string]time.Time{}, rechecking: map[string]bool{}, leases: map[string]leaseSeen{}}
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
		err := EnsureStreams(ctx, c.js, StreamConfig{Replicas: c.cfg.StreamReplicas, AckWait: c.cfg.AckWait, MaxDeliver: c.cfg.MaxDeliver,
			MaxBytes: c.cfg.StreamMaxBytes, CDCMaxBytes: c.cfg.CDCMaxBytes, DLQMaxAge: c.cfg.DLQMaxAge})
		if err == nil {
			break
		}
		log.Warn("ensure streams", "err", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}

	apiSub, err := c.nc.QueueSubscribe(protocol.SubjectAPIPrefix+">", protocol.QueueLeader, func(m *nats.Msg) {
		serve := func() { t.serveAPI(ctx, m) }
		if isLeaseRenew(m.Subject) {
			serve = func() { t.serveLeaseRenew(m) }
		}
		if !t.spawn(serve) {
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

	// Results are recorded by resultWorkers goroutines at once: Raft
	// writes the entries of the results that arrive together in one
	// append (and the FSM applies them in one batch), where, one at a
	// time, each result would wait for a disk write of its own.
	results := make(chan jetstream.Msg)
	for range resultWorkers {
		t.spawn(func() {
			for {
				select {
				case m := <-results:
					t.onResult(ctx, m)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	var cc jetstream.ConsumeContext
	for cc == nil {
		cons, err := c.js.Consumer(ctx, protocol.StreamResults, protocol.ConsumerLeader)
		if err == nil {
			cc, err = cons.Consume(func(m jetstream.Msg) {
				select {
				case results <- m:
				case <-ctx.Done(): // not acked: the next leader gets it
				}
			},
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
	t.spawn(func() { t.trims(ctx) })
	t.spawn(func() { t.externalTriggers(ctx) })
	t.spawn(func() { t.readiness(ctx) })
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		// Recovery: every run not finished, or whose end was not
		// announced, is advanced from where the FSM says it is.
		for _, id := range c.fsm.runIDs(func(r *runState) bool { return !r.finished() || !r.Notified }) {
			t.kick(ctx, id)
		}
		// Backfills go on from the windows the FSM has queued.
		t.spawn(func() { t.startAllWindows(ctx) })
		// Rollbacks an earlier leader recorded and did not finish.
		t.spawn(func() { t.finishRollbacks(ctx) })
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
		// A running run waiting for results is looked at without its
		// tasks (a run may have many): it is looked at on each result.
		head, ok := c.fsm.runHead(id)
		if !ok {
			return
		}
		if head.State == protocol.RunRunning && head.Published && t.replanReason(head) == "" {
			if !head.allSucceeded() {
				return // waiting for results
			}
			if _, err := apply(c, runCommittingCmd{Run: id, Time: now()}); err != nil {
				if ctx.Err() == nil {
					log.Warn("advance run", "state", head.State, "err", err)
				}
				return
			}
			continue
		}
		r, ok := c.fsm.run(id)
		if !ok {
			return
		}
		var err error
		replan := ""
		if r.State == protocol.RunRunning {
			replan = t.replanReason(r)
		}
		switch {
		case replan != "":
			err = t.replan(log, r, replan)
		case r.State == protocol.RunPlanning || r.State == protocol.RunWaiting:
			var waiting bool
			waiting, err = t.plan(ctx, log, r)
			if waiting && err == nil {
				return // checked again by a timer
			}
		case r.State == protocol.RunRunning && !r.Published:
			err = t.publish(ctx, log, r)
		case r.State == protocol.RunRunning && r.allSucceeded():
			_, err = apply(c, runCommittingCmd{Run: id, Time: now()})
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

// failRun fails run r with msg, scrubbed of expanded `${NAME}` values; its
// announcement follows.
func (t *leaderTerm) failRun(r *runState, msg string) error {
	_, err := apply(t.c, runFailedCmd{Run: r.ID, Error: t.c.reg.Scrub(msg), Keep: t.c.cfg.KeepRuns, KeepUnannounced: true, Time: now()})
	return err
}
