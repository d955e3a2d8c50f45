package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Action is what a contract does to the values of a column.
type Action string

// The actions.
const (
	// Keep copies the value as it is.
	Keep Action = "keep"
	// Drop leaves the column out of the copy.
	Drop Action = "drop"
	// Hash replaces the value with the lower-case hex of its HMAC-SHA256
	// under the contract's key: equal values hash equal in every run, on
	// every worker and in every table, so joins still work.
	Hash Action = "hash"
	// Mask keeps the value's shape and hides its content: every letter
	// and digit becomes '*' except the first KeepFirst and the last
	// KeepLast (4 by default), other characters stay; an email (shape
	// email) keeps its domain.
	Mask Action = "mask"
	// Null replaces the value with NULL.
	Null Action = "null"
	// Truncate coarsens the value: a date or timestamp to To (year,
	// month, day, hour, minute), a number down to a multiple of Bucket, a
	// text to its first Length characters.
	Truncate Action = "truncate"
	// Tokenize replaces the value with format-preserving ciphertext
	// (FF1, NIST SP 800-38G, with AES-256): the same number of digits and
	// letters in the same places, other characters kept; reversible, but
	// only with the contract's key (Detokenize).
	Tokenize Action = "tokenize"
)

var actions = []Action{Keep, Drop, Hash, Mask, Null, Truncate, Tokenize}

// Mask shapes.
const (
	ShapeChars = "chars"
	ShapeEmail = "email"
)

// DefaultKeepLast is how many of its last letters and digits a masked
// value keeps unless the column says otherwise.
const DefaultKeepLast = 4

// Truncation units of dates and timestamps.
var truncUnits = []string{"year", "month", "day", "hour", "minute"}

// Spec is a data contract as a pipeline spec holds it. Either Columns (the
// rows of a full or incremental load: one dataset) or Tables (the tables
// of a cdc or cdc_apply pipeline, by "schema.table") classify the columns;
// a column neither names is unclassified: copied as it is, or, with
// Strict, refused. In JSON it is the form Task.Contract carries, its Key
// a ${NAME} reference still: Compile reads the key where rows are
// transformed.
type Spec struct {
	// File names a file holding the contract (the same fields, in YAML),
	// read by `sluice apply` relative to the spec's directory; once read
	// the other fields hold its content and File says where it came
	// from.
	File string `json:"file,omitempty"`
	// Strict fails closed: a column the contract does not classify stops
	// the task, naming the column.
	Strict bool `json:"strict,omitempty"`
	// Key is the secret of hash and tokenize: a reference to an
	// environment variable of the workers, ${NAME}, never the key itself.
	// KeyFile is the other way: an absolute path to a file holding it.
	Key     string `json:"key,omitempty"`
	KeyFile string `json:"key_file,omitempty"`
	// Columns classifies the columns of the pipeline's rows, Filter keeps
	// the rows that meet every condition.
	Columns map[string]Column `json:"columns,omitempty"`
	Filter  []Condition       `json:"filter,omitempty"`
	// Tables classifies the columns of each table, by "schema.table".
	Tables map[string]*Table `json:"tables,omitempty"`
}

// Table is the contract of one table of a cdc or cdc_apply pipeline.
type Table struct {
	Columns map[string]Column `json:"columns,omitempty"`
	Filter  []Condition       `json:"filter,omitempty"`
}

// Column classifies one column and says what happens to its values.
type Column struct {
	// PII names the kind of personal data the column holds (email,
	// phone, name); empty for a column that holds none. An email column
	// is masked as an email.
	PII    string `json:"pii,omitempty"`
	Action Action `json:"action"`
	// Shape, KeepFirst and KeepLast configure Mask: Shape is chars (the
	// default) or email; KeepLast is DefaultKeepLast when nil.
	Shape     string `json:"shape,omitempty"`
	KeepFirst int    `json:"keep_first,omitempty"`
	KeepLast  *int   `json:"keep_last,omitempty"`
	// To, Bucket and Length configure Truncate, exactly one of them: To
	// for dates and timestamps, Bucket (a positive decimal number) for
	// numbers, Length for text.
	To     string `json:"to,omitempty"`
	Bucket string `json:"bucket,omitempty"`
	Length int    `json:"length,omitempty"`
}

// Op is the comparison of a filter Condition.
type Op string

// The comparisons. A NULL value meets only OpNull (and OpNotIn and OpNe
// do not hold for it either, as in SQL).
const (
	OpEq      Op = "eq"
	OpNe      Op = "ne"
	OpIn      Op = "in"
	OpNotIn   Op = "not_in"
	OpLt      Op = "lt"
	OpLe      Op = "le"
	OpGt      Op = "gt"
	OpGe      Op = "ge"
	OpNull    Op = "null"
	OpNotNull Op = "not_null"
)

var ops = []Op{OpEq, OpNe, OpIn, OpNotIn, OpLt, OpLe, OpGt, OpGe, OpNull, OpNotNull}

// Condition is one condition of a row filter: the row's value of Column
// compared with Values. Values compare as numbers when both sides are
// numbers, as booleans when both are (t, f, true, false), else as text.
type Condition struct {
	Column string   `json:"column"`
	Op     Op       `json:"op"`
	Values []string `json:"values,omitempty"`
}

// Problem is one thing wrong with a contract: the field, as a dotted path
// from the contract ("columns.email.action"), the line it stands on (0
// when not known), and what is wrong.
type Problem struct {
	Field string
	Line  int
	Msg   string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Field, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Field, p.Msg)
}

// Error lists the problems of a contract.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "contract: " + strings.Join(parts, "; ")
}

var (
	keyRefRE = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*\}$`)
	piiRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	bucketRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
)

// maxKeep bounds KeepFirst and KeepLast.
const maxKeep = 64

// Validate lists what is wrong with s, without I/O; fields are dotted
// paths from the contract, lines unknown. A valid contract compiles once
// its key is there.
func (s *Spec) Validate() []Problem {
	var out []Problem
	add := func(field, format string, args ...any) {
		out = append(out, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if s == nil {
		return nil
	}
	if s.File != "" && s.Columns == nil && s.Tables == nil && !s.Strict && s.Key == "" && s.KeyFile == "" && s.Filter == nil {
		add("file", "%q was not read: sluice apply -f reads a contract file relative to the spec's directory; elsewhere write the contract in the spec", s.File)
		return out
	}
	switch {
	case len(s.Columns) > 0 && len(s.Tables) > 0:
		add("tables", "a contract has columns or tables, not both: columns for the rows of a full or incremental load, tables for the tables of a cdc pipeline")
	case len(s.Columns) == 0 && len(s.Tables) == 0:
		add("columns", "is required (or tables, for a cdc pipeline): the contract classifies each column")
	case len(s.Tables) > 0 && len(s.Filter) > 0:
		add("filter", "a contract by tables filters each table: tables.<schema.table>.filter")
	}
	out = append(out, columnProblems("columns", s.Columns)...)
	out = append(out, filterProblems("filter", s.Filter)...)
	for _, name := range sortedKeys(s.Tables) {
		field := "tables." + name
		if !validTableName(name) {
			add(field, "%q is not a table name: want schema.table", name)
		}
		t := s.Tables[name]
		if t == nil {
			add(field, "must be a mapping (columns, filter)")
			continue
		}
		out = append(out, columnProblems(field+".columns", t.Columns)...)
		out = append(out, filterProblems(field+".filter", t.Filter)...)
	}
	switch {
	case s.Key != "" && s.KeyFile != "":
		add("key_file", "give key or key_file, not both")
	case s.Key != "" && !keyRefRE.MatchString(s.Key):
		add("key", "must be a reference to an environment variable of the workers, such as ${SLUICE_CONTRACT_KEY}: a key written in the spec would be stored in the cluster and sent with every task")
	case s.KeyFile != "" && !strings.HasPrefix(s.KeyFile, "/"):
		add("key_file", "%q: want an absolute path on the workers", s.KeyFile)
	case s.Key == "" && s.KeyFile == "" && s.needsKey():
		add("key", "is required by hash and tokenize: a reference to an environment variable of the workers holding a secret of at least %d bytes, such as ${SLUICE_CONTRACT_KEY}", minKeyLen)
	}
	return out
}

// Changes reports whether a load's contract may change its rows: a
// filter, or a column it classifies with another action than keep. nil
// changes nothing.
func (s *Spec) Changes() bool {
	if s == nil {
		return false
	}
	if len(s.Filter) > 0 {
		return true
	}
	for _, c := range s.Columns {
		if c.Action != Keep {
			return true
		}
	}
	return false
}

func (s *Spec) needsKey() bool {
	need := func(cols map[string]Column) bool {
		for _, c := range cols {
			if c.Action == Hash || c.Action == Tokenize {
				return true
			}
		}
		return false
	}
	if need(s.Columns) {
		return true
	}
	for _, t := range s.Tables {
		if t != nil && need(t.Columns) {
			return true
		}
	}
	return false
}

func validTableName(name string) bool {
	schema, table, ok := strings.Cut(name, ".")
	return ok && schema != "" && table != "" && !strings.Contains(table, ".")
}

func columnProblems(prefix string, cols map[string]Column) []Problem {
	var out []Problem
	for _, name := range sortedKeys(cols) {
		field := prefix + "." + name
		if name == "" {
			out = append(out, Problem{Field: prefix, Msg: "a column needs a name"})
			continue
		}
		for _, msg := range cols[name].problems() {
			f := field
			if msg.field != "" {
				f += "." + msg.field
			}
			out = append(out, Problem{Field: f, Msg: msg.msg})
		}
	}
	return out
}

type fieldMsg struct{ field, msg string }

func (c Column) problems() []fieldMsg {
	var out []fieldMsg
	add := func(field, format string, args ...any) {
		out = append(out, fieldMsg{field, fmt.Sprintf(format, args...)})
	}
	if c.PII != "" && !piiRE.MatchString(c.PII) {
		add("pii", "%q: want lower-case letters, digits and '_' (email, phone, name, birth_date)", c.PII)
	}
	if !slices.Contains(actions, c.Action) {
		if c.Action == "" {
			add("action", "is required (%s)", actionList())
		} else {
			add("action", "unknown action %q (%s)", c.Action, actionList())
		}
		return out
	}
	if c.Action != Mask && (c.Shape != "" || c.KeepFirst != 0 || c.KeepLast != nil) {
		add("", "shape, keep_first and keep_last are for action mask, not %s", c.Action)
	}
	if c.Action != Truncate && (c.To != "" || c.Bucket != "" || c.Length != 0) {
		add("", "to, bucket and length are for action truncate, not %s", c.Action)
	}
	switch c.Action {
	case Mask:
		if c.Shape != "" && c.Shape != ShapeChars && c.Shape != ShapeEmail {
			add("shape", "%q: want %s or %s", c.Shape, ShapeChars, ShapeEmail)
		}
		if c.KeepFirst < 0 || c.KeepFirst > maxKeep {
			add("keep_first", "%d: want 0 to %d", c.KeepFirst, maxKeep)
		}
		if c.KeepLast != nil && (*c.KeepLast < 0 || *c.KeepLast > maxKeep) {
			add("keep_last", "%d: want 0 to %d", *c.KeepLast, maxKeep)
		}
		if c.maskShape() == ShapeEmail && (c.KeepFirst != 0 || c.KeepLast != nil) {
			add("", "an email is masked whole but its domain: keep_first and keep_last are for shape chars")
		}
	case Truncate:
		n := 0
		for _, set := range []bool{c.To != "", c.Bucket != "", c.Length != 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			add("", "truncate needs exactly one of to (a date or timestamp: %s), bucket (a number: 1000, 0.5) or length (a text: 3)", strings.Join(truncUnits, ", "))
		}
		if c.To != "" && !slices.Contains(truncUnits, c.To) {
			add("to", "%q: want one of %s", c.To, strings.Join(truncUnits, ", "))
		}
		if c.Bucket != "" {
			r, ok := new(big.Rat).SetString(c.Bucket)
			if !bucketRE.MatchString(c.Bucket) || !ok || r.Sign() <= 0 {
				add("bucket", "%q: want a positive number (1000, 0.5)", c.Bucket)
			}
		}
		if c.Length < 0 {
			add("length", "%d: want 1 or more", c.Length)
		}
	}
	return out
}

// maskShape is the shape Mask keeps: the column's Shape, else email for
// a column of pii email, else chars.
func (c Column) maskShape() string {
	switch {
	case c.Shape != "":
		return c.Shape
	case c.PII == "email":
		return ShapeEmail
	}
	return ShapeChars
}

// keepLast is how many last letters and digits Mask keeps.
func (c Column) keepLast() int {
	if c.KeepLast != nil {
		return *c.KeepLast
	}
	return DefaultKeepLast
}

// injective reports whether the action keeps distinct values distinct, as
// a key column's values must stay.
func (c Column) injective() bool {
	return c.Action == Keep || c.Action == Hash || c.Action == Tokenize
}

func filterProblems(prefix string, conds []Condition) []Problem {
	var out []Problem
	for i, c := range conds {
		field := fmt.Sprintf("%s[%d]", prefix, i)
		if c.Column == "" {
			out = append(out, Problem{Field: field + ".column", Msg: "is required: the column the condition tests"})
		}
		switch {
		case !slices.Contains(ops, c.Op):
			out = append(out, Problem{Field: field, Msg: fmt.Sprintf("unknown comparison %q (%s)", c.Op, opList())})
		case (c.Op == OpNull || c.Op == OpNotNull) && len(c.Values) != 0:
			out = append(out, Problem{Field: field, Msg: "is: null and is: not null take no value"})
		case (c.Op == OpIn || c.Op == OpNotIn) && len(c.Values) == 0:
			out = append(out, Problem{Field: field, Msg: "in and not_in need a list of at least one value"})
		case c.Op != OpNull && c.Op != OpNotNull && c.Op != OpIn && c.Op != OpNotIn && len(c.Values) != 1:
			out = append(out, Problem{Field: field, Msg: fmt.Sprintf("%s takes one value", c.Op)})
		}
	}
	return out
}

func actionList() string {
	s := make([]string, len(actions))
	for i, a := range actions {
		s[i] = string(a)
	}
	return "want one of " + strings.Join(s, ", ")
}

func opList() string {
	return "want one of equals, not_equals, in, not_in, lt, le, gt, ge, is: null, is: not null"
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Decode decodes a contract from its JSON form (as a task carries it) and
// validates it; unknown fields are errors. Empty JSON is no contract: nil
// without an error.
func Decode(raw json.RawMessage) (*Spec, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode contract: %w", err)
	}
	if ps := s.Validate(); len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	return &s, nil
}

// JSON encodes s as Decode reads it; nil is no contract (nil JSON).
func (s *Spec) JSON() (json.RawMessage, error) {
	if s == nil {
		return nil, nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode contract: %w", err)
	}
	return b, nil
}

// Streams reports whether the contract classifies tables (for cdc and
// cdc_apply pipelines) rather than the rows of one dataset.
func (s *Spec) Streams() bool { return s != nil && len(s.Tables) > 0 }

// errUnclassified is wrapped by the error of a strict contract meeting a
// column it does not classify.
var errUnclassified = errors.New("not classified by the contract")

// IsUnclassified reports whether err is a strict contract's refusal of a
// column it does not classify.
func IsUnclassified(err error) bool { return errors.Is(err, errUnclassified) }
