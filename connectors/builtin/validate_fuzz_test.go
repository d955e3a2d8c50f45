package builtin_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/builtin"
	"github.com/sluicehq/sluice/pipeline"
)

// FuzzValidate: any spec text through Parse and Validate with every
// built-in connector's validator, seeded with the example specs. Nothing
// panics; a refusal is a *pipeline.Error with its problems; the value a
// `${NAME}` reference expands to never shows in the refusal; Validate
// answers the same twice.
func FuzzValidate(f *testing.F) {
	examples, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(examples) == 0 {
		f.Fatalf("no example specs: %v", err)
	}
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "hunter2-planted")
	}
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: files, path: /in, format: '${SLUICE_F}'}\nsink: {kind: files, path: /out, format: '${SLUICE_F}'}\n"), "a<b>&\"c")
	f.Add([]byte("name: a\npattern: full_load\nsource: {kind: postgres, dsn: '${SLUICE_DSN}', table: '${SLUICE_T}'}\nsink: {kind: files, path: '${SLUICE_P}'}\n"), "postgres://u:pw@h/db")
	reg := builtin.Registry()
	f.Fuzz(func(t *testing.T, data []byte, value string) {
		secret := "\u00a7" + value + "\u00a7" // marked: no word of an error by chance
		lookup := func(string) (string, bool) { return secret, true }
		s, err := pipeline.Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		err = s.Validate(reg, lookup)
		again := s.Validate(reg, lookup)
		if (err == nil) != (again == nil) || err != nil && err.Error() != again.Error() {
			t.Fatalf("Validate answered %v, then %v", err, again)
		}
		if err == nil {
			return
		}
		var pe *pipeline.Error
		if !errors.As(err, &pe) || len(pe.Problems) == 0 {
			t.Fatalf("Validate error %v is not a *pipeline.Error with problems", err)
		}
		if !strings.Contains(string(data), value) && !strings.ContainsAny(value, "${}") && containsAnyForm(err.Error(), secret) {
			t.Fatalf("Validate's error shows the expanded value %q: %v", secret, err)
		}
	})
}

// containsAnyForm reports whether text holds value as is, as %q writes it
// or as JSON writes it.
func containsAnyForm(text, value string) bool {
	q := strconv.Quote(value)
	j, _ := json.Marshal(value)
	return strings.Contains(text, value) || strings.Contains(text, q[1:len(q)-1]) || strings.Contains(text, string(j[1:len(j)-1]))
}
