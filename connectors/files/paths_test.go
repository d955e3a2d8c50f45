package files_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
)

// A registry that confines paths refuses a files source or sink whose path
// is outside its roots (symlinks resolved, no .. element), at validation
// and when it opens, before anything is read or written; paths inside
// them, object-store URLs and an unconfined registry are accepted.
func TestPathsConfinedToRoots(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "data")
	outside := filepath.Join(base, "secret")
	for _, d := range []string{filepath.Join(root, "in"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "x.jsonl"), []byte(`{"a":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	reg := connectors.NewRegistry()
	files.Register(reg)
	cfg := func(path string) json.RawMessage {
		b, _ := json.Marshal(map[string]string{"path": path, "format": "jsonl"})
		return b
	}
	// unconfined: anything goes
	if err := reg.Validate(files.Kind, connectors.RoleSource, cfg(outside), nil); err != nil {
		t.Fatalf("unconfined registry refused %s: %v", outside, err)
	}
	if err := reg.ConfinePaths("relative/root"); err == nil {
		t.Fatal("a relative root was accepted")
	}
	if err := reg.ConfinePaths(root); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		role      connectors.Role
		path      string
		refused   bool
		wantField string
	}{
		{connectors.RoleSource, filepath.Join(root, "in"), false, ""},
		{connectors.RoleSink, filepath.Join(root, "out", "new"), false, ""},
		{connectors.RoleSink, "s3://bucket/prefix", false, ""},
		{connectors.RoleSource, outside, true, "path"},
		{connectors.RoleSource, "file://" + outside, true, "path"},
		{connectors.RoleSource, filepath.Join(root, "link"), true, "path"},
		{connectors.RoleSink, filepath.Join(root, "link", "new"), true, "path"},
		{connectors.RoleSource, filepath.Join(root, "in", "..", "..", "secret"), true, "path"},
		{connectors.RoleSink, base, true, "path"},
	} {
		err := reg.Validate(files.Kind, c.role, cfg(c.path), nil)
		var fe *connectors.FieldError
		if c.refused != (err != nil) || (c.refused && (!errors.As(err, &fe) || fe.Field != c.wantField)) {
			t.Errorf("validate %s %s: %v; want refused %v naming %q", c.role, c.path, err, c.refused, c.wantField)
		}
	}
	// Opening refuses too (a spec stored before the roots were set, a
	// worker with roots the coordinator lacks), before any I/O.
	_, err := reg.OpenSource(context.Background(), files.Kind, cfg(outside))
	if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "outside the directories") {
		t.Fatalf("OpenSource of %s: %v; want a permanent refusal", outside, err)
	}
	if _, err := reg.OpenSink(context.Background(), files.Kind, cfg(filepath.Join(root, "link", "out"))); err == nil {
		t.Fatal("OpenSink through a symlink out of the root was accepted")
	}
	if _, err := os.Stat(filepath.Join(outside, "out")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused sink made %s: %v", filepath.Join(outside, "out"), err)
	}
	src, err := reg.OpenSource(context.Background(), files.Kind, cfg(filepath.Join(root, "in")))
	if err != nil {
		t.Fatalf("OpenSource inside the root: %v", err)
	}
	src.Close()
}
