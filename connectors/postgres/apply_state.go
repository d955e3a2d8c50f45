package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// What an Applier keeps of each source table, in TablesTable beside
// OffsetsTable: the source's description it last applied, the position of
// the last snapshot of the table it applied, whether the table stopped,
// and (a Parallel applier) the stream sequence up to which its events are
// applied. It is changed in the transactions of the batches, read once per
// connection.

// createStateTables creates the offsets table and the tables table in
// schema when missing.
func (p *Applier) createStateTables(ctx context.Context, schema string) error {
	_, err := p.main.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+p.offsets.Sanitize()+` (
		pipeline text PRIMARY KEY,
		seq bigint NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("create offsets table %s.%s: %w", schema, OffsetsTable, err)
	}
	_, err = p.main.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+p.state.Sanitize()+` (
		pipeline text NOT NULL,
		source_schema text NOT NULL,
		source_table text NOT NULL,
		relation jsonb,
		snapshot_lsn text,
		snapshotting boolean NOT NULL DEFAULT false,
		stopped_seq bigint,
		stopped_error text,
		stopped_at timestamptz,
		applied_seq bigint,
		updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (pipeline, source_schema, source_table))`)
	if err == nil {
		// Made by a build that kept less.
		_, err = p.main.conn.Exec(ctx, `ALTER TABLE `+p.state.Sanitize()+` ADD COLUMN IF NOT EXISTS snapshot_lsn text,
			ADD COLUMN IF NOT EXISTS snapshotting boolean NOT NULL DEFAULT false,
			ADD COLUMN IF NOT EXISTS stopped_seq bigint, ADD COLUMN IF NOT EXISTS stopped_error text,
			ADD COLUMN IF NOT EXISTS stopped_at timestamptz, ADD COLUMN IF NOT EXISTS applied_seq bigint`)
	}
	if err != nil {
		return fmt.Errorf("create tables table %s.%s: %w", schema, TablesTable, err)
	}
	return nil
}

// sourceState is what the Applier keeps of one source table.
type sourceState struct {
	// relation is the source's description last applied; nil when none
	// was.
	relation *protocol.Schema
	// snapshot is the position (LSN) of the last snapshot event applied
	// (protocol.OpSnapshot); 0 when none was.
	snapshot uint64
	// stop is set while the table is stopped.
	stop *protocol.TableStatus
	// snapshotting reports a snapshot under way (after its snapshot
	// event, before its snapshot_done event).
	snapshotting bool
	// applied is the stream sequence up to which a Parallel applier
	// applied the table's events (TablesTable's applied_seq; 0: none).
	// The table's events up to the pipeline's offset are applied too.
	applied uint64
}

// loadStates reads the state of every source table of the pipeline,
// unless it was read on this connection already.
func (p *Applier) loadStates(ctx context.Context, q Querier) error {
	if p.sources != nil {
		return nil
	}
	sources, err := p.readStates(ctx, q)
	if err != nil {
		return err
	}
	p.sources = sources
	return nil
}

// reloadStates reads again the states of the source tables ids (schema
// NUL table), into their entries of p.sources, which exist.
func (p *Applier) reloadStates(ctx context.Context, q Querier, ids []string) error {
	sources, err := p.readStates(ctx, q)
	if err != nil {
		return err
	}
	for _, id := range ids {
		st := sources[id]
		if st == nil {
			st = &sourceState{}
		}
		*p.sources[id] = *st
	}
	return nil
}

// readStates reads the state of every source table of the pipeline.
func (p *Applier) readStates(ctx context.Context, q Querier) (map[string]*sourceState, error) {
	rows, err := q.Query(ctx, `SELECT source_schema, source_table, relation, coalesce(snapshot_lsn, ''), snapshotting,
		stopped_seq, coalesce(stopped_error, ''), coalesce(stopped_at, now()), coalesce(applied_seq, 0)
		FROM `+p.state.Sanitize()+` WHERE pipeline = $1`, p.cfg.Pipeline)
	if err != nil {
		return nil, fmt.Errorf("read the state of the source tables: %w", err)
	}
	sources := map[string]*sourceState{}
	var (
		schema, table, lsn, stopErr string
		rel                         []byte
		stopSeq                     *int64
		stopAt                      time.Time
		snapshotting                bool
		applied                     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&schema, &table, &rel, &lsn, &snapshotting, &stopSeq, &stopErr, &stopAt, &applied}, func() error {
		st := &sourceState{snapshotting: snapshotting, applied: uint64(applied)}
		if len(rel) > 0 {
			if err := json.Unmarshal(rel, &st.relation); err != nil {
				return fmt.Errorf("source table %s.%s: relation: %w", schema, table, err)
			}
		}
		if lsn != "" {
			var err error
			if st.snapshot, err = protocol.ParseLSN(lsn); err != nil {
				return fmt.Errorf("source table %s.%s: snapshot: %w", schema, table, err)
			}
		}
		if stopSeq != nil {
			st.stop = &protocol.TableStatus{Table: schema + "." + table, State: protocol.TableStopped, Error: stopErr, Seq: uint64(*stopSeq), Since: stopAt.UTC()}
		}
		sources[schema+"\x00"+table] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the state of the source tables: %w", err)
	}
	return sources, nil
}

// source returns the state of a source table ("schema NUL table").
func (p *Applier) source(id string) *sourceState {
	st := p.sources[id]
	if st == nil {
		st = &sourceState{}
		p.sources[id] = st
	}
	return st
}

// upsertState sets columns of the state row of a source table, creating it
// when missing; sets is "col = $4, ..." over the values from $4 on.
func (p *Applier) upsertState(ctx context.Context, tx pgx.Tx, schema, table, cols, sets string, args ...any) error {
	vals := make([]string, len(args))
	for i := range args {
		vals[i] = fmt.Sprintf("$%d", i+4)
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+p.state.Sanitize()+` (pipeline, source_schema, source_table, `+cols+`, updated_at)
		VALUES ($1, $2, $3, `+strings.Join(vals, ", ")+`, now())
		ON CONFLICT (pipeline, source_schema, source_table) DO UPDATE SET `+sets+`, updated_at = now()`,
		append([]any{p.cfg.Pipeline, schema, table}, args...)...)
	return err
}

// storeRelation records rel as the last description of t's source table
// applied, in the batch's transaction.
func (p *Applier) storeRelation(ctx context.Context, tx pgx.Tx, t *tableChanges, st *sourceState, rel *protocol.Schema) error {
	b, err := json.Marshal(rel)
	if err != nil {
		return err
	}
	if err := p.upsertState(ctx, tx, t.schema, t.table, "relation", "relation = $4", b); err != nil {
		return fmt.Errorf("store the description of source table %s: %w", t.name(), err)
	}
	st.relation = rel
	return nil
}

// snapshotBegan records, in the batch's transaction, that a snapshot of
// t's source table began at t.snapshot: its later read events of an
// earlier position are left out, and a stopped table goes on.
func (p *Applier) snapshotBegan(ctx context.Context, tx pgx.Tx, t *tableChanges) error {
	lsn := string(protocol.AppendLSN(nil, t.snapshot))
	err := p.upsertState(ctx, tx, t.schema, t.table, "snapshot_lsn, snapshotting",
		"snapshot_lsn = $4, snapshotting = true, stopped_seq = NULL, stopped_error = NULL, stopped_at = NULL", lsn, true)
	if err != nil {
		return fmt.Errorf("record the snapshot of source table %s: %w", t.name(), err)
	}
	st := p.source(t.schema + "\x00" + t.table)
	st.snapshot, st.stop, st.snapshotting = t.snapshot, nil, true
	return nil
}

// snapshotDone records, in the batch's transaction, that the snapshot of
// t's source table under way is complete.
func (p *Applier) snapshotDone(ctx context.Context, tx pgx.Tx, t *tableChanges) error {
	if err := p.upsertState(ctx, tx, t.schema, t.table, "snapshotting", "snapshotting = $4", false); err != nil {
		return fmt.Errorf("record the end of the snapshot of source table %s: %w", t.name(), err)
	}
	p.source(t.schema + "\x00" + t.table).snapshotting = false
	return nil
}

// tableError is an error applying the events of one source table.
type tableError struct {
	schema, table string
	// seq is the stream sequence of the table's first event in the batch:
	// the first not applied when the table stops.
	seq uint64
	// permanent reports an error another attempt would not cure, which
	// stops the table (see isPermanentApply).
	permanent bool
	err       error
}

func (e *tableError) Error() string { return fmt.Sprintf("source table %s: %v", e.name(), e.err) }
func (e *tableError) Unwrap() error { return e.err }
func (e *tableError) name() string  { return e.schema + "." + e.table }
func (e *tableError) id() string    { return e.schema + "\x00" + e.table }

// isPermanentApply reports whether an error applying a table's events
// would come back on every attempt: one marked connectors.Permanent (the
// applier's own checks), or an error of PostgreSQL of the classes data
// exception (22), integrity constraint violation (23), syntax error or
// access rule violation (42: a missing column, a type mismatch, no
// privilege), cardinality violation (21), feature not supported (0A), WITH
// CHECK OPTION violation (44), program limit exceeded (54) or raised by a
// trigger's PL/pgSQL (P0). Lost connections, deadlocks, serialization
// failures, cancellations and other errors are not.
func isPermanentApply(err error) bool {
	if connectors.IsPermanent(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "21", "22", "23", "42", "0A", "44", "54", "P0":
		return true
	}
	return false
}

// recordStop records in the transaction that the table of te stops at its
// sequence.
func (p *Applier) recordStop(ctx context.Context, tx pgx.Tx, te *tableError) error {
	err := p.upsertState(ctx, tx, te.schema, te.table, "stopped_seq, stopped_error, stopped_at",
		"stopped_seq = $4, stopped_error = $5, stopped_at = $6", int64(te.seq), te.err.Error(), time.Now().UTC())
	if err != nil {
		return fmt.Errorf("record the stop of source table %s: %w", te.name(), err)
	}
	p.source(te.id()).stop = &protocol.TableStatus{Table: te.name(), State: protocol.TableStopped, Error: te.err.Error(), Seq: te.seq, Since: time.Now().UTC()}
	return nil
}

// report publishes the stopped tables for TableStatus.
func (p *Applier) report() {
	var out []protocol.TableStatus
	for _, st := range p.sources {
		if st.stop != nil {
			out = append(out, *st.stop)
		}
	}
	slices.SortFunc(out, func(a, b protocol.TableStatus) int { return strings.Compare(a.Table, b.Table) })
	p.mu.Lock()
	p.status = out
	p.mu.Unlock()
}

// TableStatus reports the source tables whose events the Applier no
// longer applies (connectors.TableReporter). It may be called
// concurrently with the other methods.
func (p *Applier) TableStatus() []protocol.TableStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.status)
}
