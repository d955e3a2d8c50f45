package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
)

// ensureSource creates the schema and the source table, unless the table
// exists with the wanted row count (kept by an earlier run with --keep).
func (b *bench) ensureSource(ctx context.Context) error {
	return harness.Orders(ctx, b.conn, b.cfg.schema, "fullload_src", b.cfg.rows, b.stdout)
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
