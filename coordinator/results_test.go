package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// A node that is not the leader (one that lost leadership and whose term
// has not stopped yet) may lack the runs a new leader made: a result it
// cannot place is left for the leader, not acked, which would lose it and
// keep its run waiting for ever. The leader acks a result of a run it does
// not hold (long gone): nothing waits for it.
func TestResultOfUnknownRunLeftForTheLeader(t *testing.T) {
	url := startNATS(t)
	nodes, _ := cluster(t, url, &memConnectors{})
	lead := leaderOf(t, nodes)
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A work queue of results of the test's own: the leader's term
	// consumes SLUICE_RESULTS.
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST_RESULTS", Subjects: []string{"test.results"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "test", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	data, err := protocol.Encode(protocol.Result{RunID: "gone-000001", TaskID: "t00000", Pipeline: "gone", Attempt: 1, Worker: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(wait time.Duration) jetstream.Msg {
		t.Helper()
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			return nil
		}
		return m
	}
	for i, n := range nodes {
		if _, err := js.Publish(ctx, "test.results", data); err != nil {
			t.Fatal(err)
		}
		m := next(5 * time.Second)
		if m == nil {
			t.Fatal("no result delivered")
		}
		term := &leaderTerm{c: n.Coordinator, driving: map[string]bool{}}
		term.onResult(ctx, m)
		if i == lead {
			eventually(t, 10*time.Second, "the leader's ack", func() bool {
				info, err := stream.Info(ctx)
				return err == nil && info.State.Msgs == 0
			})
			continue
		}
		// Not acked: delivered again (after the nak's delay), to
		// whoever leads.
		again := next(10 * time.Second)
		if again == nil {
			t.Fatalf("node %d, a follower, acked a result of a run it does not know", i)
		}
		if err := again.Ack(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the test's ack", func() bool {
			info, err := stream.Info(ctx)
			return err == nil && info.State.Msgs == 0
		})
	}
}
