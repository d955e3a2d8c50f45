package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/protocol"
)

// readLines plans a full load of cfg and returns its rows.
func readLines(t *testing.T, cfg kafka.SourceConfig) ([]string, error) {
	t.Helper()
	src := openSource(t, cfg)
	defer src.Close()
	p := plan(t, src, connectors.PlanRequest{RunID: "r"})
	var out []string
	for _, part := range p.Partitions {
		err := src.Read(t.Context(), part, func(_ context.Context, b connectors.Batch) error {
			for l := range strings.Lines(string(b.Raw)) {
				out = append(out, strings.TrimSuffix(l, "\n"))
			}
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func TestRowFormats(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "t", 1)
	cl := c.Client(t)
	ts := time.Date(2026, 11, 25, 10, 0, 0, 123_000_000, time.UTC)
	c.Produce(t, cl,
		&kgo.Record{Topic: "t", Key: []byte("k1"), Value: []byte("{\n  \"a\": 1,\n  \"b\": \"x\"\n}"), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}, {Key: "h", Value: []byte("w")}}},
		&kgo.Record{Topic: "t", Value: []byte(`{}`), Timestamp: ts},
	)
	rec := kafka.SourceConfig{Cluster: c.Config(), Topic: "t", Format: kafka.FormatRecord}
	got, err := readLines(t, rec)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"topic":"t","partition":0,"offset":0,"timestamp":"2026-11-25T10:00:00.123Z","key":"k1","value":"{\n  \"a\": 1,\n  \"b\": \"x\"\n}","headers":[{"key":"h","value":"v"},{"key":"h","value":"w"}]}`,
		`{"topic":"t","partition":0,"offset":1,"timestamp":"2026-11-25T10:00:00.123Z","key":null,"value":"{}","headers":[]}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("format record:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rec.Encoding = kafka.EncodingBase64
	got, err = readLines(t, rec)
	if err != nil || !strings.Contains(got[0], `"key":"azE="`) {
		t.Errorf("base64: %q, %v", got, err)
	}

	meta := kafka.SourceConfig{Cluster: c.Config(), Topic: "t", Metadata: true}
	got, err = readLines(t, meta)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := []string{
		`{"_topic":"t","_partition":0,"_offset":0,"_timestamp":"2026-11-25T10:00:00.123Z","_key":"k1","a":1,"b":"x"}`,
		`{"_topic":"t","_partition":0,"_offset":1,"_timestamp":"2026-11-25T10:00:00.123Z","_key":null}`,
	}
	if strings.Join(got, "\n") != strings.Join(wantJSON, "\n") {
		t.Errorf("format json with metadata:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(wantJSON, "\n"))
	}

	// format json: a tombstone is no JSON object: the task fails naming
	// the record.
	c.Produce(t, cl, &kgo.Record{Topic: "t", Key: []byte("gone"), Timestamp: ts})
	rec.Encoding = ""
	got, err = readLines(t, rec)
	if err != nil || got[2] != `{"topic":"t","partition":0,"offset":2,"timestamp":"2026-11-25T10:00:00.123Z","key":"gone","value":null,"headers":[]}` {
		t.Errorf("format record of a tombstone: %q, %v", got, err)
	}
	if _, err = readLines(t, meta); err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "t/0: row 2") {
		t.Errorf("format json over a tombstone = %v, want a permanent error naming t/0 offset 2", err)
	}
	c.Produce(t, cl, &kgo.Record{Topic: "t", Key: []byte{0xff, 0xfe}, Value: []byte(`{"a":2}`)})
	if _, err := readLines(t, rec); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("format record over a key that is not UTF-8 = %v, want an error suggesting base64", err)
	}
}

// With declared columns the source emits typed rows: each column of its
// declared type, a declared field a value lacks null; a value with a field
// not declared fails the task, naming the record.
func TestDeclaredColumnsTypedRows(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "typed", 1)
	cl := c.Client(t)
	c.Produce(t, cl, &kgo.Record{Topic: "typed", Value: []byte(`{"id":7,"amount":"12.50","ok":true}`)},
		&kgo.Record{Topic: "typed", Value: []byte(`{"id":8}`)})
	cfg := sourceConfig(c, "typed")
	cfg.Columns = []protocol.Column{{Name: "id", Type: protocol.TypeInt64}, {Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
		{Name: "ok", Type: protocol.TypeBool}}
	src := openSource(t, cfg)
	defer src.Close()
	p := plan(t, src, connectors.PlanRequest{})
	var got []string
	for _, part := range p.Partitions {
		err := src.Read(t.Context(), part, func(_ context.Context, b connectors.Batch) error {
			if b.Record == nil {
				return fmt.Errorf("batch at %s is %s, want typed rows", b.Position, b.Format)
			}
			got = append(got, b.Record.Schema().String())
			for i := range b.Record.NumCols() {
				got = append(got, b.Record.Column(int(i)).String())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"schema:\n  fields: 3\n    - id: type=int64, nullable\n    - amount: type=decimal(12, 2), nullable\n    - ok: type=bool, nullable", "[7 8]", "[12.5 (null)]", "[true (null)]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("typed rows %q, want %q", got, want)
	}

	c.Produce(t, cl, &kgo.Record{Topic: "typed", Value: []byte(`{"id":9,"extra":1}`)})
	p = plan(t, src, connectors.PlanRequest{})
	err := src.Read(t.Context(), p.Partitions[0], func(context.Context, connectors.Batch) error { return nil })
	if !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "typed/0@0") || !strings.Contains(err.Error(), `"extra"`) {
		t.Errorf("a value with a field not declared: %v, want a permanent error naming the record and the field", err)
	}
}
