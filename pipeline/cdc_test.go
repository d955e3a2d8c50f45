package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// streamRegistry has the kinds "db" (a source, and a cdc source with an
// initial snapshot that wants a dsn and tables), "log" (a cdc source
// without an initial snapshot) and "dir" (a sink, and a cdc target that
// wants a path).
func streamRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	need := func(fields ...string) connectors.Validator {
		return func(config json.RawMessage) error {
			var m map[string]any
			_ = json.Unmarshal(config, &m)
			for _, f := range fields {
				if v, ok := m[f]; !ok || v == "" {
					return &connectors.FieldError{Field: f, Msg: "is required"}
				}
			}
			return nil
		}
	}
	open := func(context.Context, connectors.StreamRequest) (connectors.Stream, error) {
		return nil, errors.New("no streams here")
	}
	reg.Register(connectors.Connector{
		Kind: "db",
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) {
			return nil, errors.New("no reads here")
		},
		CDCSource: &connectors.CDCSource{Validate: need("dsn", "tables"), Open: open,
			Snapshot: func(connectors.SnapshotRequest) (connectors.SnapshotEndpoints, error) {
				return connectors.SnapshotEndpoints{}, nil
			}},
	})
	reg.Register(connectors.Connector{Kind: "log", CDCSource: &connectors.CDCSource{Open: open}})
	reg.Register(connectors.Connector{
		Kind: "dir",
		Sink: func(context.Context, json.RawMessage) (connectors.Sink, error) {
			return nil, errors.New("no writes here")
		},
		CDCTarget: &connectors.CDCTarget{Validate: need("path"), Open: func(context.Context, connectors.StreamRequest) (connectors.Applier, error) {
			return nil, errors.New("no applies here")
		}},
	})
	return reg
}

func TestCDCSpec(t *testing.T) {
	spec, err := Load([]byte(`name: shop-cdc
pattern: cdc
source:
  kind: db
  dsn: ${SLUICE_SHOP_DSN}
  tables: [public.orders, public.customers]
cdc:
  heartbeat: 5s
  lease: 6s
  target_rows: 1000
  message_events: 200
  max_lag: 512MB
  snapshot_chunk_rows: 5000
`), "shop.yaml", streamRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.SlotName() != "sluice_shop_cdc" || spec.PublicationName() != "sluice_shop_cdc" {
		t.Errorf("slot %q publication %q", spec.SlotName(), spec.PublicationName())
	}
	if !spec.InitialSnapshot() || !spec.Streamed() || spec.LeaseDuration() != 6*time.Second || spec.CDC.Heartbeat != 5*time.Second || spec.CDC.TargetRows != 1000 || spec.CDC.MessageEvents != 200 {
		t.Errorf("spec %+v cdc %+v", spec, spec.CDC)
	}
	want := protocol.StreamSettings{Slot: "sluice_shop_cdc", Publication: "sluice_shop_cdc", Heartbeat: 5 * time.Second, MessageEvents: 200, TargetRows: 1000,
		MaxLagBytes: 512_000_000, SnapshotChunkRows: 5000}
	if got := spec.StreamSettings(); !reflect.DeepEqual(got, want) {
		t.Errorf("stream settings %+v, want %+v", got, want)
	}

	apply, err := Load([]byte(`name: shop-replica
pattern: cdc_apply
source: {kind: cdc, pipeline: shop-cdc}
sink: {kind: dir, path: /replica}
`), "replica.yaml", streamRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if apply.Pattern != protocol.PatternCDCApply || apply.LeaseDuration() != DefaultLease || apply.InitialSnapshot() {
		t.Errorf("apply spec %+v", apply)
	}
	if got := apply.StreamSettings(); !reflect.DeepEqual(got, protocol.StreamSettings{Upstream: "shop-cdc"}) {
		t.Errorf("apply stream settings %+v", got)
	}
}

// The patterns' own rules, and the connectors' configurations checked by
// their kinds through the registry in the role the pattern gives them.
func TestCDCSpecProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"cdc without tables, with a sink and a schedule", `name: a
pattern: cdc
source: {kind: db, dsn: "postgres://h/db"}
sink: {kind: dir, path: /tmp/x}
schedule: "@hourly"
cdc: {snapshot: sometimes, lease: 10ms, slot: Bad-Slot, message_events: 0, max_lag: lots, snapshot_chunk_rows: 0}
`, []string{"source.tables: is required", "sink: must be left out", "schedule: must be left out", `cdc.snapshot: "sometimes"`, `cdc.lease: "10ms"`, `cdc.slot: "Bad-Slot"`, `cdc.message_events: "0" is not an integer from 1 to 100000`,
			`cdc.max_lag: "lots" is not a positive size`, `cdc.snapshot_chunk_rows: "0" is not an integer from 1 to`}},
		{"cdc from a kind that is no cdc source", `name: a
pattern: cdc
source: {kind: dir, path: /x}
`, []string{`source.kind: connector "dir" cannot be a cdc source (kinds: [db log])`}},
		{"cdc with a snapshot its source cannot make", `name: a
pattern: cdc
source: {kind: log}
`, []string{`cdc.snapshot: a cdc source of kind "log" has no initial snapshot: set cdc.snapshot to never`}},
		{"cdc section on another pattern", `name: a
pattern: full_load
source: {kind: db, path: /x}
sink: {kind: dir, path: /y}
cdc: {lease: 5s}
`, []string{"cdc: is only for patterns cdc and cdc_apply"}},
		{"apply with a slot", `name: a
pattern: cdc_apply
source: {kind: cdc, pipeline: up}
sink: {kind: dir, path: /x}
cdc: {slot: s, lease: 5s}
`, []string{"cdc: a cdc_apply pipeline takes only cdc.lease"}},
		{"apply with a bad source and sink", `name: a
pattern: cdc_apply
source: {kind: cdc, pipeline: "Not A Name"}
sink: {kind: kafka, topic: x}
`, []string{`source.pipeline: "Not A Name"`, `sink.kind: connector "kafka" cannot be a cdc target (kinds: [dir])`}},
		{"apply from another source, to a target without its path", `name: a
pattern: cdc_apply
source: {kind: db, dsn: x}
sink: {kind: dir, paths: x}
`, []string{`source.kind: "db": a cdc_apply pipeline reads the events of a cdc pipeline: kind cdc`, "sink.path: is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.yaml), "x.yaml", streamRegistry(), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	// A cdc pipeline whose source kind has no initial snapshot streams
	// from the slot's creation on.
	if _, err := Load([]byte("name: a\npattern: cdc\nsource: {kind: log}\ncdc: {snapshot: never}\n"), "x.yaml", streamRegistry(), nil); err != nil {
		t.Errorf("cdc without a snapshot from a kind without one: %v", err)
	}
}
