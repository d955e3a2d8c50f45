package kafka_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

// fillRecords produces n records to topic, round robin over its
// partitions: keys (some null), values (some null, some empty), headers
// (none, several, repeated names, null values, and the names the sink
// stages with), and timestamps of their own that do not grow with the
// offset. Every fifth batch goes through a transaction that aborts.
func fillRecords(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, from, n int) {
	t.Helper()
	plain := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	txn := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("fill-"+topic))
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const batch = 40
	for b := from / batch; b*batch < from+n; b++ {
		var recs []*kgo.Record
		for i := max(from, b*batch); i < min(from+n, (b+1)*batch); i++ {
			r := &kgo.Record{Topic: topic, Partition: int32(i) % partitions,
				Timestamp: base.Add(time.Duration((i*7919)%1000) * time.Second)}
			if i%9 != 0 {
				r.Key = fmt.Appendf(nil, "k%d", i)
			}
			switch i % 13 {
			case 0: // null value: a tombstone
			case 1:
				r.Value = []byte{}
			default:
				r.Value = fmt.Appendf(nil, `{"i":%d,"bin":"%x"}`, i, []byte{byte(i), 0, 0xff})
			}
			switch i % 4 {
			case 1:
				r.Headers = []kgo.RecordHeader{{Key: "h", Value: fmt.Append(nil, i)}}
			case 2:
				r.Headers = []kgo.RecordHeader{{Key: "dup", Value: []byte("a")}, {Key: "dup", Value: []byte("b")}, {Key: "nil"}}
			case 3:
				r.Headers = []kgo.RecordHeader{{Key: "sluice-partition", Value: []byte("99")}, {Key: "sluice-attempt", Value: []byte("x")}}
			}
			recs = append(recs, r)
		}
		if b%5 == 4 {
			inTxn(t, txn, recs, kgo.TryAbort)
			continue
		}
		c.Produce(t, plain, recs...)
	}
}

// samePartitions reports how the committed records of topic dst differ
// from those of src: partition by partition, the same records in the same
// order, each with its key, value, headers and timestamp.
func samePartitions(t *testing.T, c *kafkatest.Cluster, src, dst string) error {
	t.Helper()
	byPart := func(topic string) map[int32][]*kgo.Record {
		out := map[int32][]*kgo.Record{}
		for _, r := range c.Records(t, topic, true) {
			out[r.Partition] = append(out[r.Partition], r)
		}
		return out
	}
	want, got := byPart(src), byPart(dst)
	for p, ws := range want {
		gs := got[p]
		if len(gs) != len(ws) {
			return fmt.Errorf("partition %d: %d records in %s, %d in %s", p, len(ws), src, len(gs), dst)
		}
		for i, w := range ws {
			g := gs[i]
			if !bytes.Equal(g.Key, w.Key) || (g.Key == nil) != (w.Key == nil) ||
				!bytes.Equal(g.Value, w.Value) || (g.Value == nil) != (w.Value == nil) ||
				!g.Timestamp.Equal(w.Timestamp) || !slices.EqualFunc(g.Headers, w.Headers, func(a, b kgo.RecordHeader) bool {
				return a.Key == b.Key && bytes.Equal(a.Value, b.Value) && (a.Value == nil) == (b.Value == nil)
			}) {
				return fmt.Errorf("partition %d record %d: %s has %q=%q %v %v, %s has %q=%q %v %v", p, i,
					src, w.Key, w.Value, w.Headers, w.Timestamp, dst, g.Key, g.Value, g.Headers, g.Timestamp)
			}
		}
	}
	for p, gs := range got {
		if _, ok := want[p]; !ok && len(gs) > 0 {
			return fmt.Errorf("partition %d of %s holds %d records, %s has no such partition", p, dst, len(gs), src)
		}
	}
	return nil
}

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
	fillRecords(t, c, "src", parts, 0, 600)
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
	if err := samePartitions(t, c, "src", "dst"); err != nil {
		t.Fatalf("after run-1: %v", err)
	}
	checkGroup(t, c, "mirror", "src")
	if err := r.Commit(ctx, sink); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	other := openSink(t, sinkCfg)
	if err := r.Commit(ctx, other); err != nil {
		t.Fatalf("commit repeated by a new sink: %v", err)
	}
	other.Close()
	if err := samePartitions(t, c, "src", "dst"); err != nil {
		t.Fatalf("after run-1's commit was repeated: %v", err)
	}

	// Run 2 stages the new records and aborts: the target keeps run 1's.
	fillRecords(t, c, "src", parts, 600, 300)
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
	if samePartitions(t, c, "src", "dst") == nil {
		t.Fatal("after run-2 aborted the target holds the new records")
	}
	// Run 3, from run 1's watermark, copies them.
	if _, err := conformance.RunUnits(ctx, src, sink, "run-3", &r, connectors.Partitioning{}); err != nil {
		t.Fatal(err)
	}
	if err := samePartitions(t, c, "src", "dst"); err != nil {
		t.Fatalf("after run-3: %v", err)
	}
	checkGroup(t, c, "mirror", "src")
}

// checkGroup checks that group's committed offsets of topic are at the
// end of each partition.
func checkGroup(t *testing.T, c *kafkatest.Cluster, group, topic string) {
	t.Helper()
	adm := kadm.NewClient(c.Client(t))
	lag, err := adm.Lag(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	gl := lag[group]
	if gl.Error() != nil {
		t.Fatal(gl.Error())
	}
	n := 0
	for _, l := range gl.Lag[topic] {
		n++
		if l.Err != nil || l.Lag != 0 {
			t.Errorf("group %s lags %d on %s/%d (%v)", group, l.Lag, topic, l.Partition, l.Err)
		}
	}
	if n == 0 {
		t.Errorf("group %s has no offsets of %s", group, topic)
	}
}

// A passthrough into a target with fewer partitions than the source fails
// its commit, naming the partition, and copies nothing.
func TestPassthroughFewerPartitions(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "src", 3)
	fillRecords(t, c, "src", 3, 0, 60)
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
