package contract

import (
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/protocol"
)

// Schema returns the schema of the rows a load writes with the contract
// applied to rows of schema in (a plan's, as the source declared it): the
// columns dropped left out, the hashed, masked and tokenized ones text,
// the nulled ones nullable; the key stays only when every key column keeps
// its values distinct (keep, hash, tokenize). A column of a strict
// contract that it does not classify is an error naming it, so a run can
// fail before it reads anything. nil is nil.
func (s *Spec) Schema(in *protocol.Schema) (*protocol.Schema, error) {
	if s == nil || in == nil || len(s.Columns) == 0 {
		return in, nil
	}
	r := &rules{what: "the rows", field: s.where("columns"), strict: s.Strict, cols: s.Columns, filter: s.Filter}
	return r.schema(in, false)
}

// schema transforms a dataset's or a table's schema. For a stream's table
// (stream) a key column whose action would merge distinct keys is an
// error: a replica applies changes by key.
func (r *rules) schema(in *protocol.Schema, stream bool) (*protocol.Schema, error) {
	// Native, the source's own description of the rest of the dataset,
	// stays: a sink of that system leaves out what it says of the columns
	// dropped or Transformed.
	out := &protocol.Schema{System: in.System, Native: in.Native}
	for _, c := range in.Columns {
		col, ok := r.cols[c.Name]
		if !ok {
			if r.strict {
				return nil, r.unclassified(c.Name)
			}
			col = Column{Action: Keep}
		}
		if col.Action == Drop {
			continue
		}
		out.Columns = append(out.Columns, outColumn(c, col))
	}
	keyKept := true
	for _, k := range in.Key {
		col, ok := r.cols[k]
		if ok && !col.injective() {
			if stream {
				return nil, fmt.Errorf("key column %q of %s is %s by the contract: a change stream applies rows by their key, which must stay distinct: keep, hash or tokenize it", k, r.what, actionPast(col.Action))
			}
			keyKept = false
		}
	}
	if keyKept {
		out.Key = slices.Clone(in.Key)
	}
	return out, nil
}

// outColumn describes what column c holds once col's action applied. The
// source's default and backfill expressions, which may hold a value of the
// column, stay only when the values are kept as they are.
func outColumn(c protocol.Column, col Column) protocol.Column {
	switch col.Action {
	case Keep:
		return c
	case Hash, Mask, Tokenize:
		return protocol.Column{Name: c.Name, Type: protocol.TypeString, NotNull: c.NotNull, Native: "text", ID: c.ID, Transformed: string(col.Action)}
	case Null:
		c.NotNull, c.Default, c.Backfill, c.Generated = false, "", "", ""
		c.Transformed = string(col.Action)
		return c
	}
	// Truncate keeps the type.
	c.Default, c.Backfill, c.Generated = "", "", ""
	c.Transformed = string(col.Action)
	return c
}

func actionPast(a Action) string {
	switch a {
	case Drop:
		return "dropped"
	case Mask:
		return "masked"
	case Null:
		return "nulled"
	case Truncate:
		return "truncated"
	}
	return string(a)
}
