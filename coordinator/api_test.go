package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// singleNode starts NATS and one bootstrapped coordinator with file stores
// and a TCP transport, and waits until it leads.
func singleNode(t *testing.T) (string, *node, *memConnectors) {
	t.Helper()
	url := startNATS(t)
	mem := &memConnectors{}
	n := startNode(t, Config{NodeID: "n1", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", Bootstrap: true,
		AckWait: 5 * time.Second, MaxDeliver: 3}, url, mem.registry(), nil)
	eventually(t, 20*time.Second, "n1 leads", n.IsLeader)
	return url, n, mem
}

func TestControlAPI(t *testing.T) {
	url, _, _ := singleNode(t)
	cl := NewClient(connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	got, err := cl.Apply(ctx, memSpec("orders", 2))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if want := (protocol.ApplyReply{Pipeline: "orders", Revision: 1, Created: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("apply: %+v, want %+v", got, want)
	}
	got, err = cl.Apply(ctx, memSpec("orders", 3))
	if err != nil {
		t.Fatalf("apply again: %v", err)
	}
	if want := (protocol.ApplyReply{Pipeline: "orders", Revision: 2}); !reflect.DeepEqual(got, want) {
		t.Errorf("apply again: %+v, want %+v", got, want)
	}

	bad := []struct {
		name  string
		edit  func(s *pipeline.Spec)
		field string
	}{
		{"sink without path", func(s *pipeline.Spec) { s.Sink.Config = json.RawMessage(`{}`) }, "sink.path"},
		{"bad name", func(s *pipeline.Spec) { s.Name = "Bad.Name" }, "name"},
		{"unknown pattern", func(s *pipeline.Spec) { s.Pattern = "teleport" }, "pattern"},
		{"unknown source kind", func(s *pipeline.Spec) { s.Source.Kind = "nope" }, "source.kind"},
		{"negative parts", func(s *pipeline.Spec) { s.Source.Config = json.RawMessage(`{"parts":-1}`) }, "source.parts"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			s := memSpec("bad", 1)
			tt.edit(&s)
			_, err := cl.Apply(ctx, s)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("apply: %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.field+":") {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}

	st, err := cl.Status(ctx, protocol.StatusRequest{})
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if len(st.Pipelines) != 1 || st.Pipelines[0].Name != "orders" || st.Pipelines[0].Revision != 2 || st.Pipelines[0].Pattern != protocol.PatternFullLoad {
		t.Errorf("status pipelines: %+v", st.Pipelines)
	}
	if st.Leader != "n1" || len(st.Nodes) != 1 || !st.Nodes[0].Leader || st.Nodes[0].Suffrage != "Voter" {
		t.Errorf("status leader %q nodes %+v", st.Leader, st.Nodes)
	}
	ps, err := cl.Pipelines(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != "orders" {
		t.Errorf("pipelines: %+v, %v", ps, err)
	}

	if _, err := cl.Run(ctx, protocol.RunRequest{Pipeline: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("run of unknown pipeline: %v, want ErrNotFound", err)
	}
	if _, err := cl.GetRun(ctx, "nope-000001"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown run: %v, want ErrNotFound", err)
	}
	if _, err := cl.Status(ctx, protocol.StatusRequest{Pipeline: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of unknown pipeline: %v, want ErrNotFound", err)
	}

	// Workers appear in status once they send a heartbeat.
	hb, _ := protocol.Encode(protocol.Heartbeat{Worker: "w-7", Slots: 4, Time: time.Now()})
	nc := connect(t, url)
	eventually(t, 10*time.Second, "worker w-7 listed in status", func() bool {
		nc.Publish(protocol.SubjectHeartbeat, hb)
		st, err := cl.Status(ctx, protocol.StatusRequest{})
		return err == nil && slices.ContainsFunc(st.Workers, func(h protocol.Heartbeat) bool { return h.Worker == "w-7" && h.Slots == 4 })
	})
}

func TestClientWaitsForALeader(t *testing.T) {
	url := startNATS(t)
	cl := NewClient(connect(t, url))
	// No coordinator yet: the request is retried until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := cl.Status(ctx, protocol.StatusRequest{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("status without a leader: %v, want a deadline error", err)
	}
	// A coordinator that starts later answers the same call.
	mem := &memConnectors{}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cl.Status(ctx, protocol.StatusRequest{})
		done <- err
	}()
	startNode(t, Config{NodeID: "n1", InmemStore: true, RaftBind: "127.0.0.1:0", Bootstrap: true}, url, mem.registry(), nil)
	if err := <-done; err != nil {
		t.Fatalf("status once a leader is up: %v", err)
	}
}
