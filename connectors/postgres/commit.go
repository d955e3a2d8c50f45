package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

// commitLockTimeout bounds how long a commit or rollback waits for readers
// of the view (or of a version it drops) to let go of it.
const commitLockTimeout = "60s"

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

// indexBuildMemory is the maintenance_work_mem, in kB (256MB), with
// which the commit of a passthrough builds the target's indexes (primary
// key, unique and exclusion constraints, indexes) once the rows are in,
// when the server's setting is lower (PostgreSQL's default is 64MB): the
// sort of a few million keys then stays in memory instead of spilling to
// temporary files, and a parallel build (up to the server's
// max_parallel_maintenance_workers) gets its workers, each of which needs
// 32MB of it. On 2 cores, the primary key of 2M rows (a bigint) took 0.44
// CPU-s in memory without workers, 0.62 with two, against 0.72-0.80 with
// 64MB (one worker, sorting on disk); a benchmarked passthrough's commit
// took 1.5 s against 1.8 s (medians under load). A build takes only what
// it needs of it, and only in the commit's transaction.
const indexBuildMemory = "262144"

// indexBuildMemorySQL raises maintenance_work_mem to indexBuildMemory for
// the rest of the transaction, unless it is set higher.
const indexBuildMemorySQL = "SELECT set_config('maintenance_work_mem', '" + indexBuildMemory + "kB', true)" +
	" FROM pg_settings WHERE name = 'maintenance_work_mem' AND setting::bigint < " + indexBuildMemory

// commit publishes a full load as version req.Version (see Commit); a
// passthrough's (pass) gets the source's table definition first: the
// staging table its constraints, indexes and identity columns, or, when
// the run has no rows, a table made from it.
func (s *Sink) commit(ctx context.Context, conn *pgx.Conn, req connectors.CommitRequest, pass bool) error {
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
	staged, total, sum, err := s.checkRun(ctx, tx, req)
	if err != nil {
		return err
	}
	var finish []string
	if pass {
		def, err := DecodeTableDef(req.Schema)
		if err != nil {
			return connectors.Permanent(err)
		}
		table := rowsT
		if !staged {
			if err := createPassTable(ctx, tx, vt, req.Schema); err != nil {
				return err
			}
			table = vt
		}
		finish = def.FinishSQL(table, vt[len(vt)-1])
		if def.indexed() {
			finish = append([]string{indexBuildMemorySQL}, finish...)
		}
	}
	for _, sql := range finish {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	if staged {
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
	} else if !pass {
		ok, err := s.createTable(ctx, tx, vt, nil, req.Schema)
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

// checkRun checks the staging of a run against the task outputs of its
// commit. It locks the staging tables first (the task list, then the rows:
// the order a task writer takes them in), so that no task attempt adds
// output after the check, and removes what tasks the commit does not list
// staged: late attempts of the tasks of an earlier attempt of the run,
// which the coordinator planned again (their task IDs are not the new
// attempt's). The task list must then match the outputs; without a staging
// table they must hold no rows. It returns whether the staging table
// exists, and the run's row count and checksum.
func (s *Sink) checkRun(ctx context.Context, tx pgx.Tx, req connectors.CommitRequest) (staged bool, rows int64, sum connectors.Checksum, err error) {
	rowsT, tasksT := s.staging(req.RunID)
	staged, _, err = exists(ctx, tx, rowsT)
	if err != nil {
		return false, 0, sum, err
	}
	want := map[string]int64{}
	for _, t := range req.Tasks {
		want[t.Location] = t.Rows
		rows += t.Rows
		sum.Merge(t.Checksum)
	}
	if !staged {
		if rows != 0 {
			err = connectors.Permanent(fmt.Errorf("the run's staging table %s is missing (aborted?)", rowsT.Sanitize()))
		}
		return false, rows, sum, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+tasksT.Sanitize()+", "+rowsT.Sanitize()+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return true, rows, sum, err
	}
	if err := discardUnlisted(ctx, tx, rowsT, tasksT, want); err != nil {
		return true, rows, sum, err
	}
	return true, rows, sum, checkStaged(ctx, tx, tasksT, want)
}

// discardUnlisted removes the staged output of every task the staging
// table lists and want (location -> rows) does not.
func discardUnlisted(ctx context.Context, tx pgx.Tx, rowsT, tasksT pgx.Identifier, want map[string]int64) error {
	rows, err := tx.Query(ctx, "SELECT task FROM "+tasksT.Sanitize())
	if err != nil {
		return err
	}
	tasks, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	tasks = slices.DeleteFunc(tasks, func(task string) bool { _, ok := want[task]; return ok })
	if len(tasks) == 0 {
		return nil
	}
	legacy, err := legacyStaging(ctx, tx, tasksT)
	if err != nil {
		return err
	}
	for _, task := range tasks {
		if err := dropTaskOutput(ctx, tx, rowsT, tasksT, task, legacy); err != nil {
			return fmt.Errorf("discard the output of task %s, not in the commit: %w", task, err)
		}
	}
	return nil
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
// readers see the old view or the new one. A view of that name that no
// load made (madeView) is the user's: it is refused, never replaced.
func (s *Sink) pointView(ctx context.Context, tx pgx.Tx, t pgx.Identifier) error {
	ok, kind, err := exists(ctx, tx, s.view())
	if err != nil {
		return err
	}
	if ok && kind != "v" {
		return connectors.Permanent(fmt.Errorf("%s exists and is not a view", s.view().Sanitize()))
	}
	if ok {
		made, err := s.madeView(ctx, tx)
		if err != nil {
			return err
		}
		if !made {
			return connectors.Permanent(errors.New(notMadeView(s.view().Sanitize())))
		}
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

// madeView reports whether the view of the sink's name is one its loads
// made: sluice_versions records a version of it (the first commit creates
// the view and records its version in one transaction).
func (s *Sink) madeView(ctx context.Context, q querier) (bool, error) {
	ok, _, err := exists(ctx, q, s.versions())
	if err != nil || !ok {
		return false, err
	}
	var made bool
	err = q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+s.versions().Sanitize()+" WHERE table_name = $1)", s.name).Scan(&made)
	return made, err
}

// notMadeView says why a view of the user's is not loaded into.
func notMadeView(view string) string {
	return fmt.Sprintf("%s is a view that no load made (%s records no version of it): this sink exposes each version through a view of that name and would replace it; drop it or name another table", view, versionsTable)
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
