package pipeline

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzResolvePaths: any spec text, any spec directory. ResolvePaths
// makes exactly the fields RelativePaths lists absolute, each the field's
// path joined to the directory, leaves every other field as it was, and a
// second call changes nothing.
func FuzzResolvePaths(f *testing.F) {
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: files, path: in, format: jsonl}\nsink: {kind: files, path: /abs/out}\n"), "specs")
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: files, path: ../in, key_path: k, tmp_dir: './t', x_path: 3}\nsink: {kind: files, path: 's3://b/x', state_dir: '${SLUICE_D}/s'}\n"), "../..")
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: files, path: '', nested: {path: rel}}\nsink: {kind: files, path: 'C:\\\\x'}\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, dir string) {
		s, err := Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		dir = filepath.Join("/specs", dir)
		before := configs(t, s)
		fields := s.RelativePaths()
		if err := s.ResolvePaths(dir); err != nil {
			if !utf8.ValidString(dir) {
				return
			}
			t.Fatalf("ResolvePaths of a parsed spec: %v", err)
		}
		if !utf8.ValidString(dir) {
			t.Fatalf("ResolvePaths(%q) accepted a directory JSON cannot hold", dir)
		}
		if left := s.RelativePaths(); len(left) != 0 {
			t.Fatalf("relative paths left after ResolvePaths(%q): %v", dir, left)
		}
		after := configs(t, s)
		for _, field := range fields {
			side, key, _ := strings.Cut(field, ".")
			old, _ := before[side][key].(string)
			if got, want := after[side][key], filepath.Join(dir, old); got != want {
				t.Fatalf("%s resolved to %q, want %q", field, got, want)
			}
			before[side][key] = after[side][key]
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("ResolvePaths changed fields it does not list:\n%v\n%v", before, after)
		}
		if err := s.ResolvePaths(dir + "/other"); err != nil || !reflect.DeepEqual(configs(t, s), after) {
			t.Fatalf("a second ResolvePaths changed the spec (%v):\n%v\n%v", err, after, configs(t, s))
		}
	})
}

// configs returns the decoded configurations of a spec's endpoints.
func configs(t *testing.T, s Spec) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for side, raw := range map[string][]byte{"source": s.Source.Config, "sink": s.Sink.Config} {
		var m map[string]any
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("%s config %s: %v", side, raw, err)
			}
		}
		out[side] = m
	}
	return out
}
