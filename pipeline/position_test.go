package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

// positionRegistry has a source "log" that keeps a position named
// "offset" (refused for a configuration with "layout"; a configuration
// with "tail" reads only by it), a sink "out" that
// appends runs without a window, and a sink "table" that does not.
func positionRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	src := func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil }
	sink := func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, nil }
	reg.Register(connectors.Connector{Kind: "log", Source: src, Positions: &connectors.Positions{Name: "offset",
		Check: func(raw json.RawMessage) error {
			if strings.Contains(string(raw), "layout") {
				return errors.New("a log laid out by time is read by windows")
			}
			return nil
		},
		Only: func(raw json.RawMessage) *connectors.FieldError {
			if strings.Contains(string(raw), "tail") {
				return &connectors.FieldError{Field: "read", Msg: "tail reads only what came since the previous run"}
			}
			return nil
		}}})
	reg.Register(connectors.Connector{Kind: "plain", Source: src})
	reg.Register(connectors.Connector{Kind: "out", Sink: sink, SinkAppends: true})
	reg.Register(connectors.Connector{Kind: "table", Sink: sink})
	return reg
}

const positionHead = "name: a\npattern: incremental\n"

func TestLoadPositioned(t *testing.T) {
	reg := positionRegistry()
	for _, by := range []string{"offset", "position"} {
		in := positionHead + "source: {kind: log}\nsink: {kind: out}\nincremental: {by: " + by + "}\n"
		s, err := Load([]byte(in), "a.yaml", reg, nil)
		if err != nil {
			t.Fatalf("by %s: %v", by, err)
		}
		if !s.Incremental.Positioned() || s.Incremental.PartitionBased() || s.Incremental.By != by {
			t.Fatalf("by %s: incremental %+v, want positioned", by, s.Incremental)
		}
	}
	tests := []struct {
		name, in string
		want     []string
	}{
		{"window fields", "source: {kind: log}\nsink: {kind: out}\nincremental:\n  by: offset\n  window: 1h\n  delta_column: at\n",
			[]string{"line 7: incremental.window: is not used with by: offset", "line 8: incremental.delta_column: is not used with by: offset"}},
		{"another position's name", "source: {kind: log}\nsink: {kind: out}\nincremental: {by: modified}\n",
			[]string{`line 5: incremental.by: "modified" is not how a log source is read: want "offset" (or "position")`}},
		{"a source without a position", "source: {kind: plain}\nsink: {kind: out}\nincremental: {by: position}\n",
			[]string{"line 5: incremental.by: a plain source keeps no position of its own to be read by (sources that do: [log])"}},
		{"a configuration the source refuses", "source: {kind: log, layout: x}\nsink: {kind: out}\nincremental: {by: offset}\n",
			[]string{"incremental.by: a log laid out by time is read by windows"}},
		{"a sink that cannot append", "source: {kind: log}\nsink: {kind: table}\nincremental: {by: offset}\n",
			[]string{"line 4: sink.kind: a table sink cannot append runs without a window, as incremental.by: offset needs (sinks that can: [out])"}},
		{"empty by", "source: {kind: log}\nsink: {kind: out}\nincremental: {by: \"\"}\n",
			[]string{"incremental.by: must name what the source keeps"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(positionHead+tt.in), "a.yaml", reg, nil)
			if err == nil {
				t.Fatal("Load accepted the spec")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A spec that reaches the leader as JSON is checked the same way.
func TestValidatePositioned(t *testing.T) {
	reg := positionRegistry()
	s := Spec{Name: "a", Pattern: "incremental", Incremental: &Incremental{By: "offset"}}
	s.Source.Kind, s.Sink.Kind = "log", "out"
	if err := s.Validate(reg, nil); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s.Incremental = &Incremental{By: "offset", Lag: 5}
	if err := s.Validate(reg, nil); err == nil || !strings.Contains(err.Error(), "incremental.lag: is not used with by: offset") {
		t.Fatalf("Validate with a lag: %v", err)
	}
}

// A source configuration that only a run by position reads (an Iceberg
// source's read: appended) is refused, naming its field, in a full load,
// a transform without windows and an incremental pipeline by windows; a
// pipeline read by position takes it.
func TestLoadPositionOnly(t *testing.T) {
	reg := positionRegistry()
	src := "source: {kind: log, read: tail}\n"
	if _, err := Load([]byte(positionHead+src+"sink: {kind: out}\nincremental: {by: offset}\n"), "a.yaml", reg, nil); err != nil {
		t.Fatalf("by position: %v", err)
	}
	for _, in := range []string{
		"name: a\npattern: full_load\n" + src + "sink: {kind: out}\n",
		positionHead + src + "sink: {kind: out}\nincremental: {delta_column: at, window: 1h, start: 2026-01-01T00:00:00Z}\n",
	} {
		_, err := Load([]byte(in), "a.yaml", reg, nil)
		if err == nil || !strings.Contains(err.Error(), "line 3: source.read: tail reads only what came since the previous run") {
			t.Errorf("Load of\n%s: %v; want source.read refused", in, err)
		}
	}
	if _, err := Load([]byte("name: a\npattern: full_load\nsource: {kind: log}\nsink: {kind: out}\n"), "a.yaml", reg, nil); err != nil {
		t.Errorf("full load reading whole: %v", err)
	}
}
