package kafka_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/protocol"
)

// dumpTopics renders every record read_committed consumers see in the
// topics of prefix (the state topic left out), topic by topic and
// partition by partition in order, the prefix (which names the topics
// and the source) replaced by <prefix>.
func dumpTopics(t *testing.T, c *kafkatest.Cluster, prefix string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, td := range tds.Sorted() {
		if strings.HasPrefix(td.Topic, prefix+".") && !strings.HasSuffix(td.Topic, ".sluice-state") {
			topics = append(topics, td.Topic)
		}
	}
	slices.Sort(topics)
	var out []string
	for _, topic := range topics {
		for _, r := range c.Records(t, topic, true) {
			line := fmt.Sprintf("%s/%d %s %s", topic, r.Partition, r.Key, r.Value)
			out = append(out, strings.ReplaceAll(line, prefix, "<prefix>"))
		}
	}
	return out
}

func TestApplierConformance(t *testing.T) {
	c := kafkatest.Start(t)
	for _, env := range []string{kafka.EnvelopeDebezium, kafka.EnvelopeSluice} {
		t.Run(env, func(t *testing.T) {
			conformance.TestApplier(t, conformance.ApplierHarness{
				Open: func(t *testing.T, target string) connectors.Applier {
					a, err := kafka.NewApplier(kafka.ApplierConfig{Cluster: c.Config(), TopicPrefix: env + "-" + target, Envelope: env, Partitions: 3}, env+"-"+target, "up")
					if err != nil {
						t.Fatal(err)
					}
					return a
				},
				Dump:   func(t *testing.T, target string) []string { return dumpTopics(t, c, env+"-"+target) },
				Events: conformance.ChangeEvents(),
			})
		})
	}
}

// In Sluice's envelope an event of a whole table (a snapshot's marker, a
// truncate) goes to every partition of its topic, so a consumer of each
// partition sees it in order with the events of the keys it holds; in
// Debezium's envelope a snapshot is its read events alone.
func TestTableEventsOnEveryPartition(t *testing.T) {
	c := kafkatest.Start(t)
	for _, env := range []string{kafka.EnvelopeSluice, kafka.EnvelopeDebezium} {
		a, err := kafka.NewApplier(kafka.ApplierConfig{Cluster: c.Config(), TopicPrefix: env, Envelope: env, Partitions: 3}, "p-"+env, "up")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(t.Context(), conformance.ChangeEvents()); err != nil {
			t.Fatal(err)
		}
		a.Close()
		markers := map[int32]int{}
		for _, r := range c.Records(t, env+".src.b", true) {
			if strings.Contains(string(r.Value), `"op":"snapshot"`) {
				markers[r.Partition]++
			}
		}
		want := map[int32]int{0: 2, 1: 2, 2: 2} // the marker was sent twice
		if env == kafka.EnvelopeDebezium {
			want = map[int32]int{}
		}
		if fmt.Sprint(markers) != fmt.Sprint(want) {
			t.Errorf("%s envelope: snapshot markers by partition %v, want %v", env, markers, want)
		}
	}
}

// debeziumEvent is a Debezium change event value as consumers parse it.
type debeziumEvent struct {
	Before map[string]any `json:"before"`
	After  map[string]any `json:"after"`
	Source struct {
		Connector string `json:"connector"`
		Name      string `json:"name"`
		DB        string `json:"db"`
		Schema    string `json:"schema"`
		Table     string `json:"table"`
		Snapshot  string `json:"snapshot"`
		TxID      int64  `json:"txId"`
		LSN       int64  `json:"lsn"`
		TsMs      int64  `json:"ts_ms"`
	} `json:"source"`
	Op   string `json:"op"`
	TsMs int64  `json:"ts_ms"`
}

func typedEvents(seq0 uint64, withRelation bool) []connectors.Event {
	rel := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true}, {Name: "ok", Type: protocol.TypeBool},
		{Name: "doc", Type: protocol.TypeJSON}, {Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
		{Name: "at", Type: protocol.TypeTimestampTZ}, {Name: "raw", Type: protocol.TypeBytes}, {Name: "f", Type: protocol.TypeFloat64},
	}, Key: []string{"id"}}
	row := func(id int) protocol.Row {
		return protocol.Row{"id": protocol.Text(fmt.Sprint(id)), "ok": protocol.Text("t"), "doc": protocol.Text(`{"a":[1,2]}`),
			"amount": protocol.Text("12.50"), "at": protocol.Text("2026-11-25 10:00:00.5+01"), "raw": protocol.Text(`\x0102ff`), "f": protocol.Text("NaN")}
	}
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	ev := func(seq uint64, op protocol.Op, before, after protocol.Row) connectors.Event {
		return connectors.Event{Seq: seq, ChangeEvent: protocol.ChangeEvent{Op: op, Pipeline: "up", Database: "shop", Schema: "public", Table: "orders",
			Key: []string{"id"}, Before: before, After: after, LSN: "1/A0", CommitLSN: "1/B0", Xid: 77, CommitTime: at}}
	}
	evs := []connectors.Event{ev(seq0, protocol.OpRead, nil, row(1)), ev(seq0+1, protocol.OpInsert, nil, row(2)),
		ev(seq0+2, protocol.OpUpdate, protocol.Row{"id": protocol.Text("2")}, row(3)), ev(seq0+3, protocol.OpDelete, protocol.Row{"id": protocol.Text("1")}, nil)}
	if withRelation {
		evs[0].Relation = rel
	}
	return evs
}

// Debezium's envelope parsed back: typed values from the table's column
// description (kept in the state topic across a restart), ops c, u, d
// and r, a key change written as a delete, a tombstone and a create, and
// the key a JSON object of the key columns.
func TestDebeziumEnvelope(t *testing.T) {
	c := kafkatest.Start(t)
	open := func() *kafka.Applier {
		a, err := kafka.NewApplier(kafka.ApplierConfig{Cluster: c.Config(), TopicPrefix: "shop", Partitions: 2}, "to-kafka", "up")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Applied(t.Context()); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := open()
	if err := a.Apply(t.Context(), typedEvents(1, true)[:1]); err != nil {
		t.Fatal(err)
	}
	a.Close()
	a = open() // a restart: the description comes from the state topic
	defer a.Close()
	if err := a.Apply(t.Context(), typedEvents(1, false)); err != nil {
		t.Fatal(err)
	}
	recs := c.Records(t, "shop.public.orders", true)
	var ops []string
	byKey := map[string]map[int32]bool{}
	for _, r := range recs {
		if byKey[string(r.Key)] == nil {
			byKey[string(r.Key)] = map[int32]bool{}
		}
		byKey[string(r.Key)][r.Partition] = true
		if r.Value == nil {
			ops = append(ops, "tombstone "+string(r.Key))
			continue
		}
		var e debeziumEvent
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("value %s: %v", r.Value, err)
		}
		ops = append(ops, e.Op+" "+string(r.Key))
		if e.Source.Connector != "postgresql" || e.Source.Name != "shop" || e.Source.DB != "shop" || e.Source.Table != "orders" || e.Source.TxID != 77 ||
			e.Source.LSN != 0x1_000000A0 || e.TsMs != time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC).UnixMilli() {
			t.Errorf("source of %s: %+v, ts_ms %d", r.Value, e.Source, e.TsMs)
		}
		if (e.Op == "r") != (e.Source.Snapshot == "true") {
			t.Errorf("op %s with snapshot %q", e.Op, e.Source.Snapshot)
		}
		if e.After != nil {
			want := map[string]any{"ok": true, "doc": map[string]any{"a": []any{1.0, 2.0}}, "amount": "12.50", "at": "2026-11-25T09:00:00.5Z", "raw": "AQL/", "f": "NaN"}
			for k, v := range want {
				if fmt.Sprint(e.After[k]) != fmt.Sprint(v) {
					t.Errorf("after.%s = %#v, want %#v", k, e.After[k], v)
				}
			}
			if _, ok := e.After["id"].(float64); !ok {
				t.Errorf("after.id = %#v, want a number", e.After["id"])
			}
		}
	}
	want := []string{`r {"id":1}`, `c {"id":2}`, `d {"id":2}`, `tombstone {"id":2}`, `c {"id":3}`, `d {"id":1}`, `tombstone {"id":1}`}
	slices.Sort(ops)
	slices.Sort(want)
	if !slices.Equal(ops, want) {
		t.Errorf("events %q, want %q", ops, want)
	}
	for k, parts := range byKey {
		if len(parts) != 1 {
			t.Errorf("key %s on partitions %v, want one", k, parts)
		}
	}
}

// A worker killed in the middle of a batch leaves its transaction open;
// the next worker's Applier fences it, its records are never seen, and
// every event is in the topic exactly once.
func TestApplierAfterWorkerKilledMidBatch(t *testing.T) {
	c := kafkatest.Start(t)
	cfg := kafka.ApplierConfig{Cluster: c.Config(), TopicPrefix: "shop", Envelope: kafka.EnvelopeSluice}
	a, err := kafka.NewApplier(cfg, "to-kafka", "up")
	if err != nil {
		t.Fatal(err)
	}
	evs := typedEvents(1, true)
	if err := a.Apply(t.Context(), evs[:2]); err != nil {
		t.Fatal(err)
	}
	// The dead worker: the pipeline's producer with an open transaction
	// holding the rest of the events.
	dead := c.Client(t, kgo.TransactionalID("sluice.cdc.to-kafka"))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	c.Produce(t, dead, &kgo.Record{Topic: "shop.public.orders", Value: []byte(`{"half":true}`)})

	b, err := kafka.NewApplier(cfg, "to-kafka", "up")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	applied, err := b.Applied(t.Context())
	if err != nil || applied != 2 {
		t.Fatalf("Applied after the kill = %d, %v; want 2", applied, err)
	}
	if err := b.Apply(t.Context(), evs); err != nil { // delivered again from the start
		t.Fatal(err)
	}
	if err := a.Apply(t.Context(), evs[2:]); err == nil {
		t.Errorf("the first worker's Applier, fenced, applied a batch")
	}
	a.Close()
	var got []string
	for _, r := range c.Records(t, "shop.public.orders", true) {
		var e protocol.ChangeEvent
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("value %s: %v", r.Value, err)
		}
		got = append(got, string(e.Op))
	}
	if want := []string{"read", "insert", "update", "delete"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want each once: %q", got, want)
	}
}
