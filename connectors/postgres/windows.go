package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ensureWindows creates the bookkeeping table of the incremental loads of
// the schema (sluice_windows: one row per committed run) unless it
// exists, and brings one made by an earlier release to this shape: a run
// by position has no window (lo and hi NULL) and records the position it
// reached (watermark). It runs inside a commit's transaction, under its
// lock.
func (s *Sink) ensureWindows(ctx context.Context, tx pgx.Tx) error {
	t := s.windows().Sanitize()
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+` (
			table_name text NOT NULL,
			run text NOT NULL,
			lo timestamptz,
			hi timestamptz,
			rows bigint NOT NULL,
			deleted bigint NOT NULL,
			checksum text NOT NULL DEFAULT '',
			committed timestamptz NOT NULL DEFAULT now(),
			watermark text,
			PRIMARY KEY (table_name, run))`); err != nil {
		return err
	}
	var current bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'watermark' AND NOT attisdropped)", t).Scan(&current); err != nil || current {
		return err
	}
	_, err := tx.Exec(ctx, "ALTER TABLE "+t+" ALTER COLUMN lo DROP NOT NULL, ALTER COLUMN hi DROP NOT NULL, ADD COLUMN watermark text")
	return err
}

// nullIfEmpty is nil for "", else s: a text column's NULL for nothing.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
