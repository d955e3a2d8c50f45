package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// A readiness pipeline watches an hourly directory it does not load: a
// partition is announced once, when its _SUCCESS lands, and not while it is
// open; the pipeline that runs after it runs once, with the partition in its
// trigger context; the next partition follows when it is complete. The
// readiness pipeline itself has no runs.
func TestReadinessPipelineAnnouncesPartitionOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	src := &hourlySource{t: t, root: filepath.Join(t.TempDir(), "events"), start: time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)}
	src.write(0, "a.jsonl", 10)
	src.write(1, "a.jsonl", 10)
	y := "name: events-ready\npattern: readiness\nsource:\n  kind: files\n  path: " + src.root +
		"\n  format: jsonl\n  layout: \"date={date}/hour={hour}\"\nreadiness:\n  start: " + src.start.Format(time.RFC3339) + "\n  check: 1s\n"
	s, err := pipeline.Parse([]byte(y), "events-ready.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// apply --check looks at the source only: there is no sink.
	reply, err := c.client.ApplyWith(c.ctx(), s, coordinator.ApplyOptions{Check: true})
	if err != nil || len(reply.Checked) != 1 || !strings.HasPrefix(reply.Checked[0], "source: ") {
		t.Fatalf("apply --check: %+v, %v", reply, err)
	}
	in := writeDataset(t, 2, 50)
	out := t.TempDir()
	c.apply("after-ready", in, out, 1, "trigger:\n  after: events-ready\n")
	// An hourly loader of the watched dataset, from the same start: each
	// partition announced starts the run of its window.
	hourly := filepath.Join(t.TempDir(), "hourly")
	applyPartitioned(t, c, "hourly", src.root, hourly, src.start, "", "trigger: {after: events-ready}\n")

	subject := protocol.ReadyEventSubject("events-ready")
	// Partitions 0 and 1 hold files but no _SUCCESS: nothing is ready,
	// once a check started after they were written has completed.
	c.readyChecked("events-ready")
	expectMessages(t, c.js, protocol.StreamEvents, subject, 0)
	c.runsOf("after-ready", 0)

	src.done(0)
	expectMessages(t, c.js, protocol.StreamEvents, subject, 1)
	ctx, cancel := context.WithTimeout(c.ctx(), 10*time.Second)
	defer cancel()
	stream, err := c.js.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := protocol.Decode[protocol.ReadyEvent](m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Pipeline != "events-ready" || ev.Partition != src.dir(0) || !ev.Window.From.Equal(src.hour(0)) || !ev.Window.To.Equal(src.hour(1)) || ev.Seq != 1 || ev.Source != "files" {
		t.Fatalf("ready event %+v, want partition %s", ev, src.dir(0))
	}

	runs := c.runsOf("after-ready", 1)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run after the ready partition: %s (%s)", st.State, st.Error)
	}
	if tr := st.Trigger; tr == nil || tr.After == nil || tr.After.Pipeline != "events-ready" || tr.After.Location != src.dir(0) || tr.Subject != subject {
		t.Fatalf("trigger context of the run after the partition: %+v", tr)
	}
	assertSameRows(t, in, out)
	hourlyHas := func(h int) {
		t.Helper()
		runs := c.runsOf("hourly", h+1)
		st := c.wait(runs[0].RunID)
		if st.State != protocol.RunCommitted || st.Window == nil || *st.Window != src.window(h) {
			t.Fatalf("hourly run after partition %d: %s, window %v (%s)", h, st.State, st.Window, st.Error)
		}
		if got, want := checksumOf(t, filepath.Join(hourly, files.WindowDir(src.window(h)))), checksumOf(t, src.dir(h)); got != want {
			t.Fatalf("hourly window %d holds %s, its partition %s", h, got, want)
		}
	}
	hourlyHas(0)

	// Still one event and one run after a check that started now:
	// partition 1 is open.
	c.readyChecked("events-ready")
	expectMessages(t, c.js, protocol.StreamEvents, subject, 1)
	c.runsOf("after-ready", 1)

	// The next partition is announced once its _SUCCESS lands, after the
	// first.
	src.done(1)
	expectMessages(t, c.js, protocol.StreamEvents, subject, 2)
	if m, err = stream.GetLastMsgForSubject(c.ctx(), subject); err != nil {
		t.Fatal(err)
	}
	if ev, err = protocol.Decode[protocol.ReadyEvent](m.Data); err != nil || ev.Partition != src.dir(1) || ev.Seq != 2 {
		t.Fatalf("second ready event %+v, %v", ev, err)
	}
	hourlyHas(1)
	st2, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: "events-ready"})
	if err != nil || len(st2.Pipelines) != 1 {
		t.Fatalf("status: %+v, %v", st2, err)
	}
	if ps := st2.Pipelines[0]; ps.Ready == nil || ps.Ready.Announced != 2 || ps.Ready.Last != src.dir(1) || ps.Ready.Pending != "" || ps.Watermark != src.hour(2).Format(time.RFC3339) {
		t.Fatalf("status of the readiness pipeline: %+v %+v", ps, ps.Ready)
	}

	// A readiness pipeline has no runs to start.
	if _, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: "events-ready"}); err == nil || !strings.Contains(err.Error(), "no runs to start") {
		t.Fatalf("run of a readiness pipeline: %v", err)
	}
}

// readyChecked waits until the leader has completed a check of the
// readiness pipeline that started after this call: whatever the source
// held when it was called, the leader has seen it (announced it, or
// found it incomplete). The count is the leader's since it leads; the
// test does not change leaders while it waits.
func (c *cluster) readyChecked(pipeline string) {
	c.t.Helper()
	checks := func() int64 {
		st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: pipeline})
		if err != nil || len(st.Pipelines) != 1 || st.Pipelines[0].Ready == nil {
			c.t.Fatalf("status of %s: %+v, %v", pipeline, st, err)
		}
		return st.Pipelines[0].Ready.Checks
	}
	// The check after the one that may be running now started after it.
	want := checks() + 2
	for deadline := time.Now().Add(60 * time.Second); checks() < want; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			c.t.Fatalf("the leader completed no check of %s in 60s", pipeline)
		}
	}
}
