package pipeline

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
)

// Document is one YAML document of a spec file: its text and the line of
// the file it starts on.
type Document struct {
	Text string
	// Line is the line of the file the document's first line is (1-based).
	Line int
}

// SplitDocuments splits a YAML stream into its documents at the lines that
// start or end one ("---", "..."), leaving out documents without content
// (only comments or blank lines). A bare "---" line is left out of the
// document it starts.
func SplitDocuments(data []byte) []Document {
	var docs []Document
	var cur strings.Builder
	start := 1
	flush := func() {
		text := cur.String()
		cur.Reset()
		var root yaml.Node
		if err := yaml.Unmarshal([]byte(text), &root); err == nil && len(root.Content) == 0 {
			return // comments and blank lines only
		}
		if strings.TrimSpace(text) == "" {
			return
		}
		docs = append(docs, Document{Text: text, Line: start})
	}
	for n, raw := range strings.SplitAfter(string(data), "\n") {
		line := strings.TrimRight(raw, "\r\n")
		marker := line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t")
		end := line == "..." || strings.HasPrefix(line, "... ")
		switch {
		case marker:
			flush()
			start = n + 1
			if rest := strings.TrimSpace(line[3:]); rest == "" || strings.HasPrefix(rest, "#") {
				start = n + 2
				continue
			}
			cur.WriteString(raw)
		case end:
			flush()
			start = n + 2
		default:
			cur.WriteString(raw)
		}
	}
	flush()
	return docs
}

// LoadAll loads every document of a spec file (see Load), so that one error
// lists every problem of every document, each with its line in the file.
// A file whose documents name one pipeline twice is an error too.
func LoadAll(data []byte, file string, reg *connectors.Registry, lookup func(string) (string, bool)) ([]Spec, error) {
	return LoadAllFrom(data, file, "", reg, lookup)
}

// LoadAllFrom is LoadAll for a spec file in directory dir: contract files
// are read relative to it (see LoadFrom).
func LoadAllFrom(data []byte, file, dir string, reg *connectors.Registry, lookup func(string) (string, bool)) ([]Spec, error) {
	docs := SplitDocuments(data)
	if len(docs) == 0 {
		return nil, &Error{File: file, Problems: []Problem{{Field: "(document)", Msg: "no pipeline spec in it (an empty file, or only comments)"}}}
	}
	var specs []Spec
	var errs []error
	seen := map[string]int{}
	for i, d := range docs {
		name := file
		if len(docs) > 1 {
			name = fmt.Sprintf("%s (document %d of %d, line %d)", file, i+1, len(docs), d.Line)
		}
		s, err := LoadFrom([]byte(d.Text), name, dir, reg, lookup)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				for j := range pe.Problems {
					if pe.Problems[j].Line > 0 {
						pe.Problems[j].Line += d.Line - 1
					}
				}
			}
			errs = append(errs, err)
			continue
		}
		if prev, dup := seen[s.Name]; dup {
			errs = append(errs, &Error{File: name, Problems: []Problem{{Field: "name", Line: lineIndex(s.Text)["name"] + d.Line - 1,
				Msg: fmt.Sprintf("pipeline %q is also defined by document %d: each document is one pipeline", s.Name, prev)}}})
			continue
		}
		seen[s.Name] = i + 1
		specs = append(specs, s)
	}
	return specs, errors.Join(errs...)
}
