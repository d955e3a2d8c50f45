package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

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
	s, conn, err := adminConn(ctx, dsn, table)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	vs, err := s.listVersions(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", table, err)
	}
	return vs, nil
}

// adminConn returns the sink of a table, as the admin functions (Versions,
// Rollback, Windows) know it, and a connection, which the caller closes.
func adminConn(ctx context.Context, dsn, table string) (*Sink, *pgx.Conn, error) {
	s, err := NewSink(SinkConfig{DSN: dsn, Table: table})
	if err != nil {
		return nil, nil, err
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	return s, conn, nil
}

// listVersions lists the kept versions of the sink's table, oldest first.
func (s *Sink) listVersions(ctx context.Context, q querier) ([]Version, error) {
	ok, _, err := exists(ctx, q, s.versions())
	if err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, "SELECT version, run, rows, checksum, created, current FROM "+s.versions().Sanitize()+
		" WHERE table_name = $1 AND dropped IS NULL ORDER BY version", s.name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Version, error) {
		var v Version
		err := r.Scan(&v.Version, &v.Run, &v.Rows, &v.Checksum, &v.Created, &v.Current)
		v.Table = strings.Join(s.versionTable(v.Version), ".")
		return v, err
	})
}

// Rollback points the view of table back at a kept version: toVersion, or
// when toVersion is 0 the newest kept version older than the current one.
// Versions newer than it stay kept (a later Rollback can go forward again)
// until a commit prunes them.
func Rollback(ctx context.Context, dsn, table string, toVersion int64) error {
	s, conn, err := adminConn(ctx, dsn, table)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := s.rollback(ctx, conn, toVersion); err != nil {
		return classify(fmt.Errorf("roll %s back: %w", table, err))
	}
	return nil
}

// rollback points the view at version to (see Rollback), in a transaction
// serialized with the commits of the schema.
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
	s, conn, err := adminConn(ctx, dsn, table)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	ws, err := s.listWindows(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("list windows of %s: %w", table, err)
	}
	return ws, nil
}

// listWindows lists the windows committed into the sink's table, in commit
// order.
func (s *Sink) listWindows(ctx context.Context, q querier) ([]Window, error) {
	ok, _, err := exists(ctx, q, s.windows())
	if err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, "SELECT run, lo, hi, rows, deleted, checksum FROM "+s.windows().Sanitize()+
		" WHERE table_name = $1 ORDER BY committed, lo", s.name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Window, error) {
		var w Window
		err := r.Scan(&w.Run, &w.From, &w.To, &w.Rows, &w.Deleted, &w.Checksum)
		return w, err
	})
}
