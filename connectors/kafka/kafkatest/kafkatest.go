// Package kafkatest runs an in-process Kafka cluster (franz-go's kfake)
// for tests and benchmarks, with helpers to create topics, produce
// records and read a topic back.
package kafkatest

import (
	"context"
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
