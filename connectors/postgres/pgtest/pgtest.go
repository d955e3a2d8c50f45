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
	// A test killed mid-way leaves its replication slots behind, holding
	// WAL: drop the inactive ones of test schemas that are gone.
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots s
		WHERE NOT active AND slot_name LIKE 'sluice\_t\_%'
		AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE s.slot_name LIKE n.nspname || '%')`); err != nil {
		t.Logf("drop stale test slots: %v", err)
	}
	schema = fmt.Sprintf("sluice_t_%d_%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
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
