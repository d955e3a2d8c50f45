package files_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
)

// Run parameters name a file, a directory or a time partition under the
// source's path, never anything outside it; a run given a file reads
// exactly that file.
func TestParams(t *testing.T) {
	reg := connectors.NewRegistry()
	files.Register(reg)
	dir := t.TempDir()
	cfg := func(extra string) json.RawMessage {
		return json.RawMessage(`{"path":"` + dir + `"` + extra + `}`)
	}
	for _, tc := range []struct {
		params map[string]string
		layout bool
		field  string
		window *connectors.Window
	}{
		{params: map[string]string{"file": "a/b.jsonl"}},
		{params: map[string]string{"file": filepath.Join(dir, "a/b.jsonl")}},
		{params: map[string]string{"path": "a"}},
		{params: map[string]string{"note": "../../etc"}}, // not a parameter the source takes
		{params: map[string]string{"file": "../x.jsonl"}, field: "params.file"},
		{params: map[string]string{"file": "/etc/passwd"}, field: "params.file"},
		{params: map[string]string{"path": "a/../../b"}, field: "params.path"},
		{params: map[string]string{"file": "_staging/x.jsonl"}, field: "params.file"},
		{params: map[string]string{"file": "a", "path": "b"}, field: "params.path"},
		{params: map[string]string{"partition": "date=2026-11-25/hour=07"}, field: "params.partition"},
		{params: map[string]string{"partition": "date=2026-11-25/hour=07"}, layout: true,
			window: &connectors.Window{From: time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)}},
		{params: map[string]string{"partition": "date=2026-11-25/hour=7"}, layout: true, field: "params.partition"},
	} {
		c := cfg("")
		if tc.layout {
			c = cfg(`,"layout":"date={date}/hour={hour}"`)
		}
		w, err := reg.CheckParams(files.Kind, c, tc.params)
		var fe *connectors.FieldError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%v: %v", tc.params, err)
		case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
			t.Errorf("%v: %v, want an error on %s", tc.params, err, tc.field)
		case tc.window != nil && (w == nil || *w != *tc.window):
			t.Errorf("%v: window %v, want %v", tc.params, w, tc.window)
		}
	}

	files.WriteFile(t, dir, "a/b.jsonl", "{\"x\":1}\n{\"x\":2}\n")
	files.WriteFile(t, dir, "a/c.jsonl", "{\"x\":3}\n")
	files.WriteFile(t, dir, "d.jsonl", "{\"x\":4}\n")
	src, err := files.NewSource(files.SourceConfig{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	for params, want := range map[string]int64{"a/b.jsonl": 2, "a": 3, "": 4} {
		p := map[string]string{"file": params}
		if params == "a" {
			p = map[string]string{"path": params}
		} else if params == "" {
			p = nil
		}
		plan, err := src.Plan(t.Context(), connectors.PlanRequest{Params: p})
		if err != nil {
			t.Fatal(err)
		}
		var rows int64
		for _, part := range plan.Partitions {
			if err := src.Read(t.Context(), part, func(_ context.Context, b connectors.Batch) error { rows += b.Rows; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if rows != want {
			t.Errorf("params %v: read %d rows, want %d", p, rows, want)
		}
	}
}
