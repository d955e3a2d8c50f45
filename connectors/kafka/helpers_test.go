package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

// fill produces n JSON records {"id":i,...} round robin over the
// partitions of topic, keyed by id, in batches; the records of every
// fourth batch go through a transaction that is aborted and every third
// through one that commits, so the topic holds aborted records and
// transaction markers between the committed ones. It returns the
// checksum of the committed values.
func fill(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, n int) connectors.Checksum {
	t.Helper()
	plain := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	txn := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("fill-"+topic))
	var sum connectors.Checksum
	const batch = 50
	for b := 0; b*batch < n; b++ {
		var recs []*kgo.Record
		for i := b * batch; i < min(n, (b+1)*batch); i++ {
			v := fmt.Sprintf(`{"id":%d,"name":"n%d","x":%d.5}`, i, i, i%7)
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Key: []byte(fmt.Sprint(i)), Value: []byte(v),
				Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}})
		}
		switch b % 4 {
		case 3: // aborted: never seen
			inTxn(t, txn, recs, kgo.TryAbort)
		case 1: // committed in a transaction
			inTxn(t, txn, recs, kgo.TryCommit)
		default:
			c.Produce(t, plain, recs...)
		}
		if b%4 != 3 {
			for _, r := range recs {
				sum.Add(r.Value)
			}
		}
	}
	return sum
}

// inTxn produces recs in a transaction of txn and ends it with end.
func inTxn(t *testing.T, txn *kgo.Client, recs []*kgo.Record, end kgo.TransactionEndTry) {
	t.Helper()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(context.Background(), end); err != nil {
		t.Fatal(err)
	}
}

func sourceConfig(c *kafkatest.Cluster, topic string) kafka.SourceConfig {
	return kafka.SourceConfig{Cluster: c.Config(), Topic: topic}
}

func openSource(t *testing.T, cfg kafka.SourceConfig) *kafka.Source {
	t.Helper()
	s, err := kafka.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readPlan reads every partition of plan and returns the checksum of its
// rows.
func readPlan(t *testing.T, src connectors.Source, plan connectors.Plan) connectors.Checksum {
	t.Helper()
	var sum connectors.Checksum
	for _, p := range plan.Partitions {
		err := src.Read(t.Context(), p, func(_ context.Context, b connectors.Batch) error {
			c, err := conformance.BatchChecksum(b)
			sum.Merge(c)
			return err
		})
		if err != nil {
			t.Fatalf("read %s: %v", p.Key, err)
		}
	}
	return sum
}

func plan(t *testing.T, src connectors.Source, req connectors.PlanRequest) connectors.Plan {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := src.Plan(ctx, req)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}
