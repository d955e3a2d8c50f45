package coordinator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

func TestRunCommits(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	_, rec := tracedLeader(t, url, mem)

	tasks := make(chan protocol.Task, 10)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		tasks <- task
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 3)); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders", RequestID: "req-1", Params: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if reply.RunID != "orders-000001" || reply.Tasks != 3 {
		t.Errorf("run reply %+v, want orders-000001 with 3 tasks", reply)
	}
	again, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders", RequestID: "req-1"})
	if err != nil || again.RunID != reply.RunID {
		t.Errorf("repeated request: %+v, %v; want the same run", again, err)
	}
	st, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.RunCommitted || st.Version != 1 || st.Rows != 30 || st.TasksDone != 3 || st.Location != "/out/orders/v1" || st.Marker != "/out/orders/_SUCCESS" {
		t.Errorf("run status %+v", st)
	}
	if st.Checksum != "0000000000000003" {
		t.Errorf("run checksum %q, want the sum of the task checksums", st.Checksum)
	}

	commits := mem.committed()
	if len(commits) != 1 {
		t.Fatalf("%d commits, want 1", len(commits))
	}
	c := commits[0]
	if c.RunID != reply.RunID || c.Version != 1 || c.Watermark != "wm-orders-000001" || len(c.Tasks) != 3 {
		t.Fatalf("commit request %+v", c)
	}
	for i, out := range c.Tasks {
		want := connectors.TaskOutput{Rows: 10, Bytes: 100, Checksum: connectors.Checksum{Sum: 1, Rows: 10},
			Location: "stage/orders-000001/t0000" + string(rune('0'+i))}
		if out != want {
			t.Errorf("commit task %d: %+v, want %+v", i, out, want)
		}
	}

	stat, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if p := stat.Pipelines[0]; p.Version != 1 || p.Watermark != "wm-orders-000001" || p.LastRun != reply.RunID {
		t.Errorf("pipeline status %+v", p)
	}
	if len(stat.Runs) != 1 || stat.Runs[0].TaskList != nil {
		t.Errorf("status runs %+v", stat.Runs)
	}
	full, err := cl.GetRun(ctx, reply.RunID)
	if err != nil || len(full.TaskList) != 3 || full.TaskList[2].Partition != "part-2" || full.TaskList[2].Worker != "w1" {
		t.Errorf("run.get: %+v, %v", full, err)
	}

	// Tasks carry the run's retry settings, parameters and trace.
	close(tasks)
	var traceID string
	for task := range tasks {
		if task.MaxAttempts != 3 || task.Backoff != time.Second || task.Params["k"] != "v" || task.Source.Kind != "memsrc" || task.Sink.Kind != "memsink" {
			t.Errorf("task %+v", task)
		}
		traceID = telemetry.TraceID(task.Trace)
	}
	if traceID == "" || traceID != st.TraceID {
		t.Errorf("task trace id %q, run trace id %q", traceID, st.TraceID)
	}

	// The run event is on SLUICE_EVENTS.
	js, _ := jetstream.New(connect(t, url))
	var ev protocol.RunEvent
	eventually(t, 10*time.Second, "run event published", func() bool {
		s, err := js.Stream(ctx, protocol.StreamEvents)
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, protocol.RunEventSubject("orders", protocol.RunCommitted))
		if err != nil {
			return false
		}
		ev, err = protocol.Decode[protocol.RunEvent](m.Data)
		return err == nil
	})
	if ev.RunID != reply.RunID || ev.DatasetVersion != 1 || ev.Rows != 30 || ev.TraceID != traceID {
		t.Errorf("run event %+v", ev)
	}

	// One trace: run, plan and commit spans.
	eventually(t, 10*time.Second, "run span ended", func() bool {
		names := map[string]bool{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == traceID {
				names[s.Name()] = true
			}
		}
		return names[telemetry.SpanRun] && names[telemetry.SpanPlan] && names[telemetry.SpanCommit]
	})
}

func TestRunFailsAndDeadLetters(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	fakeWorker(t, url, func(task protocol.Task, attempt int) protocol.Result {
		if task.RunID == "orders-000002" && task.TaskID == "t00001" {
			return protocol.Result{Worker: "w1", ErrorClass: protocol.ErrorPermanent, Error: "part-1.jsonl:3: bad row"}
		}
		return succeed(task, attempt)
	})
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 2)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{protocol.RunCommitted, protocol.RunFailed} {
		reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != want {
			t.Fatalf("run %d: %+v, want %s", i+1, st, want)
		}
		if want == protocol.RunFailed && (!strings.Contains(st.Error, "bad row") || !strings.Contains(st.Error, "t00001") || st.TasksFailed != 1) {
			t.Errorf("failed run %+v", st)
		}
	}
	stat, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if p := stat.Pipelines[0]; p.Version != 1 || p.Watermark != "wm-orders-000001" {
		t.Errorf("after a failed run the pipeline is %+v, want version 1 still exposed", p)
	}
	if len(mem.committed()) != 1 {
		t.Errorf("%d commits, want 1", len(mem.committed()))
	}
	eventually(t, 10*time.Second, "failed run aborted in the sink", func() bool {
		a := mem.aborted()
		return len(a) == 1 && a[0] == "orders-000002"
	})

	js, _ := jetstream.New(connect(t, url))
	var dl *jetstream.RawStreamMsg
	eventually(t, 10*time.Second, "dead letter published", func() bool {
		s, err := js.Stream(ctx, protocol.StreamDLQ)
		if err != nil {
			return false
		}
		dl, err = s.GetLastMsgForSubject(ctx, protocol.DLQSubject("task", "orders"))
		return err == nil
	})
	task, err := protocol.Decode[protocol.Task](dl.Data)
	if err != nil {
		t.Fatal(err)
	}
	if task.RunID != "orders-000002" || task.TaskID != "t00001" || task.Partition.Key != "part-1" {
		t.Errorf("dead letter %+v", task)
	}
	if dl.Header.Get(protocol.HeaderReason) != "part-1.jsonl:3: bad row" || dl.Header.Get(protocol.HeaderTask) != "t00001" || dl.Header.Get(protocol.HeaderAttempts) != "1" {
		t.Errorf("dead letter headers %v", dl.Header)
	}
	// The run event is published after the run failed, not with it.
	var m *jetstream.RawStreamMsg
	eventually(t, 10*time.Second, "failed run event", func() bool {
		s, err := js.Stream(ctx, protocol.StreamEvents)
		if err != nil {
			return false
		}
		m, err = s.GetLastMsgForSubject(ctx, protocol.RunEventSubject("orders", protocol.RunFailed))
		return err == nil
	})
	var ev protocol.RunEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.RunID != "orders-000002" || ev.Outcome != protocol.RunFailed {
		t.Errorf("failed run event %+v, %v", ev, err)
	}
}

func TestPlanErrorFailsRun(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := memSpec("orders", 1)
	spec.Source.Config = json.RawMessage(`{"fail_plan":"input directory missing"}`)
	if _, err := cl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.RunFailed || !strings.Contains(st.Error, "plan: input directory missing") {
		t.Errorf("run %+v, want failed with the plan error", st)
	}
}

// TestMaxDeliveriesFailsTask: a task no worker ever answers (the worker
// dies each time) fails its run once JetStream gives up on it.
func TestMaxDeliveriesFailsTask(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true,
		AckWait: 200 * time.Millisecond, MaxDeliver: 2}, url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Apply(ctx, memSpec("orders", 1)); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	// A worker that takes the task and never acks nor answers; it keeps
	// pulling, which makes JetStream send the advisory.
	js, _ := jetstream.New(connect(t, url))
	cons, err := js.Consumer(ctx, protocol.StreamTasks, protocol.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	var st protocol.RunStatus
	eventually(t, 30*time.Second, "run failed after max deliveries", func() bool {
		if b, err := cons.Fetch(1, jetstream.FetchMaxWait(100*time.Millisecond)); err == nil {
			for range b.Messages() {
			}
		}
		st, err = cl.GetRun(ctx, reply.RunID)
		return err == nil && st.State == protocol.RunFailed
	})
	if !strings.Contains(st.Error, "delivered 2 times without a result") {
		t.Errorf("run error %q", st.Error)
	}
	s, _ := js.Stream(ctx, protocol.StreamTasks)
	eventually(t, 10*time.Second, "dead task removed from the work queue", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}
