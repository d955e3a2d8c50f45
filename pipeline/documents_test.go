package pipeline

import (
	"errors"
	"strings"
	"testing"
)

func TestSplitDocuments(t *testing.T) {
	in := "# two pipelines\n---\nname: a\npattern: full_load\n--- # the second\nname: b\n...\n---\n# only a comment\n---\nname: c\n"
	docs := SplitDocuments([]byte(in))
	want := []Document{{Text: "name: a\npattern: full_load\n", Line: 3}, {Text: "name: b\n", Line: 6}, {Text: "name: c\n", Line: 11}}
	if len(docs) != len(want) {
		t.Fatalf("got %d documents %+v, want %d", len(docs), docs, len(want))
	}
	for i := range want {
		if docs[i] != want[i] {
			t.Errorf("document %d = %+v, want %+v", i, docs[i], want[i])
		}
	}
	// A line that only starts like a marker inside a value is not one.
	if docs := SplitDocuments([]byte("name: a\ndescription: |\n  ---\n  text\n")); len(docs) != 1 {
		t.Errorf("an indented --- split the document: %+v", docs)
	}
}

// Every document of a file is loaded; problems name their line in the
// file, whichever document they are in.
func TestLoadAll(t *testing.T) {
	reg := filesRegistry()
	two := "name: a\npattern: full_load\nsource: {kind: files, path: in}\nsink: {kind: files, path: out}\n---\nname: b\npattern: full_load\nsource: {kind: files, path: in}\nsink: {kind: files, path: out}\n"
	specs, err := LoadAll([]byte(two), "two.yaml", reg, nil)
	if err != nil || len(specs) != 2 || specs[0].Name != "a" || specs[1].Name != "b" {
		t.Fatalf("LoadAll = %+v, %v; want pipelines a and b", specs, err)
	}
	if strings.Contains(specs[1].Text, "name: a") || !strings.HasPrefix(specs[1].Text, "name: b") {
		t.Errorf("the second spec's text is %q, want its own document", specs[1].Text)
	}
	bad := strings.Replace(two, "name: b\npattern: full_load", "name: b\npattern: ful_load", 1)
	_, err = LoadAll([]byte(bad), "bad.yaml", reg, nil)
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "bad.yaml (document 2 of 2, line 6)") ||
		!strings.Contains(err.Error(), `line 7: pattern: unknown pattern "ful_load"`) {
		t.Errorf("a bad second document: %v; want its problem at line 7 of the file", err)
	}
	dup := strings.Replace(two, "name: b", "name: a", 1)
	if _, err := LoadAll([]byte(dup), "dup.yaml", reg, nil); err == nil || !strings.Contains(err.Error(), `line 6: name: pipeline "a" is also defined by document 1`) {
		t.Errorf("a name defined twice: %v", err)
	}
	if _, err := LoadAll([]byte("# nothing\n---\n"), "empty.yaml", reg, nil); err == nil || !strings.Contains(err.Error(), "no pipeline spec in it") {
		t.Errorf("a file without a spec: %v", err)
	}
}

// Integers are taken as written: YAML would truncate 2.5 to 2.
func TestParseIntegers(t *testing.T) {
	for _, c := range []struct{ field, value, want string }{
		{"partitioning:\n  max_files", "2.5", `partitioning.max_files: "2.5" is not an integer of 1 or more`},
		{"partitioning:\n  max_files", "0", `partitioning.max_files: "0" is not an integer of 1 or more`},
		{"partitioning:\n  max_files", `"3"`, `partitioning.max_files: "3" is not an integer`},
		{"retry:\n  max_attempts", "1e2", `retry.max_attempts: "1e2" is not an integer from 1 to 100`},
	} {
		in := "name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\n" + c.field + ": " + c.value + "\n"
		if _, err := Parse([]byte(in), "p.yaml"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %s: %v, want %q", c.field, c.value, err, c.want)
		}
	}
	s, err := Parse([]byte("name: a\npattern: full_load\nsource: {kind: files}\nsink: {kind: files}\npartitioning: {max_files: 1_000}\n"), "p.yaml")
	if err != nil || s.Partition.MaxFiles != 1000 {
		t.Errorf("max_files 1_000: %d, %v", s.Partition.MaxFiles, err)
	}
}

// The patterns an error offers are the ones this build runs.
func TestUnknownPatternListsWhatThisBuildRuns(t *testing.T) {
	err := CheckPattern("ful_load")
	if err == nil || !strings.Contains(err.Error(), "this build runs: cdc, cdc_apply, compact, full_load, incremental, passthrough, readiness, transform)") {
		t.Errorf("CheckPattern(ful_load) = %v", err)
	}
}

func TestRelativePaths(t *testing.T) {
	s, err := Parse([]byte("name: a\npattern: full_load\nsource: {kind: files, path: in, format: jsonl}\nsink: {kind: files, path: /abs/out}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.RelativePaths(); len(got) != 1 || got[0] != "source.path" {
		t.Errorf("RelativePaths = %v, want [source.path]", got)
	}
	if err := s.ResolvePaths("/specs"); err != nil || len(s.RelativePaths()) != 0 {
		t.Errorf("after ResolvePaths: %v, %v", s.RelativePaths(), err)
	}
}

func FuzzSplitDocuments(f *testing.F) {
	f.Add([]byte("name: a\n---\nname: b\n...\n--- # c\nname: c\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := strings.Split(string(data), "\n")
		for _, d := range SplitDocuments(data) {
			if d.Line < 1 || d.Line > len(lines) {
				t.Fatalf("document at line %d of %d", d.Line, len(lines))
			}
			// A document's text is the file's text from its line on.
			first, _, _ := strings.Cut(d.Text, "\n")
			first = strings.TrimSuffix(first, "\r")
			if strings.TrimSuffix(lines[d.Line-1], "\r") != first {
				t.Fatalf("document at line %d starts %q, the line is %q", d.Line, first, lines[d.Line-1])
			}
		}
	})
}
