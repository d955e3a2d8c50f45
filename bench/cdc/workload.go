package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/sluicehq/sluice/bench/measure"
)

// workload describes the throughput workload as generated.
type workload struct {
	Table        string  `json:"table"`
	Columns      int     `json:"columns"`
	Inserts      int64   `json:"inserts"`
	Updates      int64   `json:"updates"`
	Deletes      int64   `json:"deletes"`
	TxRows       int64   `json:"rows_per_transaction"`
	Transactions int64   `json:"transactions"`
	Changes      int64   `json:"changes"`
	WALBytes     int64   `json:"wal_bytes"`
	StartLSN     string  `json:"start_lsn"`
	EndLSN       string  `json:"end_lsn"`
	Seconds      float64 `json:"generate_seconds"`
}

// dropLeftovers drops what an earlier, killed run left: inactive slots of
// the benchmark, the publication and the schema.
func (b *bench) dropLeftovers(ctx context.Context) error {
	if _, err := b.conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE starts_with(slot_name::text, $1) AND NOT active`, b.cfg.slotPrefix()); err != nil {
		return fmt.Errorf("drop leftover slots: %w", err)
	}
	for _, sql := range []string{
		"DROP PUBLICATION IF EXISTS " + b.cfg.publication(),
		"DROP SCHEMA IF EXISTS " + b.cfg.schema + " CASCADE",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("drop leftovers: %w", err)
		}
	}
	return nil
}

// cleanup drops the slots this run created, the publication and the
// schema. A walsender may still be exiting: a slot in use is retried.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, slot := range slices.Clone(b.slots) {
		b.dropSlot(slot)
	}
	for _, sql := range []string{
		"DROP PUBLICATION IF EXISTS " + b.cfg.publication(),
		"DROP SCHEMA IF EXISTS " + b.cfg.schema + " CASCADE",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			fmt.Fprintf(os.Stderr, "cdc: %s: %v\n", sql, err)
		}
	}
}

// createTable creates the source table and the publication. The
// publication exists before any slot: pgoutput looks it up as of the WAL
// position it decodes.
func (b *bench) createTable(ctx context.Context) error {
	for _, sql := range []string{
		"CREATE SCHEMA " + b.cfg.schema,
		`CREATE TABLE ` + b.cfg.srcTable() + ` (
			id         bigint PRIMARY KEY,
			customer   text NOT NULL,
			amount     numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL,
			attrs      jsonb,
			quantity   integer)`,
		"CREATE PUBLICATION " + b.cfg.publication() + " FOR TABLE " + b.cfg.srcTable(),
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	return nil
}

// createSlot creates a pgoutput slot and returns its start position.
func (b *bench) createSlot(ctx context.Context, name string) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	err := b.conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", name).Scan(&lsn)
	if err != nil {
		return 0, fmt.Errorf("create slot %q: %w", name, err)
	}
	b.slots = append(b.slots, name)
	return lsn, nil
}

// copySlot copies the slot src (never streamed, so at the workload's start)
// into dst.
func (b *bench) copySlot(ctx context.Context, src, dst string) error {
	if _, err := b.conn.Exec(ctx, "SELECT pg_copy_logical_replication_slot($1, $2)", src, dst); err != nil {
		return fmt.Errorf("copy slot %q to %q: %w", src, dst, err)
	}
	b.slots = append(b.slots, dst)
	return nil
}

// dropSlot drops a slot this run created, retrying while its walsender
// exits; a failure is reported and the slot left to cleanup.
func (b *bench) dropSlot(slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for i := 0; i < 50; i++ {
		if _, err = b.conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot); err == nil {
			b.slots = slices.DeleteFunc(b.slots, func(s string) bool { return s == slot })
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "cdc: drop slot %s: %v\n", slot, err)
}

// generate runs the workload: inserts, then updates, then deletes, each in
// transactions of cfg.txRows rows.
func (b *bench) generate(ctx context.Context, start pglogrepl.LSN) (*workload, error) {
	cfg := b.cfg
	wl := &workload{Table: cfg.srcTable(), Columns: 6, Inserts: cfg.inserts, Updates: cfg.updates, Deletes: cfg.deletes,
		TxRows: cfg.txRows, Changes: cfg.inserts + cfg.updates + cfg.deletes, StartLSN: start.String()}
	fmt.Fprintf(b.stdout, "workload: %d inserts, %d updates, %d deletes in transactions of %d rows ... ", cfg.inserts, cfg.updates, cfg.deletes, cfg.txRows)
	began := time.Now()
	// The commit records are the same with synchronous_commit off; it
	// only spares the fsync of each.
	if _, err := b.conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return nil, err
	}
	defer b.conn.Exec(context.Background(), "RESET synchronous_commit")
	for _, step := range []struct {
		rows int64
		sql  string
	}{
		{cfg.inserts, `INSERT INTO ` + cfg.srcTable() + `
			SELECT i, 'customer ' || substr(md5(i::text), 1, 12), round(i * 1.37 % 100000, 2),
				timestamptz '2024-01-01 00:00:00+00' + i * interval '15.123457 second',
				jsonb_build_object('tier', i % 5, 'tags', jsonb_build_array('a', i % 7), 'ref', md5(i::text)),
				CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 7) % 1000 END
			FROM generate_series($1::bigint, $2::bigint) AS i`},
		{cfg.updates, `UPDATE ` + cfg.srcTable() + ` SET amount = amount + 1, quantity = coalesce(quantity, 0) + 1,
			attrs = attrs || '{"updated": true}', created_at = created_at + interval '1 day'
			WHERE id BETWEEN $1 AND $2`},
		{cfg.deletes, `DELETE FROM ` + cfg.srcTable() + ` WHERE id BETWEEN $1 AND $2`},
	} {
		for lo := int64(1); lo <= step.rows; lo += cfg.txRows {
			hi := min(lo+cfg.txRows-1, step.rows)
			tag, err := b.conn.Exec(ctx, step.sql, lo, hi)
			if err != nil {
				return nil, fmt.Errorf("workload: %w", err)
			}
			if tag.RowsAffected() != hi-lo+1 {
				return nil, fmt.Errorf("workload: %q changed %d rows, want %d", tag.String(), tag.RowsAffected(), hi-lo+1)
			}
			wl.Transactions++
		}
	}
	var end pglogrepl.LSN
	if err := b.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return nil, err
	}
	if err := b.conn.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1, $2)::bigint", end.String(), start.String()).Scan(&wl.WALBytes); err != nil {
		return nil, err
	}
	wl.EndLSN = end.String()
	wl.Seconds = measure.Round(time.Since(began).Seconds(), 2)
	fmt.Fprintf(b.stdout, "%.1fs, %d transactions, %.1f MB of WAL\n", wl.Seconds, wl.Transactions, float64(wl.WALBytes)/1e6)
	return wl, nil
}
