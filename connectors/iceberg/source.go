package iceberg

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Source reads one Iceberg table: a whole snapshot, or the data files
// appended since the snapshot the previous run reached. See the package
// documentation.
type Source struct {
	lazyLake
	cfg SourceConfig
}

var _ connectors.Source = (*Source)(nil)

// NewSource returns a source for a validated configuration. It opens the
// catalog when it first needs it.
func NewSource(cfg SourceConfig) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Source{lazyLake: lazyLake{cfg: cfg.Config}, cfg: cfg}, nil
}

func openSource(_ context.Context, config json.RawMessage) (connectors.Source, error) {
	cfg, err := ParseSourceConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSource(cfg)
}

// readSpec is a partition: whole data files of one scan.
type readSpec struct {
	// Snapshot is the snapshot read; From, when not zero, the snapshot
	// after which appended files are read.
	Snapshot int64    `json:"snapshot"`
	From     int64    `json:"from,omitempty"`
	Files    []string `json:"files"`
}

// Plan lists the data files the run reads and groups them, whole, into
// partitions of about target_mb (and at most Partitioning.MaxFiles files,
// or TargetRows rows, when set). The plan's schema is the table's; its
// watermark is the id of the snapshot read, so that the next run of read:
// appended starts after it. A table without a snapshot gives no partition.
func (s *Source) Plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	plan, err := s.plan(ctx, req)
	if err != nil {
		return plan, fmt.Errorf("plan a read of %s: %w", s.cfg.Table, err)
	}
	return plan, nil
}

func (s *Source) plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	tbl, err := s.table(ctx)
	if err != nil {
		return connectors.Plan{}, err
	}
	sc, err := protocolSchema(tbl.Schema())
	if err != nil {
		return connectors.Plan{}, connectors.Permanent(err)
	}
	plan := connectors.Plan{Schema: sc, Watermark: req.Watermark}
	snap := tbl.CurrentSnapshot()
	if s.cfg.SnapshotID != 0 {
		if snap = tbl.SnapshotByID(s.cfg.SnapshotID); snap == nil {
			return plan, connectors.Permanent(fmt.Errorf("snapshot %d is not in the table", s.cfg.SnapshotID))
		}
	}
	if snap == nil {
		return plan, nil
	}
	spec := readSpec{Snapshot: snap.SnapshotID}
	plan.Watermark = strconv.FormatInt(snap.SnapshotID, 10)
	if s.cfg.Read == ReadAppended && req.Watermark != "" {
		from, err := strconv.ParseInt(req.Watermark, 10, 64)
		if err != nil {
			return plan, connectors.Permanent(fmt.Errorf("watermark %q is not a snapshot id", req.Watermark))
		}
		if from == snap.SnapshotID {
			return plan, nil
		}
		if tbl.SnapshotByID(from) == nil {
			return plan, connectors.Permanent(fmt.Errorf("snapshot %d, where the previous run stopped, is no longer in the table (expired): read the whole table with read: snapshot", from))
		}
		if !table.IsAncestorOf(snap.SnapshotID, from, tbl.SnapshotByID) {
			return plan, connectors.Permanent(fmt.Errorf("snapshot %d, where the previous run stopped, is not an ancestor of the current snapshot %d (the table was rolled back): read the whole table with read: snapshot", from, snap.SnapshotID))
		}
		spec.From = from
	}
	tasks, err := scanTasks(ctx, tbl, spec)
	if err != nil {
		return plan, err
	}
	type fileInfo struct {
		path        string
		rows, bytes int64
	}
	var files []fileInfo
	seen := map[string]bool{}
	for _, t := range tasks {
		p := t.File.FilePath()
		if !seen[p] {
			seen[p] = true
			files = append(files, fileInfo{p, t.File.Count(), t.File.FileSizeBytes()})
		}
	}
	slices.SortFunc(files, func(a, b fileInfo) int {
		switch {
		case a.path < b.path:
			return -1
		case a.path > b.path:
			return 1
		}
		return 0
	})
	target := s.cfg.targetBytes()
	if req.Partitioning.TargetBytes > 0 {
		target = req.Partitioning.TargetBytes
	}
	var cur readSpec
	var rows, bytes int64
	start := 0
	flush := func(end int) {
		if len(cur.Files) == 0 {
			return
		}
		b, _ := json.Marshal(cur)
		plan.Partitions = append(plan.Partitions, protocol.Partition{
			Key: fmt.Sprintf("files[%d:%d]", start, end), Spec: b, Rows: rows, Bytes: bytes,
		})
		cur, rows, bytes, start = readSpec{}, 0, 0, end
	}
	for i, f := range files {
		if len(cur.Files) > 0 && (bytes+f.bytes > target ||
			req.Partitioning.MaxFiles > 0 && len(cur.Files) >= req.Partitioning.MaxFiles ||
			req.Partitioning.TargetRows > 0 && rows+f.rows > req.Partitioning.TargetRows) {
			flush(i)
		}
		cur.Snapshot, cur.From = spec.Snapshot, spec.From
		cur.Files = append(cur.Files, f.path)
		rows += f.rows
		bytes += f.bytes
	}
	flush(len(files))
	return plan, nil
}

func (s *Source) table(ctx context.Context) (*table.Table, error) {
	_, tbl, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if tbl == nil {
		return nil, connectors.Permanent(fmt.Errorf("table %s does not exist", s.cfg.Table))
	}
	return tbl, nil
}

// scanTasks plans the scan of a partition's snapshot: all its files, or
// those appended after From.
func scanTasks(ctx context.Context, tbl *table.Table, spec readSpec) ([]table.FileScanTask, error) {
	opts := []table.ScanOption{table.WithSnapshotID(spec.Snapshot)}
	if spec.From != 0 {
		return tbl.NewIncrementalAppendScan(opts...).FromSnapshotExclusive(spec.From).ToSnapshot(spec.Snapshot).PlanFiles(ctx)
	}
	scan := tbl.Scan(opts...)
	defer scan.Close()
	return scan.PlanFiles(ctx)
}

// Read reads a partition's data files at its snapshot (deletes applied)
// and emits their rows as Arrow records.
func (s *Source) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	var spec readSpec
	if err := json.Unmarshal(p.Spec, &spec); err != nil {
		return connectors.Permanent(fmt.Errorf("read %s: partition %s: %w", s.cfg.Table, p.Key, err))
	}
	if err := s.read(ctx, p.Key, spec, emit); err != nil {
		return fmt.Errorf("read %s %s at snapshot %d: %w", s.cfg.Table, p.Key, spec.Snapshot, err)
	}
	return nil
}

func (s *Source) read(ctx context.Context, key string, spec readSpec, emit connectors.Emit) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tbl, err := s.table(ctx)
	if err != nil {
		return err
	}
	return readFiles(ctx, tbl, s.cfg.Table+" "+key, spec, emit)
}

// readFiles reads the data files of spec at its snapshot (deletes
// applied) and emits their rows as Arrow records; where names them in
// the batches' positions.
func readFiles(ctx context.Context, tbl *table.Table, where string, spec readSpec, emit connectors.Emit) error {
	if tbl.SnapshotByID(spec.Snapshot) == nil {
		return connectors.Permanent(fmt.Errorf("snapshot %d is no longer in the table", spec.Snapshot))
	}
	all, err := scanTasks(ctx, tbl, spec)
	if err != nil {
		return err
	}
	want := make(map[string]bool, len(spec.Files))
	for _, f := range spec.Files {
		want[f] = true
	}
	var tasks []table.FileScanTask
	found := map[string]bool{}
	for _, t := range all {
		if want[t.File.FilePath()] {
			tasks = append(tasks, t)
			found[t.File.FilePath()] = true
		}
	}
	if len(found) != len(want) {
		return connectors.Permanent(fmt.Errorf("%d of the partition's %d files are not in the snapshot", len(want)-len(found), len(want)))
	}
	scan := tbl.Scan(table.WithSnapshotID(spec.Snapshot), table.WithArrowBatchSize(64<<10))
	defer scan.Close()
	_, recs, err := scan.ReadTasks(ctx, tasks)
	if err != nil {
		return err
	}
	var rows int64
	for rec, err := range recs {
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		n := rec.NumRows()
		err := emit(ctx, connectors.Batch{Record: rec, Rows: n, Position: fmt.Sprintf("%s row %d", where, rows+1)})
		rec.Release()
		if err != nil {
			return err
		}
		rows += n
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return ctx.Err()
}
