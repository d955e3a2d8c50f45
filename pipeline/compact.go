package pipeline

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/protocol"
)

// A compact pipeline names the dataset it compacts under `dataset:` (the
// sink configuration of the pipeline that writes it: a files directory or
// change log, an Iceberg table); the spec keeps it in Sink, the endpoint
// its runs commit to. Its compact section holds the settings
// (protocol.CompactSettings); a schedule or trigger.after says when it
// runs.

// datasetField is the top-level field naming a compact pipeline's dataset.
const datasetField = "dataset"

const compactFields = "target_file_size, min_files, min_age, retention, keep_versions, orphan_age, vacuum"

func (p *parser) compact(v *yaml.Node) *protocol.CompactSettings {
	out := &protocol.CompactSettings{}
	if v.Kind != yaml.MappingNode {
		p.add("compact", v.Line, "must be a mapping ("+compactFields+")")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "compact." + k.Value
		duration := func(min time.Duration, examples string) (time.Duration, bool) {
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d < min {
				p.add(field, val.Line, fmt.Sprintf("%q is not a duration of at least %s (examples: %s)", val.Value, min, examples))
				return 0, false
			}
			return d, true
		}
		count := func() (int, bool) {
			var n int
			if err := val.Decode(&n); err != nil || n < 1 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive whole number", val.Value))
				return 0, false
			}
			return n, true
		}
		switch k.Value {
		case "target_file_size":
			n, err := ParseBytes(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || n < 1<<10 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a size of at least 1KiB (examples: 256MiB, 1GiB)", val.Value))
				continue
			}
			out.TargetFileBytes = n
		case "min_files":
			if n, ok := count(); ok {
				out.MinFiles = max(n, 2)
			}
		case "keep_versions":
			if n, ok := count(); ok {
				out.KeepVersions = n
			}
		case "min_age":
			if d, ok := duration(0, "0s, 10m, 1h"); ok {
				out.MinAge = d
			}
		case "retention":
			if d, ok := duration(time.Second, "1h, 7d"); ok {
				out.Retention = d
			}
		case "orphan_age":
			if d, ok := duration(time.Second, "1h, 1d"); ok {
				out.OrphanAge = d
			}
		case "vacuum":
			var b bool
			if err := val.Decode(&b); err != nil {
				p.add(field, val.Line, fmt.Sprintf("%q is not true or false", val.Value))
				continue
			}
			out.Vacuum = &b
		default:
			p.add(field, k.Line, "unknown field (known: "+compactFields+")")
		}
	}
	return out
}

// CompactSettings are the compaction settings of a compact pipeline's
// spec, defaults filled in; the defaults for another pipeline, whose
// dataset `sluice compact` may compact too.
func (s Spec) CompactSettings() protocol.CompactSettings {
	var c protocol.CompactSettings
	if s.Compact != nil {
		c = *s.Compact
	}
	return c.WithDefaults()
}

// compactProblems checks what pattern compact requires beyond its
// dataset's configuration: a dataset and no source or sink (Parse finds
// those in the YAML), and the compact section only with it.
func (s Spec) compactProblems(lines lines) []Problem {
	var out []Problem
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if s.Compact != nil && s.Pattern != "" && s.Pattern != protocol.PatternCompact {
		add("compact", fmt.Sprintf("is only for pattern %s, not %s", protocol.PatternCompact, s.Pattern))
	}
	if s.Pattern != protocol.PatternCompact {
		return out
	}
	if s.Source.Kind != "" {
		add("source", "must be left out: a compact pipeline rewrites its dataset in place (dataset)")
	}
	if c := s.Compact; c != nil {
		if c.TargetFileBytes < 0 || c.MinFiles < 0 || c.KeepVersions < 0 || c.MinAge < 0 || c.Retention < 0 || c.OrphanAge < 0 {
			add("compact", "sizes, counts and durations must not be negative")
		}
	}
	return out
}
