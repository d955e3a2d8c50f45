package iceberg

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/iceberg-go/table"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/arrowconv"
)

// Sink loads runs into one Iceberg table. See the package documentation.
type Sink struct {
	lazyLake
	cfg SinkConfig
	mem memory.Allocator
	log *slog.Logger

	// retries counts the commits that another writer beat and that were
	// reloaded and tried again.
	retries atomic.Int64
	// beforeRewrite, when set (by tests), runs before a compaction's
	// commit is sent: another writer may commit first.
	beforeRewrite func()
}

var (
	_ connectors.Sink          = (*Sink)(nil)
	_ connectors.SchemaChecker = (*Sink)(nil)
)

// NewSink returns a sink for a validated configuration. It opens the
// catalog when it first needs it. It logs to slog's default logger what
// it cannot tidy after a commit (the commit stands).
func NewSink(cfg SinkConfig) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Sink{lazyLake: lazyLake{cfg: cfg.Config}, cfg: cfg, mem: new(arrowconv.Allocator),
		log: slog.Default().With("sink", Kind, "table", cfg.Table)}, nil
}

// openSink is the connectors.SinkFactory of the kind.
func openSink(_ context.Context, config json.RawMessage) (connectors.Sink, error) {
	cfg, err := ParseSinkConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSink(cfg)
}

// CheckSchema makes sure the table can take the run's rows before any
// task starts: it creates the table from the schema on the first run, and
// on later runs compares the schema with the table's, adding the columns
// the table lacks (as optional columns: the one evolution it makes) and
// refusing any other difference, naming the column. A column whose type
// has no Iceberg form is refused the same way. A nil schema (a source
// that does not describe its columns) is accepted when the table exists:
// rows are then converted by the table's column types.
func (s *Sink) CheckSchema(ctx context.Context, sc *connectors.Schema) error {
	if _, err := s.prepare(ctx, sc); err != nil {
		return fmt.Errorf("check schema for %s: %w", s.cfg.Table, err)
	}
	return nil
}

// prepare loads the table, creating or evolving it for sc (the columns
// the configuration declares when sc is nil) as CheckSchema says.
func (s *Sink) prepare(ctx context.Context, sc *connectors.Schema) (*table.Table, error) {
	if sc == nil {
		sc = s.cfg.schema()
	}
	l, tbl, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if tbl == nil {
		if sc == nil {
			return nil, connectors.Permanent(fmt.Errorf("table %s does not exist, and the source does not describe its columns to create it from: declare them in the sink's columns, or create the table first", s.cfg.Table))
		}
		isc, err := newSchema(sc)
		if err != nil {
			return nil, connectors.Permanent(err)
		}
		if tbl, err = l.create(ctx, isc); err != nil {
			return nil, err
		}
	}
	if err := writable(tbl, s.cfg.Table); err != nil {
		return nil, err
	}
	if sc == nil {
		return tbl, nil
	}
	added, err := schemaDiff(sc, tbl.Schema(), s.cfg.Table)
	if err != nil || len(added) == 0 {
		return tbl, err
	}
	txn := tbl.NewTransaction()
	us := txn.UpdateSchema(true, false)
	ids := 0
	for _, c := range added {
		t, err := icebergType(c, &ids)
		if err != nil {
			return nil, connectors.Permanent(err)
		}
		us = us.AddColumn([]string{c.Name}, t, "", false, nil)
	}
	if err := us.Commit(); err != nil {
		return nil, fmt.Errorf("add columns %s to %s: %w", names(added), s.cfg.Table, err)
	}
	if tbl, err = txn.Commit(ctx); err != nil {
		return nil, fmt.Errorf("add columns %s to %s: %w", names(added), s.cfg.Table, err)
	}
	return tbl, nil
}

func names(cols []connectors.Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}

// writable refuses the tables the sink cannot write: partitioned ones and
// format versions other than 1 and 2.
func writable(tbl *table.Table, name string) error {
	md := tbl.Metadata()
	if !md.PartitionSpec().IsUnpartitioned() {
		return connectors.Permanent(fmt.Errorf("table %s is partitioned (%s): the iceberg sink writes unpartitioned tables only", name, md.PartitionSpec()))
	}
	if v := md.Version(); v > 2 {
		return connectors.Permanent(fmt.Errorf("table %s has format version %d: the iceberg sink writes versions 1 and 2", name, v))
	}
	return nil
}

// OpenTask starts one task attempt: its rows become Parquet data files
// of its own under the run's data directory (names carrying the attempt
// and a random part), converted by the table's column types. The table
// is created here from t.Schema if the leader has not done it (a sink
// without CheckSchema's call). ctx bounds the opening only.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	tbl, err := s.prepareTask(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err)
	}
	fs, err := tbl.FS(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("open task %s of %s: storage: %w", t.TaskID, s.cfg.Table, err)
	}
	sc := tbl.Schema()
	as, err := arrowSchema(sc)
	if err != nil {
		return nil, connectors.Permanent(err)
	}
	conv, err := arrowconv.NewBuilder(s.mem, as)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err))
	}
	arrp := pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(s.mem))
	return &taskWriter{
		s: s, ref: t, tbl: tbl, sc: sc, as: as, st: store{fs: fs},
		dir:    runDir(tbl, t.RunID),
		prefix: fmt.Sprintf("%s-a%d-%s", sanitize(t.TaskID), t.Attempt, randomHex(4)),
		conv:   conv, pcfg: parquetConfig(s.cfg.Compression, s.mem), arrp: arrp, mem: s.mem,
	}, nil
}

// prepareTask loads the table for a task: one that exists must hold the
// task's columns (the leader's CheckSchema added them); one that does not
// is created from the task's schema.
func (s *Sink) prepareTask(ctx context.Context, t connectors.TaskRef) (*table.Table, error) {
	_, tbl, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if tbl == nil {
		return s.prepare(ctx, t.Schema)
	}
	if err := writable(tbl, s.cfg.Table); err != nil {
		return nil, err
	}
	if sc := cmp.Or(t.Schema, s.cfg.schema()); sc != nil {
		added, err := schemaDiff(sc, tbl.Schema(), s.cfg.Table)
		if err != nil {
			return nil, err
		}
		if len(added) > 0 {
			return nil, connectors.Permanent(fmt.Errorf("table %s has no columns %s: the run's schema was not checked", s.cfg.Table, names(added)))
		}
	}
	return tbl, nil
}

// Abort removes what a failed run staged: its data files and task
// manifests. Files a commit of the run made part of the table (a run that
// failed after its commit) stay.
func (s *Sink) Abort(ctx context.Context, runID string) error {
	_, tbl, err := s.load(ctx)
	if err != nil {
		return fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err)
	}
	if tbl == nil {
		return nil
	}
	keep, err := runFiles(ctx, tbl, runID)
	if err != nil {
		return fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err)
	}
	if err := tidyRun(ctx, tbl, runID, keep); err != nil {
		return fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err)
	}
	return nil
}

// tidyRun deletes the objects of a run's data directory that are not in
// keep: files of attempts that lost, of a failed run, and the task
// manifests.
func tidyRun(ctx context.Context, tbl *table.Table, runID string, keep map[string]bool) error {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return err
	}
	st := store{fs: fs}
	dir := runDir(tbl, runID)
	objs, err := st.list(dir)
	if err != nil {
		return err
	}
	var drop []string
	for _, o := range objs {
		if !keep[normPath(o)] {
			drop = append(drop, o)
		}
	}
	slices.Sort(drop)
	if err := st.remove(ctx, drop); err != nil {
		return err
	}
	if err := st.abortUploads(ctx, dir); err != nil {
		return err
	}
	if p, ok := localPath(dir); ok && len(keep) == 0 {
		// S3 has no directories; a local disk keeps an empty one.
		os.Remove(p)
	}
	return nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:4])
}

var errNoSnapshot = errors.New("no snapshot")
