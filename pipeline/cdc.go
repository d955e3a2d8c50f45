package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// CDC configures a pipeline of pattern cdc (and the lease of one of
// pattern cdc_apply): the changes of its source captured into the
// SLUICE_CDC stream (for PostgreSQL, a logical replication slot), after an
// initial snapshot of the tables' rows. The source is a connector kind that
// can be a cdc source (connectors.RoleCDCSource), whose configuration that
// kind checks; these settings reach it as connectors.StreamSettings.
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
	// MaxLag bounds the WAL the slot may retain (in bytes) while the
	// reader takes an incremental snapshot (of a table added to the
	// pipeline, or asked for with `sluice cdc resnapshot`): past it the
	// next chunk waits until the slot caught up. 0 means 1GiB
	// (pgcdc.DefaultMaxLagBytes).
	MaxLag int64 `json:"max_lag,omitempty"`
	// SnapshotChunkRows is the most rows of one chunk of an incremental
	// snapshot, held in the reader's memory; 0 means 10000.
	SnapshotChunkRows int `json:"snapshot_chunk_rows,omitempty"`
}

// Snapshot modes of a cdc pipeline.
const (
	SnapshotInitial = "initial"
	SnapshotNever   = "never"
)

// DefaultLease is the stream lease of cdc and cdc_apply pipelines unless
// the spec sets cdc.lease.
const DefaultLease = 10 * time.Second

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

// StreamSettings are the settings of a cdc or cdc_apply pipeline's stream
// beside its connectors' configurations: its cdc section (with the default
// slot and publication) for a cdc pipeline, its upstream for a cdc_apply
// pipeline; zero for another pattern.
func (s Spec) StreamSettings() protocol.StreamSettings {
	var out protocol.StreamSettings
	switch s.Pattern {
	case protocol.PatternCDC:
		out.Slot, out.Publication = s.SlotName(), s.PublicationName()
		if c := s.CDC; c != nil {
			out.Heartbeat, out.MessageEvents, out.TargetRows = c.Heartbeat, c.MessageEvents, c.TargetRows
			out.MaxLagBytes, out.SnapshotChunkRows = c.MaxLag, c.SnapshotChunkRows
		}
	case protocol.PatternCDCApply:
		out.Upstream = s.ApplyUpstream()
	}
	return out
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
			n, ok := p.integer(field, val, 1, math.MaxInt)
			if !ok {
				continue
			}
			out.TargetRows = int64(n)
		case "max_lag":
			n, err := ParseBytes(val.Value)
			if err != nil || val.Kind != yaml.ScalarNode || n < 1 {
				p.add(field, val.Line, fmt.Sprintf("%q is not a positive size (examples: 512MB, 2GiB)", val.Value))
				continue
			}
			out.MaxLag = n
		case "snapshot_chunk_rows":
			n, ok := p.integer(field, val, 1, maxChunkRows)
			if !ok {
				continue
			}
			out.SnapshotChunkRows = n
		case "message_events":
			n, ok := p.integer(field, val, 1, maxMessageEvents)
			if !ok {
				continue
			}
			out.MessageEvents = n
		default:
			p.add(field, k.Line, "unknown field (known: "+cdcFields+")")
		}
	}
	return out
}

const cdcFields = "slot, publication, snapshot, heartbeat, lease, target_rows, message_events, max_lag, snapshot_chunk_rows"

// maxMessageEvents bounds cdc.message_events; maxChunkRows
// cdc.snapshot_chunk_rows.
const (
	maxMessageEvents = 100_000
	maxChunkRows     = 1_000_000
)

// streamProblems checks what the patterns cdc and cdc_apply require
// beyond their connectors' configurations, which the registry's kinds check
// (Spec.Validate): the cdc section, no schedule or trigger, no sink for a
// cdc pipeline, an initial snapshot its source kind can make, and the
// source of a cdc_apply pipeline, the events of a cdc pipeline.
func (s Spec) streamProblems(lines lines, reg *connectors.Registry) []Problem {
	var out []Problem
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if s.CDC != nil && !s.Streamed() && s.Pattern != "" {
		add("cdc", fmt.Sprintf("is only for patterns %s and %s, not %s", protocol.PatternCDC, protocol.PatternCDCApply, s.Pattern))
	}
	if c := s.CDC; c != nil && s.Pattern == protocol.PatternCDCApply &&
		(c.Slot != "" || c.Publication != "" || c.Snapshot != "" || c.Heartbeat != 0 || c.TargetRows != 0 || c.MessageEvents != 0 || c.MaxLag != 0 || c.SnapshotChunkRows != 0) {
		add("cdc", "a cdc_apply pipeline takes only cdc.lease (slot, publication, snapshot, heartbeat, target_rows, message_events, max_lag and snapshot_chunk_rows are the cdc pipeline's)")
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
		if s.Sink.Kind != "" {
			add("sink", "must be left out: a cdc pipeline's events go to the SLUICE_CDC stream; apply them with a cdc_apply pipeline")
		}
		if s.InitialSnapshot() && reg.Has(s.Source.Kind, connectors.RoleCDCSource) && !reg.HasInitialSnapshot(s.Source.Kind) {
			add("cdc.snapshot", fmt.Sprintf("a cdc source of kind %q has no initial snapshot: set cdc.snapshot to %s", s.Source.Kind, SnapshotNever))
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
