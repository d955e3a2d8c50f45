package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// OffsetsTable is the table in which an Applier keeps each pipeline's applied
// stream sequence: in ApplierConfig.Schema, or in public when that is empty.
const OffsetsTable = "sluice_cdc_offsets"

// ApplierConfig configures an Applier. As the sink of a cdc_apply
// pipeline its configuration is {dsn, schema, create_tables}
// (ParseApplierConfig); the runner sets Pipeline and Log.
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
	// Log receives schema changes (created tables, added, dropped,
	// renamed and retyped columns); nil discards them.
	Log *slog.Logger `json:"-"`
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
	return c, nil
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
// per batch together with the pipeline's offset row. It holds one
// connection. Its methods must not be called concurrently (Run calls them
// one at a time).
type Applier struct {
	cfg     ApplierConfig
	log     *slog.Logger
	offsets pgx.Identifier // OffsetsTable
	state   pgx.Identifier // TablesTable

	conn *pgx.Conn
	// Caches, valid for conn; dropped with it after a failed Apply.
	tables map[string]*targetTable // by target schema NUL table
	stages map[string]bool         // staging tables created on conn
	// sources holds the state of the source tables (by schema NUL table),
	// as TablesTable records it; nil until read on conn.
	sources map[string]*sourceState

	mu     sync.Mutex
	status []protocol.TableStatus // what TableStatus reports
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
	p := &Applier{cfg: cfg, log: log.With("pipeline", cfg.Pipeline), offsets: pgx.Identifier{schema, OffsetsTable}, state: pgx.Identifier{schema, TablesTable}}
	if err := p.connect(ctx); err != nil {
		return nil, err
	}
	if cfg.CreateTables {
		if _, err := p.conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
			p.Close()
			return nil, fmt.Errorf("create schema %q: %w", schema, err)
		}
	}
	if err := p.createStateTables(ctx, schema); err != nil {
		p.Close()
		return nil, err
	}
	// The row exists before the first batch, so Apply always locks it.
	_, err := p.conn.Exec(ctx, `INSERT INTO `+p.offsets.Sanitize()+` (pipeline, seq, updated_at) VALUES ($1, 0, now())
		ON CONFLICT (pipeline) DO NOTHING`, cfg.Pipeline)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("insert offset row of %q: %w", cfg.Pipeline, err)
	}
	return p, nil
}

func (p *Applier) connect(ctx context.Context) error {
	if p.conn != nil && !p.conn.IsClosed() {
		return nil
	}
	conn, err := pgx.Connect(ctx, p.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect to target: %w", err)
	}
	p.conn = conn
	p.forget()
	return nil
}

// forget empties the caches: what they hold may have been rolled back.
func (p *Applier) forget() {
	p.tables = map[string]*targetTable{}
	p.stages = map[string]bool{}
	p.sources = nil
}

// drop closes the connection and forgets what was known on it.
func (p *Applier) drop() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.conn.Close(ctx)
		cancel()
	}
	p.conn, p.tables, p.sources, p.stages = nil, nil, nil, nil
}

// Close closes the connection.
func (p *Applier) Close() error {
	p.drop()
	return nil
}

// Applied returns the pipeline's offset: the stream sequence of the last
// event applied.
func (p *Applier) Applied(ctx context.Context) (uint64, error) {
	if err := p.connect(ctx); err != nil {
		return 0, err
	}
	var seq int64
	err := p.conn.QueryRow(ctx, "SELECT seq FROM "+p.offsets.Sanitize()+" WHERE pipeline = $1", p.cfg.Pipeline).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read offset of %q: %w", p.cfg.Pipeline, err)
	}
	if p.sources == nil {
		if err := p.loadStates(ctx, p.conn); err != nil {
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
	stops := map[string]*tableError{}
	for {
		if err := p.connect(ctx); err != nil {
			return err
		}
		err := p.apply(ctx, events, stops)
		var te *tableError
		if err == nil || !errors.As(err, &te) || !te.permanent || stops[te.id()] != nil || ctx.Err() != nil {
			return err
		}
		// The transaction was rolled back: what it created is gone.
		p.forget()
		stops[te.id()] = te
		p.log.Warn("cdc apply: stopping a table on a permanent error, the others go on", "table", te.name(), "seq", te.seq, "err", te.err)
	}
}

// apply applies events in one transaction, skipping the tables stopped
// before and those of stops, whose stops it records.
func (p *Applier) apply(ctx context.Context, events []connectors.Event, stops map[string]*tableError) error {
	tx, err := p.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
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
	for _, te := range stops {
		if err := p.recordStop(ctx, tx, te); err != nil {
			return err
		}
	}
	changes, err := collect(events, func(id string) tableFilter {
		f := tableFilter{skip: stops[id] != nil}
		if st := p.sources[id]; st != nil {
			f.stopped, f.snapshot = st.stop != nil, st.snapshot
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
		tg, n, err := p.prepare(ctx, tx, t)
		if err != nil {
			return t.fail(err)
		}
		notes = append(notes, n...)
		if tg == nil {
			continue // a truncate of a table that does not exist yet
		}
		if err := p.applyTable(ctx, tx, t, tg, uses); err != nil {
			return t.fail(fmt.Errorf("apply to %s: %w", tg.name, err))
		}
	}
	last := events[len(events)-1].Seq
	_, err = tx.Exec(ctx, `INSERT INTO `+p.offsets.Sanitize()+` (pipeline, seq, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (pipeline) DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at`, p.cfg.Pipeline, int64(last))
	if err != nil {
		return fmt.Errorf("store offset %d: %w", last, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit events %d-%d: %w", events[0].Seq, last, err)
	}
	p.report()
	for _, n := range notes {
		p.log.Info(n.msg, n.args...)
	}
	return nil
}

// applyTable applies one table's collapsed changes: the truncate, then one
// COPY of the final rows and keys into a staging table, then set-based
// statements in one round trip: fill unchanged (TOAST) and absent values
// from the target, delete the deleted keys, upsert the rest.
func (p *Applier) applyTable(ctx context.Context, tx pgx.Tx, t *tableChanges, tg *targetTable, uses map[string]int) error {
	if t.truncate {
		if _, err := tx.Exec(ctx, "TRUNCATE "+tg.ident.Sanitize()); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	if len(t.order) == 0 {
		return nil
	}
	n, k := len(t.cols), len(t.key)
	// A staging table per shape, reused across batches (ON COMMIT DELETE
	// ROWS empties it without catalog changes); a second table of the
	// same shape in one batch gets a second one.
	shape := fmt.Sprintf("%d_%d", n, k)
	stage := fmt.Sprintf("sluice_stage_%s_%d", shape, uses[shape])
	uses[shape]++
	if !p.stages[stage] {
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
		p.stages[stage] = true
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
			if sameOrigin || !hasUnchanged(rc.row) {
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
		checkUnchanged = b.Len()
		b.Queue(fmt.Sprintf("SELECT ARRAY[%s] FROM %s AS s WHERE s._op = 'u' AND strpos(s._u, '1') > 0 LIMIT 1", strings.Join(keys, ", "), stage))
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

// copyText writes s in COPY's text format.
func copyText(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
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
