package iceberg

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.WindowSummer = (*Sink)(nil)

// formCount is the form of a window sum that holds only a count: its
// rows are not hashed as a source hashes them, so `sluice check` compares
// counts only.
const formCount = "count"

// SumWindow counts the table's rows whose delta column lies in the
// window (for `sluice check`), leaving out the rows marked deleted; a
// table not created yet holds none. It scans the data files with the
// window as a row filter. Only the count is comparable (Form "count"):
// Parquet values are not rendered as a source's rows are hashed.
func (s *Sink) SumWindow(ctx context.Context, req connectors.SumRequest) (connectors.WindowSum, error) {
	out := connectors.WindowSum{Form: formCount, Columns: req.Columns}
	_, tbl, err := s.load(ctx)
	if err != nil || tbl == nil || tbl.CurrentSnapshot() == nil {
		return out, err
	}
	sc := tbl.Schema()
	for _, c := range req.Columns {
		if _, ok := sc.FindFieldByName(c); !ok {
			return out, connectors.Permanent(fmt.Errorf("sum window %s of %s: the table has no column %q", req.Window, s.cfg.Table, c))
		}
	}
	filter, err := windowFilter(sc, req.DeltaColumn, req.Window)
	if err != nil {
		return out, fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err)
	}
	fields := []string{req.DeltaColumn}
	if req.Deleted != "" {
		if _, ok := sc.FindFieldByName(req.Deleted); !ok {
			return out, connectors.Permanent(fmt.Errorf("sum window %s of %s: the table has no column %q", req.Window, s.cfg.Table, req.Deleted))
		}
		fields = append(fields, req.Deleted)
	}
	scan := tbl.Scan(table.WithRowFilter(filter), table.WithSelectedFields(fields...))
	defer scan.Close()
	_, recs, err := scan.ToArrowRecords(ctx)
	if err != nil {
		return out, fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err)
	}
	for rec, err := range recs {
		if err != nil {
			return out, fmt.Errorf("sum window %s of %s: %w", req.Window, s.cfg.Table, err)
		}
		n := rec.NumRows()
		if req.Deleted != "" {
			idx := rec.Schema().FieldIndices(req.Deleted)
			if len(idx) > 0 {
				n -= deletedRows(rec.Column(idx[0]))
			}
		}
		out.Checksum.Rows += n
		rec.Release()
	}
	return out, nil
}

// deletedRows counts the rows a delete marker column marks: true, or
// text t, true or 1.
func deletedRows(col interface {
	Len() int
	IsNull(int) bool
}) int64 {
	var n int64
	for r := range col.Len() {
		if col.IsNull(r) {
			continue
		}
		switch a := col.(type) {
		case *array.Boolean:
			if a.Value(r) {
				n++
			}
		case *array.String:
			switch strings.ToLower(a.Value(r)) {
			case "t", "true", "1":
				n++
			}
		}
	}
	return n
}
