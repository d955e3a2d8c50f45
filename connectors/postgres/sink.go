package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
)

// stagingTaskColumn is the column in which staging tables made by earlier
// releases tell which task wrote a row (see taskWriter.begin); the commit
// drops it. Its name stays reserved.
const stagingTaskColumn = "_sluice_task"

// versionsTable is the bookkeeping table of the versioned loads of a
// schema.
const versionsTable = "sluice_versions"

// commitLockTimeout bounds how long a commit or rollback waits for readers
// of the view (or of a version it drops) to let go of it.
const commitLockTimeout = "60s"

// Sink loads full loads into versioned tables behind one view. See the
// package documentation for the tables it keeps.
type Sink struct {
	cfg    SinkConfig
	schema string // empty when the table is not schema-qualified
	name   string
}

var _ connectors.Sink = (*Sink)(nil)

// NewSink returns a sink for a validated configuration. It connects only
// when it writes, commits or aborts; it holds no connection in between.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, _ := parseTable(cfg.Table, "table", maxBaseName)
	s := &Sink{cfg: cfg, name: t[len(t)-1]}
	if len(t) == 2 {
		s.schema = t[0]
	}
	return s, nil
}

// openSink is the connectors.SinkFactory of the kind.
func openSink(_ context.Context, config json.RawMessage) (connectors.Sink, error) {
	cfg, err := ParseSinkConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSink(cfg)
}

// ident returns a table name in the sink's schema.
func (s *Sink) ident(name string) pgx.Identifier {
	if s.schema == "" {
		return pgx.Identifier{name}
	}
	return pgx.Identifier{s.schema, name}
}

func (s *Sink) view() pgx.Identifier     { return s.ident(s.name) }
func (s *Sink) template() pgx.Identifier { return s.ident(s.name + "_template") }
func (s *Sink) versions() pgx.Identifier { return s.ident(versionsTable) }

// versionTable is the table of version n.
func (s *Sink) versionTable(n int64) pgx.Identifier {
	return s.ident(s.name + "_v" + strconv.FormatInt(n, 10))
}

// staging is the staging table of a run; staging+"_t" lists its tasks.
func (s *Sink) staging(runID string) (rows, tasks pgx.Identifier) {
	h := sha256.Sum256([]byte(runID))
	base := s.name + "__stg_" + hex.EncodeToString(h[:6])
	return s.ident(base), s.ident(base + "_t")
}

// taskNumber is the number a task's rows carry in stagingTaskColumn.
func taskNumber(taskID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(taskID))
	return int64(h.Sum64())
}

// lockKey is an advisory lock key for a name.
func lockSQL(what string) string {
	return "SELECT pg_advisory_xact_lock(hashtextextended(" + quoteLiteral("sluice:"+what) + ", 0))"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// exists tells whether a relation exists, and its kind.
func exists(ctx context.Context, q querier, t pgx.Identifier) (bool, string, error) {
	var kind *string
	err := q.QueryRow(ctx, "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1))", t.Sanitize()).Scan(&kind)
	if err != nil {
		return false, "", err
	}
	if kind == nil {
		return false, "", nil
	}
	return true, *kind, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// tableColumns lists the columns of a table in order.
func tableColumns(ctx context.Context, q querier, t pgx.Identifier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT attname FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, t.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// createTable creates a table with the data columns of a version: the
// configured columns, else a copy of <table>_template's definition, else
// the given columns as text. It returns false when none of these is known.
func (s *Sink) createTable(ctx context.Context, q querier, t pgx.Identifier, columns []string) (bool, error) {
	var sql string
	switch {
	case len(s.cfg.Columns) > 0:
		defs := make([]string, len(s.cfg.Columns))
		for i, c := range s.cfg.Columns {
			defs[i] = pgx.Identifier{c.Name}.Sanitize() + " " + c.Type
		}
		sql = "CREATE TABLE " + t.Sanitize() + " (" + strings.Join(defs, ", ") + ")"
	default:
		ok, _, err := exists(ctx, q, s.template())
		if err != nil {
			return false, err
		}
		if ok {
			sql = "CREATE TABLE " + t.Sanitize() + " (LIKE " + s.template().Sanitize() +
				" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING COMMENTS)"
			break
		}
		// An incremental target that is a table already: stage in its
		// shape (a full load's target is a view, never a table).
		ok, kind, err := exists(ctx, q, s.view())
		if err != nil {
			return false, err
		}
		if ok && (kind == "r" || kind == "p") && !slices.Equal(t, s.view()) {
			sql = "CREATE TABLE " + t.Sanitize() + " (LIKE " + s.view().Sanitize() + " INCLUDING DEFAULTS)"
			break
		}
		if len(columns) == 0 {
			return false, nil
		}
		defs := make([]string, len(columns))
		for i, c := range columns {
			defs[i] = pgx.Identifier{c}.Sanitize() + " text"
		}
		sql = "CREATE TABLE " + t.Sanitize() + " (" + strings.Join(defs, ", ") + ")"
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		return false, fmt.Errorf("create %s: %w", t.Sanitize(), err)
	}
	return true, nil
}

// ensureStaging creates the staging tables of a run unless they exist. It
// returns false when the staging table does not exist and cannot be
// created because no columns are known.
func (s *Sink) ensureStaging(ctx context.Context, conn *pgx.Conn, runID string, columns []string) (bool, error) {
	rowsT, tasksT := s.staging(runID)
	if ok, _, err := exists(ctx, conn, rowsT); err != nil || ok {
		return ok, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, lockSQL(rowsT.Sanitize())); err != nil {
		return false, err
	}
	if ok, _, err := exists(ctx, tx, rowsT); err != nil || ok {
		return ok, err
	}
	ok, err := s.createTable(ctx, tx, rowsT, columns)
	if err != nil || !ok {
		return false, err
	}
	// The rows carry no mark of their task: each task attempt writes in
	// its own transaction and records its transaction ID (txid_current,
	// with epoch) in the task list, so the rows of a task are those whose
	// xmin is its recorded transaction's.
	if _, err := tx.Exec(ctx, "CREATE TABLE "+tasksT.Sanitize()+
		" (task text PRIMARY KEY, rows bigint NOT NULL, bytes bigint NOT NULL, checksum text NOT NULL, attempt int NOT NULL, xid bigint NOT NULL)"); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// committedRun reports whether runID is recorded as a committed version
// or a committed window.
func (s *Sink) committedRun(ctx context.Context, q querier, runID string) (bool, error) {
	for _, t := range []pgx.Identifier{s.versions(), s.windows()} {
		ok, _, err := exists(ctx, q, t)
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		var n int
		if err := q.QueryRow(ctx, "SELECT count(*) FROM "+t.Sanitize()+" WHERE table_name = $1 AND run = $2", s.name, runID).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// OpenTask connects and starts the output of one task attempt. The rows go
// to the run's staging table with COPY ... FROM STDIN, in one transaction
// that first deletes what an earlier attempt of the same task staged, so a
// retried task replaces exactly its own rows. Attempts of one task are
// serialized by an advisory lock. ctx bounds the opening only.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return nil, err
	}
	done, err := s.committedRun(ctx, conn, t.RunID)
	if err == nil && done {
		err = connectors.Permanent(fmt.Errorf("run %s is already committed to %s", t.RunID, s.cfg.Table))
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err)
	}
	return &taskWriter{s: s, ref: t, conn: conn}, nil
}

// taskWriter streams one task attempt into a COPY FROM STDIN, run by a
// goroutine that reads from a pipe the Write calls feed.
type taskWriter struct {
	s       *Sink
	ref     connectors.TaskRef
	conn    *pgx.Conn
	columns []string
	inTx    bool // the task transaction is open
	legacy  bool // the staging table marks rows in stagingTaskColumn
	copying bool // the COPY goroutine runs
	pw      *io.PipeWriter
	pr      *io.PipeReader
	cancel  context.CancelFunc
	done    chan struct{}
	tag     pgconn.CommandTag
	copyErr error
	sum     connectors.Checksum
	bytes   int64
	enc     arrowCSV
	ended   bool
	failed  error // the first Write error; Close returns it
}

func (w *taskWriter) where() string {
	return fmt.Sprintf("task %s of run %s to %s", w.ref.TaskID, w.ref.RunID, w.s.cfg.Table)
}

// begin creates the staging tables if needed and opens the task
// transaction, removing an earlier attempt's output. It returns false when
// there is no staging table and none can be made (no columns known).
func (w *taskWriter) begin(ctx context.Context, columns []string) (bool, error) {
	ok, err := w.s.ensureStaging(ctx, w.conn, w.ref.RunID, columns)
	if err != nil || !ok {
		return false, err
	}
	rowsT, tasksT := w.s.staging(w.ref.RunID)
	if _, err := w.conn.Exec(ctx, "BEGIN"); err != nil {
		return false, err
	}
	w.inTx = true
	if _, err := w.conn.Exec(ctx, lockSQL(rowsT.Sanitize()+"/"+w.ref.TaskID)); err != nil {
		return false, err
	}
	// A staging table made by an earlier release marks each row's task in
	// a column whose default reads sluice.task, and its task list has no
	// xid: keep staging such a run that way.
	if err := w.conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'xid' AND attnum > 0 AND NOT attisdropped)",
		tasksT.Sanitize()).Scan(&w.legacy); err != nil {
		return false, err
	}
	if w.legacy {
		tag, err := w.conn.Exec(ctx, "DELETE FROM "+tasksT.Sanitize()+" WHERE task = $1", w.ref.TaskID)
		if err != nil {
			return false, err
		}
		if tag.RowsAffected() > 0 {
			if _, err := w.conn.Exec(ctx, "DELETE FROM "+rowsT.Sanitize()+" WHERE "+stagingTaskColumn+" = $1", taskNumber(w.ref.TaskID)); err != nil {
				return false, err
			}
		}
		_, err = w.conn.Exec(ctx, "SELECT set_config('sluice.task', $1, true)", strconv.FormatInt(taskNumber(w.ref.TaskID), 10))
		return err == nil, err
	}
	var xids []int64
	rows, err := w.conn.Query(ctx, "DELETE FROM "+tasksT.Sanitize()+" WHERE task = $1 RETURNING xid", w.ref.TaskID)
	if err != nil {
		return false, err
	}
	if xids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		return false, err
	}
	for _, x := range xids {
		// The rows of the earlier attempt are those its transaction
		// inserted. xmin is the 32-bit transaction ID (kept as it is when
		// a row is frozen); a staging table never lives through 2^32
		// transactions.
		if _, err := w.conn.Exec(ctx, "DELETE FROM "+rowsT.Sanitize()+" WHERE xmin = $1::text::xid", strconv.FormatInt(x&0xffffffff, 10)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// startCopy starts the COPY goroutine for the given columns.
func (w *taskWriter) startCopy(columns []string) {
	rowsT, _ := w.s.staging(w.ref.RunID)
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	sql := "COPY " + rowsT.Sanitize() + " (" + strings.Join(cols, ", ") + ") FROM STDIN WITH (FORMAT csv)"
	w.pr, w.pw = io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan struct{})
	w.copying = true
	go func() {
		defer close(w.done)
		w.tag, w.copyErr = w.conn.PgConn().CopyFrom(ctx, w.pr, sql)
		// Unblock a writer if the server ended the COPY early.
		w.pr.CloseWithError(errCopyEnded)
	}()
}

var errCopyEnded = errors.New("copy ended")

// Write sends one batch to the COPY. CSV Raw batches pass through as they
// are; Arrow records are rendered as CSV first (see the package
// documentation). The batches of one task must have the same columns.
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
	var columns []string
	switch {
	case b.Record != nil:
		columns = make([]string, b.Record.Schema().NumFields())
		for i, f := range b.Record.Schema().Fields() {
			columns[i] = f.Name
		}
	case b.Format == connectors.FormatCSV:
		columns = b.Columns
		if len(columns) == 0 {
			return connectors.Permanent(fmt.Errorf("%s: a CSV batch without column names", w.where()))
		}
	default:
		return connectors.Permanent(fmt.Errorf("%s: cannot load %s batches (only CSV and Arrow)", w.where(), b.Format))
	}
	if w.columns == nil {
		ok, err := w.begin(ctx, columns)
		if err != nil {
			return classify(fmt.Errorf("%s: %w", w.where(), err))
		}
		if !ok {
			return fmt.Errorf("%s: staging table missing", w.where())
		}
		w.columns = slices.Clone(columns)
		w.startCopy(columns)
	} else if !slices.Equal(columns, w.columns) {
		return connectors.Permanent(fmt.Errorf("%s: columns %q differ from the task's first batch %q", w.where(), columns, w.columns))
	}

	var data []byte
	if b.Record != nil {
		var err error
		data, err = w.enc.encode(b.Record, &w.sum)
		if err != nil {
			return connectors.Permanent(&connectors.RowError{Location: b.Position, Row: 1, Err: err})
		}
	} else {
		data = b.Raw
		if b.Checksum != nil && b.Checksum.Rows == b.Rows {
			// Summed by the source over exactly these bytes, which go to
			// the COPY as they are.
			w.sum.Merge(*b.Checksum)
		} else if err := forEachRecord(data, func(rec []byte) error { w.sum.Add(rec); return nil }); err != nil {
			return err
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			data = append(slices.Clip(data), '\n')
		}
	}
	if len(data) == 0 {
		return nil
	}
	stop := context.AfterFunc(ctx, func() { w.pr.CloseWithError(ctx.Err()) })
	n, err := w.pw.Write(data)
	stop()
	w.bytes += int64(n)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		<-w.done
		if w.copyErr != nil {
			return classify(fmt.Errorf("%s: copy: %w", w.where(), w.copyErr))
		}
		return fmt.Errorf("%s: copy: %w", w.where(), err)
	}
	return nil
}

// Close ends the COPY, records the task in the run's task list and commits
// the task transaction: from then on the output replaces any earlier
// attempt's. The output's Location is the task ID.
func (w *taskWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.ended {
		return connectors.TaskOutput{}, errors.New("close after close or abort")
	}
	w.ended = true
	defer w.conn.Close(context.Background())
	if w.failed != nil {
		w.stopCopy()
		return connectors.TaskOutput{}, fmt.Errorf("close after a failed write: %w", w.failed)
	}
	out, err := w.close(ctx)
	if err != nil {
		w.stopCopy()
		return connectors.TaskOutput{}, classify(fmt.Errorf("%s: %w", w.where(), err))
	}
	return out, nil
}

func (w *taskWriter) close(ctx context.Context) (connectors.TaskOutput, error) {
	if w.columns == nil {
		// Nothing written: still replace an earlier attempt's output.
		ok, err := w.begin(ctx, nil)
		if err != nil {
			return connectors.TaskOutput{}, err
		}
		if !ok {
			return connectors.TaskOutput{Location: w.ref.TaskID}, nil
		}
	}
	if w.copying {
		w.pw.Close()
		<-w.done
		w.copying = false
		if w.copyErr != nil {
			return connectors.TaskOutput{}, fmt.Errorf("copy: %w", w.copyErr)
		}
		if got := w.tag.RowsAffected(); got != w.sum.Rows {
			return connectors.TaskOutput{}, fmt.Errorf("copy loaded %d rows, but the batches held %d records", got, w.sum.Rows)
		}
	}
	_, tasksT := w.s.staging(w.ref.RunID)
	sql := "INSERT INTO " + tasksT.Sanitize() + " (task, rows, bytes, checksum, attempt, xid) VALUES ($1, $2, $3, $4, $5, txid_current())"
	if w.legacy {
		sql = "INSERT INTO " + tasksT.Sanitize() + " (task, rows, bytes, checksum, attempt) VALUES ($1, $2, $3, $4, $5)"
	}
	if _, err := w.conn.Exec(ctx, sql,
		w.ref.TaskID, w.sum.Rows, w.bytes, w.sum.String(), w.ref.Attempt); err != nil {
		return connectors.TaskOutput{}, err
	}
	if _, err := w.conn.Exec(ctx, "COMMIT"); err != nil {
		return connectors.TaskOutput{}, err
	}
	w.inTx = false
	return connectors.TaskOutput{Rows: w.sum.Rows, Bytes: w.bytes, Checksum: w.sum, Location: w.ref.TaskID}, nil
}

// stopCopy aborts a running COPY and waits for its goroutine.
func (w *taskWriter) stopCopy() {
	if !w.copying {
		return
	}
	w.pw.CloseWithError(errAborted)
	w.cancel()
	<-w.done
	w.copying = false
}

var errAborted = errors.New("task attempt aborted")

// Abort rolls the attempt back: the output of an earlier attempt that
// closed stays.
func (w *taskWriter) Abort(ctx context.Context) error {
	if w.ended {
		return nil
	}
	w.ended = true
	defer w.conn.Close(context.Background())
	w.stopCopy()
	if w.inTx && !w.conn.IsClosed() {
		if _, err := w.conn.Exec(ctx, "ROLLBACK"); err != nil {
			// Closing the connection rolls back as well.
			return nil
		}
	}
	return nil
}

// Commit publishes a run as version req.Version in one transaction: the
// staging table becomes <table>_v<N> (by renaming, without copying rows),
// the view <table> selects from it, sluice_versions records it, and versions
// beyond keep_versions are dropped. Each task's staged row count must match
// its TaskOutput. A commit repeated with the same run and version finds the
// version recorded and changes nothing.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.cfg.Table}
	if req.Version <= 0 && req.Mode != connectors.ModeAppend {
		return res, connectors.Permanent(fmt.Errorf("commit run %s to %s: version %d is not positive", req.RunID, s.cfg.Table, req.Version))
	}
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	if req.Mode == connectors.ModeAppend {
		if err := s.commitWindow(ctx, conn, req); err != nil {
			return res, classify(fmt.Errorf("commit run %s to %s for window %v: %w", req.RunID, s.cfg.Table, req.Window, err))
		}
		return res, nil
	}
	if err := s.commit(ctx, conn, req); err != nil {
		return res, classify(fmt.Errorf("commit run %s to %s as version %d: %w", req.RunID, s.cfg.Table, req.Version, err))
	}
	return res, nil
}

// lockTable opens the transaction of a commit or rollback: it makes sure
// the bookkeeping table exists and serializes the changes of one view.
func (s *Sink) lockTable(ctx context.Context, conn *pgx.Conn) (pgx.Tx, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	for _, sql := range []string{
		"SET LOCAL lock_timeout = '" + commitLockTimeout + "'",
		lockSQL(s.versions().Sanitize()),
		"CREATE TABLE IF NOT EXISTS " + s.versions().Sanitize() + ` (
			table_name text NOT NULL,
			version bigint NOT NULL,
			run text NOT NULL,
			rows bigint NOT NULL,
			checksum text NOT NULL DEFAULT '',
			created timestamptz NOT NULL DEFAULT now(),
			current boolean NOT NULL DEFAULT false,
			dropped timestamptz,
			PRIMARY KEY (table_name, version))`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			tx.Rollback(context.Background())
			return nil, err
		}
	}
	return tx, nil
}

func (s *Sink) commit(ctx context.Context, conn *pgx.Conn, req connectors.CommitRequest) error {
	tx, err := s.lockTable(ctx, conn)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())

	var run string
	err = tx.QueryRow(ctx, "SELECT run FROM "+s.versions().Sanitize()+" WHERE table_name = $1 AND version = $2", s.name, req.Version).Scan(&run)
	switch {
	case err == nil && run == req.RunID:
		return nil // committed before: change nothing
	case err == nil:
		return connectors.Permanent(fmt.Errorf("version %d already holds run %s", req.Version, run))
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}

	rowsT, tasksT := s.staging(req.RunID)
	vt := s.versionTable(req.Version)
	staged, _, err := exists(ctx, tx, rowsT)
	if err != nil {
		return err
	}
	want := map[string]int64{}
	var total int64
	var sum connectors.Checksum
	for _, t := range req.Tasks {
		want[t.Location] = t.Rows
		total += t.Rows
		sum.Merge(t.Checksum)
	}
	if staged {
		if err := checkStaged(ctx, tx, tasksT, want); err != nil {
			return err
		}
		for _, sql := range []string{
			// Staged by an earlier release (see taskWriter.begin).
			"ALTER TABLE " + rowsT.Sanitize() + " DROP COLUMN IF EXISTS " + stagingTaskColumn,
			"ALTER TABLE " + rowsT.Sanitize() + " RENAME TO " + pgx.Identifier{vt[len(vt)-1]}.Sanitize(),
			"DROP TABLE " + tasksT.Sanitize(),
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
		}
	} else {
		if total != 0 {
			return connectors.Permanent(fmt.Errorf("the run's staging table %s is missing (aborted?)", rowsT.Sanitize()))
		}
		ok, err := s.createTable(ctx, tx, vt, nil)
		if err != nil {
			return err
		}
		if !ok {
			return connectors.Permanent(errors.New("the run has no rows and no columns are known: configure columns or create the table " + s.template().Sanitize()))
		}
	}
	if err := s.pointView(ctx, tx, vt); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "UPDATE "+s.versions().Sanitize()+" SET current = false WHERE table_name = $1 AND current", s.name); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+s.versions().Sanitize()+" (table_name, version, run, rows, checksum, current) VALUES ($1, $2, $3, $4, $5, true)",
		s.name, req.Version, req.RunID, total, sum.String()); err != nil {
		return err
	}
	if err := s.prune(ctx, tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// checkStaged compares the tasks a staging table lists with the task
// outputs of the commit (want: location -> rows).
func checkStaged(ctx context.Context, tx pgx.Tx, tasksT pgx.Identifier, want map[string]int64) error {
	rows, err := tx.Query(ctx, "SELECT task, rows FROM "+tasksT.Sanitize())
	if err != nil {
		return err
	}
	got := map[string]int64{}
	var task string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&task, &n}, func() error { got[task] = n; return nil }); err != nil {
		return err
	}
	for task, n := range got {
		w, ok := want[task]
		if !ok {
			return connectors.Permanent(fmt.Errorf("staging holds %d rows of task %s, which is not in the commit", n, task))
		}
		if w != n {
			return connectors.Permanent(fmt.Errorf("staging holds %d rows of task %s, its output says %d", n, task, w))
		}
	}
	for task, w := range want {
		if _, ok := got[task]; !ok && w != 0 {
			return connectors.Permanent(fmt.Errorf("staging holds no rows of task %s, its output says %d", task, w))
		}
	}
	return nil
}

// pointView makes the view select every column of the version table t:
// CREATE OR REPLACE VIEW, or DROP and CREATE when the columns changed in a
// way that REPLACE refuses. Both happen inside the caller's transaction, so
// readers see the old view or the new one.
func (s *Sink) pointView(ctx context.Context, tx pgx.Tx, t pgx.Identifier) error {
	ok, kind, err := exists(ctx, tx, s.view())
	if err != nil {
		return err
	}
	if ok && kind != "v" {
		return connectors.Permanent(fmt.Errorf("%s exists and is not a view", s.view().Sanitize()))
	}
	cols, err := tableColumns(ctx, tx, t)
	if err != nil {
		return err
	}
	for i, c := range cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	body := " AS SELECT " + strings.Join(cols, ", ") + " FROM " + t.Sanitize()
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, "CREATE OR REPLACE VIEW "+s.view().Sanitize()+body); err == nil {
		return sp.Commit(ctx)
	}
	if err := sp.Rollback(ctx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "DROP VIEW IF EXISTS "+s.view().Sanitize()); err != nil {
		return fmt.Errorf("replace view with other columns: %w", err)
	}
	_, err = tx.Exec(ctx, "CREATE VIEW "+s.view().Sanitize()+body)
	return err
}

// prune drops the versions beyond keep_versions, newest kept, the current
// one always kept.
func (s *Sink) prune(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, "SELECT version, current FROM "+s.versions().Sanitize()+
		" WHERE table_name = $1 AND dropped IS NULL ORDER BY version DESC", s.name)
	if err != nil {
		return err
	}
	var v int64
	var cur bool
	var drop []int64
	kept := 0
	keep := s.cfg.keepVersions()
	_, err = pgx.ForEachRow(rows, []any{&v, &cur}, func() error {
		if cur || kept < keep-1 {
			if !cur {
				kept++
			}
			return nil
		}
		drop = append(drop, v)
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range drop {
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+s.versionTable(v).Sanitize()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE "+s.versions().Sanitize()+" SET dropped = now() WHERE table_name = $1 AND version = $2", s.name, v); err != nil {
			return err
		}
	}
	return nil
}

// Abort drops the staging tables of a run; the exposed version stays.
func (s *Sink) Abort(ctx context.Context, runID string) error {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rowsT, tasksT := s.staging(runID)
	// A task attempt aborted just before may still hold its staging
	// locks: its server process ends after the client closed the
	// connection. Should the DROP and it deadlock, PostgreSQL cancels one
	// of them, and the DROP is tried again.
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, "DROP TABLE IF EXISTS "+rowsT.Sanitize()+", "+tasksT.Sanitize())
		var pe *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pe) || pe.Code != "40P01" {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return classify(fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err))
	}
	return nil
}

// Close does nothing: the sink holds no connection between calls.
func (s *Sink) Close() error { return nil }

// Version is one kept version of a table.
type Version struct {
	Version int64
	Run     string
	Rows    int64
	// Checksum is the run's checksum, as connectors.Checksum.String.
	Checksum string
	Created  time.Time
	// Current tells whether the view shows this version.
	Current bool
	// Table is the version's table, schema-qualified when the view is.
	Table string
}

// Versions lists the kept versions of a table loaded by the sink, oldest
// first. table is the view's name as in the sink's configuration.
func Versions(ctx context.Context, dsn, table string) ([]Version, error) {
	s, err := NewSink(SinkConfig{DSN: dsn, Table: table})
	if err != nil {
		return nil, err
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	ok, _, err := exists(ctx, conn, s.versions())
	if err != nil || !ok {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT version, run, rows, checksum, created, current FROM "+s.versions().Sanitize()+
		" WHERE table_name = $1 AND dropped IS NULL ORDER BY version", s.name)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", table, err)
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Version, error) {
		var v Version
		err := r.Scan(&v.Version, &v.Run, &v.Rows, &v.Checksum, &v.Created, &v.Current)
		v.Table = strings.Join(s.versionTable(v.Version), ".")
		return v, err
	})
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", table, err)
	}
	return vs, nil
}

// Rollback points the view of table back at a kept version: toVersion, or
// when toVersion is 0 the newest kept version older than the current one.
// Versions newer than it stay kept (a later Rollback can go forward again)
// until a commit prunes them.
func Rollback(ctx context.Context, dsn, table string, toVersion int64) error {
	s, err := NewSink(SinkConfig{DSN: dsn, Table: table})
	if err != nil {
		return err
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := s.rollback(ctx, conn, toVersion); err != nil {
		return classify(fmt.Errorf("roll %s back: %w", table, err))
	}
	return nil
}

func (s *Sink) rollback(ctx context.Context, conn *pgx.Conn, to int64) error {
	tx, err := s.lockTable(ctx, conn)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	vt := s.versions().Sanitize()
	if to <= 0 {
		var v *int64
		err := tx.QueryRow(ctx, "SELECT max(version) FROM "+vt+" WHERE table_name = $1 AND dropped IS NULL AND version < "+
			"(SELECT version FROM "+vt+" WHERE table_name = $1 AND current)", s.name).Scan(&v)
		if err != nil {
			return err
		}
		if v == nil {
			return connectors.Permanent(errors.New("no kept version older than the current one"))
		}
		to = *v
	}
	var dropped *time.Time
	err = tx.QueryRow(ctx, "SELECT dropped FROM "+vt+" WHERE table_name = $1 AND version = $2", s.name, to).Scan(&dropped)
	if errors.Is(err, pgx.ErrNoRows) {
		return connectors.Permanent(fmt.Errorf("version %d was never committed", to))
	}
	if err != nil {
		return err
	}
	if dropped != nil {
		return connectors.Permanent(fmt.Errorf("version %d was dropped on %s (keep_versions)", to, dropped.Format(time.RFC3339)))
	}
	if err := s.pointView(ctx, tx, s.versionTable(to)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "UPDATE "+vt+" SET current = (version = $2) WHERE table_name = $1 AND (current OR version = $2)", s.name, to); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// windowsTable is the bookkeeping table of the incremental (append) loads
// of a schema: one row per committed run and its window.
const windowsTable = "sluice_windows"

func (s *Sink) windows() pgx.Identifier { return s.ident(windowsTable) }

// commitWindow commits an incremental run in ModeAppend into the one table
// s.cfg.Table, in one transaction serialized with every other commit of
// the schema: it deletes the target's rows whose delta column lies in
// the window, inserts the staged rows (cast to the target's column types),
// drops the staging tables and records the run and its window in
// sluice_windows. A window committed again thus replaces its rows, never
// doubles them; a commit repeated for the same run finds it recorded and
// does nothing. The target is created on the first commit when missing,
// like a full load's version table (configured columns, <table>_template,
// or the staged columns as text).
func (s *Sink) commitWindow(ctx context.Context, conn *pgx.Conn, req connectors.CommitRequest) error {
	if req.Window == nil || req.Window.Empty() || req.DeltaColumn == "" {
		return connectors.Permanent(errors.New("an append commit needs a non-empty window and a delta column"))
	}
	tx, err := s.lockTable(ctx, conn)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.windows().Sanitize()+` (
			table_name text NOT NULL,
			run text NOT NULL,
			lo timestamptz NOT NULL,
			hi timestamptz NOT NULL,
			rows bigint NOT NULL,
			deleted bigint NOT NULL,
			checksum text NOT NULL DEFAULT '',
			committed timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (table_name, run))`); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+s.windows().Sanitize()+" WHERE table_name = $1 AND run = $2", s.name, req.RunID).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil // committed before: change nothing
	}

	target := s.view()
	ok, kind, err := exists(ctx, tx, target)
	if err != nil {
		return err
	}
	if ok && kind != "r" && kind != "p" {
		return connectors.Permanent(fmt.Errorf("%s is not a table (relkind %s): an incremental load appends to one table (is it a full load's view?)", target.Sanitize(), kind))
	}
	rowsT, tasksT := s.staging(req.RunID)
	staged, _, err := exists(ctx, tx, rowsT)
	if err != nil {
		return err
	}
	want := map[string]int64{}
	var total int64
	var sum connectors.Checksum
	for _, t := range req.Tasks {
		want[t.Location] = t.Rows
		total += t.Rows
		sum.Merge(t.Checksum)
	}
	var stagedCols []string
	if staged {
		if err := checkStaged(ctx, tx, tasksT, want); err != nil {
			return err
		}
		cols, err := tableColumns(ctx, tx, rowsT)
		if err != nil {
			return err
		}
		for _, c := range cols {
			if c != stagingTaskColumn {
				stagedCols = append(stagedCols, c)
			}
		}
	} else if total != 0 {
		return connectors.Permanent(fmt.Errorf("the run's staging table %s is missing (aborted?)", rowsT.Sanitize()))
	}
	if !ok {
		created, err := s.createTable(ctx, tx, target, stagedCols)
		if err != nil {
			return err
		}
		ok = created
	}
	var deleted int64
	if ok {
		deleted, err = s.deleteWindow(ctx, tx, target, req)
		if err != nil {
			return err
		}
	}
	if staged {
		if total > 0 {
			if err := s.insertStaged(ctx, tx, target, rowsT, stagedCols, total); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+rowsT.Sanitize()+", "+tasksT.Sanitize()); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+s.windows().Sanitize()+" (table_name, run, lo, hi, rows, deleted, checksum) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		s.name, req.RunID, req.Window.From, req.Window.To, total, deleted, sum.String()); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// deleteWindow deletes the target's rows whose delta column lies in the
// window and returns how many. The bounds are literals of the column's
// type (timestamptz; timestamp and date as UTC wall-clock time), so an
// index on the column serves the delete; a text column is cast.
func (s *Sink) deleteWindow(ctx context.Context, tx pgx.Tx, target pgx.Identifier, req connectors.CommitRequest) (int64, error) {
	var typ string
	err := tx.QueryRow(ctx, `SELECT format_type(atttypid, NULL) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped`, target.Sanitize(), req.DeltaColumn).Scan(&typ)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, connectors.Permanent(fmt.Errorf("%s has no delta column %q", target.Sanitize(), req.DeltaColumn))
	}
	if err != nil {
		return 0, err
	}
	k := pgx.Identifier{req.DeltaColumn}.Sanitize()
	lo, hi := req.Window.From.UTC().Format(time.RFC3339Nano), req.Window.To.UTC().Format(time.RFC3339Nano)
	var cond string
	switch deltaTypes[typ] {
	case "timestamptz":
		cond = k + " >= $1::timestamptz AND " + k + " < $2::timestamptz"
	case "timestamp":
		cond = k + " >= $1::timestamp AND " + k + " < $2::timestamp"
		lo, hi = req.Window.From.UTC().Format("2006-01-02 15:04:05.999999"), req.Window.To.UTC().Format("2006-01-02 15:04:05.999999")
	default: // text as loaded without a typed target; the session is in UTC
		cond = k + "::timestamptz >= $1::timestamptz AND " + k + "::timestamptz < $2::timestamptz"
	}
	tag, err := tx.Exec(ctx, "DELETE FROM "+target.Sanitize()+" WHERE "+cond, lo, hi)
	if err != nil {
		return 0, fmt.Errorf("delete window rows: %w", err)
	}
	return tag.RowsAffected(), nil
}

// insertStaged copies the staged rows into the target, casting each
// column to the target's type.
func (s *Sink) insertStaged(ctx context.Context, tx pgx.Tx, target, rowsT pgx.Identifier, cols []string, want int64) error {
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, target.Sanitize())
	if err != nil {
		return err
	}
	types := map[string]string{}
	var name, typ string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { types[name] = typ; return nil }); err != nil {
		return err
	}
	names := make([]string, len(cols))
	exprs := make([]string, len(cols))
	for i, c := range cols {
		t, ok := types[c]
		if !ok {
			return connectors.Permanent(fmt.Errorf("%s has no column %q, which the source sends", target.Sanitize(), c))
		}
		names[i] = pgx.Identifier{c}.Sanitize()
		exprs[i] = names[i] + "::" + t
	}
	tag, err := tx.Exec(ctx, "INSERT INTO "+target.Sanitize()+" ("+strings.Join(names, ", ")+") SELECT "+strings.Join(exprs, ", ")+" FROM "+rowsT.Sanitize())
	if err != nil {
		return fmt.Errorf("insert staged rows: %w", err)
	}
	if tag.RowsAffected() != want {
		return fmt.Errorf("inserted %d staged rows, the tasks staged %d", tag.RowsAffected(), want)
	}
	return nil
}

// Window is one committed window of an incremental table.
type Window struct {
	Run      string
	From, To time.Time
	Rows     int64
	// Deleted counts the rows the commit replaced (a re-run of the window).
	Deleted  int64
	Checksum string
}

// Windows lists the windows committed into an incremental table, in
// commit order. table is as in the sink's configuration.
func Windows(ctx context.Context, dsn, table string) ([]Window, error) {
	s, err := NewSink(SinkConfig{DSN: dsn, Table: table})
	if err != nil {
		return nil, err
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	ok, _, err := exists(ctx, conn, s.windows())
	if err != nil || !ok {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT run, lo, hi, rows, deleted, checksum FROM "+s.windows().Sanitize()+
		" WHERE table_name = $1 ORDER BY committed, lo", s.name)
	if err != nil {
		return nil, fmt.Errorf("list windows of %s: %w", table, err)
	}
	ws, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Window, error) {
		var w Window
		err := r.Scan(&w.Run, &w.From, &w.To, &w.Rows, &w.Deleted, &w.Checksum)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("list windows of %s: %w", table, err)
	}
	return ws, nil
}
