package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Sink loads full loads into versioned tables behind one view. See the
// package documentation for the tables it keeps.
type Sink struct {
	cfg    SinkConfig
	schema string // empty when the table is not schema-qualified
	name   string
}

var _ connectors.Sink = (*Sink)(nil)

// NewSink returns a sink for a validated configuration. It connects only
// when it writes, commits or aborts; it holds no connection in between.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, _ := parseTable(cfg.Table, "table", maxBaseName)
	s := &Sink{cfg: cfg, name: t[len(t)-1]}
	if len(t) == 2 {
		s.schema = t[0]
	}
	return s, nil
}

// openSink is the connectors.SinkFactory of the kind.
func openSink(_ context.Context, config json.RawMessage) (connectors.Sink, error) {
	cfg, err := ParseSinkConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSink(cfg)
}

// OpenTask connects and starts the output of one task attempt. The rows go
// to the run's staging table with COPY ... FROM STDIN, in one transaction
// that first deletes what an earlier attempt of the same task staged, so a
// retried task replaces exactly its own rows. Attempts of one task are
// serialized by an advisory lock. ctx bounds the opening only.
func (s *Sink) OpenTask(ctx context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return nil, err
	}
	done, err := s.committedRun(ctx, conn, t.RunID)
	if err == nil && done {
		err = connectors.Permanent(fmt.Errorf("run %s is already committed to %s", t.RunID, s.cfg.Table))
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("open task %s of %s: %w", t.TaskID, s.cfg.Table, err)
	}
	return &taskWriter{s: s, ref: t, conn: conn}, nil
}

// committedRun reports whether runID is recorded as a committed version
// or a committed window.
func (s *Sink) committedRun(ctx context.Context, q querier, runID string) (bool, error) {
	for _, t := range []pgx.Identifier{s.versions(), s.windows()} {
		ok, _, err := exists(ctx, q, t)
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		var n int
		if err := q.QueryRow(ctx, "SELECT count(*) FROM "+t.Sanitize()+" WHERE table_name = $1 AND run = $2", s.name, runID).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Commit publishes a run. A full load becomes version req.Version in one
// transaction: the staging table becomes <table>_v<N> (by renaming, without
// copying rows), the view <table> selects from it, sluice_versions records
// it, and versions beyond keep_versions are dropped (see commit). An
// incremental run in ModeAppend replaces its window's rows of the one table
// <table> (see commitWindow). Each task's staged row count must match its
// TaskOutput. A commit repeated with the same run finds it recorded and
// changes nothing.
func (s *Sink) Commit(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	return s.commitRun(ctx, req, false)
}

// commitRun commits a run (see Commit); a passthrough's (pass) as a
// version with the source's table definition.
func (s *Sink) commitRun(ctx context.Context, req connectors.CommitRequest, pass bool) (connectors.CommitResult, error) {
	res := connectors.CommitResult{Location: s.cfg.Table}
	if req.Version <= 0 && req.Mode != connectors.ModeAppend {
		return res, connectors.Permanent(fmt.Errorf("commit run %s to %s: version %d is not positive", req.RunID, s.cfg.Table, req.Version))
	}
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	if req.Mode == connectors.ModeAppend && !pass {
		if err := s.commitWindow(ctx, conn, req); err != nil {
			return res, classify(fmt.Errorf("commit run %s to %s for window %v: %w", req.RunID, s.cfg.Table, req.Window, err))
		}
		return res, nil
	}
	if err := s.commit(ctx, conn, req, pass); err != nil {
		return res, classify(fmt.Errorf("commit run %s to %s as version %d: %w", req.RunID, s.cfg.Table, req.Version, err))
	}
	return res, nil
}

// Abort drops the staging tables of a run; the exposed version stays.
func (s *Sink) Abort(ctx context.Context, runID string) error {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rowsT, tasksT := s.staging(runID)
	// A task attempt aborted just before may still hold its staging
	// locks: its server process ends after the client closed the
	// connection. Should the DROP and it deadlock, PostgreSQL cancels one
	// of them, and the DROP is tried again.
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, "DROP TABLE IF EXISTS "+rowsT.Sanitize()+", "+tasksT.Sanitize())
		var pe *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pe) || pe.Code != "40P01" {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return classify(fmt.Errorf("abort run %s of %s: %w", runID, s.cfg.Table, err))
	}
	return nil
}

// Close does nothing: the sink holds no connection between calls.
func (s *Sink) Close() error { return nil }

// versionsTable is the bookkeeping table of the versioned loads of a
// schema.
const versionsTable = "sluice_versions"

// windowsTable is the bookkeeping table of the incremental (append) loads
// of a schema: one row per committed run and its window.
const windowsTable = "sluice_windows"

// ident returns a table name in the sink's schema.
func (s *Sink) ident(name string) pgx.Identifier {
	if s.schema == "" {
		return pgx.Identifier{name}
	}
	return pgx.Identifier{s.schema, name}
}

func (s *Sink) view() pgx.Identifier     { return s.ident(s.name) }
func (s *Sink) template() pgx.Identifier { return s.ident(s.name + "_template") }
func (s *Sink) versions() pgx.Identifier { return s.ident(versionsTable) }
func (s *Sink) windows() pgx.Identifier  { return s.ident(windowsTable) }

// versionTable is the table of version n.
func (s *Sink) versionTable(n int64) pgx.Identifier {
	return s.ident(s.name + "_v" + strconv.FormatInt(n, 10))
}

// staging is the staging table of a run; staging+"_t" lists its tasks.
func (s *Sink) staging(runID string) (rows, tasks pgx.Identifier) {
	h := sha256.Sum256([]byte(runID))
	base := s.name + "__stg_" + hex.EncodeToString(h[:6])
	return s.ident(base), s.ident(base + "_t")
}

// lockSQL is the statement that takes the transaction's advisory lock on a
// name.
func lockSQL(what string) string {
	return "SELECT pg_advisory_xact_lock(hashtextextended(" + quoteLiteral("sluice:"+what) + ", 0))"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// exists tells whether a relation exists, and its kind.
func exists(ctx context.Context, q querier, t pgx.Identifier) (bool, string, error) {
	var kind *string
	err := q.QueryRow(ctx, "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1))", t.Sanitize()).Scan(&kind)
	if err != nil {
		return false, "", err
	}
	if kind == nil {
		return false, "", nil
	}
	return true, *kind, nil
}

// Querier is what the package's functions that take a database need of it:
// a *pgx.Conn or a pgx.Tx.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

type querier = Querier

// tableColumns lists the columns of a table in order.
func tableColumns(ctx context.Context, q querier, t pgx.Identifier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT attname FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, t.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// createTable creates a table with the data columns of a version: the
// configured columns, else a copy of <table>_template's definition, else
// the given columns (all of the run's schema when none are given) with
// their types in the run's schema (typed DDL, without a primary key: see
// CreateTableSQL), else the given columns as text. It returns false when
// none of these is known.
func (s *Sink) createTable(ctx context.Context, q querier, t pgx.Identifier, columns []string, schema *protocol.Schema) (bool, error) {
	var sql string
	switch {
	case len(s.cfg.Columns) > 0:
		defs := make([]string, len(s.cfg.Columns))
		for i, c := range s.cfg.Columns {
			defs[i] = pgx.Identifier{c.Name}.Sanitize() + " " + c.Type
		}
		sql = "CREATE TABLE " + t.Sanitize() + " (" + strings.Join(defs, ", ") + ")"
	default:
		ok, _, err := exists(ctx, q, s.template())
		if err != nil {
			return false, err
		}
		if ok {
			sql = "CREATE TABLE " + t.Sanitize() + " (LIKE " + s.template().Sanitize() +
				" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING COMMENTS)"
			break
		}
		// An incremental target that is a table already: stage in its
		// shape (a full load's target is a view, never a table).
		ok, kind, err := exists(ctx, q, s.view())
		if err != nil {
			return false, err
		}
		if ok && (kind == "r" || kind == "p") && !slices.Equal(t, s.view()) {
			sql = "CREATE TABLE " + t.Sanitize() + " (LIKE " + s.view().Sanitize() + " INCLUDING DEFAULTS)"
			break
		}
		if typed := schemaOf(schema, columns); typed != nil {
			if err := CreateTable(ctx, q, t, typed, DDLOptions{}); err != nil {
				return false, err
			}
			return true, nil
		}
		if len(columns) == 0 {
			return false, nil
		}
		defs := make([]string, len(columns))
		for i, c := range columns {
			defs[i] = pgx.Identifier{c}.Sanitize() + " text"
		}
		sql = "CREATE TABLE " + t.Sanitize() + " (" + strings.Join(defs, ", ") + ")"
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		return false, fmt.Errorf("create %s: %w", t.Sanitize(), err)
	}
	return true, nil
}

// schemaOf is the part of a run's schema that describes columns, in their
// order (all of its columns when columns is empty); nil when there is no
// schema or it lacks one of columns.
func schemaOf(schema *protocol.Schema, columns []string) *protocol.Schema {
	if schema == nil || len(schema.Columns) == 0 {
		return nil
	}
	if len(columns) == 0 {
		return schema
	}
	out := &protocol.Schema{System: schema.System}
	for _, name := range columns {
		c, ok := schema.Column(name)
		if !ok {
			return nil
		}
		out.Columns = append(out.Columns, c)
	}
	return out
}
