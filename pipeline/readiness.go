package pipeline

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// A readiness pipeline (the Readiness Marker pattern) watches a dataset it
// does not load: its source is laid out by time partitions (the files
// source's layout, with its ready convention: a _SUCCESS file or the next
// partition), and the coordinator leader announces each partition once it
// is complete, in order from Start, on sluice.events.ready.<pipeline>; or
// its source is a table whose commits are its markers (an Iceberg table,
// connectors.Snapshots), and the leader announces each new snapshot of
// the table's lineage committed at or after Start, in order.
// It has no sink and no runs; pipelines with trigger.after naming it run
// once per partition announced.

// Readiness holds the settings of a readiness pipeline.
type Readiness struct {
	// Start is where the first partition watched starts; it must lie on
	// a partition boundary of the source's layout. For a table's
	// snapshots, the first snapshot announced is the first committed at
	// or after Start.
	Start time.Time `json:"start"`
	// Check is how often the leader looks at the next partition; 0 means
	// DefaultReadyCheck.
	Check time.Duration `json:"check,omitempty"`
}

// CheckEvery returns how often the leader checks the next partition.
func (r *Readiness) CheckEvery() time.Duration {
	if r == nil || r.Check <= 0 {
		return DefaultReadyCheck
	}
	return r.Check
}

// readinessField is the top-level field of a readiness pipeline's settings.
const readinessField = "readiness"

// readinessRefused are the top-level fields a readiness pipeline refuses:
// it loads nothing and starts no run.
var readinessRefused = []string{"sink", "schedule", "trigger", "retry", "incremental", "cdc", "contract", "compact", "partitioning", datasetField}

func (p *parser) readiness(v *yaml.Node) *Readiness {
	out := &Readiness{}
	if v.Kind != yaml.MappingNode {
		p.add(readinessField, v.Line, "must be a mapping (start, check)")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := readinessField + "." + k.Value
		switch k.Value {
		case "start":
			t, err := time.Parse(time.RFC3339Nano, val.Value)
			if err != nil || val.Kind != yaml.ScalarNode {
				p.add(field, val.Line, fmt.Sprintf("%q is not an RFC 3339 time (example: 2026-01-01T00:00:00Z)", val.Value))
				continue
			}
			out.Start = t.UTC()
		case "check":
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d < time.Second {
				p.add(field, val.Line, fmt.Sprintf("%q is not a duration of at least 1s (examples: 10s, 1m)", val.Value))
				continue
			}
			out.Check = d
		default:
			p.add(field, k.Line, "unknown field (known: start, check)")
		}
	}
	return out
}

// readinessShape checks the fields a readiness pipeline has and refuses
// those it does not take (Parse).
func (p *parser) readinessShape(s Spec, seen map[string]*yaml.Node) {
	_, has := seen[readinessField]
	switch {
	case s.Pattern == protocol.PatternReadiness && !has:
		p.add(readinessField, 0, "is required for pattern readiness (start; check)")
	case s.Pattern != protocol.PatternReadiness && has && s.Pattern != "":
		p.add(readinessField, seen[readinessField].Line, fmt.Sprintf("is only for pattern readiness, not %s", s.Pattern))
	}
	if s.Pattern != protocol.PatternReadiness {
		return
	}
	if s.Readiness != nil && has && s.Readiness.Start.IsZero() {
		p.add(readinessField+".start", seen[readinessField].Line, "is required: the first partition to watch")
	}
	for _, f := range readinessRefused {
		if k, ok := seen[f]; ok {
			p.add(f, k.Line, "a readiness pipeline watches a dataset and loads nothing: it takes only name, description, source and readiness (start a load with trigger.after: "+s.Name+" on the pipeline that loads)")
		}
	}
}

// readinessProblems checks a readiness pipeline's source against the
// registry: it must be laid out by time partitions (partition > 0, the
// registry's PartitionSize) and report readiness, and Start must be where
// a partition starts.
func (s Spec) readinessProblems(lines lines, reg *connectors.Registry, partition time.Duration) []Problem {
	if s.Pattern != protocol.PatternReadiness || s.Source.Kind == "" || !reg.HasSource(s.Source.Kind) {
		return nil
	}
	var out []Problem
	if reg.WatchesSnapshots(s.Source.Kind) {
		return nil // any time: the first snapshot committed since
	}
	if partition <= 0 && hasLayout(s.Source) {
		return nil // the layout's own problem is reported with the source
	}
	if partition <= 0 {
		return append(out, Problem{Field: "source", Line: lines.nearest("source"),
			Msg: fmt.Sprintf("a readiness pipeline watches time partitions or a table's snapshots: this %s source is neither (a files source with layout, and ready: success_file or next_partition; an iceberg table)", s.Source.Kind)})
	}
	if r := s.Readiness; r != nil && !r.Start.IsZero() && !r.Start.UTC().Truncate(partition).Equal(r.Start) {
		out = append(out, Problem{Field: "readiness.start", Line: lines.nearest("readiness.start"),
			Msg: fmt.Sprintf("%s is not where a partition of %s starts (every %s from midnight UTC)", r.Start.UTC().Format(time.RFC3339Nano), partition, partition)})
	}
	return out
}
