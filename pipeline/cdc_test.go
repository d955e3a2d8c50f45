package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

func TestCDCSpec(t *testing.T) {
	spec, err := Load([]byte(`name: shop-cdc
pattern: cdc
source:
  kind: postgres
  dsn: ${SHOP_DSN}
  tables: [public.orders, public.customers]
cdc:
  heartbeat: 5s
  lease: 6s
  target_rows: 1000
  message_events: 200
`), "shop.yaml", connectors.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.SlotName() != "sluice_shop_cdc" || spec.PublicationName() != "sluice_shop_cdc" {
		t.Errorf("slot %q publication %q", spec.SlotName(), spec.PublicationName())
	}
	if !spec.InitialSnapshot() || !spec.Streamed() || spec.LeaseDuration() != 6*time.Second || spec.CDC.Heartbeat != 5*time.Second || spec.CDC.TargetRows != 1000 || spec.CDC.MessageEvents != 200 {
		t.Errorf("spec %+v cdc %+v", spec, spec.CDC)
	}

	apply, err := Load([]byte(`name: shop-replica
pattern: cdc_apply
source: {kind: cdc, pipeline: shop-cdc}
sink: {kind: postgres, dsn: "postgres://x@h/db", schema: replica, create_tables: true}
`), "replica.yaml", connectors.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if apply.Pattern != protocol.PatternCDCApply || apply.LeaseDuration() != DefaultLease || apply.InitialSnapshot() {
		t.Errorf("apply spec %+v", apply)
	}
}

func TestCDCSpecProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"cdc without tables, with a sink and a schedule", `name: a
pattern: cdc
source: {kind: postgres, dsn: "postgres://h/db"}
sink: {kind: files, path: /tmp/x}
schedule: "@hourly"
cdc: {snapshot: sometimes, lease: 10ms, slot: Bad-Slot, message_events: 0}
`, []string{"source.tables: is required", "sink: must be left out", "schedule: must be left out", `cdc.snapshot: "sometimes"`, `cdc.lease: "10ms"`, `cdc.slot: "Bad-Slot"`, `cdc.message_events: "0" is not a whole number from 1 to 100000`}},
		{"cdc from another kind", `name: a
pattern: cdc
source: {kind: files, path: /x}
`, []string{`source.kind: "files"`}},
		{"cdc section on another pattern", `name: a
pattern: full_load
source: {kind: files, path: /x}
sink: {kind: files, path: /y}
cdc: {lease: 5s}
`, []string{"cdc: is only for patterns cdc and cdc_apply"}},
		{"apply with a slot", `name: a
pattern: cdc_apply
source: {kind: cdc, pipeline: up}
sink: {kind: files, path: /x}
cdc: {slot: s, lease: 5s}
`, []string{"cdc: a cdc_apply pipeline takes only cdc.lease"}},
		{"apply with a bad source and sink", `name: a
pattern: cdc_apply
source: {kind: cdc, pipeline: "Not A Name"}
sink: {kind: kafka, topic: x}
`, []string{`source.pipeline: "Not A Name"`, `sink.kind: "kafka"`}},
		{"apply without dsn, unknown field", `name: a
pattern: cdc_apply
source: {kind: cdc, pipeline: up}
sink: {kind: postgres, schemaa: x}
`, []string{"sink.dsn: is required", "sink.schemaa: unknown field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.yaml), "x.yaml", connectors.NewRegistry(), nil)
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
}
