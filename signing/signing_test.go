package signing

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestSignVerify(t *testing.T) {
	s, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := s.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	s2, err := LoadSigner(filepath.Join(dir, PrivateFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(filepath.Join(dir, PublicFile))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"run":"r1"}`)
	sig := s2.Sign(KindTask, "sluice.tasks.p.r1", data)
	if err := v.Verify(KindTask, "sluice.tasks.p.r1", data, sig); err != nil {
		t.Fatal(err)
	}
	other, _ := Generate()
	for name, c := range map[string]struct {
		kind, subject, data, sig string
	}{
		"unsigned":      {KindTask, "sluice.tasks.p.r1", string(data), ""},
		"other subject": {KindTask, "sluice.tasks.p.r2", string(data), sig},
		"other kind":    {KindAssign, "sluice.tasks.p.r1", string(data), sig},
		"other data":    {KindTask, "sluice.tasks.p.r1", `{"run":"r2"}`, sig},
		"other key":     {KindTask, "sluice.tasks.p.r1", string(data), other.Sign(KindTask, "sluice.tasks.p.r1", data)},
		"garbage":       {KindTask, "sluice.tasks.p.r1", string(data), "!!"},
	} {
		if err := v.Verify(c.kind, c.subject, []byte(c.data), c.sig); !errors.Is(err, ErrForged) {
			t.Errorf("%s: %v, want ErrForged", name, err)
		}
	}
	if s.Token("r1", "t1") != s2.Token("r1", "t1") || s.Token("r1", "t1") == s.Token("r1", "t2") || s.Token("r1", "t1") == other.Token("r1", "t1") {
		t.Error("tokens are not deterministic per key and task")
	}
}
