package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.WindowSummer = (*Sink)(nil)

// SumWindow counts and checksums the rows of the window directories that
// lie in req.Window (for `sluice check`), as ReadChecksum does: CSV rows as
// their records (comparable with PostgreSQL's COPY text), JSONL and
// Parquet rows as canonical JSON lines. A window directory that overlaps
// req.Window only in part cannot be summed for it.
func (s *Sink) SumWindow(ctx context.Context, req connectors.SumRequest) (connectors.WindowSum, error) {
	out := connectors.WindowSum{Form: "jsonl", Columns: req.Columns}
	if s.cfg.Format == "csv" {
		out.Form = "csv"
	}
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("sum window %s: %w", req.Window, err)
	}
	for _, e := range entries {
		o, ok := parseWindowDir(e.Name())
		if !ok || !o.Overlaps(req.Window) {
			continue
		}
		if !req.Window.Covers(o) {
			return out, connectors.Permanent(fmt.Errorf("sum window %s: the committed window %s lies partly outside it", req.Window, e.Name()))
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		sum, err := ReadChecksum(filepath.Join(s.root, e.Name()), s.cfg.Format)
		if err != nil {
			return out, fmt.Errorf("sum window %s: %w", req.Window, err)
		}
		out.Checksum.Merge(sum)
	}
	return out, nil
}
