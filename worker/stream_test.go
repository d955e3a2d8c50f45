package worker

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// blockingStream runs until its context ends, counting its runs.
type blockingStream struct {
	o *streamOpener
}

func (s blockingStream) Run(ctx context.Context) error {
	s.o.running.Add(1)
	defer s.o.running.Add(-1)
	<-ctx.Done()
	return nil
}

func (s blockingStream) Status(context.Context) protocol.StreamStatus {
	return protocol.StreamStatus{State: protocol.StreamStreaming, Events: 7}
}

// streamOpener is the cdc source capability of the kind "memcdc": it
// opens blockingStreams and records the last request.
type streamOpener struct {
	running atomic.Int32
	opened  atomic.Int32
	mu      sync.Mutex
	last    connectors.StreamRequest
}

func (o *streamOpener) register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{Kind: "memcdc", CDCSource: &connectors.CDCSource{
		Open: func(_ context.Context, req connectors.StreamRequest) (connectors.Stream, error) {
			o.opened.Add(1)
			o.mu.Lock()
			o.last = req
			o.mu.Unlock()
			return blockingStream{o}, nil
		},
	}})
}

// fakeLeader answers lease renewals with what answer returns (nil: no
// answer at all) and records the renewals.
type fakeLeader struct {
	mu      sync.Mutex
	answer  func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply
	renewed []protocol.LeaseRenewRequest
}

func (l *fakeLeader) serve(t *testing.T, nc *nats.Conn) {
	if _, err := nc.Subscribe(protocol.APISubject(protocol.VerbLeaseRenew), func(m *nats.Msg) {
		var req protocol.LeaseRenewRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("renewal: %v", err)
			return
		}
		l.mu.Lock()
		l.renewed = append(l.renewed, req)
		answer := l.answer
		l.mu.Unlock()
		if r := answer(req); r != nil {
			b, _ := json.Marshal(r)
			m.Respond(b)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func (l *fakeLeader) set(answer func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answer = answer
}

func (l *fakeLeader) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.renewed)
}

// tryAssign sends a stream assignment of kind memcdc to a worker; "no
// responders" until the worker subscribed.
func tryAssign(nc *nats.Conn, worker string, epoch uint64, lease time.Duration) (protocol.AssignReply, error) {
	return tryAssignKind(nc, worker, "memcdc", epoch, lease)
}

// tryAssignKind sends the assignment of the cdc pipeline "shop", whose
// source is of kind.
func tryAssignKind(nc *nats.Conn, worker, kind string, epoch uint64, lease time.Duration) (protocol.AssignReply, error) {
	var r protocol.AssignReply
	data, err := protocol.Encode(protocol.StreamAssignment{Pipeline: "shop", Pattern: protocol.PatternCDC, Epoch: epoch, Lease: lease,
		Source:   protocol.Endpoint{Kind: kind, Config: json.RawMessage(`{"dsn":"postgres://h/db"}`)},
		Settings: protocol.StreamSettings{Slot: "sluice_shop", Heartbeat: time.Second}})
	if err != nil {
		return r, err
	}
	m, err := nc.Request(protocol.WorkerStreamSubject(worker), data, 5*time.Second)
	if err != nil {
		return r, err
	}
	err = json.Unmarshal(m.Data, &r)
	return r, err
}

func assign(t *testing.T, nc *nats.Conn, worker string, epoch uint64, lease time.Duration) protocol.AssignReply {
	t.Helper()
	r, err := tryAssign(nc, worker, epoch, lease)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A held stream renews its lease with its status, stops at once when a
// renewal is refused, and stops by itself when renewals go unanswered for
// two thirds of the lease; a newer epoch replaces an older one; the stream
// holds no task slot; shutdown stops it.
func TestStreamLease(t *testing.T) {
	e := newEnv(t)
	e.createStreams(10 * time.Second)
	leader := &fakeLeader{answer: func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply {
		return &protocol.LeaseRenewReply{OK: true}
	}}
	leader.serve(t, e.nc)
	o := &streamOpener{}
	o.register(e.reg)
	cfg := fastConfig(1)
	r := e.start(cfg, nil)
	const lease = 900 * time.Millisecond
	e.waitFor("the worker listening", func() bool {
		r, err := tryAssign(e.nc, cfg.ID, 1, lease)
		return err == nil && r.OK
	})
	e.waitFor("the stream running and renewing", func() bool { return o.running.Load() == 1 && leader.count() >= 3 })
	leader.mu.Lock()
	last := leader.renewed[len(leader.renewed)-1]
	leader.mu.Unlock()
	if last.Worker != cfg.ID || last.Epoch != 1 || last.Status.Events != 7 {
		t.Fatalf("renewal %+v", last)
	}
	if st := r.w.Stats(); st.Busy != 0 {
		t.Errorf("a stream takes a task slot: busy %d", st.Busy)
	}
	// The stream was opened through the registry with the assignment's
	// source, settings and the worker's JetStream context.
	o.mu.Lock()
	req := o.last
	o.mu.Unlock()
	if req.Pipeline != "shop" || string(req.Config) != `{"dsn":"postgres://h/db"}` || req.Settings.Slot != "sluice_shop" || req.Settings.Heartbeat != time.Second || req.JS == nil || req.Log == nil {
		t.Errorf("stream opened with %+v", req)
	}

	// Refused: the stream stops at the next renewal.
	leader.set(func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply {
		return &protocol.LeaseRenewReply{Reason: "lease lost: epoch 2 is held by w9"}
	})
	e.waitFor("the stream stopped after a refusal", func() bool { return o.running.Load() == 0 })

	// Unanswered: the stream stops within two thirds of the lease plus a
	// renewal period.
	leader.set(func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply { return &protocol.LeaseRenewReply{OK: true} })
	if !assign(t, e.nc, cfg.ID, 2, lease).OK {
		t.Fatal("assignment refused")
	}
	e.waitFor("the stream running again", func() bool { return o.running.Load() == 1 })
	leader.set(func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply { return nil })
	silent := time.Now()
	e.waitFor("the stream stopped without renewals", func() bool { return o.running.Load() == 0 })
	if d := time.Since(silent); d > lease+lease/2 {
		t.Errorf("stream ran %s without a renewal, lease %s", d, lease)
	}

	// A newer epoch replaces an older one; a repeated one changes nothing.
	leader.set(func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply { return &protocol.LeaseRenewReply{OK: true} })
	assign(t, e.nc, cfg.ID, 3, lease)
	e.waitFor("epoch 3 running", func() bool { return o.running.Load() == 1 })
	opened := o.opened.Load()
	assign(t, e.nc, cfg.ID, 3, lease)
	assign(t, e.nc, cfg.ID, 4, lease)
	e.waitFor("epoch 4 running alone", func() bool { return o.opened.Load() == opened+1 && o.running.Load() == 1 })
	r.stop(t)
	if n := o.running.Load(); n != 0 {
		t.Fatalf("%d streams still running after shutdown", n)
	}
}

// A stream whose source kind cannot be a cdc source is held and reported
// retrying with the error, until the lease is given up.
func TestStreamOfUnknownKind(t *testing.T) {
	e := newEnv(t)
	e.createStreams(10 * time.Second)
	leader := &fakeLeader{answer: func(protocol.LeaseRenewRequest) *protocol.LeaseRenewReply {
		return &protocol.LeaseRenewReply{OK: true}
	}}
	leader.serve(t, e.nc)
	cfg := fastConfig(1)
	r := e.start(cfg, nil)
	e.waitFor("the worker listening", func() bool {
		r, err := tryAssignKind(e.nc, cfg.ID, "nowhere", 1, 900*time.Millisecond)
		return err == nil && r.OK
	})
	e.waitFor("a renewal reporting the error", func() bool {
		leader.mu.Lock()
		defer leader.mu.Unlock()
		for _, req := range leader.renewed {
			if req.Status.State == protocol.StreamRetrying && strings.Contains(req.Status.Error, `"nowhere" cannot be a cdc source`) {
				return true
			}
		}
		return false
	})
	r.stop(t)
}
