package kafka_test

import (
	"context"
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
// records left out, one task per partition. A task written twice, one
// whose later attempt aborts, and one whose attempt is killed in the
// middle of a transaction (its earlier transactions committed) and then
// retried, each hold their records once, and report them all; the commit
// writes nothing more (also from a new sink, as a new leader). A run
// whose tasks wrote and that is then aborted leaves what they committed,
// and the next run from the previous watermark copies nothing twice. The
// consumer group's offsets follow the transactions.
func TestPassthroughKafkaToKafka(t *testing.T) {
	c := kafkatest.Start(t)
	const parts = 4
	c.CreateTopic(t, "src", parts)
	c.FillRecords(t, "src", parts, 0, 600)
	ctx := t.Context()
	srcCfg := sourceConfig(c, "src")
	srcCfg.RecordsPerTask = 40 // records a transaction
	src := openSource(t, srcCfg)
	defer src.Close()
	sinkCfg := kafka.SinkConfig{Cluster: c.Config(), Topic: "dst", Partitions: parts, ConsumerGroup: "mirror"}
	sink := openSink(t, sinkCfg)
	defer sink.Close()
	committed := map[int32]int64{}
	var all connectors.Checksum
	for _, r := range c.Records(t, "src", true) {
		committed[r.Partition]++
		all.Add(r.Value)
	}

	r, err := conformance.PlanUnits(ctx, src, sink, "run-1", nil, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Plan.Partitions) != parts {
		t.Fatalf("the plan has %d tasks, want one per partition (%d)", len(r.Plan.Partitions), parts)
	}
	var sum connectors.Checksum
	for i := range r.Plan.Partitions {
		out, err := conformance.WriteTask(ctx, src, sink, r, i, 1)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0: // retried after it closed: the second attempt copies nothing, reports the same
			again, err := conformance.WriteTask(ctx, src, sink, r, i, 2)
			if err != nil {
				t.Fatal(err)
			}
			if again.Rows != out.Rows || again.Checksum != out.Checksum {
				t.Errorf("task 0's second attempt reports %d rows %s, its first %d %s", again.Rows, again.Checksum, out.Rows, out.Checksum)
			}
		case 1: // a later attempt that dies midway writes nothing more
			uw, err := sink.OpenUnits(ctx, connectors.TaskRef{RunID: r.RunID, TaskID: "t00001", Pipeline: "conformance", Attempt: 2})
			if err != nil {
				t.Fatal(err)
			}
			err = src.ReadUnits(ctx, r.Plan.Partitions[i], uw.WriteUnit)
			if err != nil || uw.Abort(ctx) != nil {
				t.Fatal(err)
			}
		}
		sum.Merge(out.Checksum)
		r.Outputs = append(r.Outputs, out)
	}
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-1: %v", err)
	}
	if sum != all {
		t.Errorf("the tasks report %d rows %s, the source holds %d %s", sum.Rows, sum, all.Rows, all)
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

	// Run 2: partition 1's task is killed in its third transaction, then
	// retried; the other tasks write; the run is then aborted.
	c.FillRecords(t, "src", parts, 600, 600)
	if lag, err := src.Lag(ctx, r.Watermark); err != nil || lag != c.Lag(t, "mirror", "src") || lag == 0 {
		t.Errorf("the source's lag past run-1's watermark is %d (%v), the consumer group's %d", lag, err, c.Lag(t, "mirror", "src"))
	}
	r2, err := conformance.PlanUnits(ctx, src, sink, "run-2", &r, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	before := countPartition(t, c, "dst", 1)
	killed, err := sink.OpenUnits(ctx, connectors.TaskRef{RunID: r2.RunID, TaskID: "t00001", Pipeline: "conformance", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = src.ReadUnits(ctx, r2.Plan.Partitions[1], func(ctx context.Context, u connectors.Unit) error {
		if err := killed.WriteUnit(ctx, kafka.FirstRecords(u, 100)); err != nil {
			t.Fatal(err)
		}
		return errKilled
	})
	if !errors.Is(err, errKilled) {
		t.Fatal(err)
	}
	// Neither closed nor aborted: its third transaction is left open.
	if got := countPartition(t, c, "dst", 1); got != before+80 {
		t.Errorf("partition 1 of the target holds %d records after the killed attempt, want %d + its 2 committed transactions of 40", got, before)
	}
	if err := r2.WriteTasks(ctx, src, sink); err != nil {
		t.Fatal(err)
	}
	var sum2 connectors.Checksum
	for _, o := range r2.Outputs {
		sum2.Merge(o.Checksum)
	}
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-2's tasks: %v", err)
	}
	if sum2.Rows != all.Rows {
		t.Errorf("run-2's tasks report %d rows, the source gained %d", sum2.Rows, all.Rows)
	}
	if err := sink.AbortUnits(ctx, "run-2"); err != nil {
		t.Fatal(err)
	}
	// Run 3, from run 1's watermark, finds everything copied.
	r3, err := conformance.RunUnits(ctx, src, sink, "run-3", &r, connectors.Partitioning{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Compare(t, "src", "dst"); err != nil {
		t.Fatalf("after run-3: %v", err)
	}
	for _, o := range r3.Outputs {
		if o.Rows != 0 {
			t.Errorf("run-3's task copied %d records again", o.Rows)
		}
	}
	if lag := c.Lag(t, "mirror", "src"); lag != 0 {
		t.Errorf("the consumer group lags %d records", lag)
	}
}

var errKilled = errors.New("killed")

// countPartition counts the committed records of partition p of topic.
func countPartition(t *testing.T, c *kafkatest.Cluster, topic string, p int32) int {
	n := 0
	for _, r := range c.Records(t, topic, true) {
		if r.Partition == p {
			n++
		}
	}
	return n
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
