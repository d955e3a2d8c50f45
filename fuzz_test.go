package sluice_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFuzzTargetsInMakefile: make fuzz runs every fuzz target of the tree,
// each in its own package.
func TestFuzzTargetsInMakefile(t *testing.T) {
	mk, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(f \*testing\.F\)`)
	n := 0
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzFunc.FindAllSubmatch(b, -1) {
			n++
			want := fmt.Sprintf("./%s -run '^$$' -fuzz %s ", filepath.Dir(path), m[1])
			if filepath.Dir(path) == "." {
				want = fmt.Sprintf(". -run '^$$' -fuzz %s ", m[1])
			}
			if !strings.Contains(string(mk), want) {
				t.Errorf("make fuzz does not run %s of %s: add the line\n\t$(GO) test %s-fuzztime $(FUZZTIME)", m[1], path, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no fuzz target found")
	}
}
