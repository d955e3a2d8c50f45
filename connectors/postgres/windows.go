package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ensureWindows creates the bookkeeping table of the incremental loads of
// the schema (sluice_windows: one row per committed run) unless it
// exists, and brings one made by an earlier release to this shape: a
// window of integer values is [lo_value, hi_value) (lo and hi NULL), a run
// by position has no window and records the position it reached
// (watermark). It runs inside a commit's transaction, under its
// lock.
func (s *Sink) ensureWindows(ctx context.Context, tx pgx.Tx) error {
	t := s.windows().Sanitize()
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+` (
			table_name text NOT NULL,
			run text NOT NULL,
			lo timestamptz,
			hi timestamptz,
			lo_value bigint,
			hi_value bigint,
			rows bigint NOT NULL,
			deleted bigint NOT NULL,
			checksum text NOT NULL DEFAULT '',
			committed timestamptz NOT NULL DEFAULT now(),
			watermark text,
			PRIMARY KEY (table_name, run))`); err != nil {
		return err
	}
	return s.ensureWindowsShape(ctx, tx)
}

// ensureWindowsShape brings a sluice_windows table made by an earlier
// release to this release's shape.
func (s *Sink) ensureWindowsShape(ctx context.Context, q querier) error {
	if current, err := s.windowsShaped(ctx, q); err != nil || current {
		return err
	}
	_, err := q.Exec(ctx, "ALTER TABLE "+s.windows().Sanitize()+" ALTER COLUMN lo DROP NOT NULL, ALTER COLUMN hi DROP NOT NULL, "+
		"ADD COLUMN IF NOT EXISTS lo_value bigint, ADD COLUMN IF NOT EXISTS hi_value bigint, ADD COLUMN IF NOT EXISTS watermark text")
	return err
}

// windowsShaped reports whether the existing sluice_windows table has this
// release's shape.
func (s *Sink) windowsShaped(ctx context.Context, q querier) (bool, error) {
	var current bool
	err := q.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'hi_value' AND NOT attisdropped)",
		s.windows().Sanitize()).Scan(&current)
	return current, err
}

// nullIfEmpty is nil for "", else s: a text column's NULL for nothing.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
