package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

// commitWindow commits an incremental run in ModeAppend into the one table
// s.cfg.Table, in one transaction serialized with every other commit of
// the schema: it deletes the target's rows whose delta column lies in
// the window, inserts the staged rows (cast to the target's column types),
// drops the staging tables and records the run and its window in
// sluice_windows. A window committed again thus replaces its rows, never
// doubles them; a commit repeated for the same run finds it recorded and
// does nothing. With Merge the window's rows are merged by key instead
// (mergeStaged): nothing is deleted but the keys a row marks deleted. A
// run without a window (a run by position) deletes
// nothing: its rows are appended, and recorded with the position it
// reached, once. The target is created on the first commit when missing,
// like a full load's version table (configured columns, <table>_template,
// or the staged columns as text).
func (s *Sink) commitWindow(ctx context.Context, conn *pgx.Conn, req connectors.CommitRequest) error {
	if req.Window != nil && (req.Window.Empty() || req.DeltaColumn == "") {
		return connectors.Permanent(errors.New("an append commit of a window needs a non-empty window and a delta column"))
	}
	tx, err := s.lockTable(ctx, conn)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if err := s.ensureWindows(ctx, tx); err != nil {
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
	staged, total, sum, err := s.checkRun(ctx, tx, req)
	if err != nil {
		return err
	}
	var stagedCols []string
	if staged {
		cols, err := tableColumns(ctx, tx, rowsT)
		if err != nil {
			return err
		}
		for _, c := range cols {
			if c != stagingTaskColumn {
				stagedCols = append(stagedCols, c)
			}
		}
	}
	created := false
	if !ok {
		schema := req.Schema
		if len(stagedCols) == 0 {
			schema = nil // no rows: the table waits for a window that has some
		}
		created, err = s.createTable(ctx, tx, target, stagedCols, schema)
		if err != nil {
			return err
		}
		ok = created
	}
	var deleted int64
	if ok && req.Window != nil && req.Merge == nil {
		deleted, err = s.deleteWindow(ctx, tx, target, req)
		if err != nil {
			return err
		}
	}
	if staged {
		switch {
		case total == 0:
		case req.Merge != nil:
			if deleted, err = s.mergeStaged(ctx, tx, target, rowsT, stagedCols, req, created); err != nil {
				return err
			}
		default:
			if err := s.insertStaged(ctx, tx, target, rowsT, stagedCols, total); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+rowsT.Sanitize()+", "+tasksT.Sanitize()); err != nil {
			return err
		}
	}
	var lo, hi *time.Time
	var loV, hiV *int64
	switch w := req.Window; {
	case w == nil:
	case w.Values:
		loV, hiV = &w.Lo, &w.Hi
	default:
		lo, hi = &w.From, &w.To
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+s.windows().Sanitize()+" (table_name, run, lo, hi, lo_value, hi_value, rows, deleted, checksum, watermark) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
		s.name, req.RunID, lo, hi, loV, hiV, total, deleted, sum.String(), nullIfEmpty(req.Watermark)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// deleteWindow deletes the target's rows whose delta column lies in the
// window and returns how many.
func (s *Sink) deleteWindow(ctx context.Context, tx pgx.Tx, target pgx.Identifier, req connectors.CommitRequest) (int64, error) {
	cond, err := targetWindow(ctx, tx, target, req.DeltaColumn, *req.Window)
	if err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, "DELETE FROM "+target.Sanitize()+" WHERE "+cond)
	if err != nil {
		return 0, fmt.Errorf("delete window rows: %w", err)
	}
	return tag.RowsAffected(), nil
}

// targetWindow returns the condition "the delta column of target lies in
// w". The bounds are literals of the column's type (timestamptz;
// timestamp and date as UTC wall-clock time; an integer for a window of
// values), so an index on the column serves it; a text column, as loaded
// without a typed target, is cast.
func targetWindow(ctx context.Context, q querier, target pgx.Identifier, column string, w connectors.Window) (string, error) {
	var typ string
	err := q.QueryRow(ctx, `SELECT format_type(atttypid, NULL) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped`, target.Sanitize(), column).Scan(&typ)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", connectors.Permanent(fmt.Errorf("%s has no delta column %q", target.Sanitize(), column))
	}
	if err != nil {
		return "", err
	}
	k := pgx.Identifier{column}.Sanitize()
	between := func(col, lo, hi string) string { return col + " >= " + lo + " AND " + col + " < " + hi }
	if w.Values {
		lo, hi := strconv.FormatInt(w.Lo, 10), strconv.FormatInt(w.Hi, 10)
		if intTypes[typ] {
			return between(k, lo, hi), nil
		}
		return between(k+"::numeric", lo, hi), nil
	}
	lit := func(t time.Time, layout, cast string) string { return quoteLiteral(t.UTC().Format(layout)) + cast }
	switch deltaTypes[typ] {
	case "timestamptz":
		return between(k, lit(w.From, time.RFC3339Nano, "::timestamptz"), lit(w.To, time.RFC3339Nano, "::timestamptz")), nil
	case "timestamp":
		const wall = "2006-01-02 15:04:05.999999"
		return between(k, lit(w.From, wall, "::timestamp"), lit(w.To, wall, "::timestamp")), nil
	}
	// text as loaded without a typed target; the session is in UTC
	return between(k+"::timestamptz", lit(w.From, time.RFC3339Nano, "::timestamptz"), lit(w.To, time.RFC3339Nano, "::timestamptz")), nil
}

// insertStaged copies the staged rows into the target, casting each
// column to the target's type.
func (s *Sink) insertStaged(ctx context.Context, tx pgx.Tx, target, rowsT pgx.Identifier, cols []string, want int64) error {
	types, err := columnTypes(ctx, tx, target)
	if err != nil {
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
