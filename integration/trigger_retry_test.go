package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// A trigger that keeps failing for a transient reason (here: a live run of
// its pipeline is still waiting for its partition, so a second live run is
// refused) is retried with backoff and, after MaxDeliver deliveries, moved
// to the DLQ with its payload, reason and attempts; nothing is lost: once
// the first run is through, replaying the dead letter gives a run that
// commits the next partition.
func TestTriggerRetriedUntilDeadThenReplayed(t *testing.T) {
	t.Parallel()
	src := &hourlySource{t: t, root: filepath.Join(t.TempDir(), "events"), start: time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)}
	out := filepath.Join(t.TempDir(), "out")
	src.write(0, "part-a.jsonl", 30) // hour 0 without _SUCCESS: its run waits
	src.write(1, "part-a.jsonl", 20)
	src.done(1)

	c := newCluster(t, clusterConfig{workers: 1})
	applyPartitioned(t, c, "ev", src.root, out, src.start, "", "")
	first := c.run("ev")
	if first.WaitingFor == "" {
		t.Fatalf("first run %+v should wait for hour 0", first)
	}

	started := time.Now()
	if _, err := coordinator.PublishTrigger(c.ctx(), c.js, "ev", protocol.Trigger{Params: map[string]string{"why": "poison"}, Source: "retry-test"}, "evt-busy"); err != nil {
		t.Fatal(err)
	}
	// The consumer's backoff spreads the deliveries over about 30 s.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0); err == nil && len(dl) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failing trigger never reached the DLQ")
		}
	}
	took := time.Since(started)
	expectMessages(t, c.js, protocol.StreamDLQ, protocol.DLQSubject("trigger", "ev"), 1)
	dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0)
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	d := dl[0]
	if d.Attempts < 2 || d.Header.Get(protocol.HeaderOrigMsgID) != "evt-busy" || !strings.Contains(string(d.Data), "poison") {
		t.Fatalf("dead letter after %d attempts, msg id %q, payload %s; want several attempts, the original id and payload",
			d.Attempts, d.Header.Get(protocol.HeaderOrigMsgID), d.Data)
	}
	if took < 2*time.Second {
		t.Fatalf("dead-lettered after %v: the retries had no backoff", took)
	}
	t.Logf("dead-lettered after %d attempts in %v: %s", d.Attempts, took.Round(time.Millisecond), d.Reason)
	if runs := c.runsOf("ev", 1); runs[0].RunID != first.RunID {
		t.Fatalf("the poison trigger started a run: %+v", runs)
	}

	// Let the first run through, then replay the dead trigger.
	src.done(0)
	if st := c.wait(first.RunID); st.State != protocol.RunCommitted || st.Rows != 30 {
		t.Fatalf("first run: %s, %d rows (%s)", st.State, st.Rows, st.Error)
	}
	replayed, err := coordinator.ReplayDLQ(c.ctx(), c.js, c.client, d.Seq)
	if err != nil {
		t.Fatal(err)
	}
	runs := c.runsOf("ev", 2)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted || st.Rows != 20 || st.Window == nil || *st.Window != src.window(1) {
		t.Fatalf("replayed run %s: %s, %d rows, window %v (%s); want hour 1's 20 rows", st.RunID, st.State, st.Rows, st.Window, st.Error)
	}
	// The replayed run keeps the dead trigger's context: its subject, its
	// payload's source, and the replay's message id.
	if tr := st.Trigger; tr == nil || tr.Subject != protocol.TriggerSubject("ev") || tr.Source != "retry-test" ||
		tr.MsgID != replayed.MsgID || tr.StreamSeq != replayed.Seq {
		t.Fatalf("replayed run's trigger context %+v; want subject %s, source retry-test, msg id %s, seq %d",
			st.Trigger, protocol.TriggerSubject("ev"), replayed.MsgID, replayed.Seq)
	}
}
