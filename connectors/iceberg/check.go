package iceberg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

var (
	_ connectors.Checker = (*Sink)(nil)
	_ connectors.Checker = (*Source)(nil)
)

// Check looks at the table a source reads (connectors.Checker): the
// catalog must hold it (a readiness pipeline may watch a table not
// created yet), and snapshot_id, when set, must be one of its snapshots.
func (s *Source) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	tbl, err := checkTable(ctx, &s.lazyLake)
	if err != nil {
		return "", err
	}
	if tbl == nil && req.Pattern == protocol.PatternReadiness {
		// A readiness pipeline watches for the table's commits, the
		// first ones included.
		return fmt.Sprintf("table %s: not in the catalog yet; its snapshots are announced once it has some", s.cfg.Table), nil
	}
	if tbl == nil {
		return "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("table %s is not in the catalog", s.cfg.Table)}
	}
	if s.cfg.SnapshotID != 0 && tbl.SnapshotByID(s.cfg.SnapshotID) == nil {
		return "", &connectors.FieldError{Field: "snapshot_id", Msg: fmt.Sprintf("snapshot %d is not in table %s", s.cfg.SnapshotID, s.cfg.Table)}
	}
	return describeTable(s.cfg.Table, tbl), nil
}

// Check looks at where a sink writes (connectors.Checker): the catalog
// must answer, and a warehouse on S3 must be a bucket that exists. A
// table that exists is described; the run's schema is compared with it
// when the run is planned.
func (s *Sink) Check(ctx context.Context, _ connectors.CheckRequest) (string, error) {
	wh, err := s.cfg.warehouse()
	if err != nil {
		return "", err
	}
	if err := checkBucket(ctx, s.cfg.Config, wh); err != nil {
		return "", err
	}
	tbl, err := checkTable(ctx, &s.lazyLake)
	if err != nil {
		return "", err
	}
	if tbl == nil {
		return fmt.Sprintf("table %s: created by the first run in %s", s.cfg.Table, wh), nil
	}
	return describeTable(s.cfg.Table, tbl), nil
}

// checkTable loads the configured table: nil when the catalog does not
// hold it. A SQLite catalog file that does not exist holds no table, and
// is not created by the check.
func checkTable(ctx context.Context, z *lazyLake) (*table.Table, error) {
	kind, addr, err := z.cfg.catalog()
	if err != nil {
		return nil, err
	}
	if kind == catalogSQLite {
		if _, err := os.Stat(addr); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	_, tbl, err := z.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load table %s: %w", z.cfg.Table, err)
	}
	return tbl, nil
}

// checkBucket asks an S3 warehouse's store whether its bucket exists.
func checkBucket(ctx context.Context, cfg Config, warehouse string) error {
	if cfg.local() {
		return nil
	}
	fio, err := icebergio.LoadFS(ctx, cfg.s3Props(), warehouse)
	if err != nil {
		return fmt.Errorf("open the warehouse %s: %w", warehouse, err)
	}
	cl, bucket, _, ok := store{fs: fio}.s3(warehouse)
	if !ok {
		return nil
	}
	_, err = cl.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket})
	var nf *types.NotFound
	switch {
	case errors.As(err, &nf):
		return &connectors.FieldError{Field: "warehouse", Msg: fmt.Sprintf("bucket %s does not exist: create it first", bucket)}
	case err != nil:
		return fmt.Errorf("look for bucket %s: %w", bucket, err)
	}
	return nil
}

// describeTable says what a table holds, in a line for people.
func describeTable(name string, tbl *table.Table) string {
	cols := len(tbl.Schema().Fields())
	sn := tbl.CurrentSnapshot()
	if sn == nil {
		return fmt.Sprintf("table %s: %d columns, no snapshot yet", name, cols)
	}
	rows, files := "?", "?"
	if sn.Summary != nil {
		rows, files = sn.Summary.Properties["total-records"], sn.Summary.Properties["total-data-files"]
	}
	return fmt.Sprintf("table %s: %d columns, snapshot %d (%s rows in %s data files)", name, cols, sn.SnapshotID, rows, files)
}
