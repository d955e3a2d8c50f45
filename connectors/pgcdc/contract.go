package pgcdc

import (
	"encoding/json"
	"fmt"

	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// applyContract compiles the Reader's data contract for a relation whose
// change events carry the columns names (in table order): the relation's
// events then carry the columns the contract keeps, transformed, and its
// description says so. A column a strict contract does not classify (one
// added mid-stream too), or a key column it would not keep distinct,
// stops the Reader with an error naming it, before any change of the
// relation is published: the slot is not confirmed past it, so the stream
// goes on from there once the spec's contract classifies the column.
func (r *Reader) applyContract(rel *relation, names []string) error {
	if r.cfg.Contract == nil {
		return nil
	}
	st, err := r.cfg.Contract.StreamTable(rel.schema+"."+rel.table, names, rel.keys)
	if err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	if st.Same() {
		return nil
	}
	rel.contract = st
	rel.columns = protocol.NewColumns(st.Columns())
	if rel.description == nil {
		return nil
	}
	var desc protocol.Schema
	if err := json.Unmarshal(rel.description, &desc); err != nil {
		return fmt.Errorf("contract: description of %s.%s: %w", rel.schema, rel.table, err)
	}
	out, err := st.Relation(&desc)
	if err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	rel.description, err = json.Marshal(out)
	return err
}

// openContract compiles a pipeline's data contract (its JSON form, the
// key read from this process's environment); nil without one.
func openContract(raw json.RawMessage) (*contract.Contract, error) {
	c, err := contract.Open(raw)
	if err != nil {
		return nil, fmt.Errorf("pipeline contract: %w", err)
	}
	return c, nil
}
