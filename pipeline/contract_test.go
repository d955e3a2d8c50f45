package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// contractRegistry is streamRegistry plus "pg", a cdc source that applies
// contracts.
func contractRegistry() *connectors.Registry {
	reg := streamRegistry()
	reg.Register(connectors.Connector{Kind: "pg", CDCSource: &connectors.CDCSource{AppliesContract: true,
		Open: func(context.Context, connectors.StreamRequest) (connectors.Stream, error) {
			return nil, errors.New("no")
		}}})
	return reg
}

const loadWithContract = `name: people
pattern: full_load
source: {kind: db, dsn: x, tables: [public.people]}
sink: {kind: dir, path: /out}
contract:
  strict: true
  key: ${SLUICE_CONTRACT_KEY}
  columns:
    id: keep
    email: {pii: email, action: hash}
    born: {pii: birth_date, action: truncate, to: month}
  filter:
    - {column: country, in: [DE, FR]}
`

func TestContractInSpec(t *testing.T) {
	s, err := Load([]byte(loadWithContract), "people.yaml", contractRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Contract
	if c == nil || !c.Strict || c.Key != "${SLUICE_CONTRACT_KEY}" || c.Columns["email"].Action != contract.Hash || c.Filter[0].Op != contract.OpIn {
		t.Fatalf("contract %+v", c)
	}
	raw, err := s.ContractJSON()
	if err != nil || !strings.Contains(string(raw), `"key":"${SLUICE_CONTRACT_KEY}"`) {
		t.Fatalf("contract JSON %s, %v", raw, err)
	}
	if back, err := contract.Decode(raw); err != nil || back.Columns["born"].To != "month" {
		t.Fatalf("decoded %+v, %v", back, err)
	}
}

func TestContractProblems(t *testing.T) {
	reg := contractRegistry()
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"line of a bad action", strings.Replace(loadWithContract, "action: hash", "action: hide", 1),
			[]string{`line 10: contract.columns.email.action: unknown action "hide"`}},
		{"literal key", strings.Replace(loadWithContract, "${SLUICE_CONTRACT_KEY}", "letmeinletmeinletmein", 1),
			[]string{"line 7: contract.key: must be a reference to an environment variable"}},
		{"key in a variable specs may not name", strings.Replace(loadWithContract, "${SLUICE_CONTRACT_KEY}", "${HOME_KEY}", 1),
			[]string{"line 7: contract.key: ${HOME_KEY}: environment variable HOME_KEY cannot be used in a spec"}},
		{"tables in a load", "name: a\npattern: full_load\nsource: {kind: db, dsn: x, tables: [a.b]}\nsink: {kind: dir, path: /o}\ncontract:\n  tables:\n    public.t: {columns: {a: keep}}\n",
			[]string{"line 6: contract.tables: a full_load pipeline's contract classifies the columns of its rows"}},
		{"columns in a cdc", "name: a\npattern: cdc\nsource: {kind: pg}\ncontract:\n  columns: {a: keep}\n",
			[]string{"line 5: contract.columns: a cdc pipeline's contract classifies the columns of each of its tables"}},
		{"a cdc source that cannot", "name: a\npattern: cdc\nsource: {kind: db, dsn: x, tables: [a.b]}\ncontract:\n  tables:\n    public.t: {columns: {a: keep}}\n",
			[]string{`line 4: contract: a cdc source of kind "db" cannot apply a contract`}},
		{"a file without a directory", "name: a\npattern: full_load\nsource: {kind: db}\nsink: {kind: dir, path: /o}\ncontract: {file: c.yaml}\n",
			[]string{`line 5: contract.file: "c.yaml" cannot be read here`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.spec), "x.yaml", reg, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nlacks %q", err, w)
				}
			}
		})
	}
	// A cdc pipeline whose source applies contracts takes one by tables.
	if _, err := Load([]byte("name: a\npattern: cdc\nsource: {kind: pg}\ncdc: {snapshot: never}\ncontract:\n  tables:\n    public.t: {columns: {a: keep}}\n"), "x.yaml", reg, nil); err != nil {
		t.Fatal(err)
	}
}

func TestContractFile(t *testing.T) {
	dir := t.TempDir()
	body := "strict: true\ncolumns:\n  id: keep\n  email: {pii: email, action: mask}\n"
	if err := os.WriteFile(filepath.Join(dir, "people.contract.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := "name: people\npattern: full_load\nsource: {kind: db}\nsink: {kind: dir, path: /o}\ncontract: {file: people.contract.yaml}\n"
	specs, err := LoadAllFrom([]byte(spec), "people.yaml", dir, contractRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := specs[0].Contract
	if c.File != "people.contract.yaml" || !c.Strict || c.Columns["email"].Action != contract.Mask {
		t.Fatalf("contract %+v", c)
	}
	// A problem in the file names the file and its line.
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("columns:\n  id: keep\n  email: obscure\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAllFrom([]byte(strings.Replace(spec, "people.contract.yaml", "bad.yaml", 1)), "people.yaml", dir, contractRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "line 5: contract.file:") || !strings.Contains(err.Error(), `line 3: columns.email.action: unknown action "obscure"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestTransformPattern: pattern transform is a load with a contract: its
// runs load as a full load, or as an incremental load with an incremental
// section (which then needs what an incremental pipeline needs); without
// a contract it is refused.
func TestTransformPattern(t *testing.T) {
	reg := contractRegistry()
	full := strings.Replace(loadWithContract, "pattern: full_load", "pattern: transform", 1)
	s, err := Load([]byte(full), "people.yaml", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pattern != protocol.PatternTransform || s.RunPattern() != protocol.PatternFullLoad {
		t.Fatalf("pattern %s runs as %s, want transform as full_load", s.Pattern, s.RunPattern())
	}
	inc := full + "incremental: {delta_column: updated_at, window: 1h, lag: 5m, start: 2026-01-01T00:00:00Z}\n"
	s, err = Load([]byte(inc), "people.yaml", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.RunPattern() != protocol.PatternIncremental || s.Incremental.DeltaColumn != "updated_at" {
		t.Fatalf("with incremental: runs as %s, delta %+v", s.RunPattern(), s.Incremental)
	}
	for _, tc := range []struct{ name, spec, want string }{
		{"no contract", full[:strings.Index(full, "contract:")], "contract: is required for pattern transform"},
		{"incremental without a delta column", full + "incremental: {window: 1h}\n", "incremental.delta_column: is required"},
		{"a cdc section", full + "cdc: {lease: 2s}\n", "cdc: is only for patterns cdc and cdc_apply, not transform"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.spec), "people.yaml", reg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTransformExample: the README's example of a Transformation
// Replicator (examples/postgres-transform.yaml) reads its contract file
// and is a strict, valid contract for a full load.
func TestTransformExample(t *testing.T) {
	const dir = "../examples"
	data, err := os.ReadFile(filepath.Join(dir, "postgres-transform.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(data, "postgres-transform.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadContractFile(dir); err != nil {
		t.Fatal(err)
	}
	c := s.Contract
	if s.RunPattern() != protocol.PatternFullLoad || c == nil || !c.Strict || c.File != "contracts/customers.yaml" ||
		c.Columns["email"].Action != contract.Hash || c.Columns["card"].Action != contract.Tokenize || len(c.Filter) != 1 {
		t.Fatalf("pattern %s, contract %+v", s.RunPattern(), c)
	}
	if p := c.Validate(); len(p) > 0 {
		t.Fatal(p)
	}
}
