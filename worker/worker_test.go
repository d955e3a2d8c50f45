package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// waitTimeout bounds every wait of the tests: generous, for a loaded machine.
const waitTimeout = 30 * time.Second

// env is one embedded NATS server with the task and result streams, a
// registry with the test connector, and a connection for the test itself.
type env struct {
	t    *testing.T
	url  string
	nc   *nats.Conn
	js   jetstream.JetStream
	reg  *connectors.Registry
	conn *testConn
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := embednats.Start(embednats.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, url: srv.ClientURL(), nc: nc, js: js, reg: connectors.NewRegistry(), conn: newTestConn(t.TempDir())}
	e.conn.register(e.reg)
	return e
}

// createStreams creates what the coordinator leader creates: the task
// work-queue stream with the workers' durable consumer, and the result stream.
func (e *env) createStreams(ackWait time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: protocol.StreamTasks, Subjects: []string{protocol.SubjectTasksAll},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage,
	}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.CreateConsumer(ctx, protocol.StreamTasks, jetstream.ConsumerConfig{
		Durable: protocol.ConsumerWorkers, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxDeliver: -1,
	}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: protocol.StreamResults, Subjects: []string{protocol.SubjectResultsAll},
		Storage: jetstream.MemoryStorage, Duplicates: time.Minute,
	}); err != nil {
		e.t.Fatal(err)
	}
}

// task returns task number i of run r1; its partition is number i.
func (e *env) task(i int) protocol.Task {
	return protocol.Task{
		RunID: "r1", TaskID: fmt.Sprintf("t%03d", i), Pipeline: "p", Pattern: protocol.PatternFullLoad,
		Source:    protocol.Endpoint{Kind: e.conn.kind, Config: json.RawMessage(`{"in":"x"}`)},
		Sink:      protocol.Endpoint{Kind: e.conn.kind, Config: json.RawMessage(`{"out":"y"}`)},
		Partition: protocol.Partition{Key: fmt.Sprintf("part-%d", i), Spec: json.RawMessage(fmt.Sprintf(`{"part":%d}`, i))},
		Enqueue:   1,
	}
}

func (e *env) publishTask(task protocol.Task, h nats.Header) {
	e.t.Helper()
	data, err := protocol.Encode(task)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publishRaw(data, h)
}

func (e *env) publishRaw(data []byte, h nats.Header) {
	e.t.Helper()
	m := nats.NewMsg(protocol.TaskSubject("p", "r"))
	m.Data = data
	for k, v := range h {
		m.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		e.t.Fatal(err)
	}
}

// results returns every result in the result stream, in order.
func (e *env) results() []protocol.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := e.js.Stream(ctx, protocol.StreamResults)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []protocol.Result
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		r, err := protocol.Decode[protocol.Result](m.Data)
		if err != nil {
			e.t.Fatalf("result at seq %d: %v", seq, err)
		}
		if got, want := m.Header.Get(protocol.HeaderMsgID), protocol.ResultMsgID(r.RunID, r.TaskID, r.Attempt); got != want {
			e.t.Errorf("result msg id %q, want %q", got, want)
		}
		out = append(out, r)
	}
	return out
}

// waitResults waits until the result stream holds at least n results.
func (e *env) waitResults(n int) []protocol.Result {
	e.t.Helper()
	var rs []protocol.Result
	e.waitFor(fmt.Sprintf("%d results", n), func() bool { rs = e.results(); return len(rs) >= n })
	return rs
}

// tasksLeft returns the number of messages in the task stream and the
// number delivered to workers and not acknowledged yet.
func (e *env) tasksLeft() (msgs uint64, ackPending int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := e.js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		e.t.Fatal(err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := s.Consumer(ctx, protocol.ConsumerWorkers)
	if err != nil {
		e.t.Fatal(err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return si.State.Msgs, ci.NumAckPending
}

func (e *env) waitTasksGone() {
	e.t.Helper()
	e.waitFor("task stream empty", func() bool { m, p := e.tasksLeft(); return m == 0 && p == 0 })
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running is a worker whose Run runs in the background.
type running struct {
	w      *Worker
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	leaks  []goleak.Option
}

// start starts a worker with its own connection. The test's cleanup stops it
// if the test did not.
func (e *env) start(cfg Config, tp trace.TracerProvider) *running {
	e.t.Helper()
	leaks := goleak.IgnoreCurrent()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1))
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := New(cfg, nc, e.reg, log, tp)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, nc: nc, cancel: cancel, done: make(chan error, 1), leaks: []goleak.Option{leaks}}
	go func() { r.done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		r.cancel()
		r.wait(e.t)
	})
	return r
}

// wait waits for Run to return, closes the worker's connection and returns
// Run's error. It may be called more than once.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		r.nc.Close()
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// stop cancels Run's context, waits for it to return and checks that no
// goroutine the worker started is left.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// goleak retries for about half a second; a loaded machine may need
	// longer for closed connections to wind down.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(r.leaks...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Run returned: %v", err)
		}
	}
}

var workerSeq atomic.Int32

func fastConfig(slots int) Config {
	return Config{ID: fmt.Sprintf("w%d", workerSeq.Add(1)), Slots: slots,
		ProgressEvery: 200 * time.Millisecond, DrainTimeout: 20 * time.Second, HeartbeatEvery: 100 * time.Millisecond}
}

func checkSuccess(t *testing.T, c *testConn, r protocol.Result, part int) {
	t.Helper()
	want, sum := c.expected(part)
	if r.Failed() {
		t.Fatalf("task %s failed: %s %s", r.TaskID, r.ErrorClass, r.Error)
	}
	if r.Rows != int64(c.rows) || r.Bytes != int64(len(want)) || r.Checksum != protocol.Sum(sum.Sum) {
		t.Errorf("task %s: rows %d bytes %d checksum %s, want %d %d %s",
			r.TaskID, r.Rows, r.Bytes, r.Checksum, c.rows, len(want), sum)
	}
	got, err := os.ReadFile(r.Location)
	if err != nil {
		t.Fatalf("task %s output: %v", r.TaskID, err)
	}
	if string(got) != string(want) {
		t.Errorf("task %s output differs:\n got %q\nwant %q", r.TaskID, got, want)
	}
	if r.Started.IsZero() || r.Finished.Before(r.Started) {
		t.Errorf("task %s: started %v finished %v", r.TaskID, r.Started, r.Finished)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"zero is valid", Config{}, ""},
		{"all set", Config{ID: "w1", Slots: 8, ProgressEvery: time.Second, DrainTimeout: time.Minute, HeartbeatEvery: time.Second}, ""},
		{"negative slots", Config{Slots: -1}, "slots"},
		{"negative drain", Config{DrainTimeout: -time.Second}, "drain timeout"},
		{"negative progress", Config{ProgressEvery: -1}, "progress interval"},
		{"negative heartbeat", Config{HeartbeatEvery: -1}, "heartbeat interval"},
		{"id with space", Config{ID: "a b"}, "worker id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want an error about %q", err, tt.want)
			}
		})
	}
	d := Config{}.withDefaults()
	if d.Slots != DefaultSlots || d.ProgressEvery != DefaultProgressEvery || d.DrainTimeout != DefaultDrainTimeout ||
		d.HeartbeatEvery != DefaultHeartbeatEvery || d.ID == "" {
		t.Fatalf("defaults: %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("default config (id %q) invalid: %v", d.ID, err)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{0, 1, time.Second},
		{0, 2, 2 * time.Second},
		{100 * time.Millisecond, 1, 100 * time.Millisecond},
		{100 * time.Millisecond, 3, 400 * time.Millisecond},
		{time.Minute, 3, 4 * time.Minute},
		{time.Minute, 4, 5 * time.Minute},
		{time.Second, 1000, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := backoff(tt.base, tt.attempt); got != tt.want {
			t.Errorf("backoff(%v, %d) = %v, want %v", tt.base, tt.attempt, got, tt.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{Slots: -1}, nil, connectors.NewRegistry(), nil, nil); err == nil {
		t.Fatal("New with negative slots succeeded")
	}
	if _, err := New(Config{}, nil, connectors.NewRegistry(), nil, nil); err == nil {
		t.Fatal("New without a connection succeeded")
	}
}

// TestProcessesTasks runs tasks end to end: results with the right rows and
// checksums, outputs in place, tasks acknowledged, trace context followed,
// heartbeats sent, connectors opened once and closed when Run returns.
func TestProcessesTasks(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)

	hb, err := e.nc.SubscribeSync(protocol.SubjectHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	const n = 5
	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	traceparent := "00-" + traceID + "-" + parentID + "-01"
	for i := range n {
		task := e.task(i)
		var h nats.Header
		if i%2 == 0 {
			h = nats.Header{"traceparent": {traceparent}}
		} else {
			task.Trace = map[string]string{"traceparent": traceparent}
		}
		e.publishTask(task, h)
	}
	r := e.start(fastConfig(2), tp)

	rs := e.waitResults(n)
	e.waitTasksGone()
	if len(rs) != n {
		t.Fatalf("%d results, want %d", len(rs), n)
	}
	seen := map[string]bool{}
	for _, res := range rs {
		var part int
		fmt.Sscanf(res.TaskID, "t%03d", &part)
		checkSuccess(t, e.conn, res, part)
		if res.Worker != r.w.ID() || res.Attempt != 1 || res.Pipeline != "p" || res.RunID != "r1" {
			t.Errorf("result %+v: want worker %s, attempt 1, run r1, pipeline p", res, r.w.ID())
		}
		seen[res.TaskID] = true
	}
	if len(seen) != n {
		t.Errorf("results for %d distinct tasks, want %d", len(seen), n)
	}
	if s := r.w.Stats(); s.Done != n || s.Failed != 0 || s.Busy != 0 {
		t.Errorf("stats %+v, want %d done", s, n)
	}

	msg, err := hb.NextMsg(waitTimeout)
	if err != nil {
		t.Fatalf("no heartbeat: %v", err)
	}
	beat, err := protocol.Decode[protocol.Heartbeat](msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if beat.Worker != r.w.ID() || beat.Slots != 2 || beat.Started.IsZero() || beat.Time.IsZero() {
		t.Errorf("heartbeat %+v", beat)
	}

	r.stop(t)
	if got := e.conn.opens.Load(); got != 2 {
		t.Errorf("connectors opened %d times, want 2 (one source, one sink, cached)", got)
	}
	if e.conn.srcClosed.Load() != 1 || e.conn.sinkClosed.Load() != 1 {
		t.Errorf("closed sources %d, sinks %d; want 1 and 1", e.conn.srcClosed.Load(), e.conn.sinkClosed.Load())
	}

	spans := rec.Ended()
	if len(spans) != n {
		t.Fatalf("%d spans, want %d", len(spans), n)
	}
	for _, s := range spans {
		if s.Name() != telemetry.SpanTask {
			t.Errorf("span name %q", s.Name())
		}
		if s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID {
			t.Errorf("span %s: trace %s parent %s, want %s %s", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID(), traceID, parentID)
		}
		attrs := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			attrs[kv.Key] = kv.Value.Emit()
		}
		for _, k := range []attribute.Key{telemetry.AttrRun, telemetry.AttrTask, telemetry.AttrPartition, telemetry.AttrAttempt, telemetry.AttrWorker} {
			if attrs[k] == "" {
				t.Errorf("span lacks attribute %s: %v", k, attrs)
			}
		}
		if attrs[telemetry.AttrWorker] != r.w.ID() || attrs[telemetry.AttrAttempt] != "1" {
			t.Errorf("span attributes %v", attrs)
		}
	}
	// The result carries the task span's context.
	m, err := e.js.Stream(context.Background(), protocol.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if tp := raw.Header.Get("traceparent"); !strings.Contains(tp, traceID) {
		t.Errorf("result traceparent %q, want trace %s", tp, traceID)
	}
}

// TestSlotsRespected checks that a worker never runs, nor holds unacked, more
// tasks than it has slots.
func TestSlotsRespected(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.gate = make(chan struct{})
	const n = 6
	for i := range n {
		e.publishTask(e.task(i), nil)
	}
	r := e.start(fastConfig(2), nil)

	for range 2 {
		select {
		case <-e.conn.blocked:
		case <-time.After(waitTimeout):
			t.Fatal("two tasks did not start")
		}
	}
	// Both slots are busy, so no pull is outstanding: the worker holds
	// exactly the two messages it runs.
	if msgs, pending := e.tasksLeft(); msgs != n || pending != 2 {
		t.Errorf("with both slots busy: %d messages in stream, %d delivered unacked; want %d and 2", msgs, pending, n)
	}
	if s := r.w.Stats(); s.Busy != 2 {
		t.Errorf("busy %d, want 2", s.Busy)
	}
	close(e.conn.gate)
	rs := e.waitResults(n)
	for _, res := range rs {
		var part int
		fmt.Sscanf(res.TaskID, "t%03d", &part)
		checkSuccess(t, e.conn, res, part)
	}
	if got := e.conn.maxConcurrent(); got != 2 {
		t.Errorf("at most %d tasks ran at once, want 2", got)
	}
	r.stop(t)
}

// TestRetryThenSuccess checks that a retryable failure is retried after the
// task's backoff, doubled on each attempt, until it succeeds.
func TestRetryThenSuccess(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.failFirst = 2
	task := e.task(0)
	task.MaxAttempts = 4
	task.Backoff = 300 * time.Millisecond
	e.publishTask(task, nil)
	r := e.start(fastConfig(2), nil)

	rs := e.waitResults(1)
	e.waitTasksGone()
	rs = e.results()
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	checkSuccess(t, e.conn, rs[0], 0)
	if rs[0].Attempt != 3 {
		t.Errorf("succeeded on attempt %d, want 3", rs[0].Attempt)
	}
	reads := e.conn.readTimes("part-0")
	if len(reads) != 3 {
		t.Fatalf("%d reads, want 3", len(reads))
	}
	if d := reads[1].Sub(reads[0]); d < task.Backoff {
		t.Errorf("second attempt %v after the first, want at least %v", d, task.Backoff)
	}
	if d := reads[2].Sub(reads[1]); d < 2*task.Backoff {
		t.Errorf("third attempt %v after the second, want at least %v", d, 2*task.Backoff)
	}
	if s := r.w.Stats(); s.Done != 1 || s.Failed != 2 {
		t.Errorf("stats %+v, want 1 done, 2 failed", s)
	}
	r.stop(t)
}

// TestRetriesExhausted checks that a task failing on every attempt gives one
// failed result after MaxAttempts and leaves the stream.
func TestRetriesExhausted(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.failFirst = 1000
	task := e.task(0)
	task.MaxAttempts = 3
	task.Backoff = 50 * time.Millisecond
	e.publishTask(task, nil)
	r := e.start(fastConfig(2), nil)

	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	res := rs[0]
	if res.ErrorClass != protocol.ErrorRetryable || res.Attempt != 3 || !strings.Contains(res.Error, "after 3 attempts") ||
		!strings.Contains(res.Error, "source unavailable") {
		t.Errorf("result %+v: want a retryable failure after 3 attempts", res)
	}
	if n := len(e.conn.readTimes("part-0")); n != 3 {
		t.Errorf("%d reads, want 3", n)
	}
	r.stop(t)
}

// TestFailureNotRetried checks that a permanent failure is reported at
// once, with the row position, and not retried; and that a task whose run
// must be planned again (what the run was planned on is gone) is reported
// at once as ErrorReplan, saying why, and not retried either. Both leave
// the stream.
func TestFailureNotRetried(t *testing.T) {
	for _, tt := range []struct {
		name  string
		set   func(*testConn)
		class protocol.ErrorClass
		says  string
	}{
		{"permanent", func(c *testConn) { c.permanent = true }, protocol.ErrorPermanent, "part-3.jsonl: row 7"},
		{"replan", func(c *testConn) { c.replan = true }, protocol.ErrorReplan, "part-3.jsonl: the run's snapshot is gone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.createStreams(30 * time.Second)
			tt.set(e.conn)
			task := e.task(3)
			task.MaxAttempts = 5
			e.publishTask(task, nil)
			r := e.start(fastConfig(2), nil)

			e.waitResults(1)
			e.waitTasksGone()
			rs := e.results()
			if len(rs) != 1 {
				t.Fatalf("%d results, want 1: %+v", len(rs), rs)
			}
			res := rs[0]
			if res.ErrorClass != tt.class || res.Attempt != 1 || !strings.Contains(res.Error, tt.says) {
				t.Errorf("result %+v: want a %s failure on attempt 1 saying %q", res, tt.class, tt.says)
			}
			if n := len(e.conn.readTimes("part-3")); n != 1 {
				t.Errorf("%d reads, want 1", n)
			}
			if s := r.w.Stats(); s.Failed != 1 || s.Done != 0 {
				t.Errorf("stats %+v, want 1 failed", s)
			}
			r.stop(t)
		})
	}
}

// TestTaskSchemaReachesWriter checks that the sink's task writer is opened
// with the task's schema, the run's.
func TestTaskSchemaReachesWriter(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	schema := &protocol.Schema{Columns: []protocol.Column{{Name: "part", Type: protocol.TypeInt32, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 38, Scale: 10, Native: "numeric(38,10)"}}, Key: []string{"part"}, System: "postgres"}
	task := e.task(1)
	task.Schema = schema
	e.publishTask(task, nil)
	r := e.start(fastConfig(1), nil)
	e.waitResults(1)
	r.stop(t)
	refs := e.conn.opened()
	if len(refs) != 1 || !reflect.DeepEqual(refs[0].Schema, schema) {
		t.Fatalf("task writers opened with %+v, want one with schema %+v", refs, schema)
	}
}

// TestSinkWriteFailure checks that a batch the sink rejects fails the task
// with the batch's position and discards the attempt's output.
func TestSinkWriteFailure(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.failWriteAt = "part-2.jsonl:21"
	e.publishTask(e.task(2), nil)
	r := e.start(fastConfig(1), nil)

	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	if res := rs[0]; res.ErrorClass != protocol.ErrorPermanent || !strings.Contains(res.Error, "write batch at part-2.jsonl:21") ||
		!strings.Contains(res.Error, "value out of range") {
		t.Errorf("result %+v: want a permanent failure naming the batch position", res)
	}
	left, err := filepath.Glob(filepath.Join(e.conn.dir, "r1", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("aborted attempt left %v", left)
	}
	r.stop(t)
}

// TestMalformedTask checks that a task message that does not decode is
// terminated without a result, and that the worker goes on.
func TestMalformedTask(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.publishRaw([]byte("not json"), nil)
	e.publishRaw([]byte(`{"v":99,"run":"r","task":"t","pipeline":"p"}`), nil)
	e.publishTask(e.task(0), nil)
	r := e.start(fastConfig(1), nil)

	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 || rs[0].TaskID != "t000" {
		t.Fatalf("results %+v, want one for t000", rs)
	}
	checkSuccess(t, e.conn, rs[0], 0)
	r.stop(t)
}

// TestKillMidTask checks that a worker killed mid-task leaves the task to
// JetStream, and that another worker completes it after AckWait with the
// same output and one result.
func TestKillMidTask(t *testing.T) {
	e := newEnv(t)
	e.createStreams(2 * time.Second)
	e.conn.gate = make(chan struct{})
	e.conn.gateReads = 1
	e.publishTask(e.task(0), nil)

	a := e.start(fastConfig(1), nil)
	select {
	case <-e.conn.blocked:
	case <-time.After(waitTimeout):
		t.Fatal("task did not start")
	}
	a.w.Kill()
	if err := a.wait(t); err != nil {
		t.Fatalf("Run after Kill: %v", err)
	}
	if rs := e.results(); len(rs) != 0 {
		t.Fatalf("killed worker published %+v", rs)
	}
	if msgs, pending := e.tasksLeft(); msgs != 1 || pending != 1 {
		t.Fatalf("after kill: %d messages, %d unacked; want the task still there, unacked", msgs, pending)
	}

	b := e.start(fastConfig(1), nil)
	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	checkSuccess(t, e.conn, rs[0], 0)
	if rs[0].Worker != b.w.ID() || rs[0].Attempt != 2 {
		t.Errorf("result from %s attempt %d, want %s attempt 2", rs[0].Worker, rs[0].Attempt, b.w.ID())
	}
	close(e.conn.gate)
	b.stop(t)
}

// TestProgressKeepsTaskAlive checks that a task running longer than AckWait
// is not redelivered while its worker sends in-progress acks.
func TestProgressKeepsTaskAlive(t *testing.T) {
	e := newEnv(t)
	e.createStreams(time.Second)
	e.conn.gate = make(chan struct{})
	e.publishTask(e.task(0), nil)
	cfg := fastConfig(2)
	cfg.ProgressEvery = 150 * time.Millisecond
	r := e.start(cfg, nil)
	select {
	case <-e.conn.blocked:
	case <-time.After(waitTimeout):
		t.Fatal("task did not start")
	}
	// Hold the task for several AckWaits.
	time.AfterFunc(3*time.Second, func() { close(e.conn.gate) })
	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 || rs[0].Attempt != 1 {
		t.Fatalf("results %+v, want one on attempt 1", rs)
	}
	if n := len(e.conn.readTimes("part-0")); n != 1 {
		t.Errorf("task read %d times, want once", n)
	}
	r.stop(t)
}

// TestDrainFinishesInFlight checks that cancelling Run lets the task in
// flight finish, publish its result and be acknowledged before Run returns.
func TestDrainFinishesInFlight(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.gate = make(chan struct{})
	e.publishTask(e.task(0), nil)
	r := e.start(fastConfig(2), nil)
	select {
	case <-e.conn.blocked:
	case <-time.After(waitTimeout):
		t.Fatal("task did not start")
	}
	r.cancel()
	time.AfterFunc(300*time.Millisecond, func() { close(e.conn.gate) })
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// No waiting: all of this happened before Run returned.
	rs := e.results()
	if len(rs) != 1 {
		t.Fatalf("%d results when Run returned, want 1", len(rs))
	}
	checkSuccess(t, e.conn, rs[0], 0)
	if msgs, pending := e.tasksLeft(); msgs != 0 || pending != 0 {
		t.Errorf("when Run returned: %d messages, %d unacked; want none", msgs, pending)
	}
	if e.conn.srcClosed.Load() != 1 || e.conn.sinkClosed.Load() != 1 {
		t.Errorf("connectors not closed when Run returned")
	}
	r.stop(t)
}

// TestDrainTimeoutHandsTaskBack checks that a task still running at the
// drain timeout is cancelled and handed back at once, without a failure, for
// another worker to complete.
func TestDrainTimeoutHandsTaskBack(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	e.conn.gate = make(chan struct{})
	e.conn.gateReads = 1
	task := e.task(0)
	task.Backoff = time.Hour // a retry would not come back within the test
	e.publishTask(task, nil)
	cfg := fastConfig(1)
	cfg.DrainTimeout = 200 * time.Millisecond
	a := e.start(cfg, nil)
	select {
	case <-e.conn.blocked:
	case <-time.After(waitTimeout):
		t.Fatal("task did not start")
	}
	a.stop(t)
	if s := a.w.Stats(); s.Failed != 0 || s.Done != 0 {
		t.Errorf("stats %+v, want nothing done or failed", s)
	}
	if rs := e.results(); len(rs) != 0 {
		t.Fatalf("results %+v, want none", rs)
	}

	b := e.start(fastConfig(1), nil)
	e.waitResults(1)
	e.waitTasksGone()
	rs := e.results()
	if len(rs) != 1 || rs[0].Worker != b.w.ID() || rs[0].Attempt != 2 {
		t.Fatalf("results %+v, want one from %s on attempt 2", rs, b.w.ID())
	}
	checkSuccess(t, e.conn, rs[0], 0)
	close(e.conn.gate)
	b.stop(t)
}

// TestWaitsForConsumer checks that a worker started before the coordinator
// created the streams waits for them instead of failing.
func TestWaitsForConsumer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: protocol.StreamResults, Subjects: []string{protocol.SubjectResultsAll}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	// The worker's lookups of the task consumer, seen on the JetStream API.
	lookups, err := e.nc.SubscribeSync("$JS.API.CONSUMER.INFO." + protocol.StreamTasks + "." + protocol.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(fastConfig(1), nil)
	// The stream and consumer created below run goroutines in the server.
	for _, f := range []string{"(*consumer).loopAndGatherMsgs", "(*consumer).processInboundAcks",
		"(*consumer).processInboundNextMsgReqs", "(*stream).internalLoop", "(*stream).signalConsumersLoop",
		"ats.Register.func1"} {
		if !strings.HasPrefix(f, "ats.") {
			f = "server." + f
		} else {
			f = "server/" + f
		}
		r.leaks = append(r.leaks, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/"+f))
	}
	// Two lookups before the stream exists: the first found nothing, and
	// the worker waited and looked again instead of failing.
	for i := range 2 {
		if _, err := lookups.NextMsg(waitTimeout); err != nil {
			t.Fatalf("lookup %d of the task consumer: %v", i+1, err)
		}
	}
	select {
	case err := <-r.done:
		t.Fatalf("the worker stopped while the consumer was missing: %v", err)
	default:
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: protocol.StreamTasks, Subjects: []string{protocol.SubjectTasksAll},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateConsumer(ctx, protocol.StreamTasks, jetstream.ConsumerConfig{
		Durable: protocol.ConsumerWorkers, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	e.publishTask(e.task(0), nil)
	rs := e.waitResults(1)
	checkSuccess(t, e.conn, rs[0], 0)
	r.stop(t)
}

// TestStopWhileWaitingForConsumer checks that Run returns when cancelled
// before the consumer exists.
func TestStopWhileWaitingForConsumer(t *testing.T) {
	e := newEnv(t)
	r := e.start(fastConfig(1), nil)
	r.stop(t)
}
