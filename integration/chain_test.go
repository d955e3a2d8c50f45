package integration

import (
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/protocol"
)

// A chain of two pipelines: the second (trigger.after the first) reads the
// first's exposed dataset. Running the first commits it, then the second
// exactly once, whose output equals the first's, and whose trigger context
// names the upstream run, its location and version. A second run of the
// first starts a second run of the second, no more.
func TestChainAfterUpstream(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	in := writeDataset(t, 3, 100)
	mid, out := t.TempDir(), t.TempDir()
	c.apply("up", in, mid, 2, "")
	c.apply("down", filepath.Join(mid, "current"), out, 2, "trigger:\n  after: up\n")

	upRun := c.run("up")
	up := c.wait(upRun.RunID)
	if up.State != protocol.RunCommitted {
		t.Fatalf("upstream run %s: %s (%s)", up.RunID, up.State, up.Error)
	}
	runs := c.runsOf("down", 1)
	down := c.wait(runs[0].RunID)
	if down.State != protocol.RunCommitted {
		t.Fatalf("downstream run %s: %s (%s)", down.RunID, down.State, down.Error)
	}
	assertSameRows(t, in, mid)
	assertSameRows(t, in, out)
	tr := down.Trigger
	if tr == nil || tr.After == nil {
		t.Fatalf("downstream run has no upstream in its trigger context: %+v", tr)
	}
	if a := tr.After; a.Pipeline != "up" || a.RunID != up.RunID || a.Version != up.Version || a.Location != up.Location || a.Location == "" {
		t.Fatalf("upstream in trigger context %+v, want run %s version %d location %s", a, up.RunID, up.Version, up.Location)
	}
	if tr.Subject != protocol.RunEventSubject("up", protocol.RunCommitted) || tr.MsgID != "event:"+up.RunID || tr.ProcessingTime.IsZero() {
		t.Fatalf("trigger context %+v", tr)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("up", protocol.RunCommitted), 1)
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("down", protocol.RunCommitted), 1)

	// A second commit of the upstream starts one more downstream run.
	up2 := c.wait(c.run("up").RunID)
	if up2.State != protocol.RunCommitted || up2.Version != 2 {
		t.Fatalf("second upstream run %s: %s version %d (%s)", up2.RunID, up2.State, up2.Version, up2.Error)
	}
	runs = c.runsOf("down", 2)
	for _, r := range runs {
		st := c.wait(r.RunID)
		if st.State != protocol.RunCommitted {
			t.Fatalf("downstream run %s: %s (%s)", st.RunID, st.State, st.Error)
		}
	}
	if runs[0].Trigger == nil || runs[0].Trigger.After == nil || runs[0].Trigger.After.RunID != up2.RunID || runs[0].Trigger.After.Version != 2 {
		t.Fatalf("newest downstream run's trigger %+v, want upstream run %s", runs[0].Trigger, up2.RunID)
	}
	assertSameRows(t, in, out)
}
