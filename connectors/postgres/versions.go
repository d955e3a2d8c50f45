package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// Windows) know it, and a connection, which the caller closes.
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

var _ connectors.Versioned = (*Sink)(nil)

// Versions lists the kept versions of the view's table (see
// connectors.Versioned): those recorded in sluice_versions and not
// dropped, each located at its table.
func (s *Sink) Versions(ctx context.Context) ([]connectors.Version, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	vs, err := s.listVersions(ctx, conn)
	if err != nil {
		return nil, classify(fmt.Errorf("list versions of %s: %w", s.cfg.Table, err))
	}
	return keptVersions(vs), nil
}

// Expose points the view at kept version v, in one transaction serialised
// with the commits of the view: readers see the version before or v. It
// does nothing when the view shows v already.
func (s *Sink) Expose(ctx context.Context, v int64) error {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := s.expose(ctx, conn, v); err != nil {
		return classify(fmt.Errorf("expose version %d of %s: %w", v, s.cfg.Table, err))
	}
	return nil
}

// keptVersions converts the sink's versions to the capability's.
func keptVersions(vs []Version) []connectors.Version {
	out := make([]connectors.Version, len(vs))
	for i, v := range vs {
		out[i] = connectors.Version{Version: v.Version, Run: v.Run, Rows: v.Rows, Location: v.Table, Time: v.Created, Exposed: v.Current}
	}
	return out
}

// expose points the view at kept version to (see Expose), in a
// transaction serialized with the commits of the view.
func (s *Sink) expose(ctx context.Context, conn *pgx.Conn, to int64) error {
	tx, err := s.lockTable(ctx, conn)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	vs, err := s.listVersions(ctx, tx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(vs, func(v Version) bool { return v.Version == to })
	if i < 0 {
		why := "was never committed"
		var dropped *time.Time
		err := tx.QueryRow(ctx, "SELECT dropped FROM "+s.versions().Sanitize()+" WHERE table_name = $1 AND version = $2", s.name, to).Scan(&dropped)
		switch {
		case err == nil && dropped != nil:
			why = fmt.Sprintf("was dropped on %s (keep_versions)", dropped.UTC().Format(time.RFC3339))
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		return connectors.VersionNotKept(to, why, keptVersions(vs))
	}
	if vs[i].Current {
		return nil
	}
	if err := s.pointView(ctx, tx, s.versionTable(to)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "UPDATE "+s.versions().Sanitize()+" SET current = (version = $2) WHERE table_name = $1 AND (current OR version = $2)", s.name, to); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Window is one committed window of an incremental table: of time [From,
// To), of integer values [Lo, Hi) (Values), or none for a run by position,
// which records the Watermark it reached.
type Window struct {
	Run       string
	From, To  time.Time
	Values    bool
	Lo, Hi    int64
	Watermark string
	Rows      int64
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
	current, err := s.windowsShaped(ctx, q)
	if err != nil {
		return nil, err
	}
	cols := "lo_value, hi_value, coalesce(watermark, '')"
	if !current { // written by an earlier release: windows of time only
		cols = "NULL::bigint, NULL::bigint, ''"
	}
	rows, err := q.Query(ctx, "SELECT run, lo, hi, "+cols+", rows, deleted, checksum FROM "+s.windows().Sanitize()+
		" WHERE table_name = $1 ORDER BY committed, lo", s.name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Window, error) {
		var w Window
		var from, to *time.Time
		var lo, hi *int64
		err := r.Scan(&w.Run, &from, &to, &lo, &hi, &w.Watermark, &w.Rows, &w.Deleted, &w.Checksum)
		if from != nil && to != nil {
			w.From, w.To = *from, *to
		}
		if lo != nil && hi != nil {
			w.Values, w.Lo, w.Hi = true, *lo, *hi
		}
		return w, err
	})
}
