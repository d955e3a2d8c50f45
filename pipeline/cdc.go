package pipeline

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/protocol"
)

// CDC configures a pipeline of pattern cdc (and the lease of one of
// pattern cdc_apply): a PostgreSQL logical
// replication slot streamed into the SLUICE_CDC stream, after an initial
// snapshot of the tables' rows. The source is `kind: postgres` with a dsn
// and the captured tables (source.tables, "schema.table").
type CDC struct {
	// Slot and Publication name the replication slot and the publication;
	// both default to "sluice_" + the pipeline name ('-' becomes '_').
	Slot        string `json:"slot,omitempty"`
	Publication string `json:"publication,omitempty"`
	// Snapshot is "initial" (the default: existing rows are read as
	// bounded chunk tasks on the snapshot exported with the slot, then
	// the slot is streamed) or "never" (stream changes from the slot's
	// creation on).
	Snapshot string `json:"snapshot,omitempty"`
	// Heartbeat is the interval of the heartbeat that keeps an idle slot's
	// WAL from piling up; 0 means 10s.
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	// Lease is how long a worker holds the stream without renewing; when
	// the worker dies another takes the stream after at most this long.
	// 0 means DefaultLease.
	Lease time.Duration `json:"lease,omitempty"`
	// TargetRows bounds the rows of one snapshot chunk task; 0 means the
	// PostgreSQL source's default.
	TargetRows int64 `json:"target_rows,omitempty"`
	// MessageEvents is the most events packed into one SLUICE_CDC message
	// (consecutive changes of one table in one transaction, or rows of one
	// snapshot chunk); 0 means 1000, 1 publishes every event alone.
	MessageEvents int `json:"message_events,omitempty"`
}

// Snapshot modes of a cdc pipeline.
const (
	SnapshotInitial = "initial"
	SnapshotNever   = "never"
)

// DefaultLease is the stream lease of cdc and cdc_apply pipelines unless
// the spec sets cdc.lease.
const DefaultLease = 10 * time.Second

// CDCSourceConfig is the source of a cdc pipeline.
type CDCSourceConfig struct {
	DSN    string   `json:"dsn"`
	Tables []string `json:"tables"`
}

// ApplySourceConfig is the source of a cdc_apply pipeline: the cdc
// pipeline whose events it applies (`kind: cdc`).
type ApplySourceConfig struct {
	Pipeline string `json:"pipeline"`
}

// ApplySourceKind is the source kind of a cdc_apply pipeline.
const ApplySourceKind = "cdc"

// SlotName is the replication slot of a cdc pipeline.
func (s Spec) SlotName() string {
	if s.CDC != nil && s.CDC.Slot != "" {
		return s.CDC.Slot
	}
	return defaultSlot(s.Name)
}

// PublicationName is the publication of a cdc pipeline.
func (s Spec) PublicationName() string {
	if s.CDC != nil && s.CDC.Publication != "" {
		return s.CDC.Publication
	}
	return defaultSlot(s.Name)
}

// InitialSnapshot reports whether a cdc pipeline starts with a snapshot.
func (s Spec) InitialSnapshot() bool {
	return s.Pattern == protocol.PatternCDC && (s.CDC == nil || s.CDC.Snapshot != SnapshotNever)
}

// LeaseDuration is the stream lease of a cdc or cdc_apply pipeline.
func (s Spec) LeaseDuration() time.Duration {
	if s.CDC != nil && s.CDC.Lease > 0 {
		return s.CDC.Lease
	}
	return DefaultLease
}

// ApplyUpstream is the cdc pipeline whose events a cdc_apply pipeline
// applies (source.pipeline); "" for another pattern or a source that does
// not decode.
func (s Spec) ApplyUpstream() string {
	if s.Pattern != protocol.PatternCDCApply {
		return ""
	}
	var src ApplySourceConfig
	if err := json.Unmarshal(s.Source.Config, &src); err != nil {
		return ""
	}
	return src.Pipeline
}

// Streamed reports whether the pipeline runs as a leased stream.
func (s Spec) Streamed() bool {
	return s.Pattern == protocol.PatternCDC || s.Pattern == protocol.PatternCDCApply
}

func defaultSlot(name string) string {
	return "sluice_" + strings.ReplaceAll(name, "-", "_")
}

var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (p *parser) cdc(v *yaml.Node) *CDC {
	out := &CDC{}
	if v.Kind != yaml.MappingNode {
		p.add("cdc", v.Line, "must be a mapping ("+cdcFields+")")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "cdc." + k.Value
		switch k.Value {
		case "slot", "publication":
			name := p.str(field, val)
			if val.Kind == yaml.ScalarNode && !slotRE.MatchString(name) {
				p.add(field, val.Line, fmt.Sprintf("%q: want 1-63 of lower-case letters, digits and '_'", name))
			}
			if k.Value == "slot" {
				out.Slot = name
			} else {
				out.Publication = name
			}
		case "snapshot":
			out.Snapshot = p.str(field, val)
			if val.Kind == yaml.ScalarNode && out.Snapshot != SnapshotInitial && out.Snapshot != SnapshotNever {
				p.add(field, val.Line, fmt.Sprintf("%q: want %s or %s", out.Snapshot, SnapshotInitial, SnapshotNever))
			}
		case "heartbeat", "lease":
			d, err := ParseDuration(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || d < time.Second {
				p.add(field, val.Line, fmt.Sprintf("%q is not a duration of at least 1s (examples: 5s, 30s)", val.Value))
				continue
			}
			if k.Value == "heartbeat" {
				out.Heartbeat = d
			} else {
				out.Lease = d
			}
		case "target_rows":
			var n int64
			if err := val.Decode(&n); err != nil || n < 1 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive whole number", val.Value))
				continue
			}
			out.TargetRows = n
		case "message_events":
			var n int
			if err := val.Decode(&n); err != nil || n < 1 || n > maxMessageEvents {
				p.add(field, val.Line, fmt.Sprintf("%q is not a whole number from 1 to %d", val.Value, maxMessageEvents))
				continue
			}
			out.MessageEvents = n
		default:
			p.add(field, k.Line, "unknown field (known: "+cdcFields+")")
		}
	}
	return out
}

const cdcFields = "slot, publication, snapshot, heartbeat, lease, target_rows, message_events"

// maxMessageEvents bounds cdc.message_events.
const maxMessageEvents = 100_000

// streamProblems checks the source and sink of cdc and cdc_apply
// pipelines, which are not connectors of the registry's kind.
func (s Spec) streamProblems(lines lines) []Problem {
	var out []Problem
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if s.CDC != nil && !s.Streamed() && s.Pattern != "" {
		add("cdc", fmt.Sprintf("is only for patterns %s and %s, not %s", protocol.PatternCDC, protocol.PatternCDCApply, s.Pattern))
	}
	if c := s.CDC; c != nil && s.Pattern == protocol.PatternCDCApply &&
		(c.Slot != "" || c.Publication != "" || c.Snapshot != "" || c.Heartbeat != 0 || c.TargetRows != 0 || c.MessageEvents != 0) {
		add("cdc", "a cdc_apply pipeline takes only cdc.lease (slot, publication, snapshot, heartbeat, target_rows and message_events are the cdc pipeline's)")
	}
	if s.Streamed() {
		if s.Schedule != "" {
			add("schedule", fmt.Sprintf("must be left out: a %s pipeline streams continuously", s.Pattern))
		}
		if s.Trigger != nil {
			add("trigger", fmt.Sprintf("must be left out: a %s pipeline streams continuously", s.Pattern))
		}
	}
	switch s.Pattern {
	case protocol.PatternCDC:
		if s.Source.Kind != "" && s.Source.Kind != "postgres" {
			add("source.kind", fmt.Sprintf("%q: a cdc pipeline reads PostgreSQL logical replication: kind postgres", s.Source.Kind))
			break
		}
		var cfg CDCSourceConfig
		if err := strictJSON(s.Source.Config, &cfg); err != nil {
			add("source", fmt.Sprintf("%v (a cdc source has dsn and tables)", err))
			break
		}
		if strings.TrimSpace(cfg.DSN) == "" {
			add("source.dsn", "is required")
		}
		if len(cfg.Tables) == 0 {
			add("source.tables", "is required: the captured tables, as schema.table")
		}
		for _, t := range cfg.Tables {
			if i := strings.IndexByte(t, '.'); i <= 0 || i == len(t)-1 {
				add("source.tables", fmt.Sprintf("%q: want schema.table", t))
			}
		}
		if s.Sink.Kind != "" {
			add("sink", "must be left out: a cdc pipeline's events go to the SLUICE_CDC stream; apply them with a cdc_apply pipeline")
		}
		if !slotRE.MatchString(s.SlotName()) {
			add("cdc.slot", fmt.Sprintf("%q (from the name) is not a slot name: set cdc.slot", s.SlotName()))
		}
	case protocol.PatternCDCApply:
		if s.Source.Kind != ApplySourceKind {
			add("source.kind", fmt.Sprintf("%q: a cdc_apply pipeline reads the events of a cdc pipeline: kind %s", s.Source.Kind, ApplySourceKind))
		} else {
			var cfg ApplySourceConfig
			if err := strictJSON(s.Source.Config, &cfg); err != nil {
				add("source", fmt.Sprintf("%v (a cdc source has pipeline)", err))
			} else if !protocol.ValidName(cfg.Pipeline) {
				add("source.pipeline", fmt.Sprintf("%q is not a pipeline name", cfg.Pipeline))
			}
		}
		var m map[string]any
		_ = json.Unmarshal(s.Sink.Config, &m)
		switch s.Sink.Kind {
		case "postgres":
			if v, _ := m["dsn"].(string); strings.TrimSpace(v) == "" {
				add("sink.dsn", "is required")
			}
			for k := range m {
				if k != "dsn" && k != "schema" && k != "create_tables" {
					add("sink."+k, "unknown field (known: dsn, schema, create_tables)")
				}
			}
		case "files":
			if v, _ := m["path"].(string); strings.TrimSpace(v) == "" {
				add("sink.path", "is required")
			}
			for k, v := range m {
				switch k {
				case "path":
				case "close_after":
					if d, err := ParseDuration(fmt.Sprint(v)); err != nil || d < 0 {
						add("sink.close_after", fmt.Sprintf("%v is not a duration (examples: 1m, 10m)", v))
					}
				default:
					add("sink."+k, "unknown field (known: path, close_after)")
				}
			}
		case "":
		default:
			add("sink.kind", fmt.Sprintf("%q: a cdc_apply pipeline writes to postgres (a replica kept equal to the source) or files (a change log by table and hour)", s.Sink.Kind))
		}
	}
	return out
}

// strictJSON decodes config into v, refusing unknown fields.
func strictJSON(config json.RawMessage, v any) error {
	if len(config) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(config)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
