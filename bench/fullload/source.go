package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ensureSource creates the source table unless it exists with the wanted
// row count.
func ensureSource(ctx context.Context, conn *pgx.Conn, rows int64, stdout io.Writer) error {
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+srcSchema); err != nil {
		return err
	}
	var have *int64
	if err := conn.QueryRow(ctx, "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 0 END", srcTable).Scan(&have); err != nil {
		return err
	}
	if have != nil {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+srcTable).Scan(&n); err != nil {
			return err
		}
		if n == rows {
			fmt.Fprintf(stdout, "source: reusing %s (%d rows)\n", srcTable, n)
			return nil
		}
		fmt.Fprintf(stdout, "source: %s has %d rows, not %d: recreating it\n", srcTable, n, rows)
	}
	fmt.Fprintf(stdout, "source: creating %s with %d rows ... ", srcTable, rows)
	start := time.Now()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + srcTable,
		`CREATE TABLE ` + srcTable + ` (
			id         bigint PRIMARY KEY,
			customer   text NOT NULL,
			amount     numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL,
			quantity   integer,
			paid       boolean NOT NULL,
			status     text NOT NULL)`,
		// Every tenth customer has a comma (quoted in CSV); every 50th
		// quantity is NULL.
		`INSERT INTO ` + srcTable + `
		SELECT i,
			CASE WHEN i % 10 = 0 THEN 'Smith, ' ELSE '' END || 'customer ' || substr(md5(i::text), 1, 12),
			measure.Round((i % 100000) * 1.37 + (i % 97) / 100.0, 2),
			timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
			CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 7) % 1000 END,
			i % 3 = 0,
			(ARRAY['new', 'paid', 'shipped', 'returned', 'cancelled'])[1 + i % 5]
		FROM generate_series(1, ` + strconv.FormatInt(rows, 10) + `) AS i`,
		// Hint bits and the visibility map set now, not by the first
		// measurement.
		"VACUUM (FREEZE, ANALYZE) " + srcTable,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	fmt.Fprintf(stdout, "%.1fs\n", time.Since(start).Seconds())
	return nil
}

// resetOut recreates the output schema with the pipe baseline's target and
// the template the Sluice sink copies its version tables from: both are the
// source's columns and types, without indexes.
func resetOut(ctx context.Context, conn *pgx.Conn) error {
	for _, sql := range []string{
		"DROP SCHEMA IF EXISTS " + outSchema + " CASCADE",
		"CREATE SCHEMA " + outSchema,
		"CREATE TABLE " + copyTable + "_template (LIKE " + srcTable + ")",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("prepare %s: %w", outSchema, err)
		}
	}
	return nil
}
