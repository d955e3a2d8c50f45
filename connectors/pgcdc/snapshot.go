package pgcdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// ErrSlotExists is wrapped by CreateSlotWithSnapshot when the slot already
// exists: its exported snapshot would not match the slot's position.
var ErrSlotExists = errors.New("replication slot already exists")

// ExportedSlot is a logical replication slot (pgoutput) just created with an
// exported snapshot. Snapshot sees exactly the transactions committed before
// ConsistentLSN, and the slot streams exactly those committed after it, so a
// snapshot read on Snapshot followed by the slot's stream misses and repeats
// nothing. The snapshot lives only while the replication connection that
// created the slot stays open and idle: ExportedSlot keeps it so until
// Close. Close may be called concurrently with anything and more than once.
type ExportedSlot struct {
	Slot string
	// Snapshot is the exported snapshot's name, for SET TRANSACTION
	// SNAPSHOT.
	Snapshot string
	// ConsistentLSN is the slot's consistent point, as 0/16B3748.
	ConsistentLSN string

	mu   sync.Mutex
	conn *pgconn.PgConn
}

// CreateSlotWithSnapshot creates slot on a replication connection
// (replication=database) with CREATE_REPLICATION_SLOT ... LOGICAL pgoutput
// EXPORT_SNAPSHOT and keeps that connection open and idle, holding the
// snapshot, until Close. A slot that already exists fails with an error
// wrapping ErrSlotExists. Creating a slot waits for the transactions running
// at that moment to finish; ctx bounds the creation only.
func CreateSlotWithSnapshot(ctx context.Context, dsn, slot string) (*ExportedSlot, error) {
	if !slotNameRE.MatchString(slot) {
		return nil, connectors.Permanent(fmt.Errorf("create slot %q: want 1-63 of [a-z0-9_]", slot))
	}
	pcfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("create slot %q: parse dsn: %w", slot, err))
	}
	pcfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("create slot %q: replication connect: %w", slot, err)
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT",
	})
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return nil, fmt.Errorf("create slot %q: %w", slot, ErrSlotExists)
		}
		return nil, fmt.Errorf("create slot %q with an exported snapshot: %w", slot, err)
	}
	return &ExportedSlot{Slot: slot, Snapshot: res.SnapshotName, ConsistentLSN: res.ConsistentPoint, conn: conn}, nil
}

// Close ends the replication connection, and with it the exported snapshot.
// The slot stays, at ConsistentLSN.
func (e *ExportedSlot) Close() error {
	e.mu.Lock()
	conn := e.conn
	e.conn = nil
	e.mu.Unlock()
	if conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A command on the connection ends the exported snapshot before its
	// reply; closing alone ends it when the server gets round to it. An
	// error means the connection is gone already.
	_, _ = pglogrepl.IdentifySystem(ctx, conn)
	return conn.Close(ctx)
}

// SnapshotKind is the kind of the snapshot source connector.
const SnapshotKind = "postgres_cdc_snapshot"

// SnapshotConfig configures the snapshot source: the initial snapshot of a
// CDC pipeline's tables, consistent with the slot its Reader then streams.
type SnapshotConfig struct {
	// DSN of the source database, as for Config.
	DSN string `json:"dsn"`
	// Tables lists the tables as "schema.table", as for Config.
	Tables []string `json:"tables"`
	// Slot and Publication are the CDC pipeline's; Plan creates the slot,
	// which must not exist yet, and creates or updates the publication.
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// TargetRows is the number of rows a chunk (a task) should read,
	// roughly; 0 means the run's partitioning, else the postgres source's
	// default.
	TargetRows int `json:"target_rows,omitempty"`
	// ReplaceSlot lets Plan drop an existing slot that no walsender uses
	// and create it again with a new snapshot. The coordinator sets it for
	// a pipeline that never streamed: its slot, if any, is what an
	// earlier snapshot attempt left behind.
	ReplaceSlot bool `json:"replace_slot,omitempty"`
}

// Validate checks the configuration without I/O. Errors are
// *connectors.FieldError naming the field.
func (c SnapshotConfig) Validate() error {
	if err := (SourceConfig{DSN: c.DSN, Tables: c.Tables}).Validate(); err != nil {
		return err
	}
	if !slotNameRE.MatchString(c.Slot) {
		return &connectors.FieldError{Field: "slot", Msg: fmt.Sprintf("slot %q: want 1-63 of [a-z0-9_]", c.Slot)}
	}
	if !slotNameRE.MatchString(c.Publication) {
		return &connectors.FieldError{Field: "publication", Msg: fmt.Sprintf("publication %q: want 1-63 of [a-z0-9_]", c.Publication)}
	}
	if c.TargetRows < 0 {
		return &connectors.FieldError{Field: "target_rows", Msg: "must not be negative (0 means the default)"}
	}
	return nil
}

// ParseSnapshotConfig decodes and validates a snapshot source
// configuration; unknown fields are errors.
func ParseSnapshotConfig(config json.RawMessage) (SnapshotConfig, error) {
	var c SnapshotConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateSnapshotConfig checks a snapshot source configuration without I/O.
func ValidateSnapshotConfig(config json.RawMessage) error {
	_, err := ParseSnapshotConfig(config)
	return err
}

// SnapshotSource reads the initial snapshot of a CDC pipeline's tables as
// bounded chunk tasks. Plan (the coordinator leader, once per run) creates
// the slot with an exported snapshot and holds it until ReleaseRun or
// Close; Read (workers, concurrently for different partitions, again for a
// retried one) reads one chunk of one table on that snapshot. Its rows go to
// the sluice_cdc sink (EventsSink), which publishes them as read events.
type SnapshotSource struct {
	cfg SnapshotConfig

	mu   sync.Mutex
	runs map[string]*ExportedSlot
}

var (
	_ connectors.Source    = (*SnapshotSource)(nil)
	_ connectors.RunHolder = (*SnapshotSource)(nil)
)

// NewSnapshotSource returns a snapshot source for a valid configuration. It
// connects only when it plans or reads.
func NewSnapshotSource(cfg SnapshotConfig) (*SnapshotSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &SnapshotSource{cfg: cfg, runs: map[string]*ExportedSlot{}}, nil
}

// snapshotSpec is the Spec of a snapshot partition: one chunk of one table,
// with what its read events carry.
type snapshotSpec struct {
	V        int       `json:"v"`
	Database string    `json:"database"`
	Schema   string    `json:"schema"`
	Table    string    `json:"table"`
	Key      []string  `json:"key,omitempty"`
	LSN      string    `json:"lsn"`
	Time     time.Time `json:"time"`
	// Chunk and Inner are the key and the spec of the postgres source's
	// partition.
	Chunk string          `json:"chunk"`
	Inner json.RawMessage `json:"inner"`
	// Relation describes the table from the catalog, with the key of its
	// events; the first row of the chunk carries it.
	Relation *protocol.Schema `json:"relation,omitempty"`
}

// Plan creates or updates the publication, creates the slot with an
// exported snapshot, and plans every table's chunks on that snapshot (with
// postgres.Source.PlanSnapshot): the chunks read the columns pgoutput sends
// (all but generated ones), and their read events get the key columns the
// Reader gives the table's change events. It returns one partition per
// chunk, keyed "<schema>.<table> <chunk>", with the slot's consistent LSN as
// the watermark, and holds the snapshot until ReleaseRun(req.RunID) or
// Close. A slot that already exists is a permanent error: a snapshot must
// start with its slot. When planning fails after the slot was created, Plan
// drops the slot again, so that the run can be planned anew. ctx bounds the
// planning only.
func (s *SnapshotSource) Plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	conn, err := pgx.Connect(ctx, s.cfg.DSN)
	if err != nil {
		return connectors.Plan{}, fmt.Errorf("plan snapshot: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var database string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return connectors.Plan{}, fmt.Errorf("plan snapshot: current database: %w", err)
	}
	shapes := make(map[string]tableShape, len(s.cfg.Tables))
	for i, t := range s.cfg.Tables {
		sh, err := shapeOf(ctx, conn, t)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
				return connectors.Plan{}, &connectors.FieldError{Field: fmt.Sprintf("tables[%d]", i), Msg: fmt.Sprintf("table %s does not exist", t)}
			}
			return connectors.Plan{}, fmt.Errorf("plan snapshot: %w", err)
		}
		shapes[t] = sh
	}
	if err := ensurePublication(ctx, conn, Config{Tables: s.cfg.Tables, Publication: s.cfg.Publication}); err != nil {
		return connectors.Plan{}, fmt.Errorf("plan snapshot: %w", err)
	}
	slot, err := CreateSlotWithSnapshot(ctx, s.cfg.DSN, s.cfg.Slot)
	if errors.Is(err, ErrSlotExists) && s.cfg.ReplaceSlot {
		if derr := DropSlot(ctx, s.cfg.DSN, s.cfg.Slot, ""); derr != nil {
			return connectors.Plan{}, fmt.Errorf("plan snapshot: replace the slot an earlier snapshot left: %w", derr)
		}
		slot, err = CreateSlotWithSnapshot(ctx, s.cfg.DSN, s.cfg.Slot)
	}
	if errors.Is(err, ErrSlotExists) {
		return connectors.Plan{}, connectors.Permanent(fmt.Errorf(
			"plan snapshot: %w: a snapshot must start with its slot (drop the slot to take a new snapshot, or stream it without one)", err))
	}
	if err != nil {
		return connectors.Plan{}, fmt.Errorf("plan snapshot: %w", err)
	}
	held := false
	defer func() {
		if held {
			return
		}
		slot.Close()
		// Best effort: a slot left behind fails the next plan, clearly.
		dropCreatedSlot(context.WithoutCancel(ctx), s.cfg.DSN, s.cfg.Slot)
	}()
	planned := time.Now().UTC()
	preq := req
	preq.Window, preq.DeltaColumn = nil, "" // a snapshot reads whole tables
	if s.cfg.TargetRows > 0 {
		preq.Partitioning.TargetRows = int64(s.cfg.TargetRows)
	}
	plan := connectors.Plan{Watermark: slot.ConsistentLSN}
	for _, t := range s.cfg.Tables {
		src, err := postgres.NewSource(postgres.SourceConfig{DSN: s.cfg.DSN, Table: t, Columns: shapes[t].columns})
		if err != nil {
			return connectors.Plan{}, err
		}
		inner, err := src.PlanSnapshot(ctx, preq, slot.Snapshot)
		if err != nil {
			return connectors.Plan{}, fmt.Errorf("plan snapshot: %w", err)
		}
		schema, table, _ := splitTable(t)
		for _, p := range inner.Partitions {
			spec, err := json.Marshal(snapshotSpec{
				V: 1, Database: database, Schema: schema, Table: table, Key: shapes[t].key,
				LSN: slot.ConsistentLSN, Time: planned, Chunk: p.Key, Inner: p.Spec, Relation: shapes[t].relation,
			})
			if err != nil {
				return connectors.Plan{}, err
			}
			plan.Partitions = append(plan.Partitions, protocol.Partition{Key: t + " " + p.Key, Group: t, Spec: spec, Rows: p.Rows, Bytes: p.Bytes})
		}
	}
	s.mu.Lock()
	old := s.runs[req.RunID]
	s.runs[req.RunID] = slot
	s.mu.Unlock()
	held = true
	if old != nil {
		old.Close()
	}
	return plan, nil
}

// dropCreatedSlot drops a slot just created, retrying for a few seconds
// while the walsender that created it is still exiting.
func dropCreatedSlot(ctx context.Context, dsn, slot string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := DropSlot(ctx, dsn, slot, "")
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tableShape is what the read events of a table need to look like its
// change events.
type tableShape struct {
	// key lists the key columns the Reader gives the table's events: the
	// primary key (in key order) under REPLICA IDENTITY FULL, or every
	// column without one; else the replica identity columns (the primary
	// key under DEFAULT, the index's under USING INDEX), in column order.
	key []string
	// columns lists the columns pgoutput sends: all but generated ones.
	columns []string
	// relation describes the table (every column, generated ones
	// included) with key as its key: what the read events carry.
	relation *protocol.Schema
}

// shapeOf looks up the key and the columns of table ("schema.table").
func shapeOf(ctx context.Context, conn *pgx.Conn, table string) (tableShape, error) {
	var sh tableShape
	var oid uint32
	var ident string
	err := conn.QueryRow(ctx, "SELECT oid, relreplident::text FROM pg_class WHERE oid = $1::regclass", quoteQualified(table)).Scan(&oid, &ident)
	if err != nil {
		return sh, fmt.Errorf("look up %s: %w", table, err)
	}
	list := func(what, sql string) ([]string, error) {
		rows, err := conn.Query(ctx, sql, oid)
		if err != nil {
			return nil, fmt.Errorf("%s of %s: %w", what, table, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("%s of %s: %w", what, table, err)
		}
		return names, nil
	}
	const indexColumns = `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND `
	if sh.columns, err = list("columns", `SELECT attname FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`); err != nil {
		return sh, err
	}
	switch ident {
	case "d":
		sh.key, err = list("primary key", indexColumns+"i.indisprimary ORDER BY a.attnum")
	case "i":
		sh.key, err = list("replica identity", indexColumns+"i.indisreplident ORDER BY a.attnum")
	case "f":
		sh.key, err = list("primary key", indexColumns+"i.indisprimary ORDER BY array_position(i.indkey, a.attnum)")
		if err == nil && len(sh.key) == 0 {
			sh.key = sh.columns
		}
	}
	if err != nil {
		return sh, err
	}
	if sh.relation, err = postgres.DescribeTable(ctx, conn, oid, nil); err != nil {
		return sh, fmt.Errorf("describe %s: %w", table, err)
	}
	sh.relation.Key = sh.key
	return sh, nil
}

// Read reads one chunk on the run's snapshot and emits its rows as JSONL
// batches of about 1 MiB, in the same order on every read. Each line is a
// SnapshotRow: the row (column to text value or null, as protocol.Row) with
// the table, key columns, consistent LSN, chunk and 1-based row number the
// sluice_cdc sink needs to publish it as a read event; the first line is
// the chunk's Begin line (a chunk without rows emits it alone). A snapshot
// that is gone (the run was released, or the
// leader that planned it stopped) fails with a permanent error wrapping
// postgres.ErrSnapshotGone: the run must start again with a new slot. ctx
// bounds the whole read.
func (s *SnapshotSource) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	var spec snapshotSpec
	if err := json.Unmarshal(p.Spec, &spec); err != nil {
		return connectors.Permanent(fmt.Errorf("read snapshot %s: bad partition spec: %w", p.Key, err))
	}
	if spec.V != 1 {
		return connectors.Permanent(fmt.Errorf("read snapshot %s: partition spec version %d is not one this build reads", p.Key, spec.V))
	}
	table := spec.Schema + "." + spec.Table
	if !slices.Contains(s.cfg.Tables, table) {
		return connectors.Permanent(fmt.Errorf("read snapshot %s: table %s is not one of the source's tables", p.Key, table))
	}
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: s.cfg.DSN, Table: table})
	if err != nil {
		return err
	}
	enc, err := newRowEncoder(spec)
	if err != nil {
		return err
	}
	position := table + " " + spec.Chunk
	var (
		buf   []byte
		sum   connectors.Checksum
		n     int64 // rows read
		first int64 = 1
	)
	// Every chunk starts with the table's Begin line, so the snapshot
	// event precedes the table's read events whichever chunk is
	// published first, an empty table's too.
	buf = enc.appendBegin(make([]byte, 0, batchBytes+batchBytes/8))
	sum.Add(buf)
	buf = append(buf, '\n')
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err // no batch after a cancellation
		}
		cs := sum
		b := connectors.Batch{
			Raw: buf, Format: connectors.FormatJSONL, Rows: cs.Rows,
			Position: fmt.Sprintf("%s row %d", position, first), Checksum: &cs,
		}
		buf, sum, first = nil, connectors.Checksum{}, n+1
		return emit(ctx, b)
	}
	err = src.ReadText(ctx, protocol.Partition{Key: spec.Chunk, Spec: spec.Inner}, func(columns []string, values [][]byte) error {
		n++
		if buf == nil {
			buf = make([]byte, 0, batchBytes+batchBytes/8)
		}
		start := len(buf)
		buf = enc.append(buf, n, columns, values)
		sum.Add(buf[start:])
		buf = append(buf, '\n')
		if len(buf) >= batchBytes {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read snapshot %s: %w", p.Key, err)
	}
	return nil
}

// batchBytes is the size a JSONL batch aims at.
const batchBytes = 1 << 20

// ReleaseRun closes the replication connection holding the run's exported
// snapshot; chunks of the run read after it fail. The slot stays, at the
// snapshot's consistent LSN, for the Reader that streams from there.
// Releasing a run that holds nothing does nothing.
func (s *SnapshotSource) ReleaseRun(runID string) error {
	s.mu.Lock()
	slot := s.runs[runID]
	delete(s.runs, runID)
	s.mu.Unlock()
	if slot == nil {
		return nil
	}
	return slot.Close()
}

// DropReplication drops the slot and the publication of the configuration
// (what a deleted cdc pipeline leaves behind); both may be missing. It
// fails while a walsender streams the slot: try again once the reader
// stopped.
func (s *SnapshotSource) DropReplication(ctx context.Context) error {
	return DropSlot(ctx, s.cfg.DSN, s.cfg.Slot, s.cfg.Publication)
}

// Close releases the snapshots of every run the source planned.
func (s *SnapshotSource) Close() error {
	s.mu.Lock()
	ids := make([]string, 0, len(s.runs))
	for id := range s.runs {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.ReleaseRun(id))
	}
	return errors.Join(errs...)
}

// SnapshotRow is one line of the JSONL batches SnapshotSource.Read emits:
// one row of a table read on a slot's exported snapshot, with what the
// sluice_cdc sink needs to publish it as a read event. The sink sees only
// the batches of a task, not its partition, so every line carries it.
type SnapshotRow struct {
	Database string   `json:"database"`
	Schema   string   `json:"schema"`
	Table    string   `json:"table"`
	Key      []string `json:"key,omitempty"`
	// LSN is the slot's consistent LSN; Time when the snapshot was planned.
	LSN  string    `json:"lsn"`
	Time time.Time `json:"time"`
	// Chunk is the key of the chunk within its table, N the row's 1-based
	// number in the chunk (the same on every read of the chunk).
	Chunk string `json:"chunk"`
	N     int64  `json:"n"`
	// Row maps every column to its text value or null.
	Row protocol.Row `json:"row"`
	// Relation describes the table, on the first row of a chunk (see
	// protocol.ChangeEvent.Relation).
	Relation *protocol.Schema `json:"relation,omitempty"`
	// Begin marks the line every chunk starts with, before its rows: the
	// table's snapshot begins (an event of op snapshot, see
	// protocol.OpSnapshot). N is 0 and Row nil. Like a row it is a line
	// of its batch, and an event of the sink's output.
	Begin bool `json:"begin,omitempty"`
}

// rowEncoder writes SnapshotRow lines of one chunk without reflection: the
// fields shared by the chunk's rows are encoded once.
type rowEncoder struct {
	prefix   []byte   // {"database":...,"chunk":"...","n":
	relation []byte   // the JSON of the chunk's relation, for its first row
	columns  []string // the columns names were encoded for
	names    [][]byte // "name":
}

func newRowEncoder(spec snapshotSpec) (*rowEncoder, error) {
	head, err := json.Marshal(SnapshotRow{
		Database: spec.Database, Schema: spec.Schema, Table: spec.Table, Key: spec.Key,
		LSN: spec.LSN, Time: spec.Time, Chunk: spec.Chunk,
	})
	if err != nil {
		return nil, err
	}
	// Cut at "n": the fields before it are the chunk's.
	i := strings.LastIndex(string(head), `,"n":`)
	if i < 0 {
		return nil, errors.New("encode snapshot row: no \"n\" field")
	}
	e := &rowEncoder{prefix: append(head[:i:i], `,"n":`...)}
	if spec.Relation != nil {
		if e.relation, err = json.Marshal(spec.Relation); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// appendBegin appends the chunk's Begin line, without its newline.
func (e *rowEncoder) appendBegin(buf []byte) []byte {
	buf = append(buf, e.prefix...)
	return append(buf, `0,"row":null,"begin":true}`...)
}

// append appends one line, without its newline.
func (e *rowEncoder) append(buf []byte, n int64, columns []string, values [][]byte) []byte {
	if !slices.Equal(e.columns, columns) {
		e.columns = slices.Clone(columns)
		e.names = make([][]byte, len(columns))
		for i, c := range columns {
			e.names[i] = append(protocol.AppendJSONString(nil, c), ':')
		}
	}
	buf = append(buf, e.prefix...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, `,"row":{`...)
	for i, v := range values {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, e.names[i]...)
		if v == nil {
			buf = append(buf, "null"...)
		} else {
			buf = protocol.AppendJSONString(buf, v)
		}
	}
	if n == 1 && e.relation != nil {
		buf = append(buf, `},"relation":`...)
		buf = append(buf, e.relation...)
		return append(buf, '}')
	}
	return append(buf, "}}"...)
}

// splitTable splits "schema.table".
func splitTable(t string) (schema, table string, err error) {
	schema, table, ok := strings.Cut(t, ".")
	if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
		return "", "", fmt.Errorf("table %q: want schema.table", t)
	}
	return schema, table, nil
}
