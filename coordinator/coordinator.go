package coordinator

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/raftls"
	"github.com/sluicehq/sluice/telemetry"
)

// applyTimeout bounds one Raft apply.
const applyTimeout = 10 * time.Second

// publishAckTimeout bounds the wait for the ack of an asynchronous publish
// (a task). An ack can be lost, not refused: a publish routed to a stream
// leader that a network partition has just cut off gets no answer at all,
// and without a bound the run would wait for it forever. The publish is
// then retried under the same Nats-Msg-Id, which JetStream deduplicates.
// It exceeds a stream leader election (5-9 s).
const publishAckTimeout = 15 * time.Second

// workerTTL is how long a worker counts as live after its last heartbeat.
const workerTTL = 10 * time.Second

// Coordinator is one coordinator node. Run drives it; only while it is the
// Raft leader does it plan, publish, track and commit runs and serve the
// control API.
type Coordinator struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	reg    *connectors.Registry
	log    *slog.Logger
	tracer trace.Tracer
	fsm    *fsm

	ready  chan struct{}
	killed chan struct{}
	exited chan struct{}

	mu      sync.Mutex
	raft    *raft.Raft
	running bool
	kill    sync.Once

	hbMu    sync.Mutex
	workers map[string]heartbeatSeen

	forged forgedCounts

	// spans holds the run spans this node started as leader, ended when
	// the run ends.
	spanMu sync.Mutex
	spans  map[string]trace.Span
}

type heartbeatSeen struct {
	hb   protocol.Heartbeat
	seen time.Time
}

// New builds a coordinator node; Run starts it. tp may be nil (no tracing).
func New(cfg Config, nc *nats.Conn, reg *connectors.Registry, log *slog.Logger, tp trace.TracerProvider) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || reg == nil {
		return nil, errors.New("coordinator: a NATS connection and a connector registry are required")
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("coordinator: jetstream: %w", err)
	}
	return &Coordinator{
		cfg:     cfg.withDefaults(),
		nc:      nc,
		js:      js,
		reg:     reg,
		log:     log.With("node", cfg.NodeID),
		tracer:  tp.Tracer(telemetry.TracerName),
		fsm:     newFSM(),
		ready:   make(chan struct{}),
		killed:  make(chan struct{}),
		exited:  make(chan struct{}),
		workers: map[string]heartbeatSeen{},
		spans:   map[string]trace.Span{},
	}, nil
}

// Ready is closed once Raft is up.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

func (c *Coordinator) raftNode() *raft.Raft {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raft
}

// IsLeader reports whether this node is the Raft leader.
func (c *Coordinator) IsLeader() bool {
	r := c.raftNode()
	return r != nil && r.State() == raft.Leader
}

// stillLeader reports whether this node is the leader, confirmed by a
// quorum now (a node that lost leadership may not have noticed yet).
func (c *Coordinator) stillLeader() bool {
	r := c.raftNode()
	if r == nil || r.State() != raft.Leader {
		return false
	}
	f := r.VerifyLeader()
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err == nil
	case <-c.killed:
		return false
	case <-time.After(applyTimeout):
		return false
	}
}

// LeaderID is the Raft id of the leader this node knows, or "".
func (c *Coordinator) LeaderID() string {
	r := c.raftNode()
	if r == nil {
		return ""
	}
	_, id := r.LeaderWithID()
	return string(id)
}

// Kill stops the node abruptly, for fault tests, as a crash would: it
// closes the node's NATS connection first (its subscriptions, pull
// requests and unacked messages go with it, and nothing more is acked,
// published or answered), then Raft shuts down without handing leadership
// over and the leader work stops; Run returns. Kill waits for Run to
// return when Run was started. The connection given to New is closed.
func (c *Coordinator) Kill() {
	c.kill.Do(func() {
		c.nc.Close()
		close(c.killed)
		if r := c.raftNode(); r != nil {
			if err := r.Shutdown().Error(); err != nil {
				c.log.Warn("raft shutdown", "err", err)
			}
		}
	})
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	if running {
		<-c.exited
	}
}

// stores are the Raft stores of one node.
type stores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	close  func() error
}

func (c *Coordinator) openStores(hlog hclog.Logger) (stores, error) {
	if c.cfg.InmemStore {
		s := raft.NewInmemStore()
		return stores{logs: s, stable: s, snaps: raft.NewInmemSnapshotStore(), close: func() error { return nil }}, nil
	}
	if err := os.MkdirAll(c.cfg.DataDir, 0o755); err != nil {
		return stores{}, fmt.Errorf("create data dir: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(c.cfg.DataDir, "raft.db")})
	if err != nil {
		return stores{}, fmt.Errorf("open raft.db: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(c.cfg.DataDir, 2, hlog)
	if err != nil {
		bolt.Close()
		return stores{}, fmt.Errorf("open snapshot store: %w", err)
	}
	return stores{logs: bolt, stable: bolt, snaps: snaps, close: bolt.Close}, nil
}

func (c *Coordinator) openTransport(hlog hclog.Logger) (raft.Transport, func() error, error) {
	if c.cfg.Transport != nil {
		return c.cfg.Transport, func() error { return nil }, nil
	}
	var adv net.Addr
	if c.cfg.RaftAdvertise != "" {
		a, err := net.ResolveTCPAddr("tcp", c.cfg.RaftAdvertise)
		if err != nil {
			return nil, nil, fmt.Errorf("resolve raft advertise address %q: %w", c.cfg.RaftAdvertise, err)
		}
		adv = a
	}
	if c.cfg.RaftTLS != nil {
		l, err := raftls.Listen(c.cfg.RaftBind, adv, c.cfg.RaftTLS)
		if err != nil {
			return nil, nil, err
		}
		t := raft.NewNetworkTransportWithLogger(l, 3, 10*time.Second, hlog)
		return t, t.Close, nil
	}
	t, err := raft.NewTCPTransportWithLogger(c.cfg.RaftBind, adv, 3, 10*time.Second, hlog)
	if err != nil {
		return nil, nil, fmt.Errorf("raft transport on %s: %w", c.cfg.RaftBind, err)
	}
	return t, t.Close, nil
}

// Run starts Raft and drives the node until ctx ends (then it hands
// leadership over if it leads, shuts Raft down and returns nil) or Kill is
// called.
func (c *Coordinator) Run(ctx context.Context) (err error) {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("coordinator: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	defer close(c.exited)

	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{c.log}, DisableTime: true})
	st, err := c.openStores(hlog)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", c.cfg.NodeID, err)
	}
	defer func() {
		if cerr := st.close(); cerr != nil {
			c.log.Warn("close raft store", "err", cerr)
		}
	}()
	trans, closeTrans, err := c.openTransport(hlog)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", c.cfg.NodeID, err)
	}
	defer closeTrans()

	notify := make(chan bool, 16)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.NodeID)
	rc.HeartbeatTimeout = c.cfg.HeartbeatTimeout
	rc.ElectionTimeout = c.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = c.cfg.LeaderLeaseTimeout
	rc.SnapshotInterval = c.cfg.SnapshotInterval
	rc.SnapshotThreshold = c.cfg.SnapshotThreshold
	rc.NotifyCh = notify
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("coordinator %s: raft config: %w", c.cfg.NodeID, err)
	}
	if c.cfg.Bootstrap {
		has, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
		if err != nil {
			return fmt.Errorf("coordinator %s: read raft state: %w", c.cfg.NodeID, err)
		}
		if !has {
			var conf raft.Configuration
			for _, p := range c.cfg.peers(string(trans.LocalAddr())) {
				conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
			}
			if err := raft.BootstrapCluster(rc, st.logs, st.stable, st.snaps, trans, conf); err != nil {
				return fmt.Errorf("coordinator %s: bootstrap: %w", c.cfg.NodeID, err)
			}
		}
	}
	r, err := raft.NewRaft(rc, c.fsm, st.logs, st.stable, st.snaps, trans)
	if err != nil {
		return fmt.Errorf("coordinator %s: start raft: %w", c.cfg.NodeID, err)
	}
	c.mu.Lock()
	c.raft = r
	c.mu.Unlock()
	defer c.observeLeader(r)()
	select {
	case <-c.killed:
		// Kill ran before the raft node existed.
		r.Shutdown()
		return nil
	default:
	}
	close(c.ready)
	c.log.Info("raft started", "bootstrap", c.cfg.Bootstrap)
	if err := c.cfg.Metrics.ObserveCluster(c.clusterState); err != nil {
		c.log.Warn("metrics", "err", err)
	}

	hbSub, err := c.nc.Subscribe(protocol.SubjectHeartbeat, c.onHeartbeat)
	if err != nil {
		r.Shutdown()
		return fmt.Errorf("coordinator %s: subscribe heartbeats: %w", c.cfg.NodeID, err)
	}
	defer hbSub.Unsubscribe()

	var term *leaderTerm
	stopTerm := func() {
		if term != nil {
			term.stop()
			term = nil
		}
	}
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		var leading bool
		select {
		case <-ctx.Done():
			stopTerm()
			if r.State() == raft.Leader {
				if err := r.LeadershipTransfer().Error(); err != nil {
					c.log.Info("leadership transfer", "err", err)
				}
			}
			if err := r.Shutdown().Error(); err != nil {
				c.log.Warn("raft shutdown", "err", err)
			}
			c.endSpans()
			c.log.Info("coordinator stopped")
			return nil
		case <-c.killed:
			stopTerm()
			return nil
		case <-notify:
			leading = r.State() == raft.Leader
		case <-check.C:
			// NotifyCh is authoritative, but a second look costs nothing.
			leading = r.State() == raft.Leader
		}
		switch {
		case leading && term == nil:
			c.log.Info("leadership acquired")
			term = c.startTerm(ctx)
		case !leading && term != nil:
			c.log.Info("leadership lost")
			stopTerm()
			c.endSpans()
			// Nothing of the term runs any more: no commit, no publish.
			c.log.Info("leader term ended")
		}
	}
}

func (c *Coordinator) onHeartbeat(m *nats.Msg) {
	hb, err := protocol.Decode[protocol.Heartbeat](m.Data)
	if err != nil {
		c.log.Debug("bad heartbeat", "err", err)
		return
	}
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	now := time.Now()
	c.workers[hb.Worker] = heartbeatSeen{hb: hb, seen: now}
	for id, w := range c.workers {
		if now.Sub(w.seen) > 10*workerTTL {
			delete(c.workers, id)
		}
	}
}

// liveWorkers lists the workers heard from within workerTTL, by name.
func (c *Coordinator) liveWorkers() []protocol.Heartbeat {
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	out := []protocol.Heartbeat{}
	now := time.Now()
	for _, w := range c.workers {
		if now.Sub(w.seen) <= workerTTL {
			out = append(out, w.hb)
		}
	}
	slices.SortFunc(out, func(a, b protocol.Heartbeat) int { return cmp.Compare(a.Worker, b.Worker) })
	return out
}

// apply appends cmd to the Raft log, under its own type byte, and returns
// its handler's reply, or the *refusal of a command the FSM did not apply
// (wrapped: errors.As finds it).
func apply[R any](c *Coordinator, cmd command[R]) (R, error) {
	var zero R
	t := cmd.cmdType()
	r := c.raftNode()
	if r == nil {
		return zero, raft.ErrNotLeader
	}
	b, err := encodeCmd(cmd)
	if err != nil {
		return zero, err
	}
	start := time.Now()
	f := r.Apply(b, applyTimeout)
	// hashicorp/raft answers an entry it took only from its leader loop:
	// one taken just as Kill shut the node down is never answered (its
	// future has no shutdown channel), and waiting for it would hang the
	// term, and Kill with it.
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err = <-errc:
	case <-c.killed:
		err = raft.ErrRaftShutdown
	}
	if err != nil {
		return zero, fmt.Errorf("raft apply %s: %w", t, err)
	}
	c.cfg.Metrics.RaftCommitted(t.String(), time.Since(start))
	switch v := f.Response().(type) {
	case error:
		return zero, fmt.Errorf("apply %s: %w", t, v)
	case R:
		return v, nil
	default:
		return zero, fmt.Errorf("apply %s: the FSM replied %T, not %T", t, v, zero)
	}
}

// keepSpan keeps the span of run runID until the run ends.
func (c *Coordinator) keepSpan(runID string, s trace.Span) {
	c.spanMu.Lock()
	defer c.spanMu.Unlock()
	c.spans[runID] = s
}

func (c *Coordinator) endSpans() {
	c.spanMu.Lock()
	defer c.spanMu.Unlock()
	for id, s := range c.spans {
		s.End()
		delete(c.spans, id)
	}
}

func (c *Coordinator) endSpan(runID string) {
	c.spanMu.Lock()
	defer c.spanMu.Unlock()
	if s, ok := c.spans[runID]; ok {
		s.End()
		delete(c.spans, runID)
	}
}

// slogWriter forwards Raft's log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			w.log.Info(string(line), "component", "raft")
		}
	}
	return len(p), nil
}
