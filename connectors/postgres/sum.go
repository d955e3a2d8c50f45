package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

// The PostgreSQL source and sink count and checksum a window's rows for
// `sluice check`, each row as COPY's CSV text (the form a run stages and
// checksums rows in).
var (
	_ connectors.WindowSummer = (*Source)(nil)
	_ connectors.WindowSummer = (*Sink)(nil)
)

// formCSV is the form of the checksums of rows as COPY's CSV text.
const formCSV = "csv"

// SumWindow counts and checksums the table's rows in the window (with the
// configured filter, without the rows marked deleted), over the columns a
// run reads.
func (s *Source) SumWindow(ctx context.Context, req connectors.SumRequest) (connectors.WindowSum, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return connectors.WindowSum{}, err
	}
	defer conn.Close(context.Background())
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", s.table.Sanitize()).Scan(&oid); err != nil {
		return connectors.WindowSum{}, classify(fmt.Errorf("sum window of %s: %w", s.cfg.Table, err))
	}
	cols, err := s.columns(ctx, conn, oid)
	if err != nil {
		return connectors.WindowSum{}, err
	}
	d, err := s.deltaColumn(ctx, conn, oid, connectors.PlanRequest{Window: &req.Window, DeltaColumn: req.DeltaColumn})
	if err != nil {
		return connectors.WindowSum{}, err
	}
	cond := d.cond()
	if req.Deleted != "" {
		cond += " AND " + notDeleted(req.Deleted)
	}
	sum, err := TableChecksum(ctx, conn, "SELECT "+quoteColumns(cols)+" FROM "+s.table.Sanitize()+s.whereClause(cond))
	if err != nil {
		return connectors.WindowSum{}, classify(fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err))
	}
	return connectors.WindowSum{Checksum: sum, Form: formCSV, Columns: cols}, nil
}

// SumWindow counts and checksums the target table's rows in the window
// over req.Columns; a target not created yet holds none.
func (s *Sink) SumWindow(ctx context.Context, req connectors.SumRequest) (connectors.WindowSum, error) {
	out := connectors.WindowSum{Form: formCSV, Columns: req.Columns}
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return out, err
	}
	defer conn.Close(context.Background())
	target := s.view()
	ok, _, err := exists(ctx, conn, target)
	if err != nil || !ok {
		return out, classify(err)
	}
	cond, err := targetWindow(ctx, conn, target, req.DeltaColumn, req.Window)
	if err != nil {
		return out, classify(fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err))
	}
	if req.Deleted != "" {
		cond += " AND " + notDeleted(req.Deleted)
	}
	if out.Checksum, err = TableChecksum(ctx, conn, "SELECT "+quoteColumns(req.Columns)+" FROM "+target.Sanitize()+" WHERE "+cond); err != nil {
		return out, classify(fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err))
	}
	return out, nil
}

// notDeleted is the condition "the row is not marked deleted by column".
func notDeleted(column string) string {
	return "NOT coalesce(" + pgx.Identifier{column}.Sanitize() + "::boolean, false)"
}

// quoteColumns is a SELECT list of columns.
func quoteColumns(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}
