package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/postgres"
)

// ensureTables creates the source table and the two targets, equal to it,
// unless --keep left them with the right row count.
func (b *bench) ensureTables(ctx context.Context) error {
	cfg := b.cfg
	if _, err := b.conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+cfg.schema); err != nil {
		return err
	}
	var all bool
	err := b.conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL",
		cfg.src(), cfg.sluice(), cfg.base()).Scan(&all)
	if err != nil {
		return err
	}
	if all {
		// The targets are in step with the source when they hold as many
		// rows and the same newest version (a run stopped between a change
		// and its merges leaves them behind: they are copied again).
		var n [3]int64
		var v [3]int64
		err := b.conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+cfg.src()+"), (SELECT count(*) FROM "+cfg.sluice()+"), (SELECT count(*) FROM "+cfg.base()+"), "+
			"(SELECT max(version) FROM "+cfg.src()+"), (SELECT max(version) FROM "+cfg.sluice()+"), (SELECT max(version) FROM "+cfg.base()+")").
			Scan(&n[0], &n[1], &n[2], &v[0], &v[1], &v[2])
		if err != nil {
			return err
		}
		if n == [3]int64{cfg.rows, cfg.rows, cfg.rows} && v[0] == v[1] && v[0] == v[2] {
			// The sink's record of the windows it committed goes: this
			// run's cluster numbers its runs from 1 again, and a run
			// recorded as committed would commit nothing.
			if _, err := b.conn.Exec(ctx, "DROP TABLE IF EXISTS "+cfg.schema+".sluice_windows"); err != nil {
				return err
			}
			fmt.Fprintf(b.stdout, "tables: reusing %s and its two targets (%d rows)\n", cfg.src(), cfg.rows)
			return nil
		}
	}
	fmt.Fprintf(b.stdout, "tables: creating %s and two copies, %d rows each ... ", cfg.src(), cfg.rows)
	start := time.Now()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + cfg.src() + ", " + cfg.sluice() + ", " + cfg.base() + ", " + cfg.stage(),
		`CREATE TABLE ` + cfg.src() + ` (
			id         bigint PRIMARY KEY,
			version    bigint NOT NULL,
			customer   text NOT NULL,
			amount     numeric(12,2) NOT NULL,
			created_at timestamptz NOT NULL,
			quantity   integer,
			paid       boolean NOT NULL,
			status     text NOT NULL)`,
		fmt.Sprintf(`INSERT INTO %s SELECT g, g, 'customer-' || (g %% 100000), (g %% 100000) * 0.37,
			timestamptz '2026-01-01' + g * interval '1 second', NULLIF(g %% 97, 0), g %% 3 = 0, 'new'
			FROM generate_series(1, %d) g`, cfg.src(), cfg.rows),
		"CREATE INDEX ON " + cfg.src() + " (version)",
		"CREATE TABLE " + cfg.sluice() + " (LIKE " + cfg.src() + ")",
		"INSERT INTO " + cfg.sluice() + " SELECT * FROM " + cfg.src(),
		"ALTER TABLE " + cfg.sluice() + " ADD PRIMARY KEY (id)",
		"CREATE TABLE " + cfg.base() + " (LIKE " + cfg.src() + ")",
		"INSERT INTO " + cfg.base() + " SELECT * FROM " + cfg.src(),
		"ALTER TABLE " + cfg.base() + " ADD PRIMARY KEY (id)",
	} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the tables: %w", err)
		}
	}
	if err := b.vacuum(ctx); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "%.1fs\n", time.Since(start).Seconds())
	return nil
}

// maxVersion is the greatest version of the source.
func (b *bench) maxVersion(ctx context.Context) (int64, error) {
	var v int64
	err := b.conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+b.cfg.src()).Scan(&v)
	return v, err
}

// change gives --changed rows of the source new values and new versions,
// above every version before, as an application's updates would (not
// timed), and returns the range of versions they took: [lo, hi). Each
// repetition changes other rows: those whose id is rep - 1 modulo
// rows / changed.
func (b *bench) change(ctx context.Context, rep int) (lo, hi int64, err error) {
	cfg := b.cfg
	base, err := b.maxVersion(ctx)
	if err != nil {
		return 0, 0, err
	}
	k := cfg.rows / cfg.changed
	start := time.Now()
	tag, err := b.conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET version = %d + id, amount = amount + 1.25, status = 'changed in rep %d'
		WHERE id %% %d = %d AND id <= %d`, cfg.src(), base, rep, k, int64(rep-1)%k, k*cfg.changed))
	if err != nil {
		return 0, 0, fmt.Errorf("change the source: %w", err)
	}
	if tag.RowsAffected() != cfg.changed {
		return 0, 0, fmt.Errorf("changed %d rows, want %d", tag.RowsAffected(), cfg.changed)
	}
	if _, err := b.conn.Exec(ctx, "VACUUM ANALYZE "+cfg.src()); err != nil {
		return 0, 0, err
	}
	hi, err = b.maxVersion(ctx)
	fmt.Fprintf(b.stdout, "%.1fs;", time.Since(start).Seconds())
	return base + 1, hi + 1, err
}

// vacuum vacuums and analyzes the tables, so that the dead rows of the
// last merges weigh on neither target.
func (b *bench) vacuum(ctx context.Context) error {
	cfg := b.cfg
	if _, err := b.conn.Exec(ctx, "VACUUM ANALYZE "+cfg.src()+", "+cfg.sluice()+", "+cfg.base()); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

// checkpoint writes out every dirty buffer and WAL segment (CHECKPOINT
// needs a superuser, or pg_checkpoint on PostgreSQL 15); where it is not
// allowed, the measurements go without.
func (b *bench) checkpoint(ctx context.Context) error {
	_, err := b.conn.Exec(ctx, "CHECKPOINT")
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		return nil
	}
	return err
}

// verify checks that both targets hold exactly the source's rows, by row
// count and checksum.
func (b *bench) verify(ctx context.Context) error {
	cfg := b.cfg
	fmt.Fprintf(b.stdout, "verifying both targets against the source ... ")
	want, err := postgres.TableChecksum(ctx, b.conn, "SELECT "+columns+" FROM "+cfg.src())
	if err != nil {
		return err
	}
	for _, m := range []struct {
		table string
		m     *measure.Measurement
	}{{cfg.sluice(), &b.sluice}, {cfg.base(), &b.base}} {
		got, err := postgres.TableChecksum(ctx, b.conn, "SELECT "+columns+" FROM "+m.table)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("verify: %s holds %d rows checksum %s, the source %d rows checksum %s", m.table, got.Rows, got, want.Rows, want)
		}
		m.m.Verified = "after the last repetition, row count and checksum of the target (postgres.TableChecksum) equal the source's"
	}
	fmt.Fprintf(b.stdout, "%d rows each, equal\n", want.Rows)
	return nil
}

// drop drops the benchmark's schema; a failure is reported.
func (b *bench) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+b.cfg.schema+" CASCADE"); err != nil {
		fmt.Fprintf(os.Stderr, "incremental: drop schema %s: %v\n", b.cfg.schema, err)
	}
}
