package coordinator

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

var ordersSchema = &protocol.Schema{
	Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true, Native: "bigint"},
		{Name: "amount", Type: protocol.TypeDecimal, Native: "numeric"},
		{Name: "placed", Type: protocol.TypeTimestampTZ, Native: "timestamp with time zone"},
	},
	Key:    []string{"id"},
	System: "postgres",
}

// schemaSpec is a pipeline of the mem connectors whose source plans
// schema and whose sink refuses the column refuse.
func schemaSpec(t *testing.T, name string, schema *protocol.Schema, refuse string) pipeline.Spec {
	t.Helper()
	src, err := json.Marshal(memConfig{Parts: 3, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := json.Marshal(memConfig{Path: "/out/" + name, Refuse: refuse})
	if err != nil {
		t.Fatal(err)
	}
	s := memSpec(name, 3)
	s.Source.Config, s.Sink.Config = src, sink
	return s
}

// taskLog records the tasks a fake worker received.
type taskLog struct {
	mu    sync.Mutex
	tasks []protocol.Task
}

func (l *taskLog) handle(task protocol.Task, attempt int) protocol.Result {
	l.mu.Lock()
	l.tasks = append(l.tasks, task)
	l.mu.Unlock()
	return succeed(task, attempt)
}

func (l *taskLog) received() []protocol.Task {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]protocol.Task(nil), l.tasks...)
}

// schemaCluster starts a leader of the mem connectors and a worker that
// records its tasks.
func schemaCluster(t *testing.T) (string, *memConnectors, *node, *taskLog, *Client) {
	t.Helper()
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	got := &taskLog{}
	fakeWorker(t, url, got.handle)
	return url, mem, n, got, NewClient(connect(t, url))
}

// A sink that cannot hold a column of the plan's schema fails the run
// before any task is recorded or published: the run's error names the
// sink and the column, no worker sees a task, nothing is committed. A
// schema that is not well formed fails the run naming the source.
func TestSchemaRefusedFailsRunBeforeTasks(t *testing.T) {
	url, mem, n, got, cl := schemaCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	bad := *ordersSchema
	bad.Columns = append(bad.Columns, protocol.Column{Name: "id", Type: protocol.TypeString})
	for _, tt := range []struct {
		name   string
		spec   pipeline.Spec
		errHas []string
	}{
		{"refused", schemaSpec(t, "orders", ordersSchema, "amount"), []string{"sink memsink", `column "amount"`, "decimal"}},
		{"malformed", schemaSpec(t, "odd", &bad, ""), []string{"source memsrc", `"id" appears twice`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cl.Apply(ctx, tt.spec); err != nil {
				t.Fatal(err)
			}
			reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: tt.spec.Name})
			if err != nil {
				t.Fatal(err)
			}
			st, err := cl.WaitRun(ctx, reply.RunID, 20*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != protocol.RunFailed || st.Tasks != 0 {
				t.Fatalf("run %+v, want failed without tasks", st)
			}
			for _, s := range tt.errHas {
				if !strings.Contains(st.Error, s) {
					t.Errorf("run error %q does not name %s", st.Error, s)
				}
			}
			if r, ok := n.fsm.run(reply.RunID); !ok || r.Planned || r.Published || r.Schema != nil {
				t.Errorf("run state %+v, want never planned nor published", r)
			}
		})
	}
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, protocol.StreamTasks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != 0 || len(got.received()) != 0 {
		t.Errorf("tasks published: last sequence %d, %d received by the worker; want none", info.State.LastSeq, len(got.received()))
	}
	if c := mem.committed(); len(c) != 0 {
		t.Errorf("commits %+v, want none", c)
	}
	if c := mem.checked(); len(c) != 1 || !reflect.DeepEqual(c[0], ordersSchema) {
		t.Errorf("the sink checked %+v, want the one well-formed schema", c)
	}
}

// The plan's schema reaches the sink's check, every task and the commit,
// on the leader that planned the run; a source without one gives nil to
// all of them.
func TestSchemaReachesTasksAndCommit(t *testing.T) {
	_, mem, _, got, cl := schemaCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for i, schema := range []*protocol.Schema{ordersSchema, nil} {
		spec := schemaSpec(t, "orders", schema, "")
		if _, err := cl.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: spec.Name})
		if err != nil {
			t.Fatal(err)
		}
		st, err := cl.WaitRun(ctx, reply.RunID, 20*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != protocol.RunCommitted {
			t.Fatalf("run %+v", st)
		}
		tasks := 0
		for _, task := range got.received() {
			if task.RunID != reply.RunID {
				continue
			}
			tasks++
			if !reflect.DeepEqual(task.Schema, schema) {
				t.Errorf("task %s carries schema %+v, want %+v", task.TaskID, task.Schema, schema)
			}
		}
		if tasks != 3 {
			t.Errorf("%d tasks of %s received, want 3", tasks, reply.RunID)
		}
		commits := mem.committed()
		if len(commits) != i+1 || commits[i].RunID != reply.RunID || !reflect.DeepEqual(commits[i].Schema, schema) {
			t.Errorf("commit %d of %+v, want run %s with schema %+v", i, commits, reply.RunID, schema)
		}
		if checks := mem.checked(); len(checks) != i+1 || !reflect.DeepEqual(checks[i], schema) {
			t.Errorf("schema checks %+v, want %+v last", checks, schema)
		}
	}
}
