package clickhouse

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.WindowSummer = (*Sink)(nil)

// formCount is the form of a window sum that holds only a count: the
// server renders values otherwise than a source hashes its rows, so
// `sluice check` compares counts only.
const formCount = "count"

// SumWindow counts the incremental table's rows whose delta column lies
// in the window (for `sluice check`), leaving out the rows marked
// deleted; a table not created yet holds none. Only the count is
// comparable (Form "count").
func (s *Sink) SumWindow(ctx context.Context, req connectors.SumRequest) (connectors.WindowSum, error) {
	out := connectors.WindowSum{Form: formCount, Columns: req.Columns}
	ok, err := s.exists(ctx, s.name)
	if err != nil || !ok {
		return out, err
	}
	rows, err := s.cl.Rows(ctx, "SELECT name, type FROM system.columns WHERE database = "+quoteString(s.db)+" AND table = "+quoteString(s.name))
	if err != nil {
		return out, err
	}
	types := map[string]string{}
	for _, r := range rows {
		types[string(r[0])] = string(r[1])
	}
	for _, c := range append(append([]string{req.DeltaColumn}, req.Columns...), req.Deleted) {
		if _, ok := types[c]; c != "" && !ok {
			return out, connectors.Permanent(fmt.Errorf("sum window %s of %s: the table has no column %q", req.Window, s.ident(s.name), c))
		}
	}
	var in string
	if req.Window.Values {
		if err := integerDelta(types[req.DeltaColumn]); err != nil {
			return out, connectors.Permanent(err)
		}
		in = inValues(req.DeltaColumn, req.Window)
	} else {
		kind, err := deltaKindOf(types[req.DeltaColumn])
		if err != nil {
			return out, connectors.Permanent(err)
		}
		in = inWindow(req.DeltaColumn, kind, req.Window)
	}
	cond := "ifNull(" + in + ", 0)"
	if d := req.Deleted; d != "" {
		cond += " AND NOT (" + deletedExpr(d, types[d]) + ")"
	}
	n, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(s.name)+" WHERE "+cond)
	if err != nil {
		return out, fmt.Errorf("sum window %s of %s: %w", req.Window, s.ident(s.name), err)
	}
	out.Checksum.Rows = n
	return out, nil
}

// deletedExpr is the condition "column d (of type chType) marks the row
// deleted": true, or text t, true or 1.
func deletedExpr(d, chType string) string {
	if strings.Contains(chType, "String") {
		return "lower(ifNull(" + quoteIdent(d) + ", '')) IN ('t', 'true', '1')"
	}
	return "ifNull(toUInt8(" + quoteIdent(d) + "), 0) != 0"
}
