package kafka_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

// A passthrough copies a topic record for record, partition to partition:
// keys, values, headers and timestamps as they are, in order, aborted
// records left out. A task written twice and one whose later attempt
// aborts count once, a repeated commit (also from a new sink, as a new
// leader) copies nothing more, a run aborted after its tasks wrote adds
// nothing, and the next run copies what is new since the watermark. Each
// commit moves the consumer group to the offsets it read.
func TestPassthroughKafkaToKafka(t *testing.T) {
	c := kafkatest.Start(t)
	const parts = 4
	c.CreateTopic(t, "src", parts)
	c.FillRecords(t, "src", parts, 0, 600)
	ctx := t.Context()
	srcCfg := sourceConfig(c, "src")
	srcCfg.RecordsPerTask = 50
	src := openSource(t, srcCfg)
	defer src.Close()
	sinkCfg := kafka.SinkConfig{Cluster: c.Config(), Topic: "dst", Partitions: parts, StagingPartitions: 2, ConsumerGroup: "mirror"}
	sink := openSink(t, sinkCfg)
	defer sink.Close()

	r, err := conformance.PlanUnits(ctx, src, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Plan.Partitions) < 2*parts {
		t.Fatalf("the plan has %d tasks, want several per partition", len(r.Plan.Partitions))
	}
	for i := range r.Plan.Partitions {
		out, err := conformance.WriteTask(ctx, src, sink, r, i, 1)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0: // retried: the second attempt's output is kept
			if out, err = conformance.WriteTask(ctx, src, sink, r, i, 2); err != nil {
				t.Fatal(err)
			}
		case 1: // a later attempt that dies midway stages nothing kept
			uw, err := sink.OpenUnits(ctx, connectors.TaskRef{RunID: r.RunID, TaskID: "t00001", Pipeline: "conformance", Attempt: 2})
			if err != nil {
				t.Fatal(err)
			}
			err = src.ReadUnits(ctx, r.Plan.Partitions[i], uw.WriteUnit)
			if err != nil || uw.Abort(ctx) != nil {
				t.Fatal(err)
			}
		}
		r.Outputs = append(r.Outputs, out)
	}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-1: %v", err)
	}
	if lag := c.Lag(t, "mirror", "src"); lag != 0 {
		t.Errorf("the consumer group lags %d records", lag)
	}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	other := openSink(t, sinkCfg)
	if err := r.Commit(ctx, other); err != nil {
		t.Fatalf("commit repeated by a new sink: %v", err)
	}
	other.Close()
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-1's commit was repeated: %v", err)
	}

	// Run 2 stages the new records and aborts: the target keeps run 1's.
	c.FillRecords(t, "src", parts, 600, 300)
	if lag, err := src.Lag(ctx, r.Watermark); err != nil || lag != c.Lag(t, "mirror", "src") || lag == 0 {
		t.Errorf("the source's lag past run-1's watermark is %d (%v), the consumer group's %d", lag, err, c.Lag(t, "mirror", "src"))
	}
	if lag, err := src.Lag(ctx, ""); err != nil || lag < 900 {
		t.Errorf("the source's lag before any run is %d (%v), want every offset", lag, err)
	}
	r2, err := conformance.PlanUnits(ctx, src, sink, "run-2", &r, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.WriteTasks(ctx, src, sink); err != nil {
		t.Fatal(err)
	}
	if err := sink.AbortUnits(ctx, "run-2"); err != nil {
		t.Fatal(err)
	}
	if c.Compare(t, "src", "dst") == nil {
		t.Fatal("after run-2 aborted the target holds the new records")
	}
	// Run 3, from run 1's watermark, copies them.
	if _, err := conformance.RunUnits(ctx, src, sink, "run-3", &r, connectors.Partitioning{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-3: %v", err)
	}
	if lag := c.Lag(t, "mirror", "src"); lag != 0 {
		t.Errorf("the consumer group lags %d records", lag)
	}
}

// A passthrough spec takes only the fields that mean something for a copy
// of records.
func TestPassthroughConfig(t *testing.T) {
	for _, tc := range []struct {
		validate func(json.RawMessage) error
		config   string
		field    string
	}{
		{kafka.ValidatePassthroughSource, `{"brokers":["b:9092"],"topic":"t","records_per_task":10}`, ""},
		{kafka.ValidatePassthroughSource, `{"brokers":["b:9092"],"topic":"t","format":"record"}`, "format"},
		{kafka.ValidatePassthroughSource, `{"brokers":["b:9092"],"topic":"t","metadata":true}`, "metadata"},
		{kafka.ValidatePassthroughSource, `{"brokers":["b:9092"],"topic":"t","columns":[{"name":"id","type":"int64"}]}`, "columns"},
		{kafka.ValidatePassthroughSink, `{"brokers":["b:9092"],"topic":"t","partitions":3,"consumer_group":"g"}`, ""},
		{kafka.ValidatePassthroughSink, `{"brokers":["b:9092"],"topic":"t","key":["id"]}`, "key"},
	} {
		err := tc.validate(json.RawMessage(tc.config))
		var fe *connectors.FieldError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.config, err)
		case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
			t.Errorf("%s: %v, want an error naming %s", tc.config, err, tc.field)
		}
	}
}

// A passthrough into a target with fewer partitions than the source fails
// its commit, naming the partition, and copies nothing.
func TestPassthroughFewerPartitions(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "src", 3)
	c.FillRecords(t, "src", 3, 0, 60)
	src := openSource(t, sourceConfig(c, "src"))
	defer src.Close()
	sink := openSink(t, kafka.SinkConfig{Cluster: c.Config(), Topic: "dst", Partitions: 2})
	defer sink.Close()
	_, err := conformance.RunUnits(t.Context(), src, sink, "run-1", nil, connectors.Partitioning{})
	if err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("commit into 2 partitions of 3: %v, want a permanent error", err)
	}
	if n := len(c.Records(t, "dst", true)); n != 0 {
		t.Errorf("the target holds %d records", n)
	}
}
