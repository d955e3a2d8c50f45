package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

func testLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startNATS starts an embedded NATS server with JetStream for one test.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := embednats.Start(embednats.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// node is one coordinator running for a test.
type node struct {
	*Coordinator
	cancel context.CancelFunc
	done   chan error
}

// startNode runs a coordinator until the test ends.
func startNode(t *testing.T, cfg Config, url string, reg *connectors.Registry, tp trace.TracerProvider) *node {
	t.Helper()
	nc := connect(t, url)
	c, err := New(cfg, nc, reg, testLogger(), tp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{Coordinator: c, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-n.done; err != nil {
			t.Errorf("node %s: Run: %v", cfg.NodeID, err)
		}
	})
	return n
}

// tracedLeader starts a single-node coordinator that records its spans in
// rec, and waits until it leads.
func tracedLeader(t *testing.T, url string, mem *memConnectors) (*node, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), tp)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	return n, rec
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memConnectors is a test connector pair: "memsrc" plans {"parts": n}
// partitions with the "schema" given (or fails with "fail_plan"), and with
// "holds" holds each run's plan until ReleaseRun (a connectors.RunHolder
// setting Plan.Holds); it records its plan requests and releases.
// "memsink" needs a "path", records commits, aborts and schema checks, and
// refuses a schema with the column named "refuse".
//
// A memsink keeps the versions committed to each path and exposes one
// (connectors.Versioned), unless its configuration says "unversioned".
// While exposeGate is not nil, Expose signals exposing and waits for the
// gate to close (or its context to end).
type memConnectors struct {
	mu       sync.Mutex
	commits  []connectors.CommitRequest
	aborts   []string
	checks   []*protocol.Schema
	plans    []connectors.PlanRequest
	released []string
	// versions are the kept versions by path; events the commits and
	// exposes of every path, in order ("commit 2", "expose 1").
	versions map[string][]connectors.Version
	events   []string
	// records is how many records the log possrc reads holds.
	records    int
	exposeGate chan struct{}
	exposing   chan int64
}

type memConfig struct {
	Parts       int              `json:"parts"`
	FailPlan    string           `json:"fail_plan"`
	Schema      *protocol.Schema `json:"schema"`
	Holds       bool             `json:"holds"`
	Path        string           `json:"path"`
	Refuse      string           `json:"refuse"`
	Unversioned bool             `json:"unversioned"`
}

func (m *memConnectors) registry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{
		Kind: "memsrc",
		Source: func(_ context.Context, cfg json.RawMessage) (connectors.Source, error) {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return nil, err
			}
			if c.Holds {
				return heldSource{memSource{c, m}}, nil
			}
			return memSource{c, m}, nil
		},
		Validate: func(cfg json.RawMessage) error {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return &connectors.FieldError{Msg: err.Error()}
			}
			if c.Parts < 0 {
				return &connectors.FieldError{Field: "parts", Msg: "must not be negative"}
			}
			return nil
		},
	})
	reg.Register(connectors.Connector{
		Kind:      "possrc",
		Source:    func(_ context.Context, cfg json.RawMessage) (connectors.Source, error) { return newPosSource(cfg, m) },
		Positions: &connectors.Positions{Name: "offset"},
	})
	reg.Register(connectors.Connector{
		Kind:        "memsink",
		SinkAppends: true,
		Sink: func(_ context.Context, cfg json.RawMessage) (connectors.Sink, error) {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return nil, err
			}
			s := &memSink{m: m, path: c.Path, refuse: c.Refuse}
			if c.Unversioned {
				return s, nil
			}
			return &memVersionedSink{s}, nil
		},
		Validate: func(cfg json.RawMessage) error {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil {
				return &connectors.FieldError{Msg: err.Error()}
			}
			if c.Path == "" {
				return &connectors.FieldError{Field: "path", Msg: "is required"}
			}
			return nil
		},
	})
	// A cdc source whose initial snapshot is a run from memsrc to memsink,
	// and memsink as a cdc target; neither streams in these tests.
	reg.Register(connectors.Connector{Kind: "memcdc", CDCSource: &connectors.CDCSource{
		Open: func(context.Context, connectors.StreamRequest) (connectors.Stream, error) {
			return nil, errors.New("memcdc does not stream")
		},
		Snapshot: func(req connectors.SnapshotRequest) (connectors.SnapshotEndpoints, error) {
			sink, err := json.Marshal(memConfig{Path: req.Pipeline + "/" + req.Settings.Slot})
			return connectors.SnapshotEndpoints{
				Source: protocol.Endpoint{Kind: "memsrc", Config: req.Config},
				Sink:   protocol.Endpoint{Kind: "memsink", Config: sink},
			}, err
		},
	}})
	m.registerPass(reg)
	reg.Register(connectors.Connector{Kind: "memsink", CDCTarget: &connectors.CDCTarget{
		Open: func(context.Context, connectors.StreamRequest) (connectors.Applier, error) {
			return nil, errors.New("memsink does not apply")
		},
		Validate: func(cfg json.RawMessage) error {
			var c memConfig
			if err := json.Unmarshal(cfg, &c); err != nil || c.Path == "" {
				return &connectors.FieldError{Field: "path", Msg: "is required"}
			}
			return nil
		},
	}})
	return reg
}

func (m *memConnectors) committed() []connectors.CommitRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]connectors.CommitRequest(nil), m.commits...)
}

func (m *memConnectors) checked() []*protocol.Schema {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*protocol.Schema(nil), m.checks...)
}

func (m *memConnectors) aborted() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.aborts...)
}

// planned returns the plan requests of run id, in order.
func (m *memConnectors) planned(id string) []connectors.PlanRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []connectors.PlanRequest
	for _, req := range m.plans {
		if req.RunID == id {
			out = append(out, req)
		}
	}
	return out
}

type memSource struct {
	c memConfig
	m *memConnectors
}

func (s memSource) Plan(_ context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	s.m.mu.Lock()
	s.m.plans = append(s.m.plans, req)
	s.m.mu.Unlock()
	if s.c.FailPlan != "" {
		return connectors.Plan{}, errors.New(s.c.FailPlan)
	}
	var p connectors.Plan
	for i := range s.c.Parts {
		p.Partitions = append(p.Partitions, protocol.Partition{Key: fmt.Sprintf("part-%d", i), Spec: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
	}
	p.Watermark = "wm-" + req.RunID
	p.Schema = s.c.Schema
	p.Holds = s.c.Holds
	return p, nil
}

func (memSource) Read(context.Context, protocol.Partition, connectors.Emit) error {
	return errors.New("memsrc: Read is not used by the coordinator")
}

func (memSource) Close() error { return nil }

// heldSource is a memsrc that holds its runs' plans.
type heldSource struct{ memSource }

func (s heldSource) ReleaseRun(id string) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.released = append(s.m.released, id)
	return nil
}

type memSink struct {
	m      *memConnectors
	path   string
	refuse string
}

func (s *memSink) CheckSchema(_ context.Context, schema *protocol.Schema) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.checks = append(s.m.checks, schema)
	if c, ok := schema.Column(s.refuse); ok {
		return connectors.Permanent(fmt.Errorf("column %q: memsink cannot hold a %s", c.Name, c))
	}
	return nil
}

func (*memSink) OpenTask(context.Context, connectors.TaskRef) (connectors.TaskWriter, error) {
	return nil, errors.New("memsink: OpenTask is not used by the coordinator")
}

func (s *memSink) Commit(_ context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.commits = append(s.m.commits, req)
	loc := fmt.Sprintf("%s/v%d", s.path, req.Version)
	if s.m.versions == nil {
		s.m.versions = map[string][]connectors.Version{}
	}
	vs := s.m.versions[s.path]
	if !slices.ContainsFunc(vs, func(v connectors.Version) bool { return v.Version == req.Version }) {
		var rows int64
		for _, t := range req.Tasks {
			rows += t.Rows
		}
		for i := range vs {
			vs[i].Exposed = false
		}
		vs = append(vs, connectors.Version{Version: req.Version, Run: req.RunID, Rows: rows, Location: loc, Time: t0, Exposed: true})
		s.m.versions[s.path] = vs
		s.m.events = append(s.m.events, fmt.Sprintf("commit %d", req.Version))
	}
	return connectors.CommitResult{Location: loc, Marker: s.path + "/_SUCCESS"}, nil
}

// memVersionedSink is a memSink with the Versioned capability.
type memVersionedSink struct{ *memSink }

func (s *memVersionedSink) Versions(context.Context) ([]connectors.Version, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return slices.Clone(s.m.versions[s.path]), nil
}

func (s *memVersionedSink) Expose(ctx context.Context, v int64) error {
	s.m.mu.Lock()
	gate, exposing := s.m.exposeGate, s.m.exposing
	s.m.mu.Unlock()
	if gate != nil {
		exposing <- v
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	vs := s.m.versions[s.path]
	if !slices.ContainsFunc(vs, func(k connectors.Version) bool { return k.Version == v }) {
		return connectors.VersionNotKept(v, "was never committed", vs)
	}
	for i := range vs {
		vs[i].Exposed = vs[i].Version == v
	}
	s.m.events = append(s.m.events, fmt.Sprintf("expose %d", v))
	return nil
}

// exposed is the version path exposes, 0 when none.
func (m *memConnectors) exposed(path string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.versions[path] {
		if v.Exposed {
			return v.Version
		}
	}
	return 0
}

func (m *memConnectors) sinkEvents() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// gateExposes makes every Expose wait until the returned function is
// called; each one started is sent on the returned channel.
func (m *memConnectors) gateExposes() (<-chan int64, func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gate := make(chan struct{})
	m.exposeGate, m.exposing = gate, make(chan int64, 16)
	return m.exposing, func() { close(gate) }
}

func (s *memSink) Abort(_ context.Context, runID string) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.aborts = append(s.m.aborts, runID)
	return nil
}

func (*memSink) Close() error { return nil }

func memSpec(name string, parts int) pipeline.Spec {
	return pipeline.Spec{Name: name, Pattern: protocol.PatternFullLoad,
		Source: protocol.Endpoint{Kind: "memsrc", Config: json.RawMessage(fmt.Sprintf(`{"parts":%d}`, parts))},
		Sink:   protocol.Endpoint{Kind: "memsink", Config: json.RawMessage(`{"path":"/out/` + name + `"}`)},
	}
}

// fakeWorker pulls tasks from the workers' consumer and answers each with
// what handle returns, until the test ends.
func fakeWorker(t *testing.T, url string, handle func(task protocol.Task, attempt int) protocol.Result) {
	t.Helper()
	nc := connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		var cons jetstream.Consumer
		for ctx.Err() == nil {
			// The leader creates the consumer; wait for it.
			c, err := js.Consumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers)
			if err == nil {
				cons = c
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		for ctx.Err() == nil {
			batch, err := cons.Fetch(10, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				task, err := protocol.Decode[protocol.Task](m.Data())
				if err != nil {
					t.Errorf("worker: %v", err)
					m.Term()
					continue
				}
				meta, err := m.Metadata()
				if err != nil {
					t.Errorf("worker: %v", err)
					continue
				}
				res := handle(task, int(meta.NumDelivered))
				res.RunID, res.TaskID, res.Pipeline, res.Attempt = task.RunID, task.TaskID, task.Pipeline, int(meta.NumDelivered)
				data, err := protocol.Encode(res)
				if err != nil {
					t.Errorf("worker: %v", err)
					continue
				}
				if _, err := js.Publish(ctx, protocol.ResultSubject(task.Pipeline), data,
					jetstream.WithMsgID(protocol.ResultMsgID(task.RunID, task.TaskID, res.Attempt))); err != nil {
					continue // not acked: redelivered
				}
				m.Ack()
			}
		}
	}()
}

// succeed answers a task with 10 rows per partition.
func succeed(task protocol.Task, _ int) protocol.Result {
	return protocol.Result{Worker: "w1", Rows: 10, Bytes: 100, Checksum: 1, Location: "stage/" + task.RunID + "/" + task.TaskID}
}
