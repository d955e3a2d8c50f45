package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

func TestPermanentPublish(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("publish task t00001: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}), true},
		{fmt.Errorf("publish task t00001: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}), true},
		{fmt.Errorf("publish task t00001: %w", nats.ErrMaxPayload), true},
		{fmt.Errorf("%w t00001: bad contract", errTaskEncode), true},
		{fmt.Errorf("publish task t00001: %w", nats.ErrNoResponders), false},
		{fmt.Errorf("publish task t00001: %w", jetstream.ErrNoStreamResponse), false},
		{context.DeadlineExceeded, false},
		{errors.New("nats: connection closed"), false},
	} {
		if got := permanentPublish(c.err); got != c.want {
			t.Errorf("permanentPublish(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A run whose tasks SLUICE_TASKS refuses (full: it drops none) fails,
// saying why, instead of being published again forever; the next run
// goes through once there is room.
func TestPublishGivesUpWhenTasksFull(t *testing.T) {
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true, StreamMaxBytes: 8 << 10},
		url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// No worker: 100 task messages of about 500 bytes do not fit in 8 KiB.
	if _, err := cl.Apply(ctx, memSpec("big", 100)); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "big"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.RunFailed || !strings.Contains(st.Error, "publish tasks") || !strings.Contains(st.Error, "maximum bytes exceeded") {
		t.Fatalf("run on a full tasks stream: %s, %q; want failed, saying the stream is full", st.State, st.Error)
	}
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, protocol.StreamTasks)
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	fakeWorker(t, url, succeed)
	if _, err := cl.Apply(ctx, memSpec("small", 2)); err != nil {
		t.Fatal(err)
	}
	reply, err = cl.Run(ctx, protocol.RunRequest{Pipeline: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := cl.WaitRun(ctx, reply.RunID, 50*time.Millisecond, nil); err != nil || st.State != protocol.RunCommitted {
		t.Fatalf("a run that fits: %+v, %v", st, err)
	}
}

// A run's status lists at most protocol.MaxTaskList tasks, its failed
// ones first, however many tasks it has.
func TestRunStatusTaskListBounded(t *testing.T) {
	r := &runState{ID: "big-000001", Pipeline: "big", State: protocol.RunFailed, Planned: true}
	for i := range 3000 {
		ts := taskState{ID: taskID(1, i), Partition: protocol.Partition{Key: fmt.Sprintf("p%d", i)}, State: protocol.TaskSucceeded, Rows: 1}
		if i == 2500 {
			ts.State, ts.Error, ts.Rows = protocol.TaskFailed, "boom", 0
		}
		r.Tasks = append(r.Tasks, ts)
	}
	st := runStatus(r, true)
	if len(st.TaskList) != protocol.MaxTaskList || st.Tasks != 3000 || st.Rows != 2999 || st.TasksFailed != 1 {
		t.Fatalf("status of a run of 3000 tasks: %d listed, tasks %d, rows %d, failed %d", len(st.TaskList), st.Tasks, st.Rows, st.TasksFailed)
	}
	if ts := st.TaskList[0]; ts.State != protocol.TaskFailed || ts.Error != "boom" || st.TaskList[1].TaskID != "t00000" {
		t.Errorf("task list starts %+v, %+v; want the failed task, then the first", ts, st.TaskList[1])
	}
}
