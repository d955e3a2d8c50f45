package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

var (
	_ connectors.Checker = (*Source)(nil)
	_ connectors.Checker = (*Sink)(nil)
)

// Check looks at the table the source reads (connectors.Checker): that it
// exists and the role may read it, that the configured columns, key and
// filter fit it, and that an incremental pipeline's delta column is a
// column of it of a type its windows take: timestamptz, timestamp or date,
// or for windows of integer values an integer type.
func (s *Source) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var (
		oid       uint32
		rows      int64
		canSelect bool
	)
	err = conn.QueryRow(ctx, `SELECT c.oid, c.reltuples::bigint, has_table_privilege(c.oid, 'SELECT')
		FROM pg_class c WHERE c.oid = to_regclass($1)`, s.table.Sanitize()).Scan(&oid, &rows, &canSelect)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("table %s does not exist (or the role cannot see it)", s.cfg.Table)}
	}
	if err != nil {
		return "", fmt.Errorf("look up table %s: %w", s.cfg.Table, err)
	}
	if !canSelect {
		return "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("the role may not SELECT from table %s", s.cfg.Table)}
	}
	var problems []error
	cols, err := s.columns(ctx, conn, oid)
	if err != nil {
		problems = append(problems, err)
	}
	key, err := s.key(ctx, conn, oid)
	if err != nil {
		problems = append(problems, err)
	}
	if req.DeltaColumn != "" {
		var typ, full string
		err := conn.QueryRow(ctx, `SELECT format_type(atttypid, NULL), format_type(atttypid, atttypmod) FROM pg_attribute
			WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped`, oid, req.DeltaColumn).Scan(&typ, &full)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			problems = append(problems, &connectors.FieldError{Field: connectors.FieldDeltaColumn, Msg: fmt.Sprintf("table %s has no column %q", s.cfg.Table, req.DeltaColumn)})
		case err != nil:
			return "", fmt.Errorf("look up column %q: %w", req.DeltaColumn, err)
		case req.DeltaValues && !integerType(full):
			problems = append(problems, &connectors.FieldError{Field: connectors.FieldDeltaColumn, Msg: fmt.Sprintf("column %q of %s is %s; windows of integer values (window: N) want smallint, integer, bigint or numeric without scale", req.DeltaColumn, s.cfg.Table, full)})
		case !req.DeltaValues && deltaTypes[typ] == "":
			hint := ""
			if integerType(full) {
				hint = " (for an integer column, give incremental.window as a number of values)"
			}
			problems = append(problems, &connectors.FieldError{Field: connectors.FieldDeltaColumn, Msg: fmt.Sprintf("column %q of %s is %s; want timestamptz, timestamp or date%s", req.DeltaColumn, s.cfg.Table, full, hint)})
		}
	}
	if s.cfg.Where != "" {
		// Planned, not run: a condition that does not fit the table fails.
		if _, err := conn.Exec(ctx, "EXPLAIN SELECT 1 FROM "+s.table.Sanitize()+" WHERE "+s.cfg.Where); err != nil {
			problems = append(problems, &connectors.FieldError{Field: "where", Msg: fmt.Sprintf("not a condition on table %s: %v", s.cfg.Table, err)})
		}
	}
	if err := errors.Join(problems...); err != nil {
		return "", err
	}
	found := fmt.Sprintf("table %s: %d columns", s.cfg.Table, len(cols))
	if key != "" {
		found += ", key " + key
	}
	if rows >= 0 {
		found += fmt.Sprintf(", about %d rows", rows)
	}
	return found, nil
}

// Check looks at where the sink loads (connectors.Checker): that the
// schema exists and the role may create tables in it, and, for a full
// load or a passthrough, that the name readers query is free or the view
// of an earlier load into it (the sink exposes each version through a
// view of that name, which a commit replaces: a view of the user's is
// refused).
func (s *Sink) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	found, err := checkSchema(ctx, conn, s.schema, "table")
	if err != nil {
		return "", err
	}
	if req.Pattern != protocol.PatternFullLoad && req.Pattern != protocol.PatternPassthrough {
		return found, nil
	}
	ok, kind, err := exists(ctx, conn, s.view())
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", s.cfg.Table, err)
	}
	made := false
	if ok && kind == "v" {
		if made, err = s.madeView(ctx, conn); err != nil {
			return "", fmt.Errorf("look up the versions of %s: %w", s.cfg.Table, err)
		}
	}
	switch {
	case ok && kind != "v":
		return "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("%s exists and is not a view: this sink exposes each version through a view of that name; drop it or name another", s.cfg.Table)}
	case ok && !made:
		return "", &connectors.FieldError{Field: "table", Msg: notMadeView(s.cfg.Table)}
	case ok:
		found += fmt.Sprintf("; view %s exists, made by an earlier load", s.cfg.Table)
	default:
		found += fmt.Sprintf("; view %s: created by the first commit", s.cfg.Table)
	}
	return found, nil
}

// checkApplier looks at the target of a cdc_apply pipeline
// (connectors.CDCTarget.Check): its schema, which create_tables may create.
func checkApplier(ctx context.Context, config json.RawMessage, _ connectors.CheckRequest) (string, error) {
	c, err := ParseApplierConfig(config)
	if err != nil {
		return "", err
	}
	conn, err := connect(ctx, c.DSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if c.Schema == "" {
		return "target tables in their source schemas", nil
	}
	found, err := checkSchema(ctx, conn, c.Schema, "schema")
	var fe *connectors.FieldError
	if c.CreateTables && errors.As(err, &fe) && strings.Contains(fe.Msg, "does not exist") {
		return fmt.Sprintf("schema %s: created with the first table (create_tables)", c.Schema), nil
	}
	return found, err
}

// checkSchema checks that schema (the connection's current one when empty)
// exists and the role may create tables in it; field names the
// configuration field that set it.
func checkSchema(ctx context.Context, conn *pgx.Conn, schema, field string) (string, error) {
	if schema == "" {
		if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return "", fmt.Errorf("current schema: %w", err)
		}
	}
	var canCreate bool
	err := conn.QueryRow(ctx, "SELECT has_schema_privilege(nspname, 'CREATE') FROM pg_namespace WHERE nspname = $1", schema).Scan(&canCreate)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", &connectors.FieldError{Field: field, Msg: fmt.Sprintf("schema %s does not exist", schema)}
	case err != nil:
		return "", fmt.Errorf("look up schema %s: %w", schema, err)
	case !canCreate:
		return "", &connectors.FieldError{Field: field, Msg: fmt.Sprintf("the role may not create tables in schema %s", schema)}
	}
	return fmt.Sprintf("schema %s: the role may create tables", schema), nil
}
