package clickhouse

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// Sink loads full loads into versioned ClickHouse tables and incremental
// windows into one table. See the package documentation for the tables
// it keeps.
type Sink struct {
	cfg  SinkConfig
	db   string
	name string
	cl   *Client

	mu   sync.Mutex
	caps *caps
	// atomicDB is set when the database's engine is Atomic, whose
	// EXCHANGE TABLES swaps two tables in one step.
	atomicDB bool
	// beforeReplace, when set, runs before a window's day is replaced
	// (tests start a merge there).
	beforeReplace func()
}

var (
	_ connectors.Sink          = (*Sink)(nil)
	_ connectors.SchemaChecker = (*Sink)(nil)
)

// NewSink returns a sink for a validated configuration. It talks to the
// server only when it checks, writes, commits or aborts.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, name, _ := splitTable(cfg.Table)
	cl, err := NewClient(cfg.URL, cfg.Settings)
	if err != nil {
		return nil, connectors.Permanent(err)
	}
	return &Sink{cfg: cfg, db: db, name: name, cl: cl}, nil
}

// openSink is the connectors.SinkFactory of the kind.
func openSink(_ context.Context, config json.RawMessage) (connectors.Sink, error) {
	cfg, err := ParseSinkConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSink(cfg)
}

// Close releases the client's idle connections.
func (s *Sink) Close() error {
	s.cl.Close()
	return nil
}

// serverCaps asks the server for its version once.
func (s *Sink) serverCaps(ctx context.Context) (caps, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.caps != nil {
		return *s.caps, nil
	}
	v, err := s.cl.ServerVersion(ctx)
	if err != nil {
		return caps{}, err
	}
	c := capsOf(v)
	if v.AtLeast(20, 5) {
		engines, err := s.cl.Strings(ctx, "SELECT engine FROM system.databases WHERE name = "+quoteString(s.db))
		if err != nil {
			return caps{}, err
		}
		s.atomicDB = len(engines) == 1 && engines[0] == "Atomic"
	}
	s.caps = &c
	return c, nil
}

// CheckSchema maps every column of the run's schema to a ClickHouse type
// of the server, and refuses a column it cannot hold exactly (naming it
// and its type). A nil schema is accepted: the columns are then strings.
func (s *Sink) CheckSchema(ctx context.Context, sc *connectors.Schema) error {
	if sc == nil {
		return nil
	}
	c, err := s.serverCaps(ctx)
	if err != nil {
		return fmt.Errorf("check schema for %s: %w", s.cfg.Table, err)
	}
	if _, err := mapColumns(sc, c, s.cfg.NullArrays == NullArraysEmpty); err != nil {
		return connectors.Permanent(fmt.Errorf("%s on ClickHouse %s: %w", s.cfg.Table, c.version, err))
	}
	return nil
}

// ident returns db.`name` for a table of the sink's database.
func (s *Sink) ident(name string) string { return quoteIdent(s.db) + "." + quoteIdent(name) }

func hash6(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// stagePrefix starts the names of a run's staging tables.
func (s *Sink) stagePrefix(runID string) string { return s.name + "__s_" + hash6(runID) + "_" }

// taskTable is the staging table of a task's closed output.
func (s *Sink) taskTable(runID, taskID string) string { return s.stagePrefix(runID) + hash6(taskID) }

// buildTable is where a run's version is assembled before it is exposed.
func (s *Sink) buildTable(runID string) string { return s.name + "__b_" + hash6(runID) }

// versionTable is where a kept version lies while another is exposed.
func (s *Sink) versionTable(v int64) string { return s.name + "_v" + strconv.FormatInt(v, 10) }

func (s *Sink) exists(ctx context.Context, table string) (bool, error) {
	n, err := s.cl.Int(ctx, "EXISTS TABLE "+s.ident(table))
	return n == 1, err
}

// tablesWithPrefix lists the tables of the sink's database whose names
// start with prefix.
func (s *Sink) tablesWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	return s.cl.Strings(ctx, "SELECT name FROM system.tables WHERE database = "+quoteString(s.db)+
		" AND startsWith(name, "+quoteString(prefix)+") ORDER BY name")
}

func (s *Sink) drop(ctx context.Context, table string) error {
	return s.cl.Exec(ctx, "DROP TABLE IF EXISTS "+s.ident(table))
}

// createTable creates a staging table of the given columns.
func (s *Sink) createTable(ctx context.Context, table string, cols []column, order string) error {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = quoteIdent(c.name) + " " + c.chType
	}
	return s.cl.Exec(ctx, "CREATE TABLE "+s.ident(table)+" ("+strings.Join(defs, ", ")+") ENGINE = MergeTree ORDER BY "+order)
}

// swap makes table `to` hold what `from` holds, atomically for readers,
// leaving what `to` held (if it existed) in `old`: with EXCHANGE TABLES
// where the database is Atomic, else with one RENAME of both tables,
// which ClickHouse servers with Ordinary databases (18.x and later) run
// under their global lock, so no reader sees `to` missing.
func (s *Sink) swap(ctx context.Context, from, to, old string) error {
	present, err := s.exists(ctx, to)
	if err != nil {
		return err
	}
	switch {
	case !present:
		return s.cl.Exec(ctx, "RENAME TABLE "+s.ident(from)+" TO "+s.ident(to))
	case s.atomicDB:
		if err := s.cl.Exec(ctx, "EXCHANGE TABLES "+s.ident(from)+" AND "+s.ident(to)); err != nil {
			return err
		}
		return s.cl.Exec(ctx, "RENAME TABLE "+s.ident(from)+" TO "+s.ident(old))
	}
	return s.cl.Exec(ctx, "RENAME TABLE "+s.ident(to)+" TO "+s.ident(old)+", "+s.ident(from)+" TO "+s.ident(to))
}

// OpenTask starts the output of one task attempt: a table of its own,
// into which the rows stream with one INSERT; Close then swaps it in as
// the task's staging table, so a retried task replaces exactly its own
// rows, and an attempt still running somewhere else never touches them.
// The columns are typed from t.Schema; without one they are the first
// batch's columns as Nullable(String). ctx bounds the opening only.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	w := &taskWriter{s: s, ref: t}
	if t.Schema != nil {
		c, err := s.serverCaps(ctx)
		if err != nil {
			return nil, fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err)
		}
		cols, err := mapColumns(t.Schema, c, s.cfg.NullArrays == NullArraysEmpty)
		if err != nil {
			return nil, connectors.Permanent(fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err))
		}
		w.cols, w.order = cols, orderBy(t.Schema, cols)
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	w.table = fmt.Sprintf("%s_a%d_%s", s.taskTable(t.RunID, t.TaskID), t.Attempt, hex.EncodeToString(rnd[:]))
	return w, nil
}

// taskWriter streams one task attempt into an INSERT, run by a goroutine
// that reads from a pipe the Write calls feed.
type taskWriter struct {
	s     *Sink
	ref   connectors.TaskRef
	cols  []column
	order string
	table string // the attempt's own table

	created   bool
	inserting bool
	enc       rowEncoder
	buf       []byte
	pw        *io.PipeWriter
	cancel    context.CancelFunc
	done      chan struct{}
	insertErr error
	rows      int64
	bytes     int64
	sum       connectors.Checksum
	ended     bool
	failed    error
}

func (w *taskWriter) where() string {
	return fmt.Sprintf("task %s of run %s to %s", w.ref.TaskID, w.ref.RunID, w.s.cfg.Table)
}

// start creates the attempt's table and starts the INSERT.
func (w *taskWriter) start(ctx context.Context) error {
	if err := w.s.createTable(ctx, w.table, w.cols, w.order); err != nil {
		return err
	}
	w.created = true
	names := make([]string, len(w.cols))
	for i, c := range w.cols {
		names[i] = quoteIdent(c.name)
	}
	query := "INSERT INTO " + w.s.ident(w.table) + " (" + strings.Join(names, ", ") + ") FORMAT TabSeparated"
	pr, pw := io.Pipe()
	ictx, cancel := context.WithCancel(context.Background())
	w.pw, w.cancel, w.done, w.inserting = pw, cancel, make(chan struct{}), true
	go func() {
		defer close(w.done)
		w.insertErr = w.s.cl.Insert(ictx, query, pr, nil)
		// Unblock a writer if the server ended the insert early.
		pr.CloseWithError(errInsertEnded)
	}()
	w.enc = rowEncoder{cols: w.cols}
	return nil
}

var errInsertEnded = errors.New("insert ended")

// Write encodes one batch of CSV records and sends it to the INSERT. The
// batches of a task must have the same columns, those of the schema when
// there is one.
func (w *taskWriter) Write(ctx context.Context, b connectors.Batch) error {
	if w.ended {
		return errors.New("write after close or abort")
	}
	if w.failed != nil {
		return w.failed
	}
	err := w.write(ctx, b)
	if err != nil {
		w.failed = err
	}
	return err
}

func (w *taskWriter) write(ctx context.Context, b connectors.Batch) error {
	if b.Record != nil || b.Format != connectors.FormatCSV {
		f := b.Format
		if b.Record != nil {
			f = connectors.FormatArrow
		}
		return connectors.Permanent(fmt.Errorf("%s: cannot load %s batches (only CSV records, as the postgres source sends)", w.where(), f))
	}
	if len(b.Columns) == 0 {
		return connectors.Permanent(fmt.Errorf("%s: a CSV batch without column names", w.where()))
	}
	if w.cols == nil {
		for _, c := range b.Columns {
			w.cols = append(w.cols, stringColumn(c))
		}
		w.order = "tuple()"
	}
	if !w.inserting {
		names := make([]string, len(w.cols))
		for i, c := range w.cols {
			names[i] = c.name
		}
		if !slices.Equal(names, b.Columns) {
			return connectors.Permanent(fmt.Errorf("%s: the batch's columns %q are not the schema's %q", w.where(), b.Columns, names))
		}
		if err := w.start(ctx); err != nil {
			return fmt.Errorf("%s: %w", w.where(), err)
		}
	} else if len(b.Columns) != len(w.cols) || b.Columns[0] != w.cols[0].name {
		return connectors.Permanent(fmt.Errorf("%s: columns %q differ from the task's first batch", w.where(), b.Columns))
	}
	var sum *connectors.Checksum
	if b.Checksum != nil && b.Checksum.Rows == b.Rows {
		w.sum.Merge(*b.Checksum)
	} else {
		sum = &w.sum
	}
	var n int64
	var err error
	w.buf, n, err = w.enc.encode(w.buf[:0], b.Raw, sum, b.Position, w.rows+1)
	if err != nil {
		return connectors.Permanent(err)
	}
	if n != b.Rows {
		return connectors.Permanent(fmt.Errorf("%s: batch at %s says %d rows, holds %d records", w.where(), b.Position, b.Rows, n))
	}
	w.rows += n
	if len(w.buf) == 0 {
		return nil
	}
	stop := context.AfterFunc(ctx, func() { w.pw.CloseWithError(ctx.Err()) })
	k, err := w.pw.Write(w.buf)
	stop()
	w.bytes += int64(k)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		<-w.done
		if w.insertErr != nil {
			return classify(fmt.Errorf("%s: insert: %w", w.where(), w.insertErr))
		}
		return fmt.Errorf("%s: insert: %w", w.where(), err)
	}
	return nil
}

// classify marks the server errors another attempt would not cure as
// permanent: input it cannot parse.
func classify(err error) error {
	if IsCode(err, codeCannotParse, 6, 26, 69, 70, 72, 32, 38, 41) {
		return connectors.Permanent(err)
	}
	return err
}

// Close ends the INSERT, checks the table holds every row, and swaps the
// attempt's table in as the task's staging table (the output of an earlier
// attempt is dropped). The output's Location is that table's name.
func (w *taskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.ended {
		return connectors.TaskOutput{}, errors.New("close after close or abort")
	}
	w.ended = true
	if w.failed != nil {
		w.abort(ctx)
		return connectors.TaskOutput{}, fmt.Errorf("close after a failed write: %w", w.failed)
	}
	out, err := w.close(ctx)
	if err != nil {
		w.abort(ctx)
		return connectors.TaskOutput{}, fmt.Errorf("%s: %w", w.where(), err)
	}
	return out, nil
}

func (w *taskWriter) close(ctx context.Context) (connectors.TaskOutput, error) {
	task := w.s.taskTable(w.ref.RunID, w.ref.TaskID)
	out := connectors.TaskOutput{Location: task}
	if w.inserting {
		w.pw.Close()
		<-w.done
		w.inserting = false
		if w.insertErr != nil {
			return out, classify(fmt.Errorf("insert: %w", w.insertErr))
		}
	} else if w.cols != nil {
		// No batch, but a schema: an empty table still tells the
		// commit the columns.
		if err := w.s.createTable(ctx, w.table, w.cols, w.order); err != nil {
			return out, err
		}
		w.created = true
	}
	if w.created {
		n, err := w.s.cl.Int(ctx, "SELECT count() FROM "+w.s.ident(w.table))
		if err != nil {
			return out, err
		}
		if n != w.rows {
			return out, fmt.Errorf("the staging table holds %d rows, the batches %d", n, w.rows)
		}
		if err := w.s.promote(ctx, w.table, task); err != nil {
			return out, fmt.Errorf("stage: %w", err)
		}
		w.created = false
	} else if err := w.s.drop(ctx, task); err != nil {
		// Nothing written and no columns known: no earlier attempt's
		// output may stay either.
		return out, err
	}
	out.Rows, out.Bytes, out.Checksum = w.rows, w.bytes, w.sum
	return out, nil
}

// promote makes the attempt's table the task's, dropping what an earlier
// attempt staged. Two attempts closing at once both succeed; the later one
// stays (both hold the task's rows).
func (s *Sink) promote(ctx context.Context, attempt, task string) error {
	old := attempt + "_old"
	for try := 0; ; try++ {
		err := s.swap(ctx, attempt, task, old)
		if err == nil {
			return s.drop(ctx, old)
		}
		// Another attempt renamed into the task table between the check
		// and the rename: go again.
		if !IsCode(err, codeTableExists) || try == 3 {
			return err
		}
	}
}

// Abort stops the INSERT and drops the attempt's table; the output of an
// earlier attempt that closed stays.
func (w *taskWriter) Abort(ctx context.Context) error {
	if w.ended {
		return nil
	}
	w.ended = true
	return w.abort(ctx)
}

func (w *taskWriter) abort(ctx context.Context) error {
	if w.inserting {
		w.pw.CloseWithError(errAborted)
		w.cancel()
		<-w.done
		w.inserting = false
	}
	if w.cancel != nil {
		w.cancel()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return w.s.drop(ctx, w.table)
}

var errAborted = errors.New("task attempt aborted")

// Abort drops the staging tables of a failed run; the exposed version
// stays.
func (s *Sink) Abort(ctx context.Context, runID string) error {
	if err := s.dropRunTables(ctx, runID); err != nil {
		return fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err)
	}
	return nil
}

// dropRunTables drops the run's task tables, attempts and build tables.
func (s *Sink) dropRunTables(ctx context.Context, runID string) error {
	var names []string
	for _, p := range []string{s.stagePrefix(runID), s.buildTable(runID)} {
		ns, err := s.tablesWithPrefix(ctx, p)
		if err != nil {
			return err
		}
		names = append(names, ns...)
	}
	for _, n := range names {
		if err := s.drop(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// Commit publishes a run: a full load (ModeReplace) as version req.Version
// behind the table's name, an incremental run (ModeAppend) by replacing
// the rows of its window. A commit repeated after a crash finishes what
// the first one started, or finds it done and changes nothing.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.db + "." + s.name}
	if _, err := s.serverCaps(ctx); err != nil {
		return res, fmt.Errorf("commit run %s to %s: %w", req.RunID, s.cfg.Table, err)
	}
	if err := s.ensureMeta(ctx); err != nil {
		return res, fmt.Errorf("commit run %s to %s: %w", req.RunID, s.cfg.Table, err)
	}
	if req.Mode == connectors.ModeAppend && req.Merge != nil {
		if err := s.commitMerge(ctx, req); err != nil {
			return res, fmt.Errorf("commit run %s to %s for window %v, merged by key: %w", req.RunID, s.cfg.Table, req.Window, err)
		}
		return res, nil
	}
	if req.Mode == connectors.ModeAppend {
		if err := s.commitWindow(ctx, req); err != nil {
			return res, fmt.Errorf("commit run %s to %s for window %v: %w", req.RunID, s.cfg.Table, req.Window, err)
		}
		return res, nil
	}
	if req.Version <= 0 {
		return res, connectors.Permanent(fmt.Errorf("commit run %s to %s: version %d is not positive", req.RunID, s.cfg.Table, req.Version))
	}
	if err := s.commitVersion(ctx, req); err != nil {
		return res, fmt.Errorf("commit run %s to %s as version %d: %w", req.RunID, s.cfg.Table, req.Version, err)
	}
	return res, nil
}
