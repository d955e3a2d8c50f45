package pipeline

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// contract reads the spec's contract section (see package contract).
func (p *parser) contract(v *yaml.Node) *contract.Spec {
	s, problems := contract.ParseNode(v, "contract")
	for _, q := range problems {
		p.add(q.Field, q.Line, q.Msg)
	}
	return s
}

// ContractJSON returns the spec's data contract in the form tasks and
// stream assignments carry it (contract.Decode reads it); nil without one.
func (s Spec) ContractJSON() ([]byte, error) { return s.Contract.JSON() }

// ReadContractFile reads the contract file the spec's contract names
// (contract: {file: customers.yaml}), relative to dir, the spec file's
// directory, into the spec's contract: the stored spec holds the
// contract itself (and the file's name), so that a contract changes only
// when the spec is applied again, as a new revision. A spec without a
// contract file is left as it is. Problems name the file and the line.
func (s *Spec) ReadContractFile(dir string) error {
	c := s.Contract
	if c == nil || c.File == "" || len(c.Columns) > 0 || len(c.Tables) > 0 {
		return nil
	}
	line := lineIndex(s.Text).nearest("contract.file")
	if dir == "" {
		return &Error{File: s.Name, Problems: []Problem{{Field: "contract.file", Line: line,
			Msg: fmt.Sprintf("%q cannot be read here: sluice apply -f reads a contract file, relative to the spec's directory; elsewhere give the contract in the spec", c.File)}}}
	}
	path := c.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return &Error{File: s.Name, Problems: []Problem{{Field: "contract.file", Line: line, Msg: err.Error()}}}
	}
	read, problems := contract.Parse(data)
	if len(problems) > 0 {
		var out []Problem
		for _, q := range problems {
			out = append(out, Problem{Field: "contract.file", Line: line, Msg: fmt.Sprintf("%s: %s", path, q)})
		}
		return &Error{File: s.Name, Problems: out}
	}
	read.File = c.File
	s.Contract = read
	return nil
}

// contractProblems checks the contract against the pipeline: a load's
// contract classifies the columns of its rows, a stream's the columns of
// its tables, and a cdc pipeline's source kind must apply contracts to
// its events. Pattern transform needs a contract.
func (s Spec) contractProblems(lines lines, reg *connectors.Registry) []Problem {
	c := s.Contract
	var out []Problem
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	if c == nil {
		if s.Pattern == protocol.PatternTransform {
			add("contract", "is required for pattern transform: it says what the copy keeps of each column (see the README's contract reference)")
		}
		return out
	}
	for _, p := range c.Validate() {
		add("contract."+p.Field, p.Msg)
	}
	if len(out) > 0 {
		return out
	}
	// The key is expanded by the workers under the same rule as the
	// connectors' `${NAME}` references.
	if c.Key != "" {
		if err := reg.CheckEnv(c.Key[2 : len(c.Key)-1]); err != nil {
			add("contract.key", err.Error())
		}
	}
	switch {
	case s.Streamed() && !c.Streams():
		add("contract.columns", fmt.Sprintf("a %s pipeline's contract classifies the columns of each of its tables: tables: {schema.table: {columns: ...}}", s.Pattern))
	case !s.Streamed() && c.Streams():
		add("contract.tables", fmt.Sprintf("a %s pipeline's contract classifies the columns of its rows: columns: {...}", s.Pattern))
	case s.Pattern == protocol.PatternCDC && s.Source.Kind != "" && reg.Has(s.Source.Kind, connectors.RoleCDCSource) && !reg.CDCSourceAppliesContract(s.Source.Kind):
		add("contract", fmt.Sprintf("a cdc source of kind %q cannot apply a contract to its events", s.Source.Kind))
	}
	return out
}
