package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ensureSource creates the schema and the source table, unless the table
// exists with the wanted row count (kept by an earlier run with --keep).
func (b *bench) ensureSource(ctx context.Context) error {
	cfg, src := b.cfg, b.cfg.srcTable()
	if _, err := b.conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+cfg.schema); err != nil {
		return err
	}
	var have *int64
	if err := b.conn.QueryRow(ctx, "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 0 END", src).Scan(&have); err != nil {
		return err
	}
	if have != nil {
		var n int64
		if err := b.conn.QueryRow(ctx, "SELECT count(*) FROM "+src).Scan(&n); err != nil {
			return err
		}
		if n == cfg.rows {
			fmt.Fprintf(b.stdout, "source: reusing %s (%d rows)\n", src, n)
			return nil
		}
		fmt.Fprintf(b.stdout, "source: %s has %d rows, not %d: recreating it\n", src, n, cfg.rows)
	}
	fmt.Fprintf(b.stdout, "source: creating %s with %d rows ... ", src, cfg.rows)
	start := time.Now()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + src,
		`CREATE TABLE ` + src + ` (
			id         bigint PRIMARY KEY,
			customer   text NOT NULL,
			amount     numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL,
			quantity   integer,
			paid       boolean NOT NULL,
			status     text NOT NULL)`,
		// Every tenth customer has a comma (quoted in CSV); every 50th
		// quantity is NULL.
		`INSERT INTO ` + src + `
		SELECT i,
			CASE WHEN i % 10 = 0 THEN 'Smith, ' ELSE '' END || 'customer ' || substr(md5(i::text), 1, 12),
			round((i % 100000) * 1.37 + (i % 97) / 100.0, 2),
			timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
			CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 7) % 1000 END,
			i % 3 = 0,
			(ARRAY['new', 'paid', 'shipped', 'returned', 'cancelled'])[1 + i % 5]
		FROM generate_series(1, ` + strconv.FormatInt(cfg.rows, 10) + `) AS i`,
		// Hint bits and the visibility map set now, not by the first
		// measurement.
		"VACUUM (FREEZE, ANALYZE) " + src,
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", time.Since(start).Seconds())
	return nil
}

// resetOut recreates the output schema with the template the Sluice sink
// copies its version tables from: the source's columns and types, without
// indexes.
func (b *bench) resetOut(ctx context.Context) error {
	out := b.cfg.outSchema()
	for _, sql := range []string{
		"DROP SCHEMA IF EXISTS " + out + " CASCADE",
		"CREATE SCHEMA " + out,
		"CREATE TABLE " + b.cfg.copyTable() + "_template (LIKE " + b.cfg.srcTable() + ")",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("prepare %s: %w", out, err)
		}
	}
	return nil
}

// drop drops a schema the benchmark created, with everything in it; a
// failure is reported.
func (b *bench) drop(schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fmt.Fprintf(os.Stderr, "fullload: drop schema %s: %v\n", schema, err)
	}
}
