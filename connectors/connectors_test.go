package connectors

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"HOST": "db", "PASS": "s3cr3t"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got, err := ExpandEnv(json.RawMessage(`{"dsn":"postgres://u:${PASS}@${HOST}/x","n":3,"list":["${HOST}","$${HOST}"]}`), lookup)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	if m["dsn"] != "postgres://u:s3cr3t@db/x" || m["n"] != float64(3) {
		t.Fatalf("expanded = %s", got)
	}
	if l := m["list"].([]any); l[0] != "db" || l[1] != "${HOST}" {
		t.Fatalf("list = %v", l)
	}
	_, err = ExpandEnv(json.RawMessage(`{"a":{"b":["${NOPE}"]}}`), lookup)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "a.b[0]" {
		t.Fatalf("unset variable error = %v, want a FieldError on a.b[0]", err)
	}
}

func TestChecksumIsOrderIndependentAndMergeable(t *testing.T) {
	rows := [][]byte{[]byte(`{"id":1}`), []byte(`{"id":2}`), []byte(`{"id":3}`), []byte(`{"id":3}`)}
	var fwd, rev, a, b Checksum
	for i := range rows {
		fwd.Add(rows[i])
		rev.Add(rows[len(rows)-1-i])
	}
	a.Add(rows[0])
	a.Add(rows[3])
	b.Add(rows[1])
	b.Add(rows[2])
	a.Merge(b)
	if fwd != rev || fwd != a || fwd.Rows != 4 {
		t.Fatalf("fwd %+v rev %+v merged %+v", fwd, rev, a)
	}
	var missing Checksum
	for _, r := range rows[:3] {
		missing.Add(r)
	}
	if missing.Sum == fwd.Sum {
		t.Fatal("a missing duplicate row must change the checksum")
	}
	back, err := ParseChecksum(fwd.String(), fwd.Rows)
	if err != nil || back != fwd {
		t.Fatalf("ParseChecksum(%s) = %+v, %v", fwd, back, err)
	}
}

func TestPermanentClassification(t *testing.T) {
	base := errors.New("boom")
	if IsPermanent(base) || IsPermanent(fmt.Errorf("wrap: %w", base)) {
		t.Fatal("plain errors are retryable")
	}
	if !IsPermanent(fmt.Errorf("wrap: %w", Permanent(base))) || !errors.Is(Permanent(base), base) {
		t.Fatal("Permanent must survive wrapping and unwrap to its cause")
	}
	re := &RowError{Location: "a.jsonl", Row: 7, Err: base}
	if !IsPermanent(fmt.Errorf("read: %w", re)) || re.Error() != "a.jsonl: row 7: boom" {
		t.Fatalf("row error: %v", re)
	}
}

// A Replan error asks for a new plan of the run: it is permanent for the
// task (no retry), survives wrapping, and keeps its cause and text; no
// other error is one.
func TestReplanClassification(t *testing.T) {
	base := errors.New("snapshot gone")
	err := fmt.Errorf("read chunk: %w", Replan(base))
	if !IsReplan(err) || !IsPermanent(err) || !errors.Is(err, base) || err.Error() != "read chunk: snapshot gone" {
		t.Fatalf("Replan wrapped: %v (replan %v, permanent %v)", err, IsReplan(err), IsPermanent(err))
	}
	for _, e := range []error{base, Permanent(base), &RowError{Location: "a", Row: 1, Err: base}, nil} {
		if IsReplan(e) {
			t.Errorf("%v is no Replan error", e)
		}
	}
	if Replan(nil) != nil {
		t.Error("Replan(nil) is not nil")
	}
}
