package integration

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runsOf waits until pipeline has want runs (or the deadline passes),
// then checks that no more appear once what starts runs has settled
// (c.settled), and returns them.
func (c *cluster) runsOf(pipeline string, want int) []protocol.RunStatus {
	c.t.Helper()
	list := func() []protocol.RunStatus {
		st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: pipeline, Limit: 100})
		if err != nil {
			c.t.Fatalf("status %s: %v", pipeline, err)
		}
		return st.Runs
	}
	deadline := time.Now().Add(30 * time.Second)
	runs := list()
	for len(runs) < want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		runs = list()
	}
	if len(runs) == want {
		c.settled()
		runs = list()
	}
	if len(runs) != want {
		c.t.Fatalf("pipeline %s has %d runs, want %d: %+v", pipeline, len(runs), want, runs)
	}
	return runs
}

// settled waits until every trigger published so far has been handled
// (the leader's trigger consumer has none pending or unacked: a trigger
// is acked after its run is created, or dead-lettered) and every run that
// ended has been announced (its event published and the runs after it
// started): no run those could start is still to come.
func (c *cluster) settled() {
	c.t.Helper()
	cons, err := c.js.Consumer(c.ctx(), protocol.StreamTriggers, protocol.ConsumerTriggers)
	if err != nil {
		c.t.Fatalf("trigger consumer: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := cons.Info(c.ctx())
		if err != nil {
			c.t.Fatalf("trigger consumer: %v", err)
		}
		st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Limit: protocol.MaxStatusRuns})
		if err != nil {
			c.t.Fatalf("status: %v", err)
		}
		unannounced := 0
		for _, r := range st.Runs {
			if (r.State == protocol.RunCommitted || r.State == protocol.RunFailed) && !r.Notified {
				unannounced++
			}
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && unannounced == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("not settled after 60s: %d triggers pending, %d unacked, %d ended runs not announced", info.NumPending, info.NumAckPending, unannounced)
		}
	}
}

func (c *cluster) publish(m *nats.Msg) uint64 {
	c.t.Helper()
	ack, err := c.js.PublishMsg(c.ctx(), m)
	if err != nil {
		c.t.Fatalf("publish %s: %v", m.Subject, err)
	}
	return ack.Sequence
}

// The same trigger message id published twice starts one run, which keeps
// the trigger's context and commits.
func TestTriggerSameMsgIDOneRun(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	in := writeDataset(t, 3, 100)
	out := t.TempDir()
	c.apply("trig", in, out, 1, "")
	ev := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 2 {
		ack, err := coordinator.PublishTrigger(c.ctx(), c.js, "trig",
			protocol.Trigger{Params: map[string]string{"file_to_load": "a.csv"}, EventTime: ev, Source: "test"}, "order-42")
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i == 1) {
			t.Fatalf("publication %d: duplicate %v", i+1, ack.Duplicate)
		}
	}
	runs := c.runsOf("trig", 1)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("triggered run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	tr := st.Trigger
	if tr == nil {
		t.Fatal("run status has no trigger context")
	}
	if tr.Subject != "sluice.trigger.trig" || tr.MsgID != "order-42" || !tr.EventTime.Equal(ev) || tr.Source != "test" ||
		tr.ProcessingTime.IsZero() || tr.PublishTime.IsZero() || tr.HandlerVersion == "" || tr.Headers[protocol.HeaderMsgID] != "order-42" {
		t.Fatalf("trigger context %+v", tr)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("trig", "committed"), 1)

	// Published again once JetStream's duplicate window has passed (made
	// short here): JetStream stores it again, and only the coordinator's
	// request-id map keeps it to one run.
	// shortWindow sets the stream's duplicate window to w. The server
	// resets its purge timer on such an update, but the timer may fire
	// before the update has set the new window and then wait out the old
	// one (2 min): each attempt below sets a window different from the
	// last, so every attempt purges again with a short window.
	shortWindow := func(w time.Duration) {
		t.Helper()
		s, err := c.js.Stream(c.ctx(), protocol.StreamTriggers)
		if err != nil {
			t.Fatal(err)
		}
		scfg := s.CachedInfo().Config
		if scfg.Duplicates == w {
			return
		}
		scfg.Duplicates = w
		if _, err := c.js.UpdateStream(c.ctx(), scfg); err != nil {
			t.Fatal(err)
		}
	}
	// JetStream forgets a message id on a timer some time after the
	// window: a publication it still dedupes stores nothing, so it is
	// published again until it is stored. A leader elected meanwhile (a
	// loaded machine) sets the stream's configuration back to Sluice's:
	// the window is made short again.
	var ack *jetstream.PubAck
	for i, deadline := 0, time.Now().Add(30*time.Second); ; i++ {
		shortWindow(time.Second + time.Duration(i%2)*100*time.Millisecond)
		time.Sleep(1200 * time.Millisecond)
		m := nats.NewMsg(protocol.TriggerSubject("trig"))
		m.Header.Set(protocol.HeaderMsgID, "order-42")
		var err error
		ack, err = c.js.PublishMsg(c.ctx(), m)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("JetStream still dedupes the message id 30s after its 1s window: the coordinator's dedupe is not exercised")
		}
	}
	c.runsOf("trig", 1)
	cons, err := c.js.Consumer(c.ctx(), protocol.StreamTriggers, protocol.ConsumerTriggers)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(c.ctx()); err != nil || info.AckFloor.Stream < ack.Sequence {
		t.Fatalf("the second publication (seq %d) was not consumed and acked: %+v, %v", ack.Sequence, info, err)
	}
}

// A malformed payload is dead-lettered at once with a reason naming the
// field, its original payload and headers; no run starts.
func TestTriggerMalformedPayloadDeadLettered(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	c.apply("bad", writeDataset(t, 1, 10), t.TempDir(), 1, "")
	payload := []byte(`{"params":{"file_to_load":"x.csv"},"logical_time":"x"}`)
	m := nats.NewMsg(protocol.TriggerSubject("bad"))
	m.Data = payload
	m.Header.Set("X-Producer", "billing")
	seq := c.publish(m)
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("trigger", "bad"), 1)
	dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0)
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %v, %v", dl, err)
	}
	d := dl[0]
	if d.Kind != "trigger" || d.Pipeline != "bad" || !strings.Contains(d.Reason, `logical_time: "x" is not RFC 3339`) {
		t.Fatalf("dead letter kind %q pipeline %q reason %q", d.Kind, d.Pipeline, d.Reason)
	}
	if !bytes.Equal(d.Data, payload) || d.Header.Get("X-Producer") != "billing" ||
		d.Header.Get(protocol.HeaderOrigSubject) != "sluice.trigger.bad" || d.Attempts != 1 ||
		d.Header.Get(protocol.HeaderOrigSeq) != itoa(seq) {
		t.Fatalf("dead letter lost the trigger: data %q headers %v attempts %d", d.Data, d.Header, d.Attempts)
	}
	c.runsOf("bad", 0)
	// Terminated: acked as far as JetStream goes (the ack floor passed it),
	// nothing waits for a redelivery, and it was delivered once.
	cons, err := c.js.Consumer(c.ctx(), protocol.StreamTriggers, protocol.ConsumerTriggers)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := cons.Info(c.ctx())
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= seq && info.NumAckPending == 0 && info.NumPending == 0 {
			if info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
				t.Fatalf("the malformed trigger was delivered %d times (%d redelivered), want once", info.Delivered.Consumer, info.NumRedelivered)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the malformed trigger (seq %d) is not settled: ack floor %+v, %d unacked, %d pending", seq, info.AckFloor, info.NumAckPending, info.NumPending)
		}
	}
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("trigger", "bad"), 1)
}

// A trigger of a pipeline that does not exist yet is dead-lettered; once
// the pipeline is applied, its replay gives a committed run.
func TestTriggerPoisonReplayedAfterApply(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	if _, err := coordinator.PublishTrigger(c.ctx(), c.js, "later", protocol.Trigger{Params: map[string]string{"k": "v"}}, "evt-1"); err != nil {
		t.Fatal(err)
	}
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("trigger", "later"), 1)
	dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0)
	if err != nil || len(dl) != 1 || !strings.Contains(dl[0].Reason, `pipeline "later" not found`) ||
		dl[0].Header.Get(protocol.HeaderOrigMsgID) != "evt-1" {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	in := writeDataset(t, 2, 50)
	out := t.TempDir()
	c.apply("later", in, out, 1, "")
	rep, err := coordinator.ReplayDLQ(c.ctx(), c.js, c.client, dl[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Subject != "sluice.trigger.later" {
		t.Fatalf("replayed to %q", rep.Subject)
	}
	runs := c.runsOf("later", 1)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("replayed run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	assertSameRows(t, in, out)
	if st.Trigger == nil || st.Trigger.MsgID != rep.MsgID {
		t.Fatalf("replayed run's trigger %+v, want msg id %s", st.Trigger, rep.MsgID)
	}
	if err := coordinator.PurgeDLQ(c.ctx(), c.js, dl[0].Seq); err != nil {
		t.Fatal(err)
	}
	if dl, _ := coordinator.ListDLQ(c.ctx(), c.js, 0); len(dl) != 0 {
		t.Fatalf("dead letters after purge: %+v", dl)
	}
}

// The leader stopped while it held a trigger unacked: the trigger goes to
// the next leader, and exactly one run commits. The leader's Raft messages
// are cut first, so it cannot record the run nor ack the trigger: the test
// sees the trigger delivered and unacked, then stops the leader.
func TestTriggerLeaderStoppedOneRun(t *testing.T) {
	t.Parallel()
	// Raft timeouts long enough that the cut-off leader stays leader
	// (its lease) while the test looks at the trigger consumer.
	c := newCluster(t, clusterConfig{workers: 1, raftTimeout: 3 * time.Second})
	in := writeDataset(t, 2, 50)
	out := t.TempDir()
	c.apply("failover", in, out, 1, "")
	old := c.leader()
	cons, err := c.js.Consumer(c.ctx(), protocol.StreamTriggers, protocol.ConsumerTriggers)
	if err != nil {
		t.Fatal(err)
	}
	old.transport.DisconnectAll()
	ack, err := coordinator.PublishTrigger(c.ctx(), c.js, "failover", protocol.Trigger{}, "once")
	if err != nil {
		t.Fatal(err)
	}
	// unacked reports whether the trigger was delivered and is not acked.
	unacked := func() (bool, *jetstream.ConsumerInfo) {
		info, err := cons.Info(c.ctx())
		if err != nil {
			t.Fatal(err)
		}
		return info.Delivered.Stream >= ack.Sequence && info.AckFloor.Stream < ack.Sequence && info.NumAckPending > 0, info
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ok, _ := unacked(); ok {
			break
		}
		if time.Now().After(deadline) {
			_, info := unacked()
			t.Fatalf("trigger (seq %d) not delivered unacked to the cut-off leader: delivered %+v, ack floor %+v", ack.Sequence, info.Delivered, info.AckFloor)
		}
	}
	old.c.Kill()
	old.killed = true
	if ok, info := unacked(); !ok {
		t.Fatalf("the trigger (seq %d) was acked before the leader stopped: delivered %+v, ack floor %+v", ack.Sequence, info.Delivered, info.AckFloor)
	}
	if next := c.leader(); next == old {
		t.Fatal("the killed node is still leader")
	}
	runs := c.runsOf("failover", 1)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted || st.Version != 1 {
		t.Fatalf("run %s: %s version %d (%s)", st.RunID, st.State, st.Version, st.Error)
	}
	assertSameRows(t, in, out)
	// The next leader acks the trigger: nothing pending, nothing unacked.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream >= ack.Sequence {
			t.Logf("trigger delivered %d time(s) over the failover", info.Delivered.Consumer)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("trigger consumer has %d unacked and %d pending 30s after the run committed", info.NumAckPending, info.NumPending)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if runs := c.runsOf("failover", 1); runs[0].RunID != st.RunID {
		t.Fatalf("the trigger's redelivery started run %s besides %s", runs[0].RunID, st.RunID)
	}
	if st.Trigger == nil || st.Trigger.MsgID != "once" || st.Trigger.StreamSeq != ack.Sequence {
		t.Fatalf("run's trigger context %+v, want msg id once, seq %d", st.Trigger, ack.Sequence)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
