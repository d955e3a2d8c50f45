package contract

import (
	"fmt"
	"slices"
)

// plan is the contract of rows whose columns are known in advance (a CSV
// batch's Columns, an Arrow schema, a table's relation), compiled: what
// becomes of each input column, and the filter.
type plan struct {
	in    []string
	out   []outCol // in input order; dropped columns left out
	names []string // the output columns' names
	conds []planCond
	// same says rows pass unchanged: every column kept, no filter.
	same bool
}

type outCol struct {
	in int    // the input column
	fn *colFn // its action; keep when fn.keep()
	// keep and null say fn.keep() and that fn nulls, for the loops over
	// every value.
	keep, null bool
}

type planCond struct {
	in int // the input column; -1 when the rows do not have it (NULL)
	c  cond
}

// planFor compiles r for rows of the columns cols. A column of a strict
// contract that it does not classify is an error naming it.
func planFor(r *rules, k *keys, cols []string) (*plan, error) {
	p := &plan{in: slices.Clone(cols), same: true}
	for i, name := range cols {
		fn, err := r.column(k, name)
		if err != nil {
			return nil, err
		}
		if fn.col.Action == Drop {
			p.same = false
			continue
		}
		if !fn.keep() {
			p.same = false
		}
		p.out = append(p.out, outCol{in: i, fn: fn, keep: fn.keep(), null: fn.col.Action == Null})
		p.names = append(p.names, name)
	}
	for _, c := range compileFilter(r.filter) {
		p.conds = append(p.conds, planCond{in: slices.Index(cols, c.column), c: c})
		p.same = false
	}
	return p, nil
}

// keepRow reports whether a row meets the filter; value returns the text
// of input column i and whether it is NULL.
func (p *plan) keepRow(value func(i int) ([]byte, bool)) bool {
	for i := range p.conds {
		pc := &p.conds[i]
		var v []byte
		null := true
		if pc.in >= 0 {
			v, null = value(pc.in)
		}
		if !pc.c.test(v, null) {
			return false
		}
	}
	return true
}

// valueError is a value a column's action could not transform, reported
// by the action (the caller adds the row's position and the column),
// never with the value.
func valueError(fn *colFn, err error) error {
	return fmt.Errorf("%s: %w", fn.col.Action, err)
}
