package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func cdcSpec(name string) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternCDC,
		Source: protocol.Endpoint{Kind: "memcdc", Config: json.RawMessage(`{"parts":2,"path":"${SLUICE_DSN}"}`)},
		CDC:    &pipeline.CDC{TargetRows: 500}}
}

func grant(p, w string, epoch uint64) entry {
	return leaseGrantCmd{Pipeline: p, Worker: w, Epoch: epoch, Revision: 1, Time: t0}
}

// The initial snapshot of a cdc pipeline is a run with the derived
// endpoints; only its commit marks the snapshot done, with the position its
// plan reached; leases are fenced by epoch; a streamed pipeline has no
// ordinary runs.
func TestFSMStreamLeaseAndSnapshot(t *testing.T) {
	f := newFSM()
	spec := cdcSpec("shop")
	// The endpoints are the source kind's, made from the spec's source
	// configuration (its ${ENV} references kept) and stream settings.
	reg := (&memConnectors{}).registry()
	src, sink, err := snapshotEndpoints(reg, spec)
	if err != nil {
		t.Fatal(err)
	}
	var sinkCfg memConfig
	if err := json.Unmarshal(sink.Config, &sinkCfg); err != nil {
		t.Fatal(err)
	}
	if src.Kind != "memsrc" || string(src.Config) != string(spec.Source.Config) || sink.Kind != "memsink" || sinkCfg.Path != "shop/sluice_shop" {
		t.Fatalf("endpoints %s %s, %s %s", src.Kind, src.Config, sink.Kind, sink.Config)
	}
	other := spec
	other.Source.Kind = "memsrc"
	if _, _, err := snapshotEndpoints(reg, other); err == nil {
		t.Fatal("snapshot endpoints of a kind without an initial snapshot")
	}
	applyAll(t, f, pipelinePutCmd{Spec: spec, Time: t0})

	if err, _ := applyAll(t, f, create("shop", "")).(error); !refused(err, refusedInvalid) {
		t.Fatalf("ordinary run of a cdc pipeline: %v", err)
	}
	snap := runCreateCmd{Pipeline: "shop", Snapshot: true, Source: &src, Sink: &sink, MaxAttempts: 3, Time: t0}
	out := applyAll(t, f, snap).(runCreateReply)
	r, _ := f.run(out.RunID)
	if r.Source.Kind != "memsrc" || r.Sink.Kind != "memsink" {
		t.Fatalf("snapshot run endpoints %+v %+v", r.Source, r.Sink)
	}
	if err, _ := applyAll(t, f, snap).(error); !refused(err, refusedConflict) {
		t.Fatalf("second snapshot run while one loads: %v", err)
	}
	applyAll(t, f, runFailed(out.RunID, 10))
	p, _ := f.pipeline("shop")
	if p.Stream.SnapshotDone || p.Stream.SnapshotAttempts != 1 {
		t.Fatalf("after a failed snapshot: %+v", p.Stream)
	}
	out = applyAll(t, f, snap).(runCreateReply)
	applyAll(t, f, planned(out.RunID, 1, "0/16B3748"), published(out.RunID), ok(out.RunID, "t00000", 10),
		committing(out.RunID), committed(out.RunID, 10))
	p, _ = f.pipeline("shop")
	if !p.Stream.SnapshotDone || p.Stream.ConsistentLSN != "0/16B3748" || p.Stream.SnapshotAttempts != 2 || p.Stream.SnapshotRun != out.RunID {
		t.Fatalf("after the snapshot committed: %+v", p.Stream)
	}
	if err, _ := applyAll(t, f, snap).(error); !refused(err, refusedConflict) {
		t.Fatalf("snapshot run after the snapshot is done: %v", err)
	}

	applyAll(t, f, grant("shop", "w1", 1))
	if err, _ := applyAll(t, f, grant("shop", "w2", 1)).(error); !refused(err, refusedConflict) {
		t.Fatalf("a second grant of epoch 1: %v", err)
	}
	applyAll(t, f, grant("shop", "w2", 2))
	p, _ = f.pipeline("shop")
	if p.Stream.Worker != "w2" || p.Stream.Epoch != 2 || !p.Stream.SnapshotDone {
		t.Fatalf("after two grants: %+v", p.Stream)
	}
	applyAll(t, f, put("plain"))
	if err, _ := applyAll(t, f, grant("plain", "w1", 1)).(error); !refused(err, refusedInvalid) {
		t.Fatalf("lease of a full_load pipeline: %v", err)
	}
}

// simWorker is a worker as the leader sees it: heartbeats, stream
// assignments received, lease renewals sent.
type simWorker struct {
	t      *testing.T
	id     string
	nc     *nats.Conn
	mu     sync.Mutex
	got    []protocol.StreamAssignment
	stopHB chan struct{}
}

func newSimWorker(t *testing.T, url, id string) *simWorker {
	w := &simWorker{t: t, id: id, nc: connect(t, url), stopHB: make(chan struct{})}
	if _, err := w.nc.Subscribe(protocol.WorkerStreamSubject(id), func(m *nats.Msg) {
		a, err := protocol.Decode[protocol.StreamAssignment](m.Data)
		if err != nil {
			t.Errorf("assignment: %v", err)
			return
		}
		w.mu.Lock()
		w.got = append(w.got, a)
		w.mu.Unlock()
		b, _ := json.Marshal(protocol.AssignReply{OK: true})
		m.Respond(b)
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			data, _ := protocol.Encode(protocol.Heartbeat{Worker: id, Slots: 1, Time: time.Now()})
			w.nc.Publish(protocol.SubjectHeartbeat, data)
			select {
			case <-w.stopHB:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// assignments returns the assignments of the pipeline "replica".
func (w *simWorker) assignments() []protocol.StreamAssignment {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []protocol.StreamAssignment
	for _, a := range w.got {
		if a.Pipeline == "replica" {
			out = append(out, a)
		}
	}
	return out
}

func (w *simWorker) renew(pipeline string, epoch uint64) protocol.LeaseRenewReply {
	w.t.Helper()
	data, _ := json.Marshal(protocol.LeaseRenewRequest{Pipeline: pipeline, Worker: w.id, Epoch: epoch,
		Status: protocol.StreamStatus{State: protocol.StreamStreaming, Events: 42}})
	m, err := w.nc.Request(protocol.APISubject(protocol.VerbLeaseRenew), data, 5*time.Second)
	if err != nil {
		w.t.Fatal(err)
	}
	var r protocol.LeaseRenewReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// The lease protocol: a stream goes to a live worker; renewals keep it
// there; a renewal of another epoch is refused; once its holder stops
// renewing for a whole lease the stream goes to another worker under the
// next epoch and the old holder's renewals are refused; a revised spec
// refuses the holder's renewal, and the stream is granted again with the
// new revision.
func TestStreamLeases(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), nil)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	a := newSimWorker(t, url, "wa")
	spec := pipeline.Spec{Name: "replica", Pattern: protocol.PatternCDCApply,
		Source: protocol.Endpoint{Kind: pipeline.ApplySourceKind, Config: json.RawMessage(`{"pipeline":"shop"}`)},
		Sink:   protocol.Endpoint{Kind: "memsink", Config: json.RawMessage(`{"path":"/tmp/x"}`)},
		CDC:    &pipeline.CDC{Lease: time.Second}}
	lease := spec.LeaseDuration()
	if _, err := cl.Apply(ctx, spec); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `source.pipeline: "shop"`) {
		t.Fatalf("apply before its upstream: %v", err)
	}
	up := cdcSpec("shop")
	up.CDC = &pipeline.CDC{Snapshot: pipeline.SnapshotNever, Lease: time.Hour}
	if _, err := cl.Apply(ctx, up); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "replica"}); err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("run of a streamed pipeline: %v", err)
	}
	eventually(t, 10*time.Second, "the stream assigned to wa", func() bool { return len(a.assignments()) == 1 })
	got := a.assignments()[0]
	if got.Pipeline != "replica" || got.Pattern != protocol.PatternCDCApply || got.Epoch != 1 || got.Lease != lease || got.Revision != 1 ||
		got.Sink.Kind != "memsink" || string(got.Sink.Config) != `{"path":"/tmp/x"}` || got.Source.Kind != pipeline.ApplySourceKind || !reflect.DeepEqual(got.Settings, protocol.StreamSettings{Upstream: "shop"}) {
		t.Fatalf("assignment %+v", got)
	}
	if r := a.renew("replica", 1); !r.OK {
		t.Fatalf("renewal of the held epoch refused: %s", r.Reason)
	}
	if r := a.renew("replica", 7); r.OK {
		t.Fatal("renewal of another epoch accepted")
	}
	st, err := cl.CDCStatus(ctx)
	if err != nil || len(st.Streams) != 2 || st.Streams[0].Pipeline != "replica" || st.Streams[0].Worker != "wa" || st.Streams[0].Status.Events != 42 {
		t.Fatalf("cdc status %+v %v", st, err)
	}

	// A revised spec: the holder's renewal is refused.
	spec.Description = "revised"
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if r := a.renew("replica", 1); r.OK || !strings.Contains(r.Reason, "revised") {
		t.Fatalf("renewal after a revision: %+v", r)
	}
	eventually(t, 5*lease, "the revised stream granted again", func() bool {
		as := a.assignments()
		return len(as) == 2 && as[1].Epoch == 2 && as[1].Revision == 2
	})

	// wa dies (no heartbeat, no renewal); wb takes over after the lease.
	close(a.stopHB)
	b := newSimWorker(t, url, "wb")
	began := time.Now()
	eventually(t, 5*lease, "the stream moved to wb", func() bool { return len(b.assignments()) == 1 })
	// Within the lease and a margin for a loaded machine: well under the
	// workers' 10s heartbeat TTL, so it is the lease that moved it.
	if d := time.Since(began); d > lease+3*time.Second {
		t.Errorf("stream moved after %s, lease %s", d, lease)
	}
	if e := b.assignments()[0].Epoch; e != 3 {
		t.Fatalf("wb got epoch %d, want 3", e)
	}
	if r := a.renew("replica", 2); r.OK || !strings.Contains(r.Reason, "lease lost") {
		t.Fatalf("the old holder's renewal: %+v", r)
	}
}

// The tables of a cdc pipeline and its incremental snapshots: snapshots of
// tables are queued once per table, dropped with their table, and moved to
// the ones taken when done (at most maxSnapshotted kept); only a live cdc
// pipeline has them; the state round-trips through a snapshot.
func TestFSMStreamTables(t *testing.T) {
	f := newFSM()
	applyAll(t, f, pipelinePutCmd{Spec: cdcSpec("shop"), Time: t0}, put("plain"))
	snap := func(id, table string) protocol.TableSnapshot {
		return protocol.TableSnapshot{ID: id, Table: table, Reason: protocol.SnapshotAdded}
	}
	if err, _ := applyAll(t, f, streamTablesCmd{Pipeline: "plain", Tables: []string{"s.a"}}).(error); !refused(err, refusedInvalid) {
		t.Fatalf("tables of a full_load pipeline: %v", err)
	}
	out := applyAll(t, f, streamTablesCmd{Pipeline: "shop", Tables: []string{"s.a", "s.b", "s.c"},
		Add: []protocol.TableSnapshot{snap("1", "s.b"), snap("2", "s.c"), snap("3", "s.b")}, Time: t0}).(streamTablesReply)
	if len(out.Pending) != 2 || out.Pending[0].ID != "1" || out.Pending[1].ID != "2" || !out.Pending[0].Requested.Equal(t0) {
		t.Fatalf("pending %+v, want 1 and 2", out.Pending)
	}
	// c is removed from the spec: its snapshot goes.
	out = applyAll(t, f, streamTablesCmd{Pipeline: "shop", Tables: []string{"s.a", "s.b"}, Time: t0}).(streamTablesReply)
	if len(out.Pending) != 1 || out.Pending[0].ID != "1" {
		t.Fatalf("pending after c was removed %+v", out.Pending)
	}
	before, _ := f.pipeline("shop")
	applyAll(t, f, snapshotDoneCmd{Pipeline: "shop", ID: "1", Rows: 42, Throttled: 2, ThrottledSeconds: 3.5, Time: t0.Add(time.Minute)},
		snapshotDoneCmd{Pipeline: "shop", ID: "1", Rows: 1, Time: t0.Add(2 * time.Minute)})
	p, _ := f.pipeline("shop")
	if len(p.Stream.Snapshots) != 0 || len(p.Stream.Snapshotted) != 1 || p.Stream.Snapshotted[0].Rows != 42 || p.Stream.Snapshotted[0].Throttled != 2 || p.Stream.Snapshotted[0].ThrottledSeconds != 3.5 {
		t.Fatalf("after done %+v", p.Stream)
	}
	if len(before.Stream.Snapshots) != 1 || before.Stream.Snapshots[0].ID != "1" {
		t.Errorf("a copy taken before changed with the state: %+v", before.Stream.Snapshots)
	}
	for i := range maxSnapshotted + 5 {
		id := fmt.Sprint("r", i)
		applyAll(t, f, streamTablesCmd{Pipeline: "shop", Add: []protocol.TableSnapshot{snap(id, "s.a")}, Time: t0},
			snapshotDoneCmd{Pipeline: "shop", ID: id, Time: t0})
	}
	p, _ = f.pipeline("shop")
	if n := len(p.Stream.Snapshotted); n != maxSnapshotted || p.Stream.Snapshotted[n-1].ID != fmt.Sprint("r", maxSnapshotted+4) ||
		!slices.Equal(p.Stream.Tables, []string{"s.a", "s.b"}) {
		t.Fatalf("after many: %d taken, last %+v, tables %v", n, p.Stream.Snapshotted[n-1], p.Stream.Tables)
	}
	data, err := json.Marshal(f.st)
	if err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := json.Unmarshal(data, g.st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.st.Pipelines["shop"].Stream, f.st.Pipelines["shop"].Stream) {
		a, _ := json.Marshal(g.st.Pipelines["shop"].Stream)
		b, _ := json.Marshal(f.st.Pipelines["shop"].Stream)
		t.Errorf("stream state does not round-trip:\n%s\n%s", a, b)
	}
}

// A table added to a cdc pipeline that takes no snapshots is recorded as
// not snapshotted (among the snapshots taken, none pending), and the
// status says so; the record round-trips through a snapshot of the state.
func TestFSMStreamTablesUnread(t *testing.T) {
	f := newFSM()
	spec := cdcSpec("shop")
	spec.CDC.Snapshot = pipeline.SnapshotNever
	applyAll(t, f, pipelinePutCmd{Spec: spec, Time: t0})
	applyAll(t, f, streamTablesCmd{Pipeline: "shop", Tables: []string{"s.a"}, Time: t0},
		streamTablesCmd{Pipeline: "shop", Tables: []string{"s.a", "s.b"}, Time: t0.Add(time.Minute),
			Unread: []protocol.TableSnapshot{{ID: "n1", Table: "s.b", Reason: protocol.SnapshotNever}}})
	p, _ := f.pipeline("shop")
	if len(p.Stream.Snapshots) != 0 || len(p.Stream.Snapshotted) != 1 {
		t.Fatalf("stream after a table added: %+v", p.Stream)
	}
	if got := p.Stream.Snapshotted[0]; got.Table != "s.b" || got.Reason != protocol.SnapshotNever || !got.Done.Equal(t0.Add(time.Minute)) || !got.Requested.Equal(t0.Add(time.Minute)) {
		t.Fatalf("recorded %+v", got)
	}
	if !slices.Equal(p.Stream.Tables, []string{"s.a", "s.b"}) {
		t.Fatalf("tables %v", p.Stream.Tables)
	}
	data, err := json.Marshal(f.st)
	if err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := json.Unmarshal(data, g.st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.st.Pipelines["shop"].Stream, f.st.Pipelines["shop"].Stream) {
		t.Errorf("stream state does not round-trip")
	}
}
