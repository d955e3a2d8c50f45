package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// compactRegistry has the kinds "lake" (a sink whose datasets compact,
// wanting a table) and "db" (a source and a sink that do not).
func compactRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	sink := func(context.Context, json.RawMessage) (connectors.Sink, error) {
		return nil, errors.New("no writes here")
	}
	reg.Register(connectors.Connector{Kind: "lake", Sink: sink, ValidateDataset: func(config json.RawMessage) error {
		var m map[string]any
		_ = json.Unmarshal(config, &m)
		if m["table"] == nil {
			return &connectors.FieldError{Field: "table", Msg: "is required"}
		}
		return nil
	}})
	reg.Register(connectors.Connector{Kind: "db", Sink: sink,
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) {
			return nil, errors.New("no reads here")
		}})
	return reg
}

func TestCompactSpec(t *testing.T) {
	spec, err := Load([]byte(`name: orders-compact
pattern: compact
dataset: {kind: lake, table: sales.orders}
compact:
  target_file_size: 128MiB
  min_files: 5
  min_age: 10m
  retention: 3d
  keep_versions: 4
  orphan_age: 2h
  vacuum: false
trigger: {after: orders}
`), "c.yaml", compactRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Pattern != protocol.PatternCompact || spec.Sink.Kind != "lake" || spec.Source.Kind != "" {
		t.Fatalf("spec %+v", spec)
	}
	got := spec.CompactSettings()
	want := protocol.CompactSettings{TargetFileBytes: 128 << 20, MinFiles: 5, MinAge: 10 * time.Minute, Retention: 72 * time.Hour,
		KeepVersions: 4, OrphanAge: 2 * time.Hour, Vacuum: got.Vacuum}
	if got != want || got.VacuumAfter() {
		t.Errorf("settings %+v, want %+v and no vacuum", got, want)
	}
	// The JSON the leader stores validates the same way.
	b, _ := json.Marshal(spec)
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil || back.Validate(compactRegistry(), nil) != nil {
		t.Errorf("round trip: %v, %v", err, back.Validate(compactRegistry(), nil))
	}
	if bs := back.CompactSettings(); bs.VacuumAfter() || bs.TargetFileBytes != got.TargetFileBytes || bs.Retention != got.Retention {
		t.Errorf("settings after a round trip %+v", bs)
	}
	d := Spec{Name: "x", Pattern: protocol.PatternFullLoad}.CompactSettings()
	if d.TargetFileBytes != protocol.DefaultTargetFileBytes || d.MinFiles != 2 || d.Retention != protocol.DefaultRetention || !d.VacuumAfter() {
		t.Errorf("defaults %+v", d)
	}
}

func TestCompactSpecProblems(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"no dataset", "name: c\npattern: compact\n", []string{"dataset: is required"}},
		{"sink instead", "name: c\npattern: compact\nsink: {kind: lake, table: a.b}\n", []string{"line 3: sink: a compact pipeline names the dataset it compacts under dataset", "dataset: is required"}},
		{"source", "name: c\npattern: compact\nsource: {kind: db}\ndataset: {kind: lake, table: a.b}\n", []string{"line 3: source: must be left out"}},
		{"kind that does not compact", "name: c\npattern: compact\ndataset: {kind: db}\n", []string{`line 3: dataset.kind: connector "db" cannot be a compacted dataset (kinds: [lake])`}},
		{"dataset config", "name: c\npattern: compact\ndataset: {kind: lake}\n", []string{"line 3: dataset.table: is required"}},
		{"dataset elsewhere", "name: c\npattern: full_load\nsource: {kind: db}\nsink: {kind: db}\ndataset: {kind: lake, table: a.b}\n", []string{"line 5: dataset: is only for pattern compact"}},
		{"compact elsewhere", "name: c\npattern: full_load\nsource: {kind: db}\nsink: {kind: db}\ncompact: {min_files: 3}\n", []string{"line 5: compact: is only for pattern compact"}},
		{"bad fields", "name: c\npattern: compact\ndataset: {kind: lake, table: a.b}\ncompact:\n  target_file_size: 10\n  retention: soon\n  min_files: 0\n  vacuum: maybe\n  size: 1\n",
			[]string{"line 5: compact.target_file_size", "line 6: compact.retention", "line 7: compact.min_files", "line 8: compact.vacuum", "line 9: compact.size: unknown field"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.in), "c.yaml", compactRegistry(), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
