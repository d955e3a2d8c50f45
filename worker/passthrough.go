package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// executeUnits runs a task of a run planned in units: it reads the
// partition's units from the source (connectors.UnitSource) and writes
// them to a unit writer of the sink (connectors.UnitSink): as they are
// for a passthrough, through the task's data contract for a transform
// (see unitContract).
func (w *Worker) executeUnits(ctx context.Context, task protocol.Task, attempt int, src connectors.Source, sink connectors.Sink, log *slog.Logger) (out connectors.TaskOutput, err error) {
	us, ok := src.(connectors.UnitSource)
	if !ok {
		return out, connectors.Permanent(fmt.Errorf("a %s source cannot be the source of a passthrough", task.Source.Kind))
	}
	uk, ok := sink.(connectors.UnitSink)
	if !ok {
		return out, connectors.Permanent(fmt.Errorf("a %s sink cannot be the sink of a passthrough", task.Sink.Kind))
	}
	ref := connectors.TaskRef{
		RunID: task.RunID, TaskID: task.TaskID, Pipeline: task.Pipeline, Attempt: attempt, Schema: task.Schema,
	}
	uc, err := unitContract(task)
	if err != nil {
		return out, connectors.Permanent(err)
	}
	if uc != nil {
		// The sink makes the rows the contract makes.
		ref.Schema = uc.schema
	}
	uw, err := uk.OpenUnits(ctx, ref)
	if err != nil {
		return out, fmt.Errorf("open %s output of task: %w", task.Sink.Kind, err)
	}
	var writeErr error
	err = us.ReadUnits(ctx, task.Partition, func(ctx context.Context, u connectors.Unit) error {
		// Between the read and the write: the contract's transform, so
		// that nothing it removes leaves the worker.
		var tr interface{ Err() error }
		if uc != nil {
			var err error
			if u, tr, err = uc.apply(u); err != nil {
				writeErr = connectors.Permanent(fmt.Errorf("unit %s: %w", u.Position, err))
				return writeErr
			}
		}
		if err := uw.WriteUnit(ctx, u); err != nil {
			if tr != nil && tr.Err() != nil {
				// A row or a value the contract could not take:
				// the same on every attempt.
				err = connectors.Permanent(tr.Err())
			}
			if u.Position != "" {
				err = fmt.Errorf("write unit %s: %w", u.Position, err)
			}
			writeErr = err
			return err
		}
		return nil
	})
	return finishOutput(ctx, task, err, writeErr, uw, log)
}

// unitsContract is a transform's data contract, ready for its units.
type unitsContract struct {
	c      *contract.Contract
	schema *protocol.Schema // the rows the contract makes
	// generated names the source's generated columns, which a unit does
	// not carry: the target computes them from the copied columns.
	generated map[string]bool
	// text is the contract compiled for the columns of the last unit in
	// the text format, bin for those of the last in the binary one.
	text        *contract.CopyText
	textColumns []string
	bin         *contract.CopyBinary
	binColumns  [2][]string // the unit's Columns and TextColumns
}

// unitContract compiles the contract of a task of a transform planned in
// units; nil for a passthrough's, or a contract that changes nothing. A
// generated column it changes (other than drop) is refused: the target
// computes it, from the columns as the contract left them.
func unitContract(task protocol.Task) (*unitsContract, error) {
	if task.Pattern == protocol.PatternPassthrough || len(task.Contract) == 0 {
		return nil, nil
	}
	c, err := contract.Open(task.Contract)
	if err != nil || c == nil {
		return nil, err
	}
	out, err := c.Spec().Schema(task.Schema)
	if err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	uc := &unitsContract{c: c, schema: out, generated: map[string]bool{}}
	if task.Schema != nil {
		for _, col := range task.Schema.Columns {
			if col.Generated != "" {
				uc.generated[col.Name] = true
			}
		}
		for _, col := range out.Columns {
			if uc.generated[col.Name] && col.Transformed != "" {
				return nil, fmt.Errorf("contract: column %q is generated: the target computes it from the copied columns; keep or drop it", col.Name)
			}
		}
	}
	return uc, nil
}

var errBinaryUnit = errors.New("the unit is in a binary format the contract cannot read (the run was planned for a passthrough)")

// apply returns u with the contract applied: its Body transformed as it
// is read, its Columns the ones the contract keeps. A unit the contract
// leaves as it is passes unchanged, whatever its format. A unit in the
// binary format goes through contract.CopyBinary, which takes the values
// of the columns the source read as text (TextColumns), the others' bytes
// passing undecoded.
func (uc *unitsContract) apply(u connectors.Unit) (connectors.Unit, interface{ Err() error }, error) {
	if u.Format == "binary" {
		if uc.bin == nil || !slices.Equal(uc.binColumns[0], u.Columns) || !slices.Equal(uc.binColumns[1], u.TextColumns) {
			t, err := uc.c.CopyBinary(u.Columns, u.TextColumns)
			if err != nil {
				return u, nil, err
			}
			uc.bin, uc.binColumns = t, [2][]string{u.Columns, u.TextColumns}
		}
		if uc.bin.Same() {
			return u, nil, nil
		}
		tr := uc.bin.Reader(u.Body)
		u.Body, u.Columns, u.TextColumns = tr, uc.bin.Columns(), nil
		return u, tr, nil
	}
	if uc.text == nil || !slices.Equal(uc.textColumns, u.Columns) {
		t, err := uc.c.CopyText(u.Columns)
		if err != nil {
			return u, nil, err
		}
		uc.text, uc.textColumns = t, u.Columns
	}
	if uc.text.Same() {
		return u, nil, nil
	}
	if u.Format != "text" {
		return u, nil, errBinaryUnit
	}
	tr := uc.text.Reader(u.Body)
	u.Body, u.Columns = tr, uc.text.Columns()
	return u, tr, nil
}
