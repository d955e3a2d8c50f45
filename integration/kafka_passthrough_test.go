package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/protocol"
)

// A topic mirrored by a passthrough through the cluster, a worker killed
// in the middle of a task: the target topic holds the source's records
// partition for partition, each once, in order, with its key, value,
// headers and timestamp; the consumer group the sink names has no lag,
// nor does sluice status, and both show the same lag once records arrive;
// a second run copies only those.
func TestKafkaPassthroughThroughCluster(t *testing.T) {
	t.Parallel()
	k := kafkatest.Start(t)
	const parts = 4
	k.CreateTopic(t, "orders", parts)
	k.FillRecords(t, "orders", parts, 0, 40000)
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 2 * time.Second})
	c.applyYAML("mirror", fmt.Sprintf("name: mirror\npattern: passthrough\nsource: {kind: kafka, brokers: [%s], topic: orders, records_per_task: 2000}\n"+
		"sink: {kind: kafka, brokers: [%s], topic: orders-copy, partitions: %d, consumer_group: sluice.mirror}\n", k.Brokers[0], k.Brokers[0], parts))
	res := c.run("mirror")
	c.killWhenBusy(0)
	st := c.wait(res.RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	c.assertRedelivered(res.RunID)
	if err := k.Compare(t, "orders", "orders-copy"); err != nil {
		t.Fatal(err)
	}
	if lag := k.Lag(t, "sluice.mirror", "orders"); lag != 0 {
		t.Errorf("the group lags %d records behind the source", lag)
	}
	if lag := c.statusLag("mirror"); lag != 0 {
		t.Errorf("sluice status shows a lag of %d records after the run", lag)
	}

	k.FillRecords(t, "orders", parts, 40000, 5000)
	if lag := k.Lag(t, "sluice.mirror", "orders"); lag == 0 {
		t.Errorf("the group shows no lag with new records in the source")
	}
	// Both count offsets, the aborted records' and the markers' too.
	if want, got := k.Lag(t, "sluice.mirror", "orders"), c.statusLag("mirror"); got != want {
		t.Errorf("sluice status shows a lag of %d records, the consumer group %d", got, want)
	}
	st2 := c.wait(c.run("mirror").RunID)
	if st2.State != protocol.RunCommitted {
		t.Fatalf("second run %s: %s (%s)", st2.RunID, st2.State, st2.Error)
	}
	if err := k.Compare(t, "orders", "orders-copy"); err != nil {
		t.Fatalf("after the second run: %v", err)
	}
	if lag := k.Lag(t, "sluice.mirror", "orders"); lag != 0 {
		t.Errorf("after the second run the group lags %d records", lag)
	}
}

// statusLag returns the lag sluice status shows for pipeline name.
func (c *cluster) statusLag(name string) int64 {
	c.t.Helper()
	st, err := c.client.Status(c.ctx(), protocol.StatusRequest{Pipeline: name})
	if err != nil || len(st.Pipelines) != 1 {
		c.t.Fatalf("status of %s: %v", name, err)
	}
	p := st.Pipelines[0]
	if p.Lag == nil {
		c.t.Fatalf("status of %s shows no lag (%s)", name, p.LagError)
	}
	return *p.Lag
}
