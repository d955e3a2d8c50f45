package kafka_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

func sinkConfig(c *kafkatest.Cluster, topic string) kafka.SinkConfig {
	return kafka.SinkConfig{Cluster: c.Config(), Topic: topic, Partitions: 4, StagingPartitions: 2}
}

func openSink(t *testing.T, cfg kafka.SinkConfig) *kafka.Sink {
	t.Helper()
	s, err := kafka.NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonlBatches() []connectors.Batch {
	var bs []connectors.Batch
	id := 0
	for n := range 3 {
		var raw []byte
		for range 10 + n*7 {
			raw = fmt.Appendf(raw, `{"id":%d,"v":"x%d","n":null}`+"\n", id, id)
			id++
		}
		bs = append(bs, connectors.Batch{Raw: raw, Format: connectors.FormatJSONL, Rows: int64(10 + n*7), Position: fmt.Sprintf("in:%d", n)})
	}
	return bs
}

// jsonlWant is the rows of jsonlBatches, batch by batch, from the values
// the test writes.
func jsonlWant() []conformance.Table {
	var ts []conformance.Table
	id := 0
	for n := range 3 {
		t := conformance.Table{Columns: []string{"id", "v", "n"}}
		for range 10 + n*7 {
			t.Rows = append(t.Rows, []string{fmt.Sprint(id), fmt.Sprintf("x%d", id), conformance.Null})
			id++
		}
		ts = append(ts, t)
	}
	return ts
}

// readValues decodes the values read_committed consumers see in topic,
// each a JSON object.
func readValues(c *kafkatest.Cluster, topic string) func(*testing.T) (conformance.Table, error) {
	return func(t *testing.T) (conformance.Table, error) {
		var lines []byte
		for _, r := range c.Records(t, topic, true) {
			lines = append(append(lines, r.Value...), '\n')
		}
		return conformance.JSONLRows(lines)
	}
}

// readTopic returns the checksum of the values read_committed consumers
// see in topic.
func readTopic(c *kafkatest.Cluster, topic string) func(*testing.T, connectors.Sink) (connectors.Checksum, error) {
	return func(t *testing.T, _ connectors.Sink) (connectors.Checksum, error) {
		var sum connectors.Checksum
		for _, r := range c.Records(t, topic, true) {
			sum.Add(r.Value)
		}
		return sum, nil
	}
}

// The sink appends each run once: a retried task counts once, a repeated
// commit (also from a new sink, as a new leader) copies nothing more, a
// failed run adds nothing.
func TestAppendConformance(t *testing.T) {
	c := kafkatest.Start(t)
	for _, key := range [][]string{nil, {"id"}} {
		topic := fmt.Sprintf("out%d", len(key))
		cfg := sinkConfig(c, topic)
		cfg.Key = key
		conformance.TestAppend(t, conformance.SinkHarness{
			Open:          func(t *testing.T) connectors.Sink { return openSink(t, cfg) },
			Batches:       jsonlBatches,
			Want:          jsonlWant,
			ReadBack:      readValues(c, topic),
			ReadCommitted: readTopic(c, topic),
		})
	}
}

// stage writes batches as one task attempt and closes it.
func stage(t *testing.T, s connectors.Sink, run, task string, attempt int, bs []connectors.Batch) connectors.TaskOutput {
	t.Helper()
	w, err := s.OpenTask(t.Context(), connectors.TaskRef{RunID: run, TaskID: task, Pipeline: "p", Attempt: attempt})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if err := w.Write(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	out, err := w.Close(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A leader killed in the middle of a commit leaves a transaction open
// with some of the run's records in it. The next leader's commit fences
// it: read_committed consumers never see those records, and see the run
// exactly once. A run's records keep their keys on one partition each, in
// the order the task wrote them.
func TestCommitAfterLeaderKilledMidTransaction(t *testing.T) {
	c := kafkatest.Start(t)
	cfg := sinkConfig(c, "out")
	cfg.Key = []string{"k"}
	s := openSink(t, cfg)
	defer s.Close()
	var rows []byte
	for i := range 300 {
		rows = fmt.Appendf(rows, `{"k":"key%d","seq":%d}`+"\n", i%5, i)
	}
	out1 := stage(t, s, "p-000001", "t00000", 1, []connectors.Batch{{Raw: rows, Format: connectors.FormatJSONL, Rows: 300}})

	// The killed leader: the pipeline's transactional producer with an
	// open transaction holding part of the run.
	dead := c.Client(t, kgo.TransactionalID("sluice.p"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var half []*kgo.Record
	for i := range 100 {
		half = append(half, &kgo.Record{Topic: "out", Partition: int32(i % 4), Value: fmt.Appendf(nil, `{"k":"key%d","seq":%d}`, i%5, i)})
	}
	c.Produce(t, dead, half...)

	req := connectors.CommitRequest{RunID: "p-000001", Pipeline: "p", Version: 1, Mode: connectors.ModeAppend, Tasks: []connectors.TaskOutput{out1}}
	if _, err := s.Commit(t.Context(), req); err != nil {
		t.Fatalf("commit after the killed leader: %v", err)
	}
	// The killed leader's producer, still alive (a zombie), cannot commit.
	if err := dead.EndTransaction(context.Background(), kgo.TryCommit); err == nil {
		t.Errorf("the fenced producer committed its transaction")
	}
	again := openSink(t, cfg)
	defer again.Close()
	if _, err := again.Commit(t.Context(), req); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	got := c.Records(t, "out", true)
	if len(got) != 300 {
		t.Fatalf("read_committed sees %d records, want the run's 300 once", len(got))
	}
	last := map[string]int{}
	part := map[string]int32{}
	for _, r := range got {
		var k string
		var seq int
		if _, err := fmt.Sscanf(string(r.Value), `{"k":"%4s","seq":%d}`, &k, &seq); err != nil {
			t.Fatalf("record %q: %v", r.Value, err)
		}
		if string(r.Key) != k {
			t.Errorf("record %q has key %q", r.Value, r.Key)
		}
		if p, ok := part[k]; ok && p != r.Partition {
			t.Errorf("key %s is on partitions %d and %d", k, p, r.Partition)
		}
		part[k] = r.Partition
		if prev, ok := last[k]; ok && seq <= prev {
			t.Errorf("key %s: seq %d after %d", k, seq, prev)
		}
		last[k] = seq
		for _, h := range r.Headers {
			t.Errorf("record %q carries header %s: staging headers must not reach the topic", r.Value, h.Key)
		}
	}
}

// A task attempt that staged records and died, and one that the run did
// not keep, leave records in the staging topic that no commit copies.
func TestCommitCopiesOnlyKeptAttempts(t *testing.T) {
	c := kafkatest.Start(t)
	s := openSink(t, sinkConfig(c, "out"))
	defer s.Close()
	bs := jsonlBatches()
	// Attempt 1 staged everything, then its worker died before reporting.
	stage(t, s, "p-000001", "t00000", 1, bs)
	// Attempt 2 of the same task is the one the run keeps; attempt 3
	// ran at the same time (a redelivery) and is not kept.
	kept := stage(t, s, "p-000001", "t00000", 2, jsonlBatches())
	stage(t, s, "p-000001", "t00000", 3, jsonlBatches())
	other := stage(t, s, "p-000001", "t00001", 1, jsonlBatches()[:1])
	if _, err := s.Commit(t.Context(), connectors.CommitRequest{RunID: "p-000001", Pipeline: "p", Mode: connectors.ModeAppend,
		Tasks: []connectors.TaskOutput{kept, other}}); err != nil {
		t.Fatal(err)
	}
	var want connectors.Checksum
	want.Merge(kept.Checksum)
	want.Merge(other.Checksum)
	got, _ := readTopic(c, "out")(t, s)
	if got != want {
		t.Errorf("topic holds %d rows checksum %s, want the kept attempts' %d rows checksum %s", got.Rows, got, want.Rows, want)
	}
}
