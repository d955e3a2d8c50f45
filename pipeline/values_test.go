package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

func TestParseValueWindows(t *testing.T) {
	in := incrementalHead + "incremental:\n  delta_column: id\n  window: 1_000_000\n  start: 0\n  max_rows_per_run: 500k\n  lookback: 2\n"
	s, err := Parse([]byte(in), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inc := s.Incremental
	if !inc.Values() || inc.Span != 1_000_000 || inc.StartValue == nil || *inc.StartValue != 0 || inc.MaxRows != 500_000 || inc.Lookback != 2 || inc.Window != 0 {
		t.Fatalf("incremental %+v: want a window of 1000000 values from 0, 500000 rows a run, lookback 2", inc)
	}
	// "All new, up to N rows a run": no window.
	s, err = Parse([]byte(incrementalHead+"incremental:\n  delta_column: id\n  max_rows_per_run: 100000\n  start: 1\n"), "a.yaml")
	if err != nil || !s.Incremental.Values() || s.Incremental.Span != 0 {
		t.Fatalf("max rows alone: %+v, %v", s.Incremental, err)
	}
	tests := []struct{ name, in, want string }{
		{"zero window", "  delta_column: id\n  window: 0\n", `incremental.window: "0" is not a positive number of values`},
		{"lag", "  delta_column: id\n  window: 100\n  lag: 5m\n", "incremental.lag: is for time windows"},
		{"time start", "  delta_column: id\n  window: 100\n  start: 2026-01-01T00:00:00Z\n", "incremental.start: a window of integer values starts at an integer"},
		{"integer start, time window", "  delta_column: id\n  window: 1h\n  start: 5\n", "incremental.start: an integer start goes with a window of integer values"},
		{"max rows of time", "  delta_column: at\n  window: 1h\n  max_rows_per_run: 10\n", "incremental.max_rows_per_run: is for windows of integer values"},
		{"lookback without a window", "  delta_column: id\n  max_rows_per_run: 10\n  lookback: 1\n", "incremental.lookback: needs a window of values"},
		{"bad lookback", "  delta_column: id\n  window: 100\n  lookback: -1\n", `incremental.lookback: "-1" is not a number of windows`},
		{"merge without key", "  delta_column: id\n  window: 100\n  merge: {deleted: gone}\n", "incremental.merge.key: is required"},
		{"merge on the delta column", "  delta_column: v\n  window: 100\n  merge: {key: [id, v]}\n", `incremental.merge.key: must not hold the delta column "v"`},
		{"merge unknown field", "  delta_column: v\n  window: 100\n  merge: {key: id, by: x}\n", "incremental.merge.by: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(incrementalHead+"incremental:\n"+tt.in), "a.yaml", filesRegistry(), nil)
			var pe *Error
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseMerge(t *testing.T) {
	s, err := Parse([]byte(incrementalHead+"incremental:\n  delta_column: version\n  window: 1000\n  start: 0\n  merge:\n    key: [id, region]\n    deleted: is_deleted\n"), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Incremental.Merge; m == nil || strings.Join(m.Key, ",") != "id,region" || m.Deleted != "is_deleted" {
		t.Fatalf("merge %+v", m)
	}
	s, err = Parse([]byte(incrementalHead+"incremental:\n  delta_column: at\n  window: 1h\n  merge: {key: id}\n"), "a.yaml")
	if err != nil || strings.Join(s.Incremental.Merge.Key, ",") != "id" {
		t.Fatalf("merge with one key column: %+v, %v", s.Incremental, err)
	}
}

// A sink that cannot commit windows of values, or merge, is refused at
// apply, naming those that can.
func TestValueWindowsAndMergeNeedTheSink(t *testing.T) {
	reg := connectors.NewRegistry()
	src := func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil }
	sink := func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, nil }
	reg.Register(connectors.Connector{Kind: "db", Source: src, Sink: sink, SinkValueWindows: true, SinkMerges: true})
	reg.Register(connectors.Connector{Kind: "olap", Sink: sink})
	head := "name: a\npattern: incremental\nsource: {kind: db}\n"
	for _, tt := range []struct{ inc, want string }{
		{"  delta_column: id\n  window: 100\n  start: 0\n", "sink.kind: a olap sink cannot commit windows of integer values (sinks that can: [db])"},
		{"  delta_column: at\n  window: 1h\n  merge: {key: id}\n", "sink.kind: a olap sink cannot merge windows by key (sinks that can: [db])"},
	} {
		_, err := Load([]byte(head+"sink: {kind: olap}\nincremental:\n"+tt.inc), "a.yaml", reg, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want %q", err, tt.want)
		}
		if _, err := Load([]byte(head+"sink: {kind: db}\nincremental:\n"+tt.inc), "a.yaml", reg, nil); err != nil {
			t.Errorf("a sink that can: %v", err)
		}
	}
}
