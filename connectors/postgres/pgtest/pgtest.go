// Package pgtest gives tests a PostgreSQL schema of their own on the server
// `make services` starts. Outside CI a test skips when the server is not
// reachable; in CI (CI=true) it fails loudly.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultDSN is the server and database scripts/services.sh prepares.
const DefaultDSN = "postgres://sluice@127.0.0.1:5432/sluice_test?sslmode=disable"

// DSN is $SLUICE_TEST_PG or DefaultDSN.
func DSN() string {
	if dsn := os.Getenv("SLUICE_TEST_PG"); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// DB connects to the test server and creates a schema for the test, dropped
// when the test ends.
func DB(t testing.TB) (dsn, schema string, conn *pgx.Conn) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped with -short")
	}
	dsn = DSN()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is not reachable at %s (SLUICE_TEST_PG): %v; run `make services`", redact(dsn), err)
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dropStale(ctx, t, conn, time.Now().Add(-staleAfter))
	// The schema's name starts with its creation time (Unix seconds), so
	// that a later test can tell a schema left behind by a killed test.
	schema = fmt.Sprintf("sluice_t_%d_%d", time.Now().Unix(), rand.IntN(1e6))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drop := "SET lock_timeout = '20s'; DROP SCHEMA " + schema + " CASCADE"
		_, err := conn.Exec(ctx, drop)
		conn.Close(ctx)
		if err != nil {
			// The server may have been restarted under the connection.
			c, cerr := pgx.Connect(ctx, dsn)
			if cerr != nil {
				t.Errorf("drop schema: %v; reconnect: %v", err, cerr)
				return
			}
			defer c.Close(ctx)
			if _, err := c.Exec(ctx, drop); err != nil {
				t.Errorf("drop schema: %v", err)
			}
		}
	})
	return dsn, schema, conn
}

// staleAfter is the age past which a test schema, and the inactive
// replication slots named after it, belong to a test that was killed: no
// test package runs that long.
const staleAfter = 2 * time.Hour

// dropStale drops what killed tests left behind: inactive replication
// slots of test schemas that are gone or older than before (a slot holds
// WAL for ever; two left by killed tests once held 44 GB and filled the
// disk), then those schemas.
func dropStale(ctx context.Context, t testing.TB, conn *pgx.Conn, before time.Time) {
	t.Helper()
	// A schema's third part, when it is ten digits, is its creation time.
	const created = `(CASE WHEN split_part(%[1]s, '_', 3) ~ '^[0-9]{10}$' THEN split_part(%[1]s, '_', 3)::bigint END)`
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots s
		WHERE NOT active AND slot_name LIKE 'sluice\_t\_%'
		AND (NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE s.slot_name LIKE n.nspname || '%')
			OR `+fmt.Sprintf(created, "slot_name")+` < $1)`, before.Unix()); err != nil {
		t.Logf("drop stale test slots: %v", err)
	}
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace
		WHERE nspname LIKE 'sluice\_t\_%' AND `+fmt.Sprintf(created, "nspname")+` < $1`, before.Unix())
	if err != nil {
		t.Logf("list stale test schemas: %v", err)
		return
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Logf("list stale test schemas: %v", err)
		return
	}
	for _, s := range stale {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
			return err
		})
		if err != nil {
			t.Logf("drop stale test schema %s: %v", s, err)
		}
	}
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Select runs query on conn over the simple protocol, so that every value
// comes back in the server's text form (the form COPY ... CSV writes), and
// returns the column names and each row's values as text, null for a
// NULL. Tests use it to read a table back with their own code.
func Select(ctx context.Context, conn *pgx.Conn, query, null string) ([]string, [][]string, error) {
	rows, err := conn.Query(ctx, query, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	var out [][]string
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			if v == nil {
				row[i] = null
			} else {
				row[i] = string(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", query, err)
	}
	return cols, out, nil
}
