package contract

import (
	"bytes"
	"math/big"
	"strconv"
)

// literal is a filter value, read once in the forms it may compare in.
type literal struct {
	text      []byte
	i         int64
	isInt     bool
	num       *big.Rat // a number's exact value; nil for what is none
	b, isBool bool
}

func newLiteral(s string) literal {
	l := literal{text: []byte(s)}
	l.i, l.isInt = parseInt(l.text)
	l.num = parseNumber(l.text)
	l.b, l.isBool = parseBool(l.text)
	return l
}

func parseInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	i, err := strconv.ParseInt(string(v), 10, 64)
	return i, err == nil
}

// parseNumber reads a decimal number (1, -2.5, 1e3) exactly; nil for
// anything else.
func parseNumber(v []byte) *big.Rat {
	if len(v) == 0 || len(v) > 100 || !(v[0] >= '0' && v[0] <= '9' || v[0] == '-' || v[0] == '+' || v[0] == '.') {
		return nil
	}
	r, ok := new(big.Rat).SetString(string(v))
	if !ok {
		return nil
	}
	return r
}

func parseBool(v []byte) (bool, bool) {
	switch string(v) {
	case "t", "true", "TRUE", "True":
		return true, true
	case "f", "false", "FALSE", "False":
		return false, true
	}
	return false, false
}

// cmpValue compares value v with l: as integers, numbers or booleans when
// both are (false before true), else as text by bytes.
func cmpValue(v []byte, l *literal) int {
	if l.isInt {
		if i, ok := parseInt(v); ok {
			switch {
			case i < l.i:
				return -1
			case i > l.i:
				return 1
			}
			return 0
		}
	}
	if l.num != nil {
		if n := parseNumber(v); n != nil {
			return n.Cmp(l.num)
		}
	}
	if l.isBool {
		if b, ok := parseBool(v); ok {
			switch {
			case b == l.b:
				return 0
			case !b:
				return -1
			}
			return 1
		}
	}
	return bytes.Compare(v, l.text)
}

// cond is a compiled filter condition.
type cond struct {
	column string
	op     Op
	lits   []literal
}

func compileFilter(conds []Condition) []cond {
	out := make([]cond, len(conds))
	for i, c := range conds {
		out[i] = cond{column: c.Column, op: c.Op}
		for _, v := range c.Values {
			out[i].lits = append(out[i].lits, newLiteral(v))
		}
	}
	return out
}

// test reports whether a value meets the condition; null is SQL NULL,
// which meets only is: null.
func (c *cond) test(v []byte, null bool) bool {
	switch c.op {
	case OpNull:
		return null
	case OpNotNull:
		return !null
	}
	if null {
		return false
	}
	switch c.op {
	case OpEq:
		return cmpValue(v, &c.lits[0]) == 0
	case OpNe:
		return cmpValue(v, &c.lits[0]) != 0
	case OpIn, OpNotIn:
		in := false
		for i := range c.lits {
			if cmpValue(v, &c.lits[i]) == 0 {
				in = true
				break
			}
		}
		return in == (c.op == OpIn)
	case OpLt:
		return cmpValue(v, &c.lits[0]) < 0
	case OpLe:
		return cmpValue(v, &c.lits[0]) <= 0
	case OpGt:
		return cmpValue(v, &c.lits[0]) > 0
	case OpGe:
		return cmpValue(v, &c.lits[0]) >= 0
	}
	return false
}
