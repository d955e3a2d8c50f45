package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

// passRegistry has the kinds "tree" (a passthrough source and sink of
// objects, which wants a path; its load sink refuses "mirror"), "db"
// (a passthrough source and sink of table rows) and "lake" (a load sink
// only).
func passRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	src := func(context.Context, json.RawMessage) (connectors.Source, error) {
		return nil, errors.New("no reads here")
	}
	sink := func(context.Context, json.RawMessage) (connectors.Sink, error) {
		return nil, errors.New("no writes here")
	}
	fields := func(known ...string) connectors.Validator {
		return func(config json.RawMessage) error {
			var m map[string]any
			_ = json.Unmarshal(config, &m)
			for k := range m {
				if !strings.Contains(strings.Join(known, ","), k) {
					return &connectors.FieldError{Field: k, Msg: "unknown field"}
				}
			}
			if _, ok := m["path"]; !ok && strings.Contains(strings.Join(known, ","), "path") {
				return &connectors.FieldError{Field: "path", Msg: "is required"}
			}
			return nil
		}
	}
	reg.Register(connectors.Connector{Kind: "tree", Source: src, Sink: sink, ValidateSink: fields("path", "format"),
		Passthrough: &connectors.Passthrough{Units: "objects", Source: true, Sink: true,
			ValidateSource: fields("path", "exclude"), ValidateSink: fields("path", "mirror")}})
	reg.Register(connectors.Connector{Kind: "db", Source: src, Sink: sink,
		Passthrough: &connectors.Passthrough{Units: "rows", Source: true, Sink: true}})
	reg.Register(connectors.Connector{Kind: "lake", Sink: sink})
	return reg
}

func TestPassthroughSpec(t *testing.T) {
	spec, err := Load([]byte(`name: lake-copy
pattern: passthrough
source: {kind: tree, path: /data/prod, exclude: ["*.tmp"]}
sink: {kind: tree, path: /data/staging, mirror: true}
schedule: "@hourly"
`), "copy.yaml", passRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Pattern != "passthrough" || spec.Sink.Kind != "tree" {
		t.Errorf("spec = %+v", spec)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"units differ", "name: x\npattern: passthrough\nsource: {kind: tree, path: /a}\nsink: {kind: db}\n",
			"line 4: sink.kind: a db sink writes rows, not the objects a tree source reads: a passthrough copies as it is (sinks that can: [tree])"},
		{"no passthrough sink", "name: x\npattern: passthrough\nsource: {kind: tree, path: /a}\nsink: {kind: lake}\n",
			`line 4: sink.kind: connector "lake" cannot be a passthrough sink (kinds: [db tree])`},
		{"a load field", "name: x\npattern: passthrough\nsource: {kind: tree, path: /a}\nsink: {kind: tree, path: /b, format: csv}\n",
			"sink.format: unknown field"},
		{"a passthrough field in a load", "name: x\npattern: full_load\nsource: {kind: tree, path: /a}\nsink: {kind: tree, path: /b, mirror: true}\n",
			"sink.mirror: unknown field"},
		{"a contract", "name: x\npattern: passthrough\nsource: {kind: db}\nsink: {kind: db}\ncontract: {columns: {id: keep}}\n",
			"line 5: contract: a passthrough copies data as it is and cannot apply a data contract: use pattern transform"},
		{"incremental", "name: x\npattern: passthrough\nsource: {kind: db}\nsink: {kind: db}\nincremental: {by: position}\n",
			"line 5: incremental: is only for patterns incremental and transform, not passthrough"},
	} {
		_, err := Load([]byte(tc.yaml), "x.yaml", passRegistry(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
