package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// fillTopic produces n JSON records over the partitions of topic, each
// with the timestamp base + i seconds, and returns the checksum of their
// values.
func fillTopic(t *testing.T, k *kafkatest.Cluster, topic string, partitions int32, n int, base time.Time) connectors.Checksum {
	t.Helper()
	cl := k.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20))
	var sum connectors.Checksum
	const chunk = 50_000
	for lo := 0; lo < n; lo += chunk {
		recs := make([]*kgo.Record, 0, chunk)
		for i := lo; i < min(n, lo+chunk); i++ {
			v := fmt.Appendf(nil, `{"id":%d,"name":"event %d ünï","amount":%d.25,"ok":%t}`, i, i, i%1000, i%3 == 0)
			sum.Add(v)
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Key: fmt.Append(nil, i), Value: v,
				Timestamp: base.Add(time.Duration(i) * time.Second)})
		}
		k.Produce(t, cl, recs...)
	}
	return sum
}

// A topic of 6 partitions loaded into files by the cluster: a full load
// equal to the topic by count and checksum; runs by window of the
// records' timestamps, one re-run, exact; and runs by position, each
// record once.
func TestKafkaTopicToFiles(t *testing.T) {
	t.Parallel()
	// 20,000 records a partition: two tasks each in the full load.
	n := 120_000
	if testing.Short() {
		n = 60_000
	}
	k := kafkatest.Start(t)
	k.CreateTopic(t, "events", 6)
	base := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	want := fillTopic(t, k, "events", 6, n, base)
	c := newCluster(t, clusterConfig{workers: 2})
	brokers := fmt.Sprintf("[%s]", k.Brokers[0])

	full := filepath.Join(t.TempDir(), "full")
	c.applyYAML("events-full", fmt.Sprintf("name: events-full\npattern: full_load\nsource: {kind: kafka, brokers: %s, topic: events, records_per_task: 10000}\nsink: {kind: files, path: %s, format: jsonl}\n", brokers, full))
	st := c.wait(c.run("events-full").RunID)
	if st.State != protocol.RunCommitted {
		t.Fatalf("full load: %s (%s)", st.State, st.Error)
	}
	cur, err := files.Current(full)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := files.ReadChecksum(cur, "jsonl"); err != nil || got != want {
		t.Fatalf("full load: %d rows checksum %s (%v), the topic %d rows checksum %s", got.Rows, got, err, want.Rows, want)
	}
	if st.Tasks < 6 {
		t.Errorf("full load in %d tasks, want at least one per partition", st.Tasks)
	}

	// By windows of the records' timestamps (format json with metadata:
	// the delta column _timestamp): hour windows, one of them re-run.
	windows := filepath.Join(t.TempDir(), "windows")
	c.applyYAML("events-hourly", fmt.Sprintf(`name: events-hourly
pattern: incremental
source: {kind: kafka, brokers: %s, topic: events, metadata: true}
sink: {kind: files, path: %s, format: jsonl}
incremental: {delta_column: _timestamp, window: 1h, start: %s}
`, brokers, windows, base.Format(time.RFC3339)))
	hour := func(h int) protocol.RunStatus {
		w := &protocol.Window{From: base.Add(time.Duration(h) * time.Hour), To: base.Add(time.Duration(h+1) * time.Hour)}
		res, err := c.client.Run(c.ctx(), protocol.RunRequest{Pipeline: "events-hourly", Window: w})
		if err != nil {
			t.Fatal(err)
		}
		return c.wait(res.RunID)
	}
	first := hour(2)
	again := hour(2)
	if first.State != protocol.RunCommitted || again.State != protocol.RunCommitted || first.Rows != 3600 || again.Rows != 3600 {
		t.Fatalf("hour 2 and its re-run: %s %d rows, %s %d rows; want 3600 each", first.State, first.Rows, again.State, again.Rows)
	}
	hour(3)
	got, err := files.ReadChecksum(windows, "jsonl")
	if err != nil || got.Rows != 7200 {
		t.Fatalf("after hours 2 (twice) and 3: %d rows (%v), want 7200", got.Rows, err)
	}

	// By position: two runs of at most n/2 records read the topic once.
	pos := filepath.Join(t.TempDir(), "pos")
	c.applyYAML("events-pos", fmt.Sprintf("name: events-pos\npattern: incremental\nsource: {kind: kafka, brokers: %s, topic: events, max_records_per_run: %d}\nsink: {kind: files, path: %s, format: jsonl}\nincremental: {by: position}\n", brokers, n/2, pos))
	for range 3 {
		if st := c.wait(c.run("events-pos").RunID); st.State != protocol.RunCommitted {
			t.Fatalf("run by position: %s (%s)", st.State, st.Error)
		}
	}
	if got, err := files.ReadChecksum(pos, "jsonl"); err != nil || got != want {
		t.Fatalf("runs by position: %d rows checksum %s (%v), the topic %d rows checksum %s", got.Rows, got, err, want.Rows, want)
	}
}

// topicChecksum is the checksum of the values read_committed consumers
// see in topic.
func topicChecksum(t *testing.T, k *kafkatest.Cluster, topic string) connectors.Checksum {
	t.Helper()
	var sum connectors.Checksum
	for _, r := range k.Records(t, topic, true) {
		sum.Add(r.Value)
	}
	return sum
}

// Files loaded into topics by the cluster, each run appended in one Kafka
// transaction: a worker killed mid-task, and the Raft leader killed
// mid-run, and each topic holds the files' rows exactly once.
func TestFilesToKafkaExactlyOnce(t *testing.T) {
	t.Parallel()
	k := kafkatest.Start(t)
	c := newCluster(t, clusterConfig{workers: 2, slots: 2, ackWait: 2 * time.Second})
	in := writeDataset(t, 12, 5000)
	want, err := files.ReadChecksum(in, "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	spec := func(name, in, topic string) string {
		return fmt.Sprintf("name: %s\npattern: full_load\nsource: {kind: files, path: %s, format: jsonl}\nsink: {kind: kafka, brokers: [%s], topic: %s, partitions: 6, key: [id]}\npartitioning: {max_files: 1}\n",
			name, in, k.Brokers[0], topic)
	}
	c.applyYAML("to-kafka", spec("to-kafka", in, "out"))
	res := c.run("to-kafka")
	c.killWhenBusy(0)
	if st := c.wait(res.RunID); st.State != protocol.RunCommitted {
		t.Fatalf("run %s: %s (%s)", st.RunID, st.State, st.Error)
	}
	c.assertRedelivered(res.RunID)
	if got := topicChecksum(t, k, "out"); got != want {
		t.Fatalf("topic out: %d rows checksum %s; the files: %d rows checksum %s", got.Rows, got, want.Rows, want)
	}

	c.addWorker()
	in = writeDataset(t, 60, 1000)
	if want, err = files.ReadChecksum(in, "jsonl"); err != nil {
		t.Fatal(err)
	}
	c.applyYAML("to-kafka2", spec("to-kafka2", in, "out2"))
	res = c.run("to-kafka2")
	old := c.leader()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.client.GetRun(c.ctx(), res.RunID)
		if err == nil && st.TasksDone >= 1 {
			if st.TasksDone == st.Tasks {
				t.Fatal("run finished before the leader could be stopped")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s made no progress: %v", res.RunID, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	old.c.Kill()
	old.killed = true
	if st := c.wait(res.RunID); st.State != protocol.RunCommitted {
		t.Fatalf("run %s after the leader was killed: %s (%s)", st.RunID, st.State, st.Error)
	}
	if got := topicChecksum(t, k, "out2"); got != want {
		t.Fatalf("topic out2: %d rows checksum %s; the files: %d rows checksum %s", got.Rows, got, want.Rows, want)
	}
	expectMessages(t, c.js, protocol.StreamEvents, protocol.RunEventSubject("to-kafka2", "committed"), 1)
}

// A topic loaded into PostgreSQL by the cluster, the values' types
// declared by the source's columns: the table holds each record's values
// once, typed.
func TestKafkaTopicToPostgres(t *testing.T) {
	t.Parallel()
	const n = 3000
	k := kafkatest.Start(t)
	k.CreateTopic(t, "orders", 3)
	fillTopic(t, k, "orders", 3, n, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	dsn, schema, conn := pgtest.DB(t)
	c := newCluster(t, clusterConfig{workers: 1})
	c.applyYAML("orders-pg", fmt.Sprintf(`name: orders-pg
pattern: full_load
source:
  kind: kafka
  brokers: [%s]
  topic: orders
  records_per_task: 1000
  columns: [{name: id, type: int64}, {name: name, type: string}, {name: amount, type: decimal, precision: 12, scale: 2}, {name: ok, type: bool}]
sink: {kind: postgres, dsn: %q, table: %s.orders}
`, k.Brokers[0], dsn, schema))
	st := c.wait(c.run("orders-pg").RunID)
	if st.State != protocol.RunCommitted || st.Rows != n {
		t.Fatalf("load: %s (%s), %d rows; want %d", st.State, st.Error, st.Rows, n)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%d|event %d ünï|%d.25|%s", i, i, i%1000, strconv.FormatBool(i%3 == 0)))
	}
	slices.Sort(want)
	got := pgtest.Rows(t, conn, schema+".orders", []string{"id", "name", "amount", "ok"})
	if !slices.Equal(got, want) {
		t.Fatalf("the table holds %d rows (first %q), want the topic's %d (first %q)", len(got), got[:min(1, len(got))], len(want), want[0])
	}
	var types string
	if err := conn.QueryRow(t.Context(), `SELECT string_agg(data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'orders' AND column_name IN ('id','name','amount','ok')`, schema).Scan(&types); err != nil {
		t.Fatal(err)
	}
	if types != "bigint,text,numeric,boolean" {
		t.Errorf("column types %s, want bigint, text, numeric, boolean", types)
	}
}
