package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// OrdersColumns are the columns of the orders table: bigint, text,
// numeric(12,2), timestamptz, integer (with NULLs), boolean, text.
const OrdersColumns = "id, customer, amount, created_at, quantity, paid, status"

// Orders creates schema and, in it, the table name of rows generated
// orders (OrdersColumns), unless that table exists with rows rows (kept by
// an earlier run with --keep). It says on w what it does.
func Orders(ctx context.Context, conn *pgx.Conn, schema, name string, rows int64, w io.Writer) error {
	src := schema + "." + name
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return err
	}
	var have *int64
	if err := conn.QueryRow(ctx, "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 0 END", src).Scan(&have); err != nil {
		return err
	}
	if have != nil {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+src).Scan(&n); err != nil {
			return err
		}
		if n == rows {
			fmt.Fprintf(w, "source: reusing %s (%d rows)\n", src, n)
			return nil
		}
		fmt.Fprintf(w, "source: %s has %d rows, not %d: recreating it\n", src, n, rows)
	}
	fmt.Fprintf(w, "source: creating %s with %d rows ... ", src, rows)
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
		FROM generate_series(1, ` + strconv.FormatInt(rows, 10) + `) AS i`,
		// Hint bits and the visibility map set now, not by the first
		// measurement.
		"VACUUM (FREEZE, ANALYZE) " + src,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the source table: %w", err)
		}
	}
	fmt.Fprintf(w, "%.1fs\n", time.Since(start).Seconds())
	return nil
}

// FindPSQL finds the psql binary: flagValue when given, else psql on the
// PATH, else PostgreSQL 15's.
func FindPSQL(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p, err := exec.LookPath("psql"); err == nil {
		return p, nil
	}
	p := "/usr/lib/postgresql/15/bin/psql"
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("psql not found: install postgresql-client or give --psql")
	}
	return p, nil
}

// AppendPGCSV appends s as PostgreSQL's COPY writes a text value in CSV:
// quoted (quotes doubled) when empty or holding a comma, a quote or a line
// break, as is otherwise.
func AppendPGCSV(dst []byte, s string) []byte {
	if s != "" && !strings.ContainsAny(s, ",\"\n\r") {
		return append(dst, s...)
	}
	return append(append(append(dst, '"'), strings.ReplaceAll(s, `"`, `""`)...), '"')
}

// PGTimestampTZ is the layout of a timestamptz as PostgreSQL writes it in
// a UTC session, to the microsecond.
const PGTimestampTZ = "2006-01-02 15:04:05.999999-07"

// PipeCopy runs copyTo (a COPY ... TO STDOUT) on from and copyFrom (a COPY
// ... FROM STDIN) on to, the bytes piped between them through a 256 KiB
// buffer (as a shell pipe between two psql would), and returns the rows
// COPY FROM loaded.
func PipeCopy(ctx context.Context, from, to *pgx.Conn, copyTo, copyFrom string) (int64, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		_, err := from.PgConn().CopyTo(ctx, bw, copyTo)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	tag, err := to.PgConn().CopyFrom(ctx, pr, copyFrom)
	pr.CloseWithError(errors.New("copy from ended"))
	if werr := <-done; err == nil {
		err = werr
	}
	if err != nil {
		return 0, fmt.Errorf("piped copy: %w", err)
	}
	return tag.RowsAffected(), nil
}
