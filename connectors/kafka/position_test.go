package kafka_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/protocol"
)

// produceN produces values {"i":from..to-1} round robin over partitions.
func produceN(t *testing.T, c *kafkatest.Cluster, cl *kgo.Client, topic string, partitions int32, from, to int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Value: fmt.Appendf(nil, `{"i":%d}`, i)})
	}
	c.Produce(t, cl, recs...)
}

// Runs by position read what is new since the watermark, each record
// once, bounded per run; a failed run's watermark is not taken, so the
// next run reads the same records; a partition added later is read from
// its start.
func TestRunsByPosition(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 3)
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, c, cl, "events", 3, 0, 100)
	cfg := sourceConfig(c, "events")
	cfg.MaxRecordsPerRun = 70
	src := openSource(t, cfg)
	defer src.Close()

	seen := map[string]int{}
	run := func(wm string) (string, int64) {
		t.Helper()
		p := plan(t, src, connectors.PlanRequest{RunID: "r", ByPosition: true, Watermark: wm})
		var rows int64
		for _, part := range p.Partitions {
			err := src.Read(t.Context(), part, func(_ context.Context, b connectors.Batch) error {
				for line := range strings.Lines(string(b.Raw)) {
					seen[strings.TrimSpace(line)]++
					rows++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return p.Watermark, rows
	}
	wm1, n1 := run("")
	if n1 != 70 || wm1 == "" {
		t.Fatalf("first run read %d rows to %q, want 70 (max_records_per_run)", n1, wm1)
	}
	// A run that failed: its watermark was not committed; the next run
	// plans from wm1 again and reads the same records.
	before := maps.Clone(seen)
	wmFailed, _ := run(wm1)
	seen = before
	wm2, n2 := run(wm1)
	if wm2 != wmFailed || n2 != 30 {
		t.Fatalf("run after a failed one read %d rows to %q, want 30 to %q", n2, wm2, wmFailed)
	}
	if _, n := run(wm2); n != 0 {
		t.Errorf("a run with nothing new read %d rows", n)
	}
	produceN(t, c, cl, "events", 3, 100, 130)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreatePartitions(t.Context(), 4, "events"); err != nil {
		t.Fatal(err)
	}
	cl = c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, c, cl, "events", 4, 130, 150)
	// Each plan is a new source's (the leader opens one per plan), which
	// sees the partition added.
	src = openSource(t, cfg)
	defer src.Close()
	wm3, n3 := run(wm2)
	if n3 != 50 || !strings.Contains(wm3, ",3=") {
		t.Errorf("after 50 more records and a partition added: read %d rows to %q, want 50 and partition 3 in the watermark", n3, wm3)
	}
	for i := range 150 {
		if k := fmt.Sprintf(`{"i":%d}`, i); seen[k] != 1 {
			t.Errorf("record %s read %d times, want once", k, seen[k])
		}
	}
	if len(seen) != 150 {
		t.Errorf("read %d distinct records, want 150", len(seen))
	}

	// A watermark of another topic, or a gap deleted by retention.
	if _, err := src.Plan(t.Context(), connectors.PlanRequest{ByPosition: true, Watermark: "other:0=1"}); !connectors.IsPermanent(err) {
		t.Errorf("plan from another topic's watermark = %v, want a permanent error", err)
	}
	produceN(t, c, cl, "events", 4, 150, 170)
	off := kadm.Offsets{}
	off.Add(kadm.Offset{Topic: "events", Partition: 0, At: wmOffset(t, wm3, 0) + 2})
	if _, err := adm.DeleteRecords(t.Context(), off); err != nil {
		t.Fatal(err)
	}
	_, err := src.Plan(t.Context(), connectors.PlanRequest{ByPosition: true, Watermark: wm3})
	if !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("plan past records deleted before they were read = %v, want a permanent error saying so", err)
	}
	cfg.SkipLost = true
	skip := openSource(t, cfg)
	defer skip.Close()
	if p := plan(t, skip, connectors.PlanRequest{ByPosition: true, Watermark: wm3}); p.Watermark == "" {
		t.Errorf("skip_lost: no watermark")
	}
}

func wmOffset(t *testing.T, wm string, p int) int64 {
	t.Helper()
	_, rest, _ := strings.Cut(wm, ":")
	for pair := range strings.SplitSeq(rest, ",") {
		var pp int
		var o int64
		fmt.Sscanf(pair, "%d=%d", &pp, &o)
		if pp == p {
			return o
		}
	}
	t.Fatalf("watermark %q has no partition %d", wm, p)
	return 0
}

// A run with a window reads the records whose timestamps lie in it: a
// window re-run reads the same records, and consecutive windows read
// each record once.
func TestRunsByWindow(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 2)
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	base := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := range 240 {
		recs = append(recs, &kgo.Record{Topic: "events", Partition: int32(i % 2), Timestamp: base.Add(time.Duration(i) * time.Minute), Value: fmt.Appendf(nil, `{"i":%d}`, i)})
	}
	c.Produce(t, cl, recs...)
	cfg := sourceConfig(c, "events")
	cfg.Metadata = true
	src := openSource(t, cfg)
	defer src.Close()
	window := func(from, to time.Time) connectors.Checksum {
		p := plan(t, src, connectors.PlanRequest{Window: &protocol.Window{From: from, To: to}, DeltaColumn: "_timestamp"})
		return readPlan(t, src, p)
	}
	var all connectors.Checksum
	for h := range 4 {
		w := window(base.Add(time.Duration(h)*time.Hour), base.Add(time.Duration(h+1)*time.Hour))
		if w.Rows != 60 {
			t.Errorf("hour %d: %d rows, want 60", h, w.Rows)
		}
		if again := window(base.Add(time.Duration(h)*time.Hour), base.Add(time.Duration(h+1)*time.Hour)); again != w {
			t.Errorf("hour %d read again: %d rows checksum %s, first %d rows checksum %s", h, again.Rows, again, w.Rows, w)
		}
		all.Merge(w)
	}
	if whole := window(base, base.Add(4*time.Hour)); whole != all {
		t.Errorf("the four hours at once: %d rows checksum %s, hour by hour %d rows checksum %s", whole.Rows, whole, all.Rows, all)
	}
	_, err := src.Plan(t.Context(), connectors.PlanRequest{Window: &protocol.Window{From: base, To: base.Add(time.Hour)}, DeltaColumn: "ts"})
	if !connectors.IsPermanent(err) {
		t.Errorf("a window of another column = %v, want a permanent error", err)
	}
}

// A run given the partition parameter reads that partition of the topic
// alone; a run by position keeps the other partitions' positions.
func TestPartitionParam(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 3)
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, c, cl, "events", 3, 0, 30)
	src := openSource(t, sourceConfig(c, "events"))
	defer src.Close()
	p := plan(t, src, connectors.PlanRequest{ByPosition: true, Watermark: "events:0=2,1=3,2=4", Params: map[string]string{"partition": "1"}})
	if got := readPlan(t, src, p); got.Rows != 7 || p.Watermark != "events:0=2,1=10,2=4" {
		t.Errorf("partition 1 by position: %d rows to %q, want 7 to events:0=2,1=10,2=4", got.Rows, p.Watermark)
	}
	if _, err := src.Plan(t.Context(), connectors.PlanRequest{Params: map[string]string{"partition": "7"}}); !connectors.IsPermanent(err) {
		t.Errorf("a partition the topic lacks = %v, want a permanent error", err)
	}
}
