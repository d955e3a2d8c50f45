package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

const readinessHead = "name: ev-ready\npattern: readiness\nsource:\n  kind: files\n  path: /data/events\n  layout: \"date={date}/hour={hour}\"\n"

func TestLoadReadiness(t *testing.T) {
	s, err := Load([]byte(readinessHead+"readiness:\n  start: 2026-11-25T00:00:00Z\n  check: 10s\n"), "r.yaml", partitionRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pattern != protocol.PatternReadiness || s.Readiness == nil {
		t.Fatalf("spec: %+v", s)
	}
	if want := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC); !s.Readiness.Start.Equal(want) || s.Readiness.CheckEvery() != 10*time.Second {
		t.Fatalf("readiness: %+v", *s.Readiness)
	}
	if s.Sink.Kind != "" {
		t.Fatalf("a readiness pipeline has no sink: %+v", s.Sink)
	}
	s, err = Load([]byte(readinessHead+"readiness: {start: 2026-11-25T00:00:00Z}\n"), "r.yaml", partitionRegistry(), nil)
	if err != nil || s.Readiness.CheckEvery() != DefaultReadyCheck {
		t.Fatalf("default check: %v %+v", err, s.Readiness)
	}
}

func TestLoadReadinessProblems(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // field: problem fragments
	}{
		{"no section", readinessHead, []string{"readiness: is required for pattern readiness"}},
		{"no start", readinessHead + "readiness: {check: 5s}\n", []string{"readiness.start: is required"}},
		{"bad start", readinessHead + "readiness: {start: yesterday}\n", []string{"readiness.start: \"yesterday\" is not an RFC 3339 time"}},
		{"start off a partition", readinessHead + "readiness: {start: 2026-11-25T00:30:00Z}\n", []string{"readiness.start: 2026-11-25T00:30:00Z is not where a partition of 1h0m0s starts"}},
		{"check too short", readinessHead + "readiness: {start: 2026-11-25T00:00:00Z, check: 10ms}\n", []string{"readiness.check: \"10ms\" is not a duration of at least 1s"}},
		{"unknown field", readinessHead + "readiness: {start: 2026-11-25T00:00:00Z, every: 5s}\n", []string{"readiness.every: unknown field"}},
		{"sink and trigger refused", readinessHead + "readiness: {start: 2026-11-25T00:00:00Z}\nsink: {kind: files, path: /out}\ntrigger: {after: up}\nschedule: '@hourly'\n",
			[]string{"sink: a readiness pipeline watches a dataset and loads nothing", "trigger: a readiness pipeline", "schedule: a readiness pipeline"}},
		{"no layout", "name: r\npattern: readiness\nsource: {kind: files, path: /data/events}\nreadiness: {start: 2026-11-25T00:00:00Z}\n",
			[]string{"source: a readiness pipeline watches time partitions or a table's snapshots: this files source is neither"}},
		{"section on another pattern", partitionHead + "incremental: {window: 1h, start: 2026-11-25T00:00:00Z}\nreadiness: {start: 2026-11-25T00:00:00Z}\n",
			[]string{"readiness: is only for pattern readiness, not incremental"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.in), "r.yaml", partitionRegistry(), nil)
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// pattern: trigger is not a pattern: the error says where a trigger goes.
func TestParseTriggerPatternRefused(t *testing.T) {
	_, err := Parse([]byte("name: t\npattern: trigger\nsource: {kind: files, path: /in}\nsink: {kind: files, path: /out}\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), `unknown pattern "trigger"`) || !strings.Contains(err.Error(), "trigger section") {
		t.Fatalf("pattern trigger: %v", err)
	}
	if strings.Contains(patternList(false), "trigger") {
		t.Fatalf("trigger is still a known pattern: %s", patternList(false))
	}
}
