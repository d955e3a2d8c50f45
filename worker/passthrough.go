package worker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// executeUnits runs a task of a passthrough run: it reads the partition's
// units from the source (connectors.UnitSource) and writes them, as they
// are, to a unit writer of the sink (connectors.UnitSink).
func (w *Worker) executeUnits(ctx context.Context, task protocol.Task, attempt int, src connectors.Source, sink connectors.Sink, log *slog.Logger) (out connectors.TaskOutput, err error) {
	us, ok := src.(connectors.UnitSource)
	if !ok {
		return out, connectors.Permanent(fmt.Errorf("a %s source cannot be the source of a passthrough", task.Source.Kind))
	}
	uk, ok := sink.(connectors.UnitSink)
	if !ok {
		return out, connectors.Permanent(fmt.Errorf("a %s sink cannot be the sink of a passthrough", task.Sink.Kind))
	}
	uw, err := uk.OpenUnits(ctx, connectors.TaskRef{
		RunID: task.RunID, TaskID: task.TaskID, Pipeline: task.Pipeline, Attempt: attempt, Schema: task.Schema,
	})
	if err != nil {
		return out, fmt.Errorf("open %s output of task: %w", task.Sink.Kind, err)
	}
	var writeErr error
	err = us.ReadUnits(ctx, task.Partition, func(ctx context.Context, u connectors.Unit) error {
		// Between the read and the write: where a transform of the unit
		// (a data contract's) goes, so that nothing it removes leaves the
		// worker.
		if err := uw.WriteUnit(ctx, u); err != nil {
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
