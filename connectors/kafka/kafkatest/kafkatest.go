// Package kafkatest runs an in-process Kafka cluster (franz-go's kfake)
// for tests and benchmarks, with helpers to create topics, produce
// records and read a topic back.
package kafkatest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicehq/sluice/connectors/kafka"
)

// Cluster is an in-process Kafka cluster on loopback.
type Cluster struct {
	*kfake.Cluster
	// Brokers are its seed brokers, host:port.
	Brokers []string
}

// Start starts a cluster of three brokers (opts may change that) that
// stops when the test ends.
func Start(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Cluster: c, Brokers: c.ListenAddrs()}
}

// Config returns the connector's cluster settings that reach c.
func (c *Cluster) Config() kafka.Cluster { return kafka.Cluster{Brokers: c.Brokers} }

// Client returns a client of c, closed when the test ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic with the given number of partitions.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32) {
	t.Helper()
	c.CreateTopicWith(t, c.Client(t), topic, partitions)
}

// CreateTopicWith creates topic with the given number of partitions
// through cl.
func (c *Cluster) CreateTopicWith(t testing.TB, cl *kgo.Client, topic string, partitions int32) {
	t.Helper()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// Produce produces recs (each naming its topic, and its partition when
// opts make the client partition manually) and waits for them.
func (c *Cluster) Produce(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(recs), err)
	}
}

// Records reads every record of topic that read_committed consumers see
// (committed false: every record written), partition by partition.
func (c *Cluster) Records(t testing.TB, topic string, committed bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recs, err := kafka.ReadAll(ctx, c.Config(), topic, committed)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return recs
}

// SASL returns the client option that authenticates with mechanism
// (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512).
func SASL(mechanism, user, pass string) kgo.Opt {
	switch mechanism {
	case "PLAIN":
		return kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())
	case "SCRAM-SHA-512":
		return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())
	}
	return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
}

// FillRecords produces n records to topic, round robin over its
// partitions: keys (some null), values (some null, some empty), headers
// (none, several, repeated names, null values, and the names the sink
// stages with), and timestamps (ms) of their own that do not grow with the
// offset. Every fifth batch goes through a transaction that aborts.
// from is the number of the first record, so that calls add new ones.
func (c *Cluster) FillRecords(t testing.TB, topic string, partitions int32, from, n int) {
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
			ctx := context.Background()
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
				t.Fatal(err)
			}
			continue
		}
		c.Produce(t, plain, recs...)
	}
}

// Compare reports how the committed records of topic dst differ
// from those of src: partition by partition, the same records in the same
// order, each with its key, value, headers and timestamp.
func (c *Cluster) Compare(t testing.TB, src, dst string) error {
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

// Lag returns how many records of topic group has yet to consume, in
// all its partitions, as a Kafka tool reports it; a group that never
// committed an offset of topic fails the test.
func (c *Cluster) Lag(t testing.TB, group, topic string) int64 {
	t.Helper()
	lags, err := kadm.NewClient(c.Client(t)).Lag(t.Context(), group)
	if err != nil {
		t.Fatalf("lag of %s: %v", group, err)
	}
	gl := lags[group]
	if err := gl.Error(); err != nil {
		t.Fatalf("lag of %s: %v", group, err)
	}
	var n int64
	for _, l := range gl.Lag[topic] {
		if l.Err != nil {
			t.Fatalf("lag of %s on %s/%d: %v", group, topic, l.Partition, l.Err)
		}
		if l.Commit.At < 0 {
			t.Fatalf("group %s has no offset of %s/%d", group, topic, l.Partition)
		}
		n += l.Lag
	}
	if len(gl.Lag[topic]) == 0 {
		t.Fatalf("group %s has no offsets of %s", group, topic)
	}
	return n
}
