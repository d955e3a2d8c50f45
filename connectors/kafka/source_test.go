package kafka_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
)

func TestSourceConformance(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 3)
	want := fill(t, c, "events", 3, 1000)
	cfg := sourceConfig(c, "events")
	cfg.RecordsPerTask = 120
	conformance.TestSource(t, conformance.SourceHarness{
		Open:     func(t *testing.T) connectors.Source { return openSource(t, cfg) },
		Request:  connectors.PlanRequest{RunID: "r"},
		WantRows: want.Rows,
		Want:     func(*testing.T) conformance.Table { return filled(1000) },
	})
}

// filled is the rows fill(…, n) commits, from the values it writes: each
// batch of 50 but every fourth (aborted).
func filled(n int) conformance.Table {
	t := conformance.Table{Columns: []string{"id", "name", "x"}}
	for i := range n {
		if (i/50)%4 != 3 {
			t.Rows = append(t.Rows, []string{strconv.Itoa(i), fmt.Sprintf("n%d", i), fmt.Sprintf("%d.5", i%7)})
		}
	}
	return t
}

// A full load reads exactly the committed records, each once: records of
// aborted transactions and the transaction markers are passed over, also
// where a task's range ends on one.
func TestFullLoadReadsCommittedRecords(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 3)
	want := fill(t, c, "events", 3, 1000)
	for _, per := range []int64{1, 7, 100, 1_000_000} {
		cfg := sourceConfig(c, "events")
		cfg.RecordsPerTask = per
		src := openSource(t, cfg)
		p := plan(t, src, connectors.PlanRequest{RunID: "r"})
		if got := readPlan(t, src, p); got != want || want.Rows != 750 {
			t.Errorf("records_per_task %d: read %d rows checksum %s, want %d rows checksum %s", per, got.Rows, got, want.Rows, want)
		}
		src.Close()
	}
}

// apply --check: the topic's partitions and records, a missing topic and
// a delta column that does not carry the timestamps named as fields.
func TestCheck(t *testing.T) {
	c := kafkatest.Start(t)
	c.CreateTopic(t, "events", 3)
	fill(t, c, "events", 3, 100)
	src := openSource(t, sourceConfig(c, "events"))
	defer src.Close()
	found, err := src.Check(t.Context(), connectors.CheckRequest{})
	if err != nil || !strings.Contains(found, "3 partitions") {
		t.Errorf("check = %q, %v", found, err)
	}
	var fe *connectors.FieldError
	if _, err := src.Check(t.Context(), connectors.CheckRequest{DeltaColumn: "updated_at"}); !errors.As(err, &fe) || fe.Field != connectors.FieldDeltaColumn {
		t.Errorf("check with delta column updated_at = %v, want a field error on it", err)
	}
	missing := openSource(t, sourceConfig(c, "nope"))
	defer missing.Close()
	if _, err := missing.Check(t.Context(), connectors.CheckRequest{}); !errors.As(err, &fe) || fe.Field != "topic" {
		t.Errorf("check of a missing topic = %v, want a field error on topic", err)
	}
	cfg := sinkConfig(c, "nope")
	cfg.Partitions = 0
	sink := openSink(t, cfg)
	defer sink.Close()
	if _, err := sink.Check(t.Context(), connectors.CheckRequest{}); !errors.As(err, &fe) || fe.Field != "topic" {
		t.Errorf("sink check of a missing topic = %v, want a field error on topic", err)
	}
	cfg.Partitions = 2
	create := openSink(t, cfg)
	defer create.Close()
	if found, err := create.Check(t.Context(), connectors.CheckRequest{}); err != nil || !strings.Contains(found, "created with 2 partitions") || !strings.Contains(found, "staging topic") {
		t.Errorf("sink check of a topic it creates = %q, %v", found, err)
	}
	// A passthrough writes straight into the topic: no staging topic.
	if found, err := create.Check(t.Context(), connectors.CheckRequest{Role: connectors.RolePassthroughSink}); err != nil || strings.Contains(found, "staging") {
		t.Errorf("passthrough sink check = %q, %v; want no staging topic named", found, err)
	}
}
