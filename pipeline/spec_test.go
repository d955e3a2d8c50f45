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

const good = `name: orders
pattern: full_load
description: copy orders
source:
  kind: files
  path: in
  format: jsonl
sink:
  kind: files
  path: /data/out
  format: parquet
partitioning:
  target_bytes: 64MiB
  max_files: 10
schedule: "@every 1h"
retry:
  max_attempts: 5
  backoff: 2s
`

func TestParseGood(t *testing.T) {
	s, err := Parse([]byte(good), "orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "orders" || s.Pattern != protocol.PatternFullLoad || s.Schedule != "@every 1h" {
		t.Fatalf("got %+v", s)
	}
	if s.Partition.TargetBytes != 64<<20 || s.Partition.MaxFiles != 10 {
		t.Fatalf("partitioning = %+v", s.Partition)
	}
	if s.Retry.MaxAttempts != 5 || s.Retry.Backoff != 2*time.Second {
		t.Fatalf("retry = %+v", s.Retry)
	}
	var src map[string]any
	if err := json.Unmarshal(s.Source.Config, &src); err != nil {
		t.Fatal(err)
	}
	if s.Source.Kind != "files" || src["path"] != "in" || src["format"] != "jsonl" {
		t.Fatalf("source = %s %s", s.Source.Kind, s.Source.Config)
	}
	if err := s.ResolvePaths("/specs"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s.Source.Config), `"path":"/specs/in"`) || !strings.Contains(string(s.Sink.Config), `"path":"/data/out"`) {
		t.Fatalf("resolved: %s / %s", s.Source.Config, s.Sink.Config)
	}
}

func TestParseProblemsNameFieldAndLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"missing required", "name: a\n", []string{"pattern: is required", "source: is required", "sink: is required"}},
		{"bad name", "name: Bad.Name\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\n", []string{"line 1: name:"}},
		{"unknown pattern", "name: a\npattern: magic\nsource: {kind: files}\nsink: {kind: files}\n", []string{`line 2: pattern: unknown pattern "magic"`}},
		{"unknown field", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nsinks: x\n", []string{"line 5: sinks: unknown field"}},
		{"no kind", "name: a\npattern: full_load\nsource:\n  path: x\nsink: {kind: files}\n", []string{"line 4: source.kind: is required"}},
		{"bad size", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\npartitioning:\n  target_bytes: lots\n", []string{`line 6: partitioning.target_bytes: "lots" is not a size`}},
		{"bad backoff", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nretry:\n  backoff: soon\n", []string{"line 6: retry.backoff"}},
		{"duplicate", "name: a\nname: b\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\n", []string{"line 2: name: appears twice"}},
		{"not yaml", "name: [a\n", []string{"(document)"}},
		{"not a mapping", "- a\n- b\n", []string{"a pipeline spec is a YAML mapping"}},
		{"bad schedule", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nschedule: every hour\n", []string{`line 5: schedule: "every hour" is not a schedule`}},
		{"six-field schedule", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nschedule: \"0 0 * * * *\"\n", []string{"line 5: schedule:"}},
		{"sub-second every", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nschedule: \"@every 100ms\"\n", []string{"line 5: schedule:", "at least 1s"}},
		{"after itself", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\ntrigger:\n  after: a\n", []string{`line 6: trigger.after: "a" is this pipeline`}},
		{"after bad name", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\ntrigger:\n  after: Up.Stream\n", []string{`line 6: trigger.after: "Up.Stream" is not a valid pipeline name`}},
		{"trigger unknown field", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\ntrigger:\n  before: b\n", []string{"line 6: trigger.before: unknown field (known: after, subject, filter, params, id, event_time;"}},
		{"trigger not a mapping", "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\ntrigger: b\n", []string{"line 5: trigger: must be a mapping"}},
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

func TestParseScheduleAndTrigger(t *testing.T) {
	for _, sched := range []string{"0 * * * *", "*/5 2 * * 1-5", "@hourly", "@daily", "@every 10s", "@every 1h30m"} {
		in := "name: b\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\nschedule: \"" + sched + "\"\ntrigger: {after: a}\n"
		s, err := Parse([]byte(in), "b.yaml")
		if err != nil {
			t.Fatalf("schedule %q: %v", sched, err)
		}
		if s.Schedule != sched || s.Trigger == nil || s.Trigger.After != "a" {
			t.Fatalf("schedule %q: parsed %q, trigger %+v", sched, s.Schedule, s.Trigger)
		}
	}
	// Validate judges a spec built without Parse the same way.
	s := Spec{Name: "a", Pattern: protocol.PatternFullLoad, Schedule: "@fortnightly", Trigger: &Trigger{After: "a"}}
	err := s.Validate(connectors.NewRegistry(), nil)
	for _, w := range []string{`schedule: "@fortnightly" is not a schedule`, `trigger.after: "a" is this pipeline`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate error %v does not contain %q", err, w)
		}
	}
}

func TestValidateNamesConnectorField(t *testing.T) {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{
		Kind:   "files",
		Source: func(ctx context.Context, c json.RawMessage) (connectors.Source, error) { return nil, nil },
		Sink:   func(ctx context.Context, c json.RawMessage) (connectors.Sink, error) { return nil, nil },
		Validate: func(c json.RawMessage) error {
			var m map[string]any
			_ = json.Unmarshal(c, &m)
			if f, _ := m["format"].(string); f != "" && f != "jsonl" {
				return &connectors.FieldError{Field: "format", Msg: "unknown format " + f}
			}
			return nil
		},
	})
	in := "name: a\npattern: full_load\nsource:\n  kind: files\n  format: xml\nsink:\n  kind: nowhere\n"
	s, err := Parse([]byte(in), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Validate(reg, nil)
	if err == nil {
		t.Fatal("Validate accepted a bad format and an unknown sink kind")
	}
	for _, w := range []string{"line 5: source.format: unknown format xml", `line 7: sink.kind: connector "nowhere" cannot be a sink`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	in = "name: a\npattern: full_load\nsource:\n  kind: files\n  format: ${SLUICE_FMT}\nsink:\n  kind: files\n"
	s, err = Parse([]byte(in), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// An unset variable cannot be judged where the spec is checked: it may
	// be set where the connector runs.
	unset := func(string) (string, bool) { return "", false }
	if err := s.Validate(reg, unset); err != nil {
		t.Fatalf("unset variable: err = %v, want the field left unjudged", err)
	}
	set := func(string) (string, bool) { return "jsonl", true }
	if err := s.Validate(reg, set); err != nil {
		t.Fatalf("set variable: %v", err)
	}
	bad := func(string) (string, bool) { return "xml", true }
	// The error quotes what the spec says, never the value.
	if err := s.Validate(reg, bad); err == nil || !strings.Contains(err.Error(), "line 5: source.format: unknown format ${SLUICE_FMT}") || strings.Contains(err.Error(), "xml") {
		t.Fatalf("variable set to a bad value: err = %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"64MiB", 64 << 20, true}, {"500k", 500000, true}, {"2GB", 2e9, true},
		{"1 KiB", 1024, true}, {"", 0, false}, {"-1", 0, false}, {"12XB", 0, false}, {"9999999999GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\n"))
	f.Add([]byte("retry: {max_attempts: 0}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("Parse error %v is not an *Error with problems", err)
			}
			return
		}
		if s.Name == "" || !protocol.ValidName(s.Name) || s.Source.Kind == "" || s.Sink.Kind == "" {
			t.Fatalf("Parse accepted an incomplete spec: %+v", s)
		}
	})
}
