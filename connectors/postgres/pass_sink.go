package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/zeebo/xxh3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

var _ connectors.UnitSink = (*Sink)(nil)

// createPassTable creates table t as the source described it for a
// passthrough (Schema.Native holds its TableDef): the enum types the
// database lacks, then the columns with their native types, collations,
// NOT NULL, defaults and generation expressions; constraints, indexes and
// identity come once the rows are in (TableDef.FinishSQL). A type the
// database lacks and that is no enum fails it, naming the type.
func createPassTable(ctx context.Context, q querier, t pgx.Identifier, s *protocol.Schema) error {
	if s == nil || s.System != Kind || len(s.Columns) == 0 {
		return connectors.Permanent(fmt.Errorf("create %s: a passthrough into PostgreSQL copies a table of a PostgreSQL source, which describes it", t.Sanitize()))
	}
	def, err := DecodeTableDef(s)
	if err != nil {
		return connectors.Permanent(err)
	}
	types, err := def.CreateTypesSQL(ctx, q)
	if err != nil {
		return err
	}
	for _, sql := range types {
		if _, err := q.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	sql, err := CreateTableSQL(t, s, DDLOptions{Generated: true, Collations: def.Collations})
	if err != nil {
		return connectors.Permanent(err)
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create %s: %w", t.Sanitize(), err)
	}
	return nil
}

// OpenUnits starts the output of one task attempt of a passthrough: its
// units, chunks of the source's table in COPY's binary (or text) format,
// go straight into the run's staging table with COPY ... FROM STDIN in
// the same format, undecoded, in one transaction that first removes what
// an earlier attempt of the task staged (as OpenTask's). The staging
// table is made from the source's table definition (createPassTable).
// ctx bounds the opening only.
func (s *Sink) OpenUnits(ctx context.Context, t connectors.TaskRef) (connectors.UnitWriter, error) {
	tw, err := s.OpenTask(ctx, t)
	if err != nil {
		return nil, err
	}
	w := tw.(*taskWriter)
	w.passthrough = true
	return &unitWriter{w}, nil
}

// unitWriter writes the units of one task attempt of a passthrough with
// the task writer's transaction, staging table and task list.
type unitWriter struct{ *taskWriter }

func (w *unitWriter) WriteUnit(ctx context.Context, u connectors.Unit) error {
	if w.ended {
		return errors.New("write after close or abort")
	}
	if w.failed != nil {
		return w.failed
	}
	err := w.writeUnit(ctx, u)
	if err != nil {
		w.failed = err
	}
	return err
}

func (w *unitWriter) writeUnit(ctx context.Context, u connectors.Unit) error {
	if u.Remove || u.Body == nil || len(u.Columns) == 0 || u.Format != formatBinary && u.Format != formatText {
		return connectors.Permanent(fmt.Errorf("%s: unit %s is no chunk of a table in COPY's binary or text format", w.where(), u.Position))
	}
	if w.columns == nil {
		ok, err := w.begin(ctx, u.Columns)
		if err != nil {
			return classify(fmt.Errorf("%s: %w", w.where(), err))
		}
		if !ok {
			return fmt.Errorf("%s: staging table missing", w.where())
		}
		w.columns = u.Columns
	}
	rowsT, _ := w.s.staging(w.ref.RunID)
	cols := make([]string, len(u.Columns))
	for i, c := range u.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	body := &summingReader{r: u.Body, h: xxh3.New()}
	tag, err := w.conn.PgConn().CopyFrom(ctx, body,
		"COPY "+rowsT.Sanitize()+" ("+strings.Join(cols, ", ")+") FROM STDIN WITH (FORMAT "+u.Format+")")
	if err != nil {
		if body.err != nil && !errors.Is(err, body.err) {
			err = fmt.Errorf("%w (reading the source: %w)", err, body.err)
		}
		return classify(fmt.Errorf("%s: copy %s: %w", w.where(), u.Position, err))
	}
	// The sum of a unit's bytes as they passed (a chunk is read the same
	// way each time), counted with its rows.
	w.sum.Merge(connectors.Checksum{Sum: body.h.Sum64(), Rows: tag.RowsAffected()})
	w.bytes += body.n
	return nil
}

// summingReader sums and counts the bytes read through it, and keeps the
// error its reader gave.
type summingReader struct {
	r   io.Reader
	h   *xxh3.Hasher
	n   int64
	err error
}

func (s *summingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// CommitUnits commits a passthrough run as a new version, as Commit does
// a full load's, once the staging table has the source's constraints,
// indexes and identity columns (built after the rows are in, inside the
// commit's transaction): readers see the previous version or this one.
func (s *Sink) CommitUnits(ctx context.Context, req connectors.CommitRequest) (connectors.CommitResult, error) {
	return s.commitRun(ctx, req, true)
}

// AbortUnits drops the staging tables of a passthrough run, as Abort.
func (s *Sink) AbortUnits(ctx context.Context, runID string) error { return s.Abort(ctx, runID) }
