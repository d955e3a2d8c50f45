package contract

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse reads a contract file: one YAML mapping with the fields of a
// Spec (strict, key or key_file, columns or tables, filter). Problems name
// the field and its line in the file.
func Parse(data []byte) (*Spec, []Problem) {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil {
		return nil, []Problem{{Field: "(document)", Msg: err.Error()}}
	}
	if len(root.Content) == 0 {
		return nil, []Problem{{Field: "(document)", Msg: "the contract file is empty"}}
	}
	s, ps := ParseNode(root.Content[0], "")
	if s != nil && s.File != "" {
		ps = append(ps, Problem{Field: "file", Line: root.Content[0].Line, Msg: "a contract file holds the contract itself, not the name of another file"})
	}
	return s, ps
}

// ParseNode reads a contract from the YAML node of a spec: prefix is the
// node's field ("contract"), which every problem's field starts with.
// Problems carry the line of the field at fault; a contract with problems
// is still returned, as far as it was read.
func ParseNode(n *yaml.Node, prefix string) (*Spec, []Problem) {
	p := &parser{prefix: prefix, lines: map[string]int{}}
	s := p.spec(n)
	// A contract by file is read, and checked, after the spec.
	if len(p.problems) == 0 && s.File == "" {
		for _, q := range s.Validate() {
			q.Line = p.line(q.Field)
			q.Field = p.field(q.Field)
			p.problems = append(p.problems, q)
		}
	}
	return s, p.problems
}

type parser struct {
	prefix   string
	problems []Problem
	// lines maps the fields read (dotted paths from the contract) to
	// their lines, for the problems Validate finds.
	lines map[string]int
}

func (p *parser) field(f string) string {
	switch {
	case p.prefix == "":
		return f
	case f == "":
		return p.prefix
	}
	return p.prefix + "." + f
}

func (p *parser) add(field string, line int, format string, args ...any) {
	p.problems = append(p.problems, Problem{Field: p.field(field), Line: line, Msg: fmt.Sprintf(format, args...)})
}

// line finds the line of field or of its closest parent read.
func (p *parser) line(field string) int {
	for f := field; ; {
		if n, ok := p.lines[f]; ok {
			return n
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			return p.lines[""]
		}
		f = f[:i]
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// mapping walks the key-value pairs of a mapping node, refusing repeated
// keys.
func (p *parser) mapping(field string, n *yaml.Node, want string, each func(k, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		p.add(field, n.Line, "must be a mapping (%s)", want)
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			p.add(join(field, k.Value), k.Line, "appears twice")
			continue
		}
		seen[k.Value] = true
		p.lines[join(field, k.Value)] = k.Line
		each(k, v)
	}
	return true
}

const specFields = "file, strict, key, key_file, columns, filter, tables"

func (p *parser) spec(n *yaml.Node) *Spec {
	s := &Spec{}
	p.lines[""] = n.Line
	p.mapping("", n, specFields, func(k, v *yaml.Node) {
		switch k.Value {
		case "file":
			s.File = p.str(k.Value, v)
		case "strict":
			s.Strict = p.boolean(k.Value, v)
		case "key":
			s.Key = p.str(k.Value, v)
		case "key_file":
			s.KeyFile = p.str(k.Value, v)
		case "columns":
			s.Columns = p.columns(k.Value, v)
		case "filter":
			s.Filter = p.filter(k.Value, v)
		case "tables":
			s.Tables = map[string]*Table{}
			p.mapping(k.Value, v, "schema.table: {columns, filter}", func(tk, tv *yaml.Node) {
				s.Tables[tk.Value] = p.table(join(k.Value, tk.Value), tv)
			})
		default:
			p.add(k.Value, k.Line, "unknown field (known: %s)", specFields)
		}
	})
	if s.File != "" && len(n.Content) > 2 {
		p.add("file", p.lines["file"], "a contract given by file has no other field here: they go in the file")
	}
	return s
}

func (p *parser) table(field string, n *yaml.Node) *Table {
	t := &Table{}
	p.mapping(field, n, "columns, filter", func(k, v *yaml.Node) {
		switch k.Value {
		case "columns":
			t.Columns = p.columns(join(field, k.Value), v)
		case "filter":
			t.Filter = p.filter(join(field, k.Value), v)
		default:
			p.add(join(field, k.Value), k.Line, "unknown field (known: columns, filter)")
		}
	})
	return t
}

const columnFields = "pii, action, shape, keep_first, keep_last, to, bucket, length"

// columns reads a mapping of column names to an action (keep) or to a
// mapping of the column's fields ({pii: email, action: hash}).
func (p *parser) columns(field string, n *yaml.Node) map[string]Column {
	out := map[string]Column{}
	p.mapping(field, n, "column: action, or column: {pii: ..., action: ...}", func(k, v *yaml.Node) {
		cf := join(field, k.Value)
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			p.add(field, k.Line, "a column needs a name")
			return
		}
		var c Column
		switch v.Kind {
		case yaml.ScalarNode:
			c.Action = Action(v.Value)
			p.lines[cf+".action"] = v.Line
		default:
			p.mapping(cf, v, columnFields, func(ck, cv *yaml.Node) {
				f := join(cf, ck.Value)
				switch ck.Value {
				case "pii":
					c.PII = p.str(f, cv)
				case "action":
					c.Action = Action(p.str(f, cv))
				case "shape":
					c.Shape = p.str(f, cv)
				case "keep_first":
					c.KeepFirst = p.integer(f, cv)
				case "keep_last":
					n := p.integer(f, cv)
					c.KeepLast = &n
				case "to":
					c.To = p.str(f, cv)
				case "bucket":
					c.Bucket = p.str(f, cv)
				case "length":
					c.Length = p.integer(f, cv)
				default:
					p.add(f, ck.Line, "unknown field (known: %s)", columnFields)
				}
			})
		}
		out[k.Value] = c
	})
	return out
}

// filter reads a list of conditions, each {column: c, <comparison>: value}.
func (p *parser) filter(field string, n *yaml.Node) []Condition {
	if n.Kind != yaml.SequenceNode {
		p.add(field, n.Line, "must be a list of conditions, such as - {column: country, in: [DE, FR]}")
		return nil
	}
	out := make([]Condition, 0, len(n.Content))
	for i, cn := range n.Content {
		cf := fmt.Sprintf("%s[%d]", field, i)
		p.lines[cf] = cn.Line
		var c Condition
		p.mapping(cf, cn, "column and one of equals, not_equals, in, not_in, lt, le, gt, ge, is", func(k, v *yaml.Node) {
			f := join(cf, k.Value)
			if k.Value == "column" {
				c.Column = p.str(f, v)
				return
			}
			if c.Op != "" {
				p.add(f, k.Line, "a condition has one comparison: write another condition")
				return
			}
			switch k.Value {
			case "equals", "not_equals", "lt", "le", "gt", "ge":
				c.Op = map[string]Op{"equals": OpEq, "not_equals": OpNe, "lt": OpLt, "le": OpLe, "gt": OpGt, "ge": OpGe}[k.Value]
				if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
					p.add(f, v.Line, "compare with NULL by is: null or is: not null")
					return
				}
				c.Values = []string{p.str(f, v)}
			case "in", "not_in":
				c.Op = map[string]Op{"in": OpIn, "not_in": OpNotIn}[k.Value]
				if v.Kind != yaml.SequenceNode {
					p.add(f, v.Line, "must be a list of values, such as [DE, FR]")
					return
				}
				for _, e := range v.Content {
					if e.Kind == yaml.ScalarNode && e.Tag == "!!null" {
						p.add(f, e.Line, "NULL is never in a list: use is: null")
						continue
					}
					c.Values = append(c.Values, p.str(f, e))
				}
			case "is":
				switch {
				case v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == "null"):
					c.Op = OpNull
				case v.Kind == yaml.ScalarNode && v.Value == "not null":
					c.Op = OpNotNull
				default:
					p.add(f, v.Line, "want null or not null")
				}
			default:
				p.add(f, k.Line, "unknown comparison (known: equals, not_equals, in, not_in, lt, le, gt, ge, is)")
			}
		})
		if cn.Kind == yaml.MappingNode && c.Op == "" {
			p.add(cf, cn.Line, "needs a comparison: equals, not_equals, in, not_in, lt, le, gt, ge or is")
		}
		out = append(out, c)
	}
	return out
}

func (p *parser) str(field string, v *yaml.Node) string {
	if v.Kind != yaml.ScalarNode {
		p.add(field, v.Line, "must be a single value")
		return ""
	}
	return v.Value
}

func (p *parser) boolean(field string, v *yaml.Node) bool {
	b, err := strconv.ParseBool(v.Value)
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || err != nil {
		p.add(field, v.Line, "%q: want true or false", v.Value)
	}
	return b
}

func (p *parser) integer(field string, v *yaml.Node) int {
	n, err := strconv.Atoi(v.Value)
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil {
		p.add(field, v.Line, "%q: want a whole number", v.Value)
	}
	return n
}
