package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func readySpec(name string) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternReadiness,
		Source:    protocol.Endpoint{Kind: "readysrc", Config: json.RawMessage(`{}`)},
		Readiness: &pipeline.Readiness{Start: t0, Check: time.Hour}}
}

func hourAt(i int) protocol.Window {
	return protocol.Window{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour)}
}

// A readiness pipeline's partitions are found and announced one at a
// time, in order; the same entry applied again changes nothing.
func TestFSMReadiness(t *testing.T) {
	f := newFSM()
	found := func(i int) readyFoundCmd {
		return readyFoundCmd{Pipeline: "ready", Window: hourAt(i), Partition: "/in/h" + string(rune('0'+i)), Time: t0}
	}
	announced := func(i int) readyAnnouncedCmd {
		return readyAnnouncedCmd{Pipeline: "ready", From: hourAt(i).From, Time: t0}
	}
	applyAll(t, f, pipelinePutCmd{Spec: readySpec("ready"), Time: t0}, put("orders"))
	for _, tt := range []struct {
		name string
		cmd  entry
		want refusalCode
	}{
		{"not the next partition", found(1), refusedConflict},
		{"nothing pending to announce", announced(0), refusedConflict},
		{"not a readiness pipeline", readyFoundCmd{Pipeline: "orders", Window: hourAt(0), Partition: "x", Time: t0}, refusedInvalid},
		{"no such pipeline", readyFoundCmd{Pipeline: "nope", Window: hourAt(0), Partition: "x", Time: t0}, refusedNotFound},
	} {
		if err, _ := applyAll(t, f, tt.cmd).(error); !refused(err, tt.want) {
			t.Errorf("%s: %v, want a refusal of kind %v", tt.name, err, tt.want)
		}
	}
	if err, _ := applyAll(t, f, found(0), found(0)).(error); err != nil {
		t.Fatalf("found twice: %v", err)
	}
	if err, _ := applyAll(t, f, found(1)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a second partition found while one is pending: %v", err)
	}
	p, _ := f.pipeline("ready")
	if r := p.Ready; r == nil || r.Pending == nil || r.Pending.Seq != 1 || r.Pending.Partition != "/in/h0" || r.Last != nil || !r.Next.Equal(hourAt(1).From) {
		t.Fatalf("after found: %+v", r)
	}
	if err, _ := applyAll(t, f, announced(0), announced(0), found(1), announced(1)).(error); err != nil {
		t.Fatalf("announce: %v", err)
	}
	p, _ = f.pipeline("ready")
	if r := p.Ready; r.Pending != nil || r.Last == nil || r.Last.Seq != 2 || r.Seq != 2 || !r.Last.Window.From.Equal(hourAt(1).From) || !r.Next.Equal(hourAt(2).From) {
		t.Fatalf("after two announced: %+v %+v", r, r.Last)
	}
	// A readiness pipeline has no runs.
	if err, _ := applyAll(t, f, create("ready", "")).(error); !refused(err, refusedInvalid) {
		t.Fatalf("run of a readiness pipeline: %v", err)
	}
	// A new leader restored from a snapshot goes on where it was: one
	// partition announced, the next pending.
	applyAll(t, f, found(2))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.st, f.st) {
		t.Fatal("restored state differs")
	}
	p, _ = g.pipeline("ready")
	if r := p.Ready; r.Pending == nil || r.Pending.Seq != 3 || r.Last.Seq != 2 {
		t.Fatalf("restored readiness: %+v", r)
	}
}

// A readiness pipeline on a table's snapshots records each new snapshot
// pending, then announced, in commit order: the same snapshot found again
// (pending or announced) changes nothing, one committed before the last
// announced is refused, and two snapshots of the same millisecond are two.
func TestFSMReadinessSnapshots(t *testing.T) {
	f := newFSM()
	at := func(ms int) protocol.Window {
		tm := t0.Add(time.Duration(ms) * time.Millisecond)
		return protocol.Window{From: tm, To: tm}
	}
	found := func(id string, ms int) readyFoundCmd {
		return readyFoundCmd{Pipeline: "ready", Window: at(ms), Partition: id, Time: t0, Snapshot: id, Summary: map[string]string{"operation": "append"}}
	}
	announced := func(id string, ms int) readyAnnouncedCmd {
		return readyAnnouncedCmd{Pipeline: "ready", From: at(ms).From, Time: t0, Snapshot: id}
	}
	applyAll(t, f, pipelinePutCmd{Spec: readySpec("ready"), Time: t0})
	if err, _ := applyAll(t, f, found("11", 5), found("11", 5)).(error); err != nil {
		t.Fatalf("found twice: %v", err)
	}
	if err, _ := applyAll(t, f, found("12", 5)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a second snapshot found while one is pending: %v", err)
	}
	if err, _ := applyAll(t, f, announced("12", 5)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a snapshot announced that is not pending: %v", err)
	}
	if err, _ := applyAll(t, f, announced("11", 5), announced("11", 5), found("11", 5)).(error); err != nil {
		t.Fatalf("announce: %v", err)
	}
	p, _ := f.pipeline("ready")
	if r := p.Ready; r.Pending != nil || r.Last == nil || r.Last.Snapshot != "11" || r.Seq != 1 || r.Last.Summary["operation"] != "append" {
		t.Fatalf("after the first snapshot: %+v %+v", r, r.Last)
	}
	if err, _ := applyAll(t, f, found("10", 4)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a snapshot committed before the last announced: %v", err)
	}
	if err, _ := applyAll(t, f, found("12", 5), announced("12", 5)).(error); err != nil {
		t.Fatalf("a second snapshot of the same millisecond: %v", err)
	}
	p, _ = f.pipeline("ready")
	if r := p.Ready; r.Last.Snapshot != "12" || r.Seq != 2 || r.Last.msgID("ready") == (readyPartition{Snapshot: "11"}).msgID("ready") {
		t.Fatalf("after the second snapshot: %+v %+v", r, r.Last)
	}
}

// readySource is a "readysrc" source laid out by hours whose partitions
// are complete once marked; it counts its checks.
type readySource struct {
	mu     sync.Mutex
	ready  map[time.Time]bool
	checks int
}

func (s *readySource) mark(w protocol.Window) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready[w.From] = true
}

func (s *readySource) checked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checks
}

type readySourceConn struct{ s *readySource }

func (readySourceConn) Plan(context.Context, connectors.PlanRequest) (connectors.Plan, error) {
	return connectors.Plan{}, nil
}
func (readySourceConn) Read(context.Context, protocol.Partition, connectors.Emit) error { return nil }
func (readySourceConn) Close() error                                                    { return nil }
func (c readySourceConn) Ready(_ context.Context, req connectors.PlanRequest) (bool, string, error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.checks++
	return c.s.ready[req.Window.From], "/in/" + req.Window.From.Format("2006-01-02T15"), nil
}

func (m *memConnectors) readyRegistry(src *readySource) *connectors.Registry {
	reg := m.registry()
	reg.Register(connectors.Connector{
		Kind:             "readysrc",
		Source:           func(context.Context, json.RawMessage) (connectors.Source, error) { return readySourceConn{src}, nil },
		SourcePartitions: func(json.RawMessage) time.Duration { return time.Hour },
	})
	return reg
}

// A leader stopped after it found a partition complete and published its
// ready event, before it recorded the announcement: the next leader
// announces the partition without publishing it again, starts the
// pipeline that runs after it once, and goes on with the next partition.
func TestReadinessLeaderStoppedBeforeAnnouncedPublishesOnce(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	src := &readySource{ready: map[time.Time]bool{}}
	nodes, trans := clusterWith(t, url, mem.readyRegistry(src))
	first := leaderOf(t, nodes)
	nc := connect(t, url)
	cl := NewClient(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	down := memSpec("down", 1)
	down.Trigger = &pipeline.Trigger{After: "ready"}
	for _, s := range []pipeline.Spec{readySpec("ready"), down} {
		if _, err := cl.Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The first leader checked partition 0 (open) and checks again only
	// in an hour.
	eventually(t, 10*time.Second, "partition 0 checked", func() bool { return src.checked() > 0 })
	src.mark(hourAt(0))
	// What the first leader did before it stopped: found the partition
	// complete (in Raft) and published its event.
	part := "/in/" + hourAt(0).From.Format("2006-01-02T15")
	if _, err := apply(nodes[first].Coordinator, readyFoundCmd{Pipeline: "ready", Window: hourAt(0), Partition: part, Time: t0}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	data, err := protocol.Encode(protocol.ReadyEvent{Pipeline: "ready", Partition: part, Window: hourAt(0), Source: "readysrc", Seq: 1, Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(protocol.ReadyEventSubject("ready"))
	m.Data = data
	m.Header.Set(protocol.HeaderMsgID, protocol.ReadyMsgID("ready", hourAt(0).From))
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, "every node has the partition pending", func() bool {
			p, ok := n.fsm.pipeline("ready")
			return ok && p.Ready != nil && p.Ready.Pending != nil
		})
	}
	checks := src.checked()
	second := killLeader(t, nodes, trans, first)
	eventually(t, 20*time.Second, "partition 0 announced by the new leader", func() bool {
		p, ok := nodes[second].fsm.pipeline("ready")
		return ok && p.Ready != nil && p.Ready.Last != nil && p.Ready.Pending == nil
	})
	eventually(t, 10*time.Second, "partition 1 checked by the new leader", func() bool { return src.checked() > checks })

	s, err := js.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(protocol.ReadyEventSubject("ready")))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects[protocol.ReadyEventSubject("ready")]; got != 1 {
		t.Fatalf("%d ready events published, want 1", got)
	}
	last, err := s.GetLastMsgForSubject(ctx, protocol.ReadyEventSubject("ready"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := protocol.Decode[protocol.ReadyEvent](last.Data)
	if err != nil || ev.Partition != part || !ev.Window.From.Equal(t0) || ev.Seq != 1 {
		t.Fatalf("ready event %+v, %v", ev, err)
	}
	runs := nodes[second].fsm.runs(func(r *runState) bool { return r.Pipeline == "down" })
	if len(runs) != 1 || runs[0].Trigger == nil || runs[0].Trigger.After == nil || runs[0].Trigger.After.Location != part {
		t.Fatalf("runs of the pipeline after the readiness pipeline: %+v", runs)
	}
}
