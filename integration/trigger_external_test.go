package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// s3Event is an S3 event notification as S3 (or MinIO) sends it, about
// one object.
func s3Event(key, etag string) []byte {
	return fmt.Appendf(nil, `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-11-25T10:00:00.000Z","eventName":"ObjectCreated:Put",`+
		`"s3":{"bucket":{"name":"landing"},"object":{"key":%q,"size":1200,"eTag":%q}}}]}`, key, etag)
}

// events returns the trigger event counts of pipeline.
func (c *cluster) events(pipeline string) protocol.TriggerEvents {
	c.t.Helper()
	st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: pipeline})
	if err != nil || len(st.Pipelines) != 1 {
		c.t.Fatalf("status of %s: %v", pipeline, err)
	}
	if e := st.Pipelines[0].Events; e != nil {
		return *e
	}
	return protocol.TriggerEvents{}
}

// waitEvents waits until cond holds of pipeline's event counts.
func (c *cluster) waitEvents(pipeline string, what string, cond func(protocol.TriggerEvents) bool) protocol.TriggerEvents {
	c.t.Helper()
	var e protocol.TriggerEvents
	waitFor(c.t, 30*time.Second, what, func() bool { e = c.events(pipeline); return cond(e) })
	return e
}

// A pipeline triggered by a foreign subject (S3 event notifications
// relayed to NATS): an event naming a file loads exactly that file; the
// same event again starts no second run; an event the filter rejects is
// counted and ignored; an event naming a file outside the source's path,
// and a payload that is not JSON, are dead-lettered with the reason.
func TestTriggerForeignSubjectLoadsTheFile(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{workers: 1})
	in := t.TempDir()
	writeFile(t, in, "events/a.jsonl", "{\"id\":1}\n{\"id\":2}\n")
	writeFile(t, in, "events/b.jsonl", "{\"id\":3}\n{\"id\":4}\n{\"id\":5}\n")
	out := t.TempDir()
	c.applyYAML("uploads", fmt.Sprintf(`name: uploads
pattern: full_load
source: {kind: files, path: %s, format: jsonl}
sink: {kind: files, path: %s, format: jsonl}
trigger:
  subject: s3.events.landing
  filter:
    Records.0.eventName: {prefix: "ObjectCreated:"}
    Records.0.s3.object.key: {prefix: "incoming/", suffix: .jsonl}
  params:
    file: {field: Records.0.s3.object.key, regex: "^incoming/(.*)$"}
  id: Records.0.s3.object.eTag
  event_time: Records.0.eventTime
`, in, out))
	c.waitEvents("uploads", "the trigger's reader", func(e protocol.TriggerEvents) bool { return e.Source == "subject s3.events.landing" })
	nc := c.connect("s3-relay")
	pub := func(data []byte) {
		t.Helper()
		if err := nc.Publish("s3.events.landing", data); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
	}
	waitFor(t, 10*time.Second, "the stream capturing s3.events.landing", func() bool {
		name, err := c.js.StreamNameBySubject(c.ctx(), "s3.events.landing")
		return err == nil && name == protocol.StreamExternal
	})
	pub(s3Event("incoming/events/b.jsonl", "etag-b"))
	runs := c.runsOf("uploads", 1)
	st := c.wait(runs[0].RunID)
	if st.State != protocol.RunCommitted || st.Rows != 3 {
		t.Fatalf("run %s: %s (%s), %d rows; want the 3 rows of b.jsonl", st.RunID, st.State, st.Error, st.Rows)
	}
	cur, _ := files.Current(out)
	got, err := files.ReadChecksum(cur, "jsonl")
	want, _ := files.ReadChecksum(filepath.Join(in, "events/b.jsonl"), "jsonl")
	if err != nil || got != want {
		t.Fatalf("dataset: %d rows checksum %s (%v), want b.jsonl's %d rows %s", got.Rows, got, err, want.Rows, want)
	}
	if tr := st.Trigger; tr == nil || tr.Subject != "s3.events.landing" || !tr.EventTime.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("run's trigger context %+v", st.Trigger)
	}
	pub(s3Event("incoming/events/b.jsonl", "etag-b"))    // the same event again
	pub(s3Event("incoming/events/b.csv", "etag-c"))      // filtered out
	pub(s3Event("incoming/../../etc/x.jsonl", "etag-x")) // outside the source's path
	pub([]byte("not json"))
	e := c.waitEvents("uploads", "two dead letters", func(e protocol.TriggerEvents) bool { return e.DeadLettered == 2 && e.Filtered == 1 })
	if e.Runs != 2 {
		t.Errorf("events %+v: want 2 events that started (or found) a run", e)
	}
	c.runsOf("uploads", 1)
	dl, err := coordinator.ListDLQ(c.ctx(), c.js, 0)
	if err != nil || len(dl) != 2 {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	reasons := dl[0].Reason + " | " + dl[1].Reason
	if !strings.Contains(reasons, "params.file") || !strings.Contains(reasons, "outside the source's path") || !strings.Contains(reasons, "payload is not JSON") {
		t.Errorf("dead letter reasons: %s", reasons)
	}
	if dl[0].Pipeline != "uploads" || dl[0].Header.Get(protocol.HeaderOrigSubject) != "s3.events.landing" {
		t.Errorf("dead letter %+v", dl[0])
	}
}

// A pipeline triggered by a Kafka topic's records, and by a trigger
// naming a time partition of an incremental pipeline: the run loads that
// partition's window.
func TestTriggerKafkaTopicStartsRunOfPartition(t *testing.T) {
	t.Parallel()
	k := kafkatest.Start(t)
	k.CreateTopic(t, "ready", 1)
	c := newCluster(t, clusterConfig{workers: 1})
	in := t.TempDir()
	writeFile(t, in, "date=2026-11-25/hour=07/a.jsonl", "{\"h\":7}\n")
	writeFile(t, in, "date=2026-11-25/hour=07/_SUCCESS", "")
	writeFile(t, in, "date=2026-11-25/hour=08/a.jsonl", "{\"h\":8}\n{\"h\":8}\n")
	writeFile(t, in, "date=2026-11-25/hour=08/_SUCCESS", "")
	out := t.TempDir()
	c.applyYAML("hourly", fmt.Sprintf(`name: hourly
pattern: incremental
source: {kind: files, path: %s, format: jsonl, layout: "date={date}/hour={hour}"}
sink: {kind: files, path: %s, format: jsonl}
incremental: {window: 1h, start: 2026-11-25T00:00:00Z}
trigger:
  kafka: {brokers: [%s], topic: ready, start: earliest}
  filter: {status: done}
  params: {partition: dir}
`, in, out, k.Brokers[0]))
	cl := k.Client(t)
	k.Produce(t, cl, &kgo.Record{Topic: "ready", Value: []byte(`{"status":"running","dir":"date=2026-11-25/hour=07"}`)},
		&kgo.Record{Topic: "ready", Value: []byte(`{"status":"done","dir":"date=2026-11-25/hour=08"}`)})
	runs := c.runsOf("hourly", 1)
	st := c.wait(runs[0].RunID)
	w := protocol.Window{From: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)}
	if st.State != protocol.RunCommitted || st.Rows != 2 || st.Window == nil || *st.Window != w {
		t.Fatalf("run %s: %s (%s), %d rows, window %v; want hour 08's 2 rows", st.RunID, st.State, st.Error, st.Rows, st.Window)
	}
	e := c.waitEvents("hourly", "the filtered event", func(e protocol.TriggerEvents) bool { return e.Filtered == 1 })
	if e.Runs != 1 || !strings.HasPrefix(e.Source, "kafka") {
		t.Errorf("events %+v", e)
	}
	dirs, _ := filepath.Glob(filepath.Join(out, "window=*"))
	if len(dirs) != 1 {
		t.Errorf("window directories %v, want hour 08's", dirs)
	}
}

// writeFile writes data to dir/rel, making its directories.
func writeFile(t *testing.T, dir, rel, data string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
