package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// OffsetsTable is the table in which an Applier keeps each pipeline's applied
// stream sequence: in ApplierConfig.Schema, or in public when that is empty.
const OffsetsTable = "sluice_cdc_offsets"

// ApplierConfig configures an Applier. As the sink of a cdc_apply
// pipeline its configuration is {dsn, schema, create_tables, parallel,
// connections} (ParseApplierConfig); the runner sets Pipeline and Log.
type ApplierConfig struct {
	// DSN of the target database.
	DSN string `json:"dsn"`
	// Schema is the target schema of every table; empty keeps each
	// table's source schema. It also holds the offsets table, which is in
	// public when Schema is empty.
	Schema string `json:"schema,omitempty"`
	// Pipeline is the cdc_apply pipeline's name: the key of its offset row.
	Pipeline string `json:"-"`
	// CreateTables creates a missing target table and a missing Schema;
	// without it a missing table fails the batch. The table gets the
	// source's column types, NOT NULL, defaults and generated columns,
	// and the events' key as primary key, from the description of the
	// source table the events carry (protocol.ChangeEvent.Relation); when
	// they carry none, every column is text.
	CreateTables bool `json:"create_tables,omitempty"`
	// Parallel is "tables" to apply each source table's events on a
	// connection of its own (up to Connections), in a transaction of its
	// own that also stores the table's applied sequence in TablesTable:
	// the tables of a batch are applied at once, each exactly once and in
	// stream order, but a reader of the target may see one table ahead of
	// another (no transaction spans tables, so a foreign key between
	// tables needs the default). Empty (the default) applies a batch in
	// one transaction, in the source's commit order across tables.
	Parallel string `json:"parallel,omitempty"`
	// Connections bounds the connections of a Parallel applier (besides
	// the one that keeps the pipeline's offset); 0 means 4. Tables share
	// a connection when there are more of them.
	Connections int `json:"connections,omitempty"`
	// Log receives schema changes (created tables, added, dropped,
	// renamed and retyped columns); nil discards them.
	Log *slog.Logger `json:"-"`
}

// ParallelTables is the value of ApplierConfig.Parallel that applies each
// source table on its own connection.
const ParallelTables = "tables"

// defaultConnections is the number of connections of a Parallel applier
// when ApplierConfig.Connections is 0.
const defaultConnections = 4

func (c ApplierConfig) connections() int {
	if c.Connections > 0 {
		return c.Connections
	}
	return defaultConnections
}

// Validate checks the configuration without I/O.
func (c ApplierConfig) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("dsn is required"))
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("dsn: %w", err))
	}
	if !protocol.ValidName(c.Pipeline) {
		errs = append(errs, fmt.Errorf("pipeline %q is not a valid name", c.Pipeline))
	}
	if err := c.checkParallel(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ParseApplierConfig decodes the sink configuration of a cdc_apply
// pipeline and checks it without I/O; errors are *connectors.FieldError
// naming the field.
func ParseApplierConfig(config json.RawMessage) (ApplierConfig, error) {
	var c ApplierConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	if err := validateDSN(c.DSN); err != nil {
		return c, err
	}
	if c.Schema != "" {
		if err := checkName(c.Schema, "schema"); err != nil {
			return c, err
		}
	}
	if err := c.checkParallel(); err != nil {
		return c, err
	}
	return c, nil
}

// checkParallel checks Parallel and Connections.
func (c ApplierConfig) checkParallel() error {
	switch {
	case c.Parallel != "" && c.Parallel != ParallelTables:
		return &connectors.FieldError{Field: "parallel", Msg: fmt.Sprintf("want %q or nothing, not %q", ParallelTables, c.Parallel)}
	case c.Connections < 0 || c.Connections > 64:
		return &connectors.FieldError{Field: "connections", Msg: fmt.Sprintf("want 1 to 64, not %d", c.Connections)}
	case c.Connections != 0 && c.Parallel == "":
		return &connectors.FieldError{Field: "connections", Msg: `only with parallel: tables`}
	}
	return nil
}

// ValidateApplier checks the sink configuration of a cdc_apply pipeline
// without I/O.
func ValidateApplier(config json.RawMessage) error {
	_, err := ParseApplierConfig(config)
	return err
}

// openApplier opens the Applier of a cdc_apply pipeline's sink.
func openApplier(ctx context.Context, req connectors.StreamRequest) (connectors.Applier, error) {
	c, err := ParseApplierConfig(req.Config)
	if err != nil {
		return nil, err
	}
	c.Pipeline, c.Log = req.Pipeline, req.Log
	return NewApplier(ctx, c)
}

// Applier applies change events to a PostgreSQL database, one transaction
// per batch together with the pipeline's offset row; with
// ApplierConfig.Parallel, one transaction per connection, each applying
// its tables' events with their applied sequence (see applyParallel). It
// holds one connection, and a Parallel one one more per lane. Its methods
// must not be called concurrently (Run calls them one at a time).
type Applier struct {
	cfg     ApplierConfig
	log     *slog.Logger
	offsets pgx.Identifier // OffsetsTable
	state   pgx.Identifier // TablesTable

	// main is the connection of the pipeline's offset, and the one that
	// applies batches unless Parallel.
	main *session
	// sources holds the state of the source tables (by schema NUL table),
	// as TablesTable records it; nil until read. Lanes change the entries
	// of their own tables only, never the map.
	sources map[string]*sourceState

	// lanes are the connections of a Parallel applier, and laneOf the
	// lane of each source table (by schema NUL table), kept for good.
	lanes  []*session
	laneOf map[string]int

	mu     sync.Mutex
	status []protocol.TableStatus // what TableStatus reports
}

// session is a connection of an Applier with what is known on it.
type session struct {
	conn *pgx.Conn
	// Caches, valid for conn; dropped with it after a failed Apply.
	tables map[string]*targetTable // by target schema NUL table
	stages map[string]bool         // staging tables created on conn
	// stale reports that the states of the lane's source tables may
	// differ from what the Applier holds (a rolled back transaction).
	stale bool
	// noDirect turns copyInserts off, for a batch applied again after it
	// met a key the target holds.
	noDirect bool
	// n counts the source tables of a lane.
	n int
}

// NewApplier connects to the target and creates the offsets table and the
// pipeline's offset row when missing. ctx bounds the setup only.
func NewApplier(ctx context.Context, cfg ApplierConfig) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cdc apply postgres config: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	schema := cfg.Schema
	if schema == "" {
		schema = "public"
	}
	p := &Applier{cfg: cfg, log: log.With("pipeline", cfg.Pipeline), offsets: pgx.Identifier{schema, OffsetsTable}, state: pgx.Identifier{schema, TablesTable},
		main: &session{}, laneOf: map[string]int{}}
	if cfg.Parallel == ParallelTables {
		for range cfg.connections() {
			p.lanes = append(p.lanes, &session{})
		}
	}
	if err := p.connect(ctx, p.main); err != nil {
		return nil, err
	}
	if cfg.CreateTables {
		if _, err := p.main.conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
			p.Close()
			return nil, fmt.Errorf("create schema %q: %w", schema, err)
		}
	}
	if err := p.createStateTables(ctx, schema); err != nil {
		p.Close()
		return nil, err
	}
	// The row exists before the first batch, so Apply always locks it.
	_, err := p.main.conn.Exec(ctx, `INSERT INTO `+p.offsets.Sanitize()+` (pipeline, seq, updated_at) VALUES ($1, 0, now())
		ON CONFLICT (pipeline) DO NOTHING`, cfg.Pipeline)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("insert offset row of %q: %w", cfg.Pipeline, err)
	}
	return p, nil
}

// connect connects s unless it is connected.
func (p *Applier) connect(ctx context.Context, s *session) error {
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	cfg, err := pgx.ParseConfig(p.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect to target: %w", err)
	}
	// A batch's rows and its offset commit together: a commit the server
	// loses in a crash loses both, and the batch is applied again. So
	// commits need not wait for the WAL flush (a subscription's apply
	// worker commits the same way by default).
	cfg.RuntimeParams["synchronous_commit"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to target: %w", err)
	}
	s.conn = conn
	s.forget()
	if s == p.main {
		p.sources = nil
	}
	return nil
}

// forget empties the caches: what they hold may have been rolled back.
func (s *session) forget() {
	s.tables = map[string]*targetTable{}
	s.stages = map[string]bool{}
	s.stale = true
}

// close closes the connection and forgets what was known on it.
func (s *session) close() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.conn.Close(ctx)
		cancel()
	}
	s.conn, s.tables, s.stages = nil, nil, nil
}

// drop closes every connection and forgets what was known on them.
func (p *Applier) drop() {
	p.main.close()
	for _, l := range p.lanes {
		l.close()
	}
	p.sources = nil
}

// Batches of events (connectors.BatchSizer): up to applyBatchEvents, and
// no longer than applyBatchWait to wait for one. A larger batch spares
// commits and round trips; a short wait keeps a replica close behind a
// source that changes little at a time.
const (
	applyBatchEvents = 5000
	applyBatchWait   = 10 * time.Millisecond
)

// BatchSize returns the batches the Applier works best with
// (connectors.BatchSizer).
// A Parallel applier takes batches of applyBatchEvents per lane, up to
// four lanes' worth.
func (p *Applier) BatchSize() (int, time.Duration) {
	if len(p.lanes) > 0 {
		return applyBatchEvents * min(len(p.lanes), 4), applyBatchWait
	}
	return applyBatchEvents, applyBatchWait
}

// ApplyEagerly reports that the Applier takes the messages waiting as a
// batch at once rather than wait for a batch to fill (cdcapply's
// EagerApplier): a batch is one transaction, and a backlog still comes in
// full batches, so a replica follows its source without a wait.
func (p *Applier) ApplyEagerly() bool { return true }

// Close closes the connection.
func (p *Applier) Close() error {
	p.drop()
	return nil
}

// Applied returns the pipeline's offset: the stream sequence of the last
// event applied.
func (p *Applier) Applied(ctx context.Context) (uint64, error) {
	if err := p.connect(ctx, p.main); err != nil {
		return 0, err
	}
	var seq int64
	err := p.main.conn.QueryRow(ctx, "SELECT seq FROM "+p.offsets.Sanitize()+" WHERE pipeline = $1", p.cfg.Pipeline).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read offset of %q: %w", p.cfg.Pipeline, err)
	}
	if p.sources == nil {
		if err := p.loadStates(ctx, p.main.conn); err != nil {
			return 0, err
		}
		p.report()
	}
	return uint64(seq), nil
}

// Apply applies the events after the stored offset in one transaction that
// also stores the last event's sequence. The events of one sequence (one
// message) are applied together or skipped together. A permanent error on
// one source table (a value its target column refuses, a change its
// target cannot follow, an inconsistent stream of it) stops that table
// only: the transaction is rolled back and the batch applied again without
// the table's events, which from then on are skipped, while the table's
// stop (the sequence of its first event not applied, and the error) is
// recorded in TablesTable in the same transaction and reported by
// TableStatus. On any other error nothing of the batch is applied and the
// connection is dropped (the next call reconnects).
func (p *Applier) Apply(ctx context.Context, events []connectors.Event) (err error) {
	if len(events) == 0 {
		return nil
	}
	for i := 1; i < len(events); i++ {
		if events[i].Seq < events[i-1].Seq {
			return fmt.Errorf("events out of order: sequence %d after %d", events[i].Seq, events[i-1].Seq)
		}
	}
	defer func() {
		if err != nil {
			p.drop()
		}
	}()
	if len(p.lanes) > 0 {
		return p.applyParallel(ctx, events)
	}
	return p.applyOn(ctx, p.main, events, nil)
}

// applyOn applies events on s in one transaction (see apply), again
// without the events of a table that met a permanent error.
func (p *Applier) applyOn(ctx context.Context, s *session, events []connectors.Event, lane *laneBatch) error {
	stops := map[string]*tableError{}
	for {
		if err := p.connect(ctx, s); err != nil {
			return err
		}
		err := p.apply(ctx, s, events, stops, lane)
		if errors.Is(err, errDirectConflict) && !s.noDirect && ctx.Err() == nil {
			// Again through staging, which takes rows the target holds.
			p.forget(s)
			s.noDirect = true
			err = p.apply(ctx, s, events, stops, lane)
			s.noDirect = false
		}
		var te *tableError
		if err == nil || !errors.As(err, &te) || !te.permanent || stops[te.id()] != nil || ctx.Err() != nil {
			return err
		}
		// The transaction was rolled back: what it created is gone.
		p.forget(s)
		stops[te.id()] = te
		p.log.Warn("cdc apply: stopping a table on a permanent error, the others go on", "table", te.name(), "seq", te.seq, "err", te.err)
	}
}

// forget forgets what s knows after a transaction on it rolled back: its
// caches, and the states of the source tables it applies (all of them on
// main).
func (p *Applier) forget(s *session) {
	s.forget()
	if s == p.main {
		p.sources = nil
	}
}

// apply applies events in one transaction on s, skipping the tables
// stopped before and those of stops, whose stops it records. Without a
// lane it locks the pipeline's offset row, applies the events after it and
// stores the last one's sequence there; with one, it locks the state rows
// of the lane's tables, applies each table's events after its own applied
// sequence (or the pipeline's offset, when further) and stores the
// batch's last sequence as every one of them's.
func (p *Applier) apply(ctx context.Context, s *session, events []connectors.Event, stops map[string]*tableError, lane *laneBatch) error {
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	var floors map[string]uint64
	if lane != nil {
		if floors, err = p.lockTables(ctx, tx, lane.ids); err != nil {
			return err
		}
		if s.stale {
			if err := p.reloadStates(ctx, tx, lane.ids); err != nil {
				return err
			}
			s.stale = false
		}
	} else {
		var applied int64
		err = tx.QueryRow(ctx, "SELECT seq FROM "+p.offsets.Sanitize()+" WHERE pipeline = $1 FOR UPDATE", p.cfg.Pipeline).Scan(&applied)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("lock offset of %q: %w", p.cfg.Pipeline, err)
		}
		// The first event after the offset (Seq never decreases).
		i, _ := slices.BinarySearchFunc(events, uint64(applied)+1, func(e connectors.Event, s uint64) int {
			switch {
			case e.Seq < s:
				return -1
			case e.Seq > s:
				return 1
			}
			return 0
		})
		events = events[i:]
		if len(events) == 0 {
			return tx.Commit(ctx)
		}
		if err := p.loadStates(ctx, tx); err != nil {
			return err
		}
	}
	for _, te := range stops {
		if err := p.recordStop(ctx, tx, te); err != nil {
			return err
		}
	}
	changes, err := collect(events, func(id string) tableFilter {
		f := tableFilter{skip: stops[id] != nil}
		if st := p.sources[id]; st != nil {
			f.stopped, f.snapshot, f.snapshotting, f.applied = st.stop != nil, st.snapshot, st.snapshotting, st.applied
		}
		if lane != nil {
			f.applied = floors[id]
		}
		return f
	})
	if err != nil {
		return err
	}
	var notes []schemaNote
	uses := map[string]int{} // staging shape -> uses in this transaction
	for _, t := range changes {
		if t.snapshot != 0 {
			if err := p.snapshotBegan(ctx, tx, t); err != nil {
				return err
			}
		}
		tg, n, err := p.prepare(ctx, tx, s, t)
		if err != nil {
			return t.fail(err)
		}
		notes = append(notes, n...)
		if tg == nil {
			continue // a truncate of a table that does not exist yet
		}
		if err := p.applyTable(ctx, tx, s, t, tg, uses); err != nil {
			return t.fail(fmt.Errorf("apply to %s: %w", tg.name, err))
		}
	}
	for _, t := range changes {
		if t.done {
			if err := p.snapshotDone(ctx, tx, t); err != nil {
				return err
			}
		}
	}
	last := events[len(events)-1].Seq
	if lane != nil {
		last = lane.last
		if err := p.storeTables(ctx, tx, lane.ids, last, lane.offset); err != nil {
			return err
		}
	} else {
		_, err = tx.Exec(ctx, `INSERT INTO `+p.offsets.Sanitize()+` (pipeline, seq, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (pipeline) DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at`, p.cfg.Pipeline, int64(last))
		if err != nil {
			return fmt.Errorf("store offset %d: %w", last, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit events %d-%d: %w", events[0].Seq, last, err)
	}
	if lane == nil {
		p.report() // a Parallel applier reports once every lane is done
	}
	for _, n := range notes {
		p.log.Info(n.msg, n.args...)
	}
	return nil
}

// applyTable applies one table's collapsed changes: the truncate, then one
// COPY of the final rows and keys into a staging table, then set-based
// statements in one round trip: fill unchanged (TOAST) and absent values
// from the target, delete the deleted keys, upsert the rest.
func (p *Applier) applyTable(ctx context.Context, tx pgx.Tx, s *session, t *tableChanges, tg *targetTable, uses map[string]int) error {
	if t.truncate {
		if _, err := tx.Exec(ctx, "TRUNCATE "+tg.ident.Sanitize()); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	if len(t.order) == 0 {
		return nil
	}
	if !t.updated && !t.unchanged && !t.absent && !s.noDirect {
		return copyInserts(ctx, tx, t, tg)
	}
	n, k := len(t.cols), len(t.key)
	// A staging table per shape, reused across batches (ON COMMIT DELETE
	// ROWS empties it without catalog changes); a second table of the
	// same shape in one batch gets a second one.
	shape := fmt.Sprintf("%d_%d", n, k)
	stage := fmt.Sprintf("sluice_stage_%s_%d", shape, uses[shape])
	uses[shape]++
	if !s.stages[stage] {
		var defs []string
		for i := 1; i <= n; i++ {
			defs = append(defs, fmt.Sprintf("c%d text", i))
		}
		for i := 1; i <= k; i++ {
			defs = append(defs, fmt.Sprintf("o%d text", i))
		}
		sql := fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (_op text, _u text, %s) ON COMMIT DELETE ROWS", stage, strings.Join(defs, ", "))
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		s.stages[stage] = true
	}
	stage = "pg_temp." + stage

	// Staging rows: _op 'u' (upsert) or 'd' (delete); _u a mask of one
	// character per column ('0' value, '1' unchanged: the origin row's
	// value, '2' absent: the target's current value), empty when all are
	// values; c<i> the values; o<i> the origin key when it differs.
	var buf bytes.Buffer
	var mask []byte
	unchangedCols := map[int]bool{}
	absentCols := map[int]bool{}
	var upserts, deletes int
	var vals bytes.Buffer
	for _, rc := range t.order {
		if rc.deleted {
			deletes++
			buf.WriteString("d\t")
			for _, c := range t.cols {
				buf.WriteByte('\t')
				if j := slices.Index(t.key, c); j >= 0 {
					copyText(&buf, rc.keyVals[j])
				} else {
					buf.WriteString(`\N`)
				}
			}
			for range k {
				buf.WriteString("\t\\N")
			}
			buf.WriteByte('\n')
			continue
		}
		upserts++
		mask = mask[:0]
		flagged := false
		vals.Reset()
		for i, c := range t.cols {
			vals.WriteByte('\t')
			v, ok := rc.row[c]
			switch {
			case !ok:
				mask = append(mask, '2')
				absentCols[i+1] = true
				flagged = true
				vals.WriteString(`\N`)
			case v.Unchanged:
				mask = append(mask, '1')
				unchangedCols[i+1] = true
				flagged = true
				vals.WriteString(`\N`)
			case v.Null:
				mask = append(mask, '0')
				vals.WriteString(`\N`)
			default:
				mask = append(mask, '0')
				copyText(&vals, v.Text)
			}
		}
		buf.WriteString("u\t")
		if flagged {
			buf.Write(mask)
		}
		buf.Write(vals.Bytes())
		sameOrigin := slices.Equal(rc.origin, rc.keyVals)
		for j := range k {
			buf.WriteByte('\t')
			if sameOrigin || !rc.unchanged {
				buf.WriteString(`\N`)
			} else {
				copyText(&buf, rc.origin[j])
			}
		}
		buf.WriteByte('\n')
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, &buf, "COPY "+stage+" FROM STDIN"); err != nil {
		return fmt.Errorf("copy %d rows to staging: %w", len(t.order), err)
	}

	col := func(i int) string { return pgx.Identifier{t.cols[i-1]}.Sanitize() }
	val := func(i int) string { return fmt.Sprintf("s.c%d::%s", i, tg.types[t.cols[i-1]]) }
	keyIdx := make([]int, k) // 1-based staging column of each key column
	for j, kc := range t.key {
		keyIdx[j] = slices.Index(t.cols, kc) + 1
	}
	b := &pgx.Batch{}
	checkUnchanged := -1
	if len(unchangedCols) > 0 {
		var set, on []string
		for _, i := range sortedKeys(unchangedCols) {
			set = append(set, fmt.Sprintf("c%d = CASE WHEN substr(s._u, %d, 1) = '1' THEN o.%s::text ELSE s.c%d END", i, i, col(i), i))
		}
		for j, i := range keyIdx {
			on = append(on, fmt.Sprintf("o.%s = COALESCE(s.o%d, s.c%d)::%s", col(i), j+1, i, tg.types[t.key[j]]))
		}
		b.Queue(fmt.Sprintf("UPDATE %s AS s SET %s, _u = translate(s._u, '1', '0') FROM %s AS o WHERE s._op = 'u' AND strpos(s._u, '1') > 0 AND %s",
			stage, strings.Join(set, ", "), tg.ident.Sanitize(), strings.Join(on, " AND ")))
		var keys []string
		for j, i := range keyIdx {
			keys = append(keys, fmt.Sprintf("COALESCE(s.o%d, s.c%d)", j+1, i))
		}
		if t.snapshotting {
			// The row's chunk of the snapshot under way brings it later.
			b.Queue(fmt.Sprintf("DELETE FROM %s AS s WHERE s._op = 'u' AND strpos(s._u, '1') > 0", stage))
		} else {
			checkUnchanged = b.Len()
			b.Queue(fmt.Sprintf("SELECT ARRAY[%s] FROM %s AS s WHERE s._op = 'u' AND strpos(s._u, '1') > 0 LIMIT 1", strings.Join(keys, ", "), stage))
		}
	}
	if len(absentCols) > 0 {
		var set, on []string
		for _, i := range sortedKeys(absentCols) {
			set = append(set, fmt.Sprintf("c%d = CASE WHEN substr(s._u, %d, 1) = '2' THEN t.%s::text ELSE s.c%d END", i, i, col(i), i))
		}
		for _, i := range keyIdx {
			on = append(on, fmt.Sprintf("t.%s = %s", col(i), val(i)))
		}
		b.Queue(fmt.Sprintf("UPDATE %s AS s SET %s, _u = translate(s._u, '2', '0') FROM %s AS t WHERE s._op = 'u' AND strpos(s._u, '2') > 0 AND %s",
			stage, strings.Join(set, ", "), tg.ident.Sanitize(), strings.Join(on, " AND ")))
	}
	if deletes > 0 {
		var on []string
		for _, i := range keyIdx {
			on = append(on, fmt.Sprintf("t.%s = %s", col(i), val(i)))
		}
		b.Queue(fmt.Sprintf("DELETE FROM %s AS t USING %s AS s WHERE s._op = 'd' AND %s", tg.ident.Sanitize(), stage, strings.Join(on, " AND ")))
	}
	if upserts > 0 {
		var cols, vals, set []string
		for i := 1; i <= n; i++ {
			cols = append(cols, col(i))
			vals = append(vals, val(i))
			if !slices.Contains(t.key, t.cols[i-1]) {
				set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", col(i), col(i)))
			}
		}
		conflict := "DO NOTHING"
		if len(set) > 0 {
			conflict = "DO UPDATE SET " + strings.Join(set, ", ")
		}
		b.Queue(fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s AS s WHERE s._op = 'u' ON CONFLICT (%s) %s",
			tg.ident.Sanitize(), strings.Join(cols, ", "), strings.Join(vals, ", "), stage, idents(t.key), conflict))
	}
	br := tx.SendBatch(ctx, b)
	for i := range b.Len() {
		if i == checkUnchanged {
			var missing []*string
			err := br.QueryRow().Scan(&missing)
			if err == nil {
				br.Close()
				return connectors.Permanent(fmt.Errorf("an update leaves a value unchanged (TOAST) that is in no earlier image of the batch, and the target has no row with key %s to keep it from: the target is missing rows of the source (load a snapshot first)",
					keyText(t.key, missing)))
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				br.Close()
				return fmt.Errorf("check unchanged values: %w", err)
			}
			continue
		}
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
	}
	return br.Close()
}

// errDirectConflict marks a direct COPY of inserts that found a key the
// target holds already (a replica that diverged, a stream applied from
// before the target's rows): the batch is applied again through staging.
var errDirectConflict = errors.New("a direct copy of inserts met a key the target holds")

// copyInserts applies a part of only new rows (inserts, none of them
// leaving a value unchanged or absent) with one COPY straight into the
// target: no staging table, no conflict check. A key the target holds
// already fails it with errDirectConflict.
func copyInserts(ctx context.Context, tx pgx.Tx, t *tableChanges, tg *targetTable) error {
	var buf bytes.Buffer
	rows := 0
	for _, rc := range t.order {
		if rc.deleted {
			continue
		}
		for i, c := range t.cols {
			if i > 0 {
				buf.WriteByte('\t')
			}
			if v := rc.row[c]; v.Null {
				buf.WriteString(`\N`)
			} else {
				copyText(&buf, v.Text)
			}
		}
		buf.WriteByte('\n')
		rows++
	}
	if rows == 0 {
		return nil
	}
	_, err := tx.Conn().PgConn().CopyFrom(ctx, &buf, "COPY "+tg.ident.Sanitize()+" ("+idents(t.cols)+") FROM STDIN")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %v", errDirectConflict, err)
	}
	if err != nil {
		return fmt.Errorf("copy %d inserted rows: %w", rows, err)
	}
	return nil
}

// copyText writes s in COPY's text format: the runs of bytes that need no
// escape written whole.
func copyText(b *bytes.Buffer, s string) {
	start := 0
	for i := 0; i < len(s); i++ {
		i = copyPlain(s, i)
		if i == len(s) {
			break
		}
		c := s[i]
		if c > '\\' || c > '\r' && c != '\\' {
			continue
		}
		var esc string
		switch c {
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		b.WriteString(s[start:i])
		b.WriteString(esc)
		start = i + 1
	}
	b.WriteString(s[start:])
}

// copyPlain returns the index in s, from i on, of the first byte that may
// need an escape in COPY's text format: a byte up to '\r' or a '\\';
// len(s) when there is none. It looks at eight bytes at a time: for bytes
// below n, (x - n per byte) &^ x flags the lowest one exactly (a borrow
// only runs upwards from it), and so for a byte equal to '\\' after an
// exclusive or.
func copyPlain(s string, i int) int {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		y := x ^ ones*'\\'
		if m := ((x-ones*('\r'+1))&^x | (y-ones)&^y) & high; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c <= '\r' || c == '\\' {
			return i
		}
	}
	return i
}

func idents(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(out, ", ")
}

func sortedKeys(m map[int]bool) []int {
	return slices.Sorted(func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

func keyText(key []string, vals []*string) string {
	parts := make([]string, len(key))
	for i, k := range key {
		v := "NULL"
		if i < len(vals) && vals[i] != nil {
			v = strconv.Quote(*vals[i])
		}
		parts[i] = k + "=" + v
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

var _ connectors.Applier = (*Applier)(nil)
