package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

const incrementalHead = "name: a\npattern: incremental\nsource: {kind: files}\nsink: {kind: files}\n"

func TestParseIncremental(t *testing.T) {
	in := incrementalHead + "incremental:\n  delta_column: updated_at\n  window: 1h\n  lag: 5m\n  start: 2026-01-01T00:00:00Z\n"
	s, err := Parse([]byte(in), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Incremental{DeltaColumn: "updated_at", Window: time.Hour, Lag: 5 * time.Minute, Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if s.Incremental == nil || *s.Incremental != want {
		t.Fatalf("incremental = %+v, want %+v", s.Incremental, want)
	}
	// Days, no lag, no start (the start is needed only before the first
	// committed run), a start with a zone.
	in = incrementalHead + "incremental:\n  delta_column: d\n  window: 1d\n  start: \"2026-01-01T02:00:00+02:00\"\n"
	s, err = Parse([]byte(in), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Incremental.Window != 24*time.Hour || s.Incremental.Lag != 0 || !s.Incremental.Start.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("incremental = %+v", s.Incremental)
	}
}

func TestParseIncrementalProblems(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"required for the pattern", incrementalHead, []string{"incremental: is required for pattern incremental"}},
		{"refused for other patterns", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nincremental:\n  delta_column: x\n  window: 1h\n",
			[]string{"line 5: incremental: is only for patterns incremental and transform, not full_load"}},
		{"not a mapping", incrementalHead + "incremental: 1h\n", []string{"line 5: incremental: must be a mapping"}},
		{"zero window", incrementalHead + "incremental:\n  delta_column: x\n  window: 0s\n", []string{`line 7: incremental.window: "0s" is not a positive duration`}},
		{"negative window", incrementalHead + "incremental:\n  delta_column: x\n  window: -1h\n", []string{`line 7: incremental.window: "-1h" is not a positive duration`}},
		{"bad window", incrementalHead + "incremental:\n  delta_column: x\n  window: hourly\n", []string{`line 7: incremental.window: "hourly"`}},
		{"negative lag", incrementalHead + "incremental:\n  delta_column: x\n  window: 1h\n  lag: -5m\n", []string{`line 8: incremental.lag: "-5m" is not a duration of 0 or more`}},
		{"bad start", incrementalHead + "incremental:\n  delta_column: x\n  window: 1h\n  start: 2026-01-01 00:00\n", []string{`line 8: incremental.start: "2026-01-01 00:00" is not an RFC 3339 time`}},
		{"date only start", incrementalHead + "incremental:\n  delta_column: x\n  window: 1h\n  start: 2026-01-01\n", []string{`line 8: incremental.start`}},
		{"missing fields", incrementalHead + "incremental:\n  lag: 5m\n", []string{"line 6: incremental.delta_column: is required", "line 6: incremental.window: is required"}},
		{"empty delta column", incrementalHead + "incremental:\n  delta_column: \"\"\n  window: 1h\n", []string{"line 6: incremental.delta_column: must name a column"}},
		{"unknown field", incrementalHead + "incremental:\n  delta_column: x\n  window: 1h\n  windw: 2h\n", []string{"line 8: incremental.windw: unknown field"}},
		{"duplicate field", incrementalHead + "incremental:\n  delta_column: x\n  window: 1h\n  window: 2h\n", []string{"line 8: incremental.window: appears twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in), "p.yaml")
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error = %v, want *Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A spec that reaches the leader as JSON is checked again: the incremental
// section against the pattern, and its values.
func TestValidateIncremental(t *testing.T) {
	reg := filesRegistry()
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"ok", Spec{Incremental: &Incremental{DeltaColumn: "u", Window: time.Hour}}, ""},
		{"missing", Spec{}, "incremental: is required for pattern incremental"},
		{"zero window", Spec{Incremental: &Incremental{DeltaColumn: "u"}}, "incremental.window: must be a positive duration"},
		{"negative lag", Spec{Incremental: &Incremental{DeltaColumn: "u", Window: time.Hour, Lag: -time.Second}}, "incremental.lag: must not be negative"},
		{"no column", Spec{Incremental: &Incremental{Window: time.Hour}}, "incremental.delta_column: is required"},
		{"other pattern", Spec{Pattern: "full_load", Incremental: &Incremental{DeltaColumn: "u", Window: time.Hour}}, "incremental: is only for patterns incremental and transform, not full_load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			s.Name = "a"
			if s.Pattern == "" {
				s.Pattern = "incremental"
			}
			s.Source.Kind, s.Sink.Kind = "files", "files"
			err := s.Validate(reg, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1h", time.Hour, true}, {"90m", 90 * time.Minute, true}, {"1d", 24 * time.Hour, true}, {"7d", 7 * 24 * time.Hour, true},
		{"d", 0, false}, {"1.5d", 0, false}, {"-1d", -24 * time.Hour, true}, {"xd", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func filesRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{
		Kind:   "files",
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil },
		Sink:   func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, nil },
	})
	return reg
}
