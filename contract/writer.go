package contract

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/connectors"
)

// Writer returns a TaskWriter that applies the contract to every batch of
// a task before w writes it: CSV and JSONL batches are re-encoded with
// each column transformed (kept columns copied byte for byte), Arrow
// records rebuilt; rows the filter leaves out are not written. A batch the
// contract leaves as it is (every column kept, no filter, not strict)
// reaches w unchanged. A column a strict contract does not classify fails
// the task permanently, naming the column; so does a value an action
// cannot take (a truncate to month of a text that is no date), named by
// the batch's position, its row and its column. The contract must be one
// of Columns (a load's), not of Tables.
func (c *Contract) Writer(w connectors.TaskWriter) (connectors.TaskWriter, error) {
	if c.dataset == nil {
		return nil, connectors.Permanent(errors.New("contract: a contract by tables applies to cdc and cdc_apply pipelines: a load's contract classifies columns"))
	}
	return &writer{w: w, c: c}, nil
}

type writer struct {
	w connectors.TaskWriter
	c *Contract
	// made for the first batch of each kind
	csv   *csvRows
	json  *jsonRows
	arrow *arrowRows
}

func (wr *writer) Write(ctx context.Context, b connectors.Batch) error {
	out, err := wr.transform(b)
	if err != nil {
		// The caller adds the batch's position: rowError says which of
		// its rows, and which column.
		return connectors.Permanent(fmt.Errorf("contract: %w", err))
	}
	if out.Record != nil && out.Record != b.Record {
		defer out.Record.Release()
	}
	if out.Rows == 0 && b.Rows > 0 {
		return nil // the filter left every row out
	}
	return wr.w.Write(ctx, out)
}

func (wr *writer) transform(b connectors.Batch) (connectors.Batch, error) {
	r, k := wr.c.dataset, wr.c.keys
	switch {
	case b.Record != nil:
		if wr.arrow == nil {
			wr.arrow = newArrowRows(r, k)
		}
		if err := wr.arrow.compile(b.Record.Schema()); err != nil {
			return b, err
		}
		if wr.arrow.p.same {
			return b, nil
		}
		rec, err := wr.arrow.transform(b.Record)
		if err != nil {
			return b, err
		}
		out := connectors.Batch{Record: rec, Format: connectors.FormatArrow, Rows: rec.NumRows(), Position: b.Position}
		return out, nil
	case b.Format == connectors.FormatCSV:
		if wr.csv == nil || !slices.Equal(wr.csv.p.in, b.Columns) {
			p, err := planFor(r, k, b.Columns)
			if err != nil {
				return b, err
			}
			wr.csv = &csvRows{p: p}
		}
		if wr.csv.p.same {
			return b, nil
		}
		raw, rows, err := wr.csv.transform(wr.csv.outBuffer(b.Raw), b.Raw)
		if err != nil {
			return b, err
		}
		wr.csv.out = raw
		sum := wr.csv.sum // of exactly these records: the sink need not scan them again
		return connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: wr.csv.p.names, Rows: rows, Position: b.Position, Checksum: &sum}, nil
	case b.Format == connectors.FormatJSONL:
		if r.passes() {
			return b, nil
		}
		if wr.json == nil {
			wr.json = newJSONRows(r, k)
		}
		raw, rows, err := wr.json.transform(make([]byte, 0, len(b.Raw)+len(b.Raw)/4), b.Raw)
		if err != nil {
			return b, err
		}
		return connectors.Batch{Raw: raw, Format: connectors.FormatJSONL, Rows: rows, Position: b.Position}, nil
	}
	return b, fmt.Errorf("a batch of format %q: the contract applies to CSV, JSONL and Arrow rows", b.Format)
}

func (wr *writer) Close(ctx context.Context) (connectors.TaskOutput, error) { return wr.w.Close(ctx) }

func (wr *writer) Abort(ctx context.Context) error { return wr.w.Abort(ctx) }
