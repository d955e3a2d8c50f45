package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
)

// stagingTaskColumn is the column in which staging tables made by earlier
// releases tell which task wrote a row (see taskWriter.begin); the commit
// drops it. Its name stays reserved.
const stagingTaskColumn = "_sluice_task"

// taskNumber is the number a task's rows carry in stagingTaskColumn.
func taskNumber(taskID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(taskID))
	return int64(h.Sum64())
}

// ensureStaging creates the staging tables of a run unless they exist,
// the rows' table with create. It returns false when the staging table
// does not exist and create cannot make it (no columns are known).
func (s *Sink) ensureStaging(ctx context.Context, conn *pgx.Conn, runID string, create func(ctx context.Context, q querier, t pgx.Identifier) (bool, error)) (bool, error) {
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
	ok, err := create(ctx, tx, rowsT)
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
	// passthrough makes the staging table from the source's table
	// definition (createPassTable), for the units of a passthrough.
	passthrough bool
}

func (w *taskWriter) where() string {
	return fmt.Sprintf("task %s of run %s to %s", w.ref.TaskID, w.ref.RunID, w.s.cfg.Table)
}

// begin creates the staging tables if needed and opens the task
// transaction, removing an earlier attempt's output. It returns false when
// there is no staging table and none can be made (no columns known).
func (w *taskWriter) begin(ctx context.Context, columns []string) (bool, error) {
	create := func(ctx context.Context, q querier, t pgx.Identifier) (bool, error) {
		return w.s.createTable(ctx, q, t, columns, w.ref.Schema)
	}
	if w.passthrough {
		create = func(ctx context.Context, q querier, t pgx.Identifier) (bool, error) {
			return true, createPassTable(ctx, q, t, w.ref.Schema)
		}
	}
	ok, err := w.s.ensureStaging(ctx, w.conn, w.ref.RunID, create)
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
	if w.legacy, err = legacyStaging(ctx, w.conn, tasksT); err != nil {
		return false, err
	}
	if err := dropTaskOutput(ctx, w.conn, rowsT, tasksT, w.ref.TaskID, w.legacy); err != nil {
		return false, err
	}
	if w.legacy {
		_, err = w.conn.Exec(ctx, "SELECT set_config('sluice.task', $1, true)", strconv.FormatInt(taskNumber(w.ref.TaskID), 10))
		return err == nil, err
	}
	return true, nil
}

// legacyStaging reports whether the staging of a run was made by an
// earlier release: its rows carry their task in stagingTaskColumn, and
// its task list has no xid column.
func legacyStaging(ctx context.Context, q querier, tasksT pgx.Identifier) (bool, error) {
	var legacy bool
	err := q.QueryRow(ctx, "SELECT NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'xid' AND attnum > 0 AND NOT attisdropped)",
		tasksT.Sanitize()).Scan(&legacy)
	return legacy, err
}

// dropTaskOutput removes what attempts of task staged: its rows and its
// entry in the task list.
func dropTaskOutput(ctx context.Context, q querier, rowsT, tasksT pgx.Identifier, task string, legacy bool) error {
	if legacy {
		tag, err := q.Exec(ctx, "DELETE FROM "+tasksT.Sanitize()+" WHERE task = $1", task)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = q.Exec(ctx, "DELETE FROM "+rowsT.Sanitize()+" WHERE "+stagingTaskColumn+" = $1", taskNumber(task))
		return err
	}
	rows, err := q.Query(ctx, "DELETE FROM "+tasksT.Sanitize()+" WHERE task = $1 RETURNING xid", task)
	if err != nil {
		return err
	}
	xids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, x := range xids {
		// The rows of an attempt are those its transaction inserted. xmin
		// is the 32-bit transaction ID (kept as it is when a row is
		// frozen); a staging table never lives through 2^32 transactions.
		if _, err := q.Exec(ctx, "DELETE FROM "+rowsT.Sanitize()+" WHERE xmin = $1::text::xid", strconv.FormatInt(x&0xffffffff, 10)); err != nil {
			return err
		}
	}
	return nil
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
