package pipeline

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// partitionRegistry has a "files" source whose configurations with a
// layout are laid out in partitions of 1h ("hour" in it) or 24h.
func partitionRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{
		Kind:   "files",
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil },
		Sink:   func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, nil },
		SourcePartitions: func(raw json.RawMessage) time.Duration {
			var c struct{ Layout string }
			json.Unmarshal(raw, &c)
			switch {
			case c.Layout == "":
				return 0
			case strings.Contains(c.Layout, "hour"):
				return time.Hour
			}
			return 24 * time.Hour
		},
	})
	return reg
}

const partitionHead = "name: ev\npattern: incremental\nsource:\n  kind: files\n  path: /data/events\n  layout: \"date={date}/hour={hour}\"\nsink: {kind: files, path: /data/out}\n"

func TestLoadPartitionBased(t *testing.T) {
	in := partitionHead + "incremental:\n  window: 1h\n  start: 2026-11-25T00:00:00Z\n  ready_timeout: 6h\n  ready_check: 2s\n"
	s, err := Load([]byte(in), "ev.yaml", partitionRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Incremental{Window: time.Hour, Start: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), ReadyTimeout: 6 * time.Hour, ReadyCheck: 2 * time.Second}
	if *s.Incremental != want || !s.Incremental.PartitionBased() {
		t.Fatalf("incremental = %+v, want %+v (partition-based)", *s.Incremental, want)
	}
}

func TestLoadPartitionBasedProblems(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"window other than the partition", partitionHead + "incremental:\n  window: 2h\n",
			[]string{"line 9: incremental.window: 2h0m0s must equal the size of the source's partitions, 1h0m0s"}},
		{"delta column with a layout", partitionHead + "incremental:\n  delta_column: at\n  window: 1h\n",
			[]string{"line 9: incremental.delta_column: must be left out"}},
		{"start off a partition", partitionHead + "incremental:\n  window: 1h\n  start: 2026-11-25T00:30:00Z\n",
			[]string{"line 10: incremental.start: 2026-11-25T00:30:00Z is not where a partition of 1h0m0s starts"}},
		{"bad ready timeout", partitionHead + "incremental:\n  window: 1h\n  ready_timeout: soon\n",
			[]string{`line 10: incremental.ready_timeout: "soon" is not a duration`}},
		{"zero ready check", partitionHead + "incremental:\n  window: 1h\n  ready_check: 0s\n",
			[]string{`line 10: incremental.ready_check: "0s" is not a positive duration`}},
		{"no layout, no delta column", "name: ev\npattern: incremental\nsource: {kind: files, path: /in}\nsink: {kind: files, path: /out}\nincremental:\n  window: 1h\n",
			[]string{"line 6: incremental.delta_column: is required (or lay the source out by time partitions: source.layout)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.in), "ev.yaml", partitionRegistry(), nil)
			if err == nil {
				t.Fatal("Load: no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
