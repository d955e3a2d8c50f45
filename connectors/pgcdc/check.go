package pgcdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
)

// checkSource checks that a cdc pipeline can capture what its source
// configuration names (connectors.CDCSource.Check): the server's
// wal_level, the role's REPLICATION right, a free replication slot (or the
// pipeline's own), the right to create the publication when it is
// missing, and for each table that it exists, may be read, and has a
// replica identity that carries its key on updates and deletes (a primary
// key, an index, or FULL).
func checkSource(ctx context.Context, config json.RawMessage, req connectors.CheckRequest) (string, error) {
	c, err := ParseSourceConfig(config)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", postgres.RedactDSN(c.DSN), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var (
		walLevel                string
		replication, createPub  bool
		maxSlots, usedSlots     int
		ownSlot, publicationSet bool
	)
	err = conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
		has_database_privilege(current_database(), 'CREATE'),
		current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_slots)::int,
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)`,
		req.Settings.Slot, req.Settings.Publication).Scan(&walLevel, &replication, &createPub, &maxSlots, &usedSlots, &ownSlot, &publicationSet)
	if err != nil {
		return "", fmt.Errorf("look up the server's replication settings: %w", err)
	}
	var problems []error
	if walLevel != "logical" {
		problems = append(problems, &connectors.FieldError{Field: "dsn", Msg: fmt.Sprintf("the server's wal_level is %s: set wal_level = logical and restart it", walLevel)})
	}
	if !replication {
		problems = append(problems, &connectors.FieldError{Field: "dsn", Msg: "the role has no REPLICATION right: ALTER ROLE ... REPLICATION"})
	}
	if !ownSlot && usedSlots >= maxSlots {
		problems = append(problems, &connectors.FieldError{Field: "dsn", Msg: fmt.Sprintf("no free replication slot: all %d (max_replication_slots) are in use", maxSlots)})
	}
	if !publicationSet && !createPub {
		problems = append(problems, &connectors.FieldError{Field: "dsn", Msg: fmt.Sprintf("publication %s does not exist and the role may not create it (CREATE on the database)", req.Settings.Publication)})
	}
	var tables []string
	for i, t := range c.Tables {
		found, err := checkTable(ctx, conn, t)
		var fe *connectors.FieldError
		if errors.As(err, &fe) {
			fe.Field = fmt.Sprintf("tables[%d]", i)
			problems = append(problems, fe)
			continue
		}
		if err != nil {
			return "", err
		}
		tables = append(tables, found)
	}
	if err := errors.Join(problems...); err != nil {
		return "", err
	}
	return fmt.Sprintf("wal_level logical, the role may replicate; %s", strings.Join(tables, "; ")), nil
}

// checkTable checks one captured table and says what identifies its rows.
func checkTable(ctx context.Context, conn *pgx.Conn, table string) (string, error) {
	var (
		oid       uint32
		ident     string
		canSelect bool
		key       *string
	)
	err := conn.QueryRow(ctx, `SELECT c.oid, c.relreplident::text, has_table_privilege(c.oid, 'SELECT'),
		(SELECT string_agg(a.attname, ', ' ORDER BY array_position(i.indkey, a.attnum))
		 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		 WHERE i.indrelid = c.oid AND (i.indisprimary AND c.relreplident = 'd' OR i.indisreplident AND c.relreplident = 'i'))
		FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, quoteTable(table)).Scan(&oid, &ident, &canSelect, &key)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", &connectors.FieldError{Msg: fmt.Sprintf("table %s does not exist (or is not a table, or the role cannot see it)", table)}
	case err != nil:
		return "", fmt.Errorf("look up table %s: %w", table, err)
	case !canSelect:
		return "", &connectors.FieldError{Msg: fmt.Sprintf("the role may not SELECT from table %s (the snapshot reads it)", table)}
	}
	switch {
	case ident == "f":
		return table + " (replica identity full)", nil
	case key != nil:
		return fmt.Sprintf("%s (key %s)", table, *key), nil
	case ident == "n":
		return "", &connectors.FieldError{Msg: fmt.Sprintf("table %s has REPLICA IDENTITY NOTHING: its updates and deletes carry no key to apply them by; ALTER TABLE %s REPLICA IDENTITY FULL, or DEFAULT with a primary key", table, table)}
	}
	return "", &connectors.FieldError{Msg: fmt.Sprintf("table %s has no primary key (REPLICA IDENTITY DEFAULT): its updates and deletes carry no key to apply them by; add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL", table, table)}
}

// quoteTable quotes schema.table as an identifier.
func quoteTable(t string) string {
	schema, table, _ := splitTable(t)
	return pgx.Identifier{schema, table}.Sanitize()
}
