package clickhouse

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// OffsetsTable is the table in which an Applier records each batch it
// makes durable: the pipeline, the stream sequence of the batch's last
// message and the staging tables that hold its rows. It lies in
// ApplierConfig.Database, or in default when that is empty.
const OffsetsTable = "sluice_cdc_offsets"

// ApplierConfig configures an Applier. As the sink of a cdc_apply
// pipeline its configuration is {url, database, settings}
// (ParseApplierConfig); the runner sets Pipeline and Log.
type ApplierConfig struct {
	// URL is the server's HTTP interface, as SinkConfig.URL.
	URL string `json:"url"`
	// Database holds every target table; empty puts each table in the
	// database named after its source schema. Databases are created when
	// missing.
	Database string `json:"database,omitempty"`
	// Settings are ClickHouse settings sent with every request.
	Settings map[string]string `json:"settings,omitempty"`
	// Pipeline is the cdc_apply pipeline's name: the key of its records in
	// OffsetsTable.
	Pipeline string `json:"-"`
	// Log receives schema changes (created tables, added columns); nil
	// discards them.
	Log *slog.Logger `json:"-"`
}

// Validate checks the configuration without I/O.
func (c ApplierConfig) Validate() error {
	if err := validateURL(c.URL); err != nil {
		return err
	}
	if c.Database != "" && !nameRE.MatchString(c.Database) {
		return &connectors.FieldError{Field: "database", Msg: fmt.Sprintf("%q: names are letters, digits and '_'", c.Database)}
	}
	if err := validateSettings(c.Settings); err != nil {
		return err
	}
	if !protocol.ValidName(c.Pipeline) {
		return fmt.Errorf("pipeline %q is not a valid name", c.Pipeline)
	}
	return nil
}

// ParseApplierConfig decodes the sink configuration of a cdc_apply
// pipeline and checks it without I/O; errors are *connectors.FieldError
// naming the field.
func ParseApplierConfig(config json.RawMessage) (ApplierConfig, error) {
	var c ApplierConfig
	if err := connectors.DecodeConfig(config, &c); err != nil {
		return c, err
	}
	check := c
	check.Pipeline = "p" // the runner sets it
	return c, check.Validate()
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

// Applier applies change events to ClickHouse tables that keep every
// version of each row (see the package documentation, CDC apply): a batch
// is written to staging tables, recorded in OffsetsTable (the commit), then
// moved into the target tables. Its methods may be called concurrently;
// the runner calls them one at a time.
type Applier struct {
	cfg       ApplierConfig
	log       *slog.Logger
	cl        *Client
	offsets   string // OffsetsTable, quoted with its database
	stagePref string // starts the names of the pipeline's staging tables

	mu sync.Mutex
	// synced reports that seen is the last record and that the batch it
	// records is in its targets, since the Applier was opened or a call
	// failed.
	synced bool
	seen   uint64
	// leftovers are staging tables of batches that were not recorded
	// (yet) when they were listed, by name, with the last sequence of
	// their batch; each is dropped once a record reaches past it.
	leftovers map[string]leftover
	// Caches, dropped after a failed Apply.
	targets   map[string]*target // by database NUL table
	databases map[string]bool    // created
	// snapshotting holds the source tables (schema NUL table) whose
	// snapshot event this Applier applied and their snapshot_done event
	// not yet: an update leaving a TOAST value unchanged of a row the
	// target lacks is left to the snapshot's chunk (see rows). Not kept
	// anywhere else: an Applier opened since, or after a failed Apply,
	// stops on such an update.
	snapshotting map[string]bool
	// afterStage and afterCommit, when set, run once a batch's staging
	// tables are filled and once its commit record is written: tests
	// simulate crashes there.
	afterStage, afterCommit func() error
}

var (
	_ connectors.Applier    = (*Applier)(nil)
	_ connectors.BatchSizer = (*Applier)(nil)
)

// leftover is a staging table of a batch that no record named.
type leftover struct {
	db  string
	seq uint64
}

// stageMove is one staging table of a batch and the target its rows are
// added to (ATTACH PARTITION).
type stageMove struct {
	DB     string `json:"db"`
	Stage  string `json:"stage"`
	Target string `json:"target"`
}

// note is a schema change, logged once its batch is durable.
type note struct {
	msg  string
	args []any
}

// commitTimeout bounds the commit of a batch and the moves after it, which
// go on when the call's context ends (the batch is then durable, or
// nothing of it is).
const commitTimeout = time.Minute

// NewApplier returns an Applier for a configuration, creating the offsets
// table (and its database) when missing. ctx bounds the setup only.
func NewApplier(ctx context.Context, cfg ApplierConfig) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cdc apply clickhouse config: %w", err)
	}
	cl, err := NewClient(cfg.URL, cfg.Settings)
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := cfg.Database
	if db == "" {
		db = "default"
	}
	a := &Applier{cfg: cfg, log: log.With("pipeline", cfg.Pipeline), cl: cl, offsets: tableIdent(db, OffsetsTable),
		stagePref: "sluice_cdc_" + hash6(db+"\x00"+cfg.Pipeline) + "_",
		targets:   map[string]*target{}, databases: map[string]bool{}, leftovers: map[string]leftover{}}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + quoteIdent(db),
		"CREATE TABLE IF NOT EXISTS " + a.offsets + ` (pipeline String, seq UInt64, moves String, at DateTime)
			ENGINE = ReplacingMergeTree(seq) ORDER BY pipeline`,
	} {
		if err := cl.Exec(ctx, q); err != nil {
			cl.Close()
			return nil, fmt.Errorf("create offsets table %s.%s: %w", db, OffsetsTable, err)
		}
	}
	return a, nil
}

// BatchSize asks the runner for batches of up to 10,000 events, filled
// for up to a second: each batch costs a few statements per table and
// makes a part in each table it touches, so fewer, larger batches keep
// the server's merges ahead.
func (a *Applier) BatchSize() (int, time.Duration) { return 10_000, time.Second }

// Close releases the client's idle connections.
func (a *Applier) Close() error {
	a.cl.Close()
	return nil
}

// Applied returns the stream sequence of the last batch recorded, after
// moving that batch into its targets if a crash left it in its staging
// tables.
func (a *Applier) Applied(ctx context.Context) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sync(ctx)
}

// lastRecord reads the pipeline's last commit record: its sequence (0 when
// there is none) and its moves.
func (a *Applier) lastRecord(ctx context.Context) (uint64, []stageMove, error) {
	rows, err := a.cl.Rows(ctx, "SELECT seq, moves FROM "+a.offsets+" WHERE pipeline = "+quoteString(a.cfg.Pipeline)+" ORDER BY seq DESC LIMIT 1")
	if err != nil {
		return 0, nil, fmt.Errorf("read offset of %q: %w", a.cfg.Pipeline, err)
	}
	if len(rows) == 0 {
		return 0, nil, nil
	}
	if len(rows[0]) != 2 {
		return 0, nil, fmt.Errorf("read offset of %q: a row of %d fields", a.cfg.Pipeline, len(rows[0]))
	}
	seq, err := strconv.ParseUint(string(rows[0][0]), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("read offset of %q: %w", a.cfg.Pipeline, err)
	}
	var moves []stageMove
	if err := json.Unmarshal(rows[0][1], &moves); err != nil {
		return 0, nil, fmt.Errorf("read offset of %q: moves: %w", a.cfg.Pipeline, err)
	}
	return seq, moves, nil
}

// sync returns the sequence of the last record. Opened, after a failed
// call, or finding a record it did not write (another Applier of the
// pipeline, such as the one of a worker that lost the stream's lease,
// still finishing a batch), it first moves that record's staging tables
// that are left into their targets, and lists the pipeline's other staging
// tables: those of batches the record reaches are dropped, those of later
// batches kept as leftovers, since a record may name them yet (a staging
// table is dropped only once no record can name it).
func (a *Applier) sync(ctx context.Context) (uint64, error) {
	seq, moves, err := a.lastRecord(ctx)
	if err != nil {
		return 0, err
	}
	if a.synced && seq == a.seen {
		return seq, nil
	}
	if err := a.move(ctx, moves); err != nil {
		return 0, err
	}
	left, err := a.cl.Rows(ctx, "SELECT database, name FROM system.tables WHERE startsWith(name, "+quoteString(a.stagePref)+")")
	if err != nil {
		return 0, fmt.Errorf("list staging tables: %w", err)
	}
	a.leftovers = map[string]leftover{}
	for _, r := range left {
		n, err := strconv.ParseUint(strings.SplitN(strings.TrimPrefix(string(r[1]), a.stagePref), "_", 2)[0], 10, 64)
		if err != nil {
			continue // not a name of ours
		}
		a.leftovers[string(r[1])] = leftover{db: string(r[0]), seq: n}
	}
	if err := a.dropLeftovers(ctx, seq); err != nil {
		return 0, err
	}
	a.synced, a.seen = true, seq
	return seq, nil
}

// dropLeftovers drops the leftover staging tables of batches at or below
// seq, the last record's sequence: their events are recorded, in other
// staging tables.
func (a *Applier) dropLeftovers(ctx context.Context, seq uint64) error {
	dropped := 0
	for name, l := range a.leftovers {
		if l.seq > seq {
			continue
		}
		if err := a.cl.Exec(ctx, "DROP TABLE IF EXISTS "+tableIdent(l.db, name)); err != nil {
			return fmt.Errorf("drop the staging table of an unrecorded batch: %w", err)
		}
		delete(a.leftovers, name)
		dropped++
	}
	if dropped > 0 {
		a.log.Info("cdc apply clickhouse: dropped the staging tables of batches that were not recorded", "tables", dropped, "offset", seq)
	}
	return nil
}

// move moves each staging table that still exists into its target, then
// drops it. Repeated after a crash, an ATTACH adds the same rows again,
// which the table's FINAL state does not show (equal keys and versions).
// (A move never replaces a table's rows: REPLACE PARTITION on 18.x does
// not stop a merge running in the partition, whose result then brings the
// replaced rows back.)
func (a *Applier) move(ctx context.Context, moves []stageMove) error {
	for _, m := range moves {
		stage := tableIdent(m.DB, m.Stage)
		n, err := a.cl.Int(ctx, "EXISTS TABLE "+stage)
		if err != nil {
			return fmt.Errorf("move %s: %w", stage, err)
		}
		if n == 0 {
			continue // moved before
		}
		if err := a.cl.Exec(ctx, "ALTER TABLE "+tableIdent(m.DB, m.Target)+" ATTACH PARTITION tuple() FROM "+stage); err != nil {
			return fmt.Errorf("move %s into %s.%s: %w", m.Stage, m.DB, m.Target, err)
		}
		if err := a.cl.Exec(ctx, "DROP TABLE IF EXISTS "+stage); err != nil {
			return fmt.Errorf("drop %s: %w", stage, err)
		}
	}
	return nil
}

// Apply makes the events after the last recorded batch durable: it writes
// each table's rows to a staging table of its own, records the batch's last
// sequence with the staging tables (the commit: one INSERT of one row),
// then moves them into their targets. A failure before the record leaves
// nothing of the batch; once the record is written, the batch is durable
// and is finished by this call or, after a crash, by the next call of any
// Applier of the pipeline. A context ending during the record or the moves
// does not stop them.
func (a *Applier) Apply(ctx context.Context, events []connectors.Event) (err error) {
	if len(events) == 0 {
		return nil
	}
	for i := 1; i < len(events); i++ {
		if events[i].Seq < events[i-1].Seq {
			return fmt.Errorf("events out of order: sequence %d after %d", events[i].Seq, events[i-1].Seq)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	defer func() {
		if err != nil {
			a.synced = false
			a.targets = map[string]*target{}
			a.snapshotting = nil
		}
	}()
	applied, err := a.sync(ctx)
	if err != nil {
		return err
	}
	i, _ := slices.BinarySearchFunc(events, applied+1, func(e connectors.Event, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	events = events[i:]
	if len(events) == 0 {
		return nil
	}
	first, last := events[0].Seq, events[len(events)-1].Seq
	tables, err := fold(events, a.snapshotting)
	if err != nil {
		return err
	}

	var moves []stageMove
	recording := false
	defer func() {
		if err == nil || recording {
			return // a batch being recorded keeps its staging tables: the next recovery decides
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, m := range moves {
			a.cl.Exec(dctx, "DROP TABLE IF EXISTS "+tableIdent(m.DB, m.Stage))
		}
	}()
	var token [3]byte
	rand.Read(token[:])
	var notes []note
	for i, t := range tables {
		tg, err := a.prepare(ctx, t, &notes)
		if err != nil {
			return fmt.Errorf("apply to %s: %w", t.name(), err)
		}
		if tg == nil {
			continue
		}
		body, err := a.rows(ctx, t, tg)
		if err != nil {
			return err
		}
		m := stageMove{DB: tg.db, Stage: fmt.Sprintf("%s%d_%s_%d", a.stagePref, last, hex.EncodeToString(token[:]), i), Target: tg.name}
		if err := a.cl.Exec(ctx, "CREATE TABLE "+tableIdent(m.DB, m.Stage)+" AS "+tg.ident()); err != nil {
			return fmt.Errorf("create staging table for %s: %w", tg, err)
		}
		moves = append(moves, m)
		if len(body) > 0 {
			names := append(tg.quotedCols(), colVersion, colIndex, colDeleted)
			q := "INSERT INTO " + tableIdent(m.DB, m.Stage) + " (" + strings.Join(names, ", ") + ") FORMAT TabSeparated"
			if err := a.cl.Insert(ctx, q, bytes.NewReader(body), nil); err != nil {
				return fmt.Errorf("stage %d rows of %s: %w", len(t.touched), tg, err)
			}
		}
		switch {
		case t.truncated:
			// Every row the target holds goes, also those of a snapshot
			// begun in the batch (read before or after the truncate).
			if err := a.stageDeletions(ctx, tg, m.Stage, len(body) > 0, t.truncLSN, t.truncIndex, 0); err != nil {
				return fmt.Errorf("stage the truncate of %s: %w", tg, err)
			}
		case t.snapLSN > 0:
			if err := a.stageDeletions(ctx, tg, m.Stage, len(body) > 0, t.snapLSN, 0, t.snapLSN); err != nil {
				return fmt.Errorf("stage the snapshot of %s: %w", tg, err)
			}
		}
	}
	if a.afterStage != nil {
		if err := a.afterStage(); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err // the last point at which the batch stops whole
	}

	recording = true
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	list, err := json.Marshal(moves)
	if err != nil {
		return err
	}
	if moves == nil {
		list = []byte("[]")
	}
	// The record is written only if the last one is still the one this
	// batch follows: an Applier that lost the stream's lease cannot record
	// over the new holder's records (short of both inserting at the same
	// instant, which the lease keeps from happening).
	pipe := quoteString(a.cfg.Pipeline)
	err = a.cl.Exec(cctx, fmt.Sprintf("INSERT INTO %s (pipeline, seq, moves, at) SELECT %s, %d, %s, now() WHERE (SELECT max(seq) FROM %s WHERE pipeline = %s) = %d",
		a.offsets, pipe, last, quoteString(string(list)), a.offsets, pipe, applied))
	if err == nil {
		var got uint64
		var gotMoves []stageMove
		if got, gotMoves, err = a.lastRecord(cctx); err == nil && (got != last || !slices.Equal(gotMoves, moves)) {
			// Not this batch: another Applier recorded one after the
			// same record, or just after this one. The staging tables
			// stay: whoever reads the records next moves them if this
			// batch was recorded, and drops them once a record passes
			// them if not.
			return fmt.Errorf("record events %d-%d: the pipeline's last record (up to %d) is another Applier's: two Appliers of pipeline %q run at once", first, last, got, a.cfg.Pipeline)
		}
	}
	if err != nil {
		// Whether the server wrote the record is unknown: the next
		// call reads it, and keeps or drops the staging tables
		// accordingly.
		return fmt.Errorf("record events %d-%d: %w", first, last, err)
	}
	a.seen = last
	for _, t := range tables {
		id := t.schema + "\x00" + t.table
		switch {
		case t.snapshotting:
			if a.snapshotting == nil {
				a.snapshotting = map[string]bool{}
			}
			a.snapshotting[id] = true
		case a.snapshotting[id]:
			delete(a.snapshotting, id)
		}
	}
	if a.afterCommit != nil {
		if err := a.afterCommit(); err != nil {
			return err
		}
	}
	for _, n := range notes {
		a.log.Info(n.msg, n.args...)
	}
	if err := a.move(cctx, moves); err != nil {
		// The batch is durable: the next call moves what is left.
		a.synced = false
		a.log.Warn("cdc apply clickhouse: a recorded batch is not in its tables yet; the next call moves it", "last", last, "err", err)
		return nil
	}
	if err := a.dropLeftovers(cctx, last); err != nil {
		a.log.Warn("cdc apply clickhouse: leftover staging tables stay", "err", err)
	}
	return nil
}
