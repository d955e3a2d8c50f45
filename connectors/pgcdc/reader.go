package pgcdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// Config configures a Reader.
type Config struct {
	// DSN of the source database (a user with the REPLICATION attribute,
	// or superuser, that may create publications on Tables).
	DSN string
	// Slot is the logical replication slot name; Publication the
	// publication name. Both are created when missing.
	Slot        string
	Publication string
	// Tables lists the captured tables as "schema.table".
	Tables []string
	// Contract, when set, is the pipeline's data contract, applied to
	// every change before its event is encoded (see contract.go).
	Contract *contract.Contract
	// Pipeline names the CDC pipeline: the subject token of its events.
	Pipeline string
	// Heartbeat is the interval of pg_logical_emit_message calls that let
	// an idle or filtered slot advance; 0 means 10s, negative disables.
	Heartbeat time.Duration
	// StatusInterval is the interval of standby status updates; 0 means 10s.
	StatusInterval time.Duration
	// MaxInFlight bounded the events published but not yet acknowledged.
	// The Reader now has one message (at most MessageEvents events) in
	// flight at a time, which keeps its slot's order across a failover of
	// the stream's leader (see flushAs): it is accepted and has no effect.
	MaxInFlight int
	// MessageEvents is the most events packed into one message; 0 means
	// DefaultMessageEvents, 1 publishes every event alone. A message holds
	// consecutive events of one table in one transaction.
	MessageEvents int
	// NoBatches publishes one message at a time also to a replicated
	// SLUICE_CDC, where the Reader otherwise gathers the messages packed
	// while one publish is in flight into one atomic batch (see gather):
	// for comparisons.
	NoBatches bool
	// AckTimeout bounds how long an event may wait for its JetStream ack
	// before Run fails; 0 means 30s.
	AckTimeout time.Duration
	// Snapshots are the incremental snapshots to take, in order, while
	// streaming (see incremental.go); each table must be one of Tables.
	Snapshots []protocol.TableSnapshot
	// ChunkRows is the most rows of one chunk of an incremental snapshot;
	// 0 means DefaultChunkRows.
	ChunkRows int
	// MaxLagBytes holds the next chunk of an incremental snapshot back
	// while the slot retains more WAL than this (pg_current_wal_lsn() -
	// confirmed_flush_lsn); 0 means DefaultMaxLagBytes, negative no bound.
	MaxLagBytes int64
	// Trace, when set, traces each message published (a span per batch).
	Trace connectors.BatchTrace
}

// DefaultMaxLagBytes is Config.MaxLagBytes' default: an incremental
// snapshot starts no chunk while the slot retains more than 1 GiB of WAL.
const DefaultMaxLagBytes = 1 << 30

// DefaultMessageEvents is Config.MessageEvents' default: the most events of
// one table and one transaction packed into one SLUICE_CDC message.
const DefaultMessageEvents = 1000

// MaxMessageBytes bounds the encoded events of one message (a single event
// larger than it goes alone), well under NATS's default max_payload of
// 1 MiB; a server with a smaller max_payload lowers it to half of that.
const MaxMessageBytes = 512 << 10

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate checks the configuration without I/O.
func (c Config) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("dsn is required"))
	} else if _, err := pgconn.ParseConfig(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("dsn: %w", err))
	}
	if !slotNameRE.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("slot %q: want 1-63 of [a-z0-9_]", c.Slot))
	}
	if !slotNameRE.MatchString(c.Publication) {
		errs = append(errs, fmt.Errorf("publication %q: want 1-63 of [a-z0-9_]", c.Publication))
	}
	if !protocol.ValidName(c.Pipeline) {
		errs = append(errs, fmt.Errorf("pipeline %q is not a valid name", c.Pipeline))
	}
	if len(c.Tables) == 0 {
		errs = append(errs, errors.New("tables: at least one is required"))
	}
	for _, t := range c.Tables {
		if i := strings.IndexByte(t, '.'); i <= 0 || i == len(t)-1 {
			errs = append(errs, fmt.Errorf("table %q: want schema.table", t))
		}
	}
	if c.MaxInFlight < 0 || c.StatusInterval < 0 || c.AckTimeout < 0 || c.MessageEvents < 0 || c.ChunkRows < 0 {
		errs = append(errs, errors.New("max_in_flight, status_interval, ack_timeout, message_events and chunk_rows must not be negative"))
	}
	for _, s := range c.Snapshots {
		if _, _, err := splitTable(s.Table); err != nil || s.ID == "" {
			errs = append(errs, fmt.Errorf("snapshot %q of table %q: want an id and a schema.table", s.ID, s.Table))
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 10000
	}
	if c.MessageEvents == 0 {
		c.MessageEvents = DefaultMessageEvents
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.ChunkRows == 0 {
		c.ChunkRows = DefaultChunkRows
	}
	if c.MaxLagBytes == 0 {
		c.MaxLagBytes = DefaultMaxLagBytes
	}
	return c
}

// Status is a Reader's progress.
type Status struct {
	// ConfirmedLSN is the last position confirmed to the server (every
	// event before it is in JetStream); ReceivedLSN the last WAL position
	// received.
	ConfirmedLSN string
	ReceivedLSN  string
	// AckedCommitTime is the commit time of the last transaction whose
	// events JetStream acknowledged.
	AckedCommitTime time.Time
	// OldestPending is the commit time of the oldest transaction received
	// whose events are not all acknowledged yet (zero when none is):
	// time.Since gives how far behind the source the stream is.
	OldestPending time.Time
	// Events counts the events JetStream acknowledged since Run started.
	Events int64
	// Snapshots reports the incremental snapshots of Config.Snapshots.
	Snapshots []protocol.TableStatus
}

// Reader streams one slot into SLUICE_CDC. Run may be called once at a
// time; Status may be called concurrently with Run.
type Reader struct {
	cfg Config
	js  jetstream.JetStream
	log *slog.Logger

	snaps *snapshotter
	// seeded, set by tests only, are transactions each stream starts as
	// delivered.
	seeded []uint32

	mu     sync.Mutex
	status Status
}

// NewReader returns a Reader publishing through js. The SLUICE_CDC stream
// must exist (EnsureStream).
func NewReader(cfg Config, js jetstream.JetStream, log *slog.Logger) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pgcdc config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Reader{cfg: cfg, js: js, log: log.With("slot", cfg.Slot, "pipeline", cfg.Pipeline), snaps: newSnapshotter(cfg)}, nil
}

// Status returns the Reader's progress.
func (r *Reader) Status() Status {
	r.mu.Lock()
	st := r.status
	r.mu.Unlock()
	st.Snapshots = r.snaps.status()
	return st
}

// Run creates the publication and the slot when missing, then streams the
// slot from its confirmed position until ctx ends (it then returns nil
// after waiting briefly for in-flight acks and confirming what was acked)
// or an error stops it. ctx bounds the replication connection, the
// heartbeat connection and every publish.
func (r *Reader) Run(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var database string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return fmt.Errorf("current database: %w", err)
	}
	// The snapshots' begin marks go into the WAL before their tables join
	// the publication: the stream meets each before the table's changes.
	if err := r.beginMarks(ctx, conn); err != nil {
		return err
	}
	if err := ensurePublication(ctx, conn, r.cfg); err != nil {
		return err
	}
	start, err := ensureSlot(ctx, conn, r.cfg.Slot)
	if err != nil {
		return err
	}
	r.log.Info("cdc reader starting", "start_lsn", start.String())

	g, gctx := errgroup.WithContext(ctx)
	if r.cfg.Heartbeat > 0 {
		g.Go(func() error { r.heartbeat(gctx, conn); return nil })
	}
	g.Go(func() error { return r.stream(gctx, database, start) })
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// heartbeat emits a non-transactional logical message every interval. It
// shares nothing with the replication connection; an error is logged and
// the next tick tries again.
func (r *Reader) heartbeat(ctx context.Context, conn *pgx.Conn) {
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn.IsClosed() {
			c, err := pgx.Connect(ctx, r.cfg.DSN)
			if err != nil {
				r.log.Warn("cdc heartbeat connect", "err", err)
				continue
			}
			defer c.Close(context.WithoutCancel(ctx))
			conn = c
		}
		if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, 'sluice', 'hb')"); err != nil && ctx.Err() == nil {
			r.log.Warn("cdc heartbeat", "err", err)
		}
	}
}

type relation struct {
	schema, table string
	// columns names the columns, identity flags those of the replica
	// identity (the key), both in table order.
	columns  *protocol.Columns
	names    []string // the columns' names, in table order
	identity []bool
	keys     []string
	keyIdx   []int // the keys' places among the columns
	subject  string
	// fields are the encoded fields its events share.
	fields *protocol.TableFields
	// description is the JSON of the table's description (a
	// protocol.Schema with keys as its key), attached to the relation's
	// next event when describe is set; nil when the catalog could not
	// describe it.
	description []byte
	describe    bool
	// contract is the pipeline's data contract for the table; nil
	// without one.
	contract *contract.StreamTable
}

// pending is a transaction (or a heartbeat) whose events were published and
// which may be confirmed once they are all acknowledged and every earlier
// entry was.
type pending struct {
	end        pglogrepl.LSN
	commitTime time.Time
	futs       []flight
	next       int // futs[:next] are acknowledged
	since      time.Time
	// acked, when set, is called once every entry up to this one is
	// acknowledged.
	acked func()
}

// flight is one published (or gathered) message awaiting its ack, and
// its event count.
type flight struct {
	a *ack
	n int
}

// packing is the message being filled: consecutive events of one table in
// the transaction being received.
type packing struct {
	subject string
	data    []byte // the events, '\n' between them
	n       int    // events in data
	first   int    // index in the transaction of the first
}

type streamState struct {
	database string
	meta     *pgx.Conn // catalog lookups, opened on first use
	rels     map[uint32]*relation
	// the transaction being received
	inTx      bool
	commitLSN string
	xid       uint32
	tx        protocol.TxFields // commit LSN, xid and commit time, encoded
	timeErr   error             // tx.Set's error: a commit time JSON cannot carry
	index     int
	futs      []flight
	pack      packing

	// reused by each event: the cells of its rows.
	before, after []protocol.Cell
	// maxBytes bounds a message's data (see MaxMessageBytes).
	maxBytes int

	queue    []*pending
	inFlight int // events, published or gathered, not acknowledged yet
	// batchable: SLUICE_CDC is replicated and allows atomic batches, and
	// the messages are gathered (gather); batching: batchable, and this
	// Run stored a new message (settled).
	batchable, batching bool
	// flying is the publish in flight (of a message, a batch or a probe);
	// gather the messages packed meanwhile.
	flying   *ack
	gather   gathered
	acked    pglogrepl.LSN
	received pglogrepl.LSN
	events   int64 // acknowledged

	// delivered holds the ids of the last transactions whose commit the
	// stream delivered, a ring (next is where the next one goes): an
	// incremental snapshot's chunk is read on a snapshot that sees them
	// all (see onLow).
	delivered [deliveredRing]uint32
	next      int
}

func (r *Reader) stream(ctx context.Context, database string, start pglogrepl.LSN) error {
	pcfg, err := pgconn.ParseConfig(r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("parse dsn: %w", err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	// The walsender renders the values of changes under its session
	// settings: the same as the snapshot's reads (postgres.ReadText), so
	// that a change applies over a read row value for value.
	for k, v := range postgres.SessionParams() {
		if _, set := pcfg.RuntimeParams[k]; !set || k != "application_name" {
			pcfg.RuntimeParams[k] = v
		}
	}
	rc, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("replication connect: %w", err)
	}
	defer rc.Close(context.WithoutCancel(ctx))
	batchable := r.atomicBatches(ctx)
	err = pglogrepl.StartReplication(ctx, rc, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + r.cfg.Publication + "'", "messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %q at %s: %w", r.cfg.Slot, start, err)
	}
	st := &streamState{database: database, rels: map[uint32]*relation{}, acked: start, received: start, maxBytes: MaxMessageBytes, batchable: batchable}
	for _, x := range r.seeded {
		st.delivered[st.next%deliveredRing] = x
		st.next++
	}
	if nc := r.js.Conn(); nc != nil {
		if mp := int(nc.MaxPayload()); mp > 0 && mp/2 < st.maxBytes {
			st.maxBytes = mp / 2
		}
	}
	defer func() {
		if st.meta != nil {
			st.meta.Close(context.WithoutCancel(ctx))
		}
	}()
	r.setStatus(st, time.Time{})
	confirmed := pglogrepl.LSN(0)
	sendStatus := func(ctx context.Context) error {
		err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: st.acked, WALFlushPosition: st.acked, WALApplyPosition: st.acked,
		})
		if err != nil {
			return fmt.Errorf("standby status update: %w", err)
		}
		confirmed = st.acked
		return nil
	}
	nextStatus := time.Now().Add(r.cfg.StatusInterval)
	// Messages are received without a context: pgconn would watch one
	// for every message (a context.AfterFunc each). A read deadline on
	// the connection bounds the wait instead, kept while it is ahead and
	// no later than the wanted one, and the end of ctx moves it to now.
	conn := rc.Conn()
	var rdeadline time.Time
	stopWatch := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stopWatch()
	for {
		if err := r.pump(ctx, st); err != nil {
			return err
		}
		if err := r.reap(ctx, st, false); err != nil {
			return err
		}
		if !st.inTx {
			if err := r.snapshotStep(ctx, st); err != nil {
				return err
			}
		}
		now := time.Now()
		if !now.Before(nextStatus) {
			if err := sendStatus(ctx); err != nil {
				return err
			}
			nextStatus = now.Add(r.cfg.StatusInterval)
		}
		deadline := nextStatus
		var wait time.Duration
		switch {
		case len(st.gather.msgs) > 0:
			// gathered messages wait for the publish in flight: when no
			// more changes come, they go once it is acknowledged.
			wait = time.Millisecond
		case len(st.queue) > 0 || st.acked != confirmed:
			// acks are pending: look at them again soon.
			wait = 20 * time.Millisecond
		}
		if d := now.Add(wait); wait > 0 && d.Before(deadline) {
			deadline = d
		}
		if !now.Before(rdeadline) || deadline.Before(rdeadline) {
			if err := conn.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("receive: set deadline: %w", err)
			}
			rdeadline = deadline
		}
		// After the deadline is set: an end of ctx from now on moves it.
		if ctx.Err() != nil {
			return r.shutdown(st, rc)
		}
		raw, err := rc.ReceiveMessage(context.Background())
		if err != nil {
			// Checked first: the end of ctx shows as a timeout.
			if ctx.Err() != nil {
				return r.shutdown(st, rc)
			}
			if pgconn.Timeout(err) {
				if len(st.gather.msgs) > 0 {
					if err := r.waitFlying(ctx, st); err != nil {
						return err
					}
					if err := r.sendGathered(ctx, st); err != nil {
						return err
					}
				}
				if st.acked != confirmed && len(st.queue) == 0 {
					// everything is acked: confirm it without waiting for the interval.
					if err := sendStatus(ctx); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse keepalive: %w", err)
				}
				// A keepalive carries the position the walsender sent up
				// to. With no transaction open, queued or unacknowledged,
				// every change before it is in JetStream: confirm it, or
				// the walsender of a server shutting down waits for a
				// confirmation of its last records forever.
				if !st.inTx && len(st.queue) == 0 && st.inFlight == 0 && ka.ServerWALEnd > st.acked {
					st.acked = ka.ServerWALEnd
					r.setStatus(st, time.Time{})
				}
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse xlog data: %w", err)
				}
				if err := r.handle(ctx, st, xld); err != nil {
					return err
				}
			}
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			return errors.New("replication: the server ended the stream (shutting down?)")
		default:
			return fmt.Errorf("replication: unexpected message %T", raw)
		}
	}
}

// shutdown waits briefly for in-flight acks and confirms what was acked.
func (r *Reader) shutdown(st *streamState, rc *pgconn.PgConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.reap(ctx, st, true); err != nil {
		r.log.Warn("cdc reader stopping with unacknowledged events", "err", err)
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: st.acked, WALFlushPosition: st.acked, WALApplyPosition: st.acked,
	})
	if err != nil {
		r.log.Warn("cdc reader final status update", "err", err)
	}
	r.log.Info("cdc reader stopped", "confirmed_lsn", st.acked.String())
	return nil
}

// reap moves st.acked past the leading queue entries whose events are all
// acknowledged. With wait it blocks until the queue is empty or ctx ends;
// without, it does not block.
func (r *Reader) reap(ctx context.Context, st *streamState, wait bool) error {
	advanced := false
	var commitTime time.Time
	defer func() {
		if advanced {
			r.setStatus(st, commitTime)
		}
	}()
	for len(st.queue) > 0 {
		p := st.queue[0]
		for p.next < len(p.futs) {
			a := p.futs[p.next].a
			if wait {
				if a.f == nil {
					// gathered: send it first.
					if err := r.waitFlying(ctx, st); err != nil {
						return err
					}
					if err := r.sendGathered(ctx, st); err != nil {
						return err
					}
				}
				if err := r.await(ctx, st, a); err != nil {
					return err
				}
			} else {
				ok, err := r.check(ctx, st, a)
				if err != nil {
					return err
				}
				if !ok {
					if a.f != nil && time.Since(p.since) > r.cfg.AckTimeout {
						return fmt.Errorf("publish %s: no ack after %s", a.id, r.cfg.AckTimeout)
					}
					return nil
				}
			}
			st.settled(a)
			n := p.futs[p.next].n
			p.futs[p.next] = flight{}
			p.next++
			st.inFlight -= n
			st.events += int64(n)
		}
		st.queue[0] = nil
		st.queue = st.queue[1:]
		if p.end > st.acked {
			st.acked = p.end
		}
		if p.acked != nil {
			p.acked()
		}
		if !p.commitTime.IsZero() {
			commitTime = p.commitTime
		}
		advanced = true
	}
	return nil
}

func (r *Reader) setStatus(st *streamState, commitTime time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.ConfirmedLSN = st.acked.String()
	r.status.ReceivedLSN = st.received.String()
	r.status.Events = st.events
	r.status.OldestPending = time.Time{}
	for _, p := range st.queue[:min(len(st.queue), 2)] { // a heartbeat has no commit time
		if !p.commitTime.IsZero() {
			r.status.OldestPending = p.commitTime
			break
		}
	}
	if !commitTime.IsZero() {
		r.status.AckedCommitTime = commitTime
	}
}

func (r *Reader) handle(ctx context.Context, st *streamState, xld pglogrepl.XLogData) error {
	if xld.WALStart > st.received {
		st.received = xld.WALStart
	}
	if len(xld.WALData) == 0 {
		return fmt.Errorf("decode pgoutput at %s: empty message", xld.WALStart)
	}
	// Inserts, updates and deletes, nearly every message, are decoded in
	// place (decodeChange); the rest by pglogrepl.
	if c, ok, err := decodeChange(xld.WALData); ok {
		if err != nil {
			return fmt.Errorf("decode pgoutput at %s: %w", xld.WALStart, err)
		}
		rel, err := st.relation(c.relation)
		if err != nil {
			return err
		}
		st.before = appendCells(st.before[:0], c.old, rel.identity, c.oldKind == 'K')
		st.after = appendCells(st.after[:0], c.new, rel.identity, false)
		op := protocol.OpInsert
		switch c.op {
		case 'U':
			op = protocol.OpUpdate
		case 'D':
			op = protocol.OpDelete
		}
		r.onChange(rel, op, st.before, st.after)
		return r.publish(ctx, st, rel, xld.WALStart, op, st.before, st.after)
	}
	msg, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("decode pgoutput at %s: %w", xld.WALStart, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		rel := &relation{schema: m.Namespace, table: m.RelationName, subject: protocol.CDCSubject(r.cfg.Pipeline, m.Namespace, m.RelationName)}
		names := make([]string, 0, len(m.Columns))
		for _, c := range m.Columns {
			key := c.Flags&1 != 0
			names = append(names, c.Name)
			rel.identity = append(rel.identity, key)
			if key {
				rel.keys = append(rel.keys, c.Name)
			}
		}

		rel.columns, rel.names = protocol.NewColumns(names), names
		if m.ReplicaIdentity == 'f' {
			// FULL flags every column as identity: the key is the primary key.
			keys, err := r.primaryKey(ctx, st, m.RelationID)
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				rel.keys = keys
			}
		}
		for _, k := range rel.keys {
			rel.keyIdx = append(rel.keyIdx, slices.Index(names, k))
		}
		rel.fields = protocol.NewTableFields(r.cfg.Pipeline, st.database, rel.schema, rel.table, rel.keys)
		rel.description, rel.describe = r.describe(ctx, st, m, rel.keys), true
		if err := r.applyContract(rel, names); err != nil {
			return err
		}
		st.rels[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		st.inTx = true
		st.commitLSN = formatLSN(m.FinalLSN)
		st.xid = m.Xid
		// A commit time JSON cannot carry fails every event of the
		// transaction, as Encode would.
		st.timeErr = st.tx.Set(st.commitLSN, m.Xid, m.CommitTime)
		st.index = 0
		st.futs = nil
	case *pglogrepl.CommitMessage:
		if !st.inTx {
			return fmt.Errorf("commit at %s without begin", m.CommitLSN)
		}
		if err := r.flush(ctx, st); err != nil {
			return err
		}
		st.queue = append(st.queue, &pending{end: m.TransactionEndLSN, commitTime: m.CommitTime, futs: st.futs, since: time.Now()})
		st.delivered[st.next%deliveredRing] = st.xid
		st.next++
		st.inTx = false
		st.futs = nil
		if len(st.queue) <= 2 {
			r.setStatus(st, time.Time{}) // the oldest pending transaction changed
		}
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel, err := st.relation(id)
			if err != nil {
				return err
			}
			r.onChange(rel, protocol.OpTruncate, nil, nil)
			if err := r.publish(ctx, st, rel, xld.WALStart, protocol.OpTruncate, nil, nil); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		if ok, err := r.onWatermark(ctx, st, m); ok || err != nil {
			return err
		}
		if !m.Transactional && !st.inTx {
			// A heartbeat (ours or anyone's): every transaction committed
			// before it was received, so it may be confirmed once they are.
			st.queue = append(st.queue, &pending{end: m.LSN, since: time.Now()})
		}
	}
	return nil
}

// catalog returns the catalog connection, opened on first use.
func (r *Reader) catalog(ctx context.Context, st *streamState) (*pgx.Conn, error) {
	if st.meta != nil && !st.meta.IsClosed() {
		return st.meta, nil
	}
	cfg, err := pgx.ParseConfig(r.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("catalog connect: %w", err)
	}
	// The rows of incremental snapshots are read on it: rendered as the
	// walsender renders changes.
	for k, v := range postgres.SessionParams() {
		if _, set := cfg.RuntimeParams[k]; !set || k != "application_name" {
			cfg.RuntimeParams[k] = v
		}
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("catalog connect: %w", err)
	}
	st.meta = c
	return c, nil
}

// describe returns the JSON of the description of a relation from its
// Relation message and the catalog (postgres.DescribeRelation), with keys
// as its key: what the relation's next event carries. A relation the
// catalog cannot describe (it was dropped since) gets none: its events
// still flow, and a warning is logged.
func (r *Reader) describe(ctx context.Context, st *streamState, m *pglogrepl.RelationMessage, keys []string) []byte {
	cols := make([]postgres.RelationColumn, len(m.Columns))
	for i, c := range m.Columns {
		cols[i] = postgres.RelationColumn{Name: c.Name, Type: c.DataType, TypeMod: c.TypeModifier}
	}
	conn, err := r.catalog(ctx, st)
	var desc *protocol.Schema
	if err == nil {
		desc, err = postgres.DescribeRelation(ctx, conn, m.RelationID, cols)
	}
	var b []byte
	if err == nil {
		desc.Key = keys
		b, err = json.Marshal(desc)
	}
	if err != nil {
		r.log.Warn("cdc reader: no description of a table for its events", "table", m.Namespace+"."+m.RelationName, "err", err)
		return nil
	}
	return b
}

// primaryKey looks up the primary key columns of a relation, in key order,
// on the catalog connection.
func (r *Reader) primaryKey(ctx context.Context, st *streamState, relid uint32) ([]string, error) {
	conn, err := r.catalog(ctx, st)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)`, relid)
	if err != nil {
		return nil, fmt.Errorf("primary key of relation %d: %w", relid, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of relation %d: %w", relid, err)
	}
	return keys, nil
}

func (st *streamState) relation(id uint32) (*relation, error) {
	rel, ok := st.rels[id]
	if !ok {
		return nil, fmt.Errorf("change for relation %d before its Relation message", id)
	}
	return rel, nil
}

// formatLSN formats lsn as pglogrepl.LSN.String does (%X/%X), without fmt.
func formatLSN(lsn pglogrepl.LSN) string {
	var b [17]byte
	return string(protocol.AppendLSN(b[:0], uint64(lsn)))
}

// publish adds the event of one change to the message being packed:
// before and after are its rows as cells of rel's columns. The message is
// published first when it holds another table's events, is full, or would
// grow past st.maxBytes with this event.
func (r *Reader) publish(ctx context.Context, st *streamState, rel *relation, lsn pglogrepl.LSN, op protocol.Op, before, after []protocol.Cell) error {
	if !st.inTx {
		return fmt.Errorf("%s on %s.%s at %s outside a transaction", op, rel.schema, rel.table, lsn)
	}
	if st.timeErr != nil {
		return st.timeErr
	}
	if rel.contract != nil {
		keep := false
		var err error
		if op, before, after, keep, err = rel.contract.Change(op, before, after); err != nil || !keep {
			if err != nil {
				return fmt.Errorf("contract: %s at %s: %w", op, lsn, err)
			}
			return nil
		}
	}
	p := &st.pack
	if p.n > 0 && (p.subject != rel.subject || p.n >= r.cfg.MessageEvents) {
		if err := r.flush(ctx, st); err != nil {
			return err
		}
	}
	index := st.index
	st.index++
	if p.n == 0 {
		p.subject, p.first = rel.subject, index
	}
	start := len(p.data)
	if p.n > 0 {
		p.data = append(p.data, '\n')
	}
	p.data = protocol.AppendChange(p.data, op, rel.fields, rel.columns, before, after, uint64(lsn), index, &st.tx)
	if rel.describe {
		if rel.description != nil {
			p.data = protocol.AppendRelation(p.data, rel.description)
		}
		rel.describe = false
	}
	p.n++
	if p.n == 1 || len(p.data) <= st.maxBytes {
		return nil
	}
	// Too big with this event: publish the others, then start the next
	// message with it.
	data := p.data[start+1:]
	p.data, p.n = p.data[:start], p.n-1
	if err := r.flush(ctx, st); err != nil {
		return err
	}
	p.data = append(p.data, data...)
	p.subject, p.first, p.n = rel.subject, index, 1
	return nil
}

// flush publishes the message being packed, if it holds any event, with
// the Nats-Msg-Id of its first event, once every earlier message is
// acknowledged (see flushAs).
func (r *Reader) flush(ctx context.Context, st *streamState) error {
	if st.pack.n == 0 {
		return nil
	}
	return r.flushAs(ctx, st, protocol.CDCMsgID(r.cfg.Slot, st.commitLSN, st.pack.first))
}

// flushAs publishes the message being packed, which holds at least one
// event, under the Nats-Msg-Id id, adding its future to st.futs.
//
// It first waits until every earlier message of the slot is acknowledged:
// one message in flight at a time is what keeps the slot's messages in
// SLUICE_CDC in WAL order across a failover of the stream's leader. With
// several in flight, an earlier one can be lost with the leader while a
// later one is stored by the next leader; publishing the lost one again
// (at a restart from the confirmed position) would then store it after
// the later one. With one in flight, a message is published only once its
// predecessor is stored, and a message whose publish failed is published
// again, under the same Nats-Msg-Id, before any later one: JetStream's
// duplicate window drops it if the first attempt was stored after all.
// The decoding of the next message overlaps the wait for this one's ack.
//
// On a replicated SLUICE_CDC (see settled) the messages packed while a
// publish is in flight are gathered instead and sent together as one
// atomic batch once it is acknowledged (gather): the order is kept the
// same way, and the Reader is not held to one message per replication
// round trip when many small transactions come.
func (r *Reader) flushAs(ctx context.Context, st *streamState, id string) error {
	if st.batchable {
		return r.gather(ctx, st, id)
	}
	p := &st.pack
	for st.inFlight > 0 {
		if err := r.waitOne(ctx, st); err != nil {
			return err
		}
	}
	msg := cdcMsg(p.subject, id, p.data, p.n)
	_, end := r.cfg.Trace.StartBatch(ctx, connectors.BatchInfo{Events: p.n, Subject: p.subject, MsgID: id})
	f, err := publishAsync(ctx, r.js, msg, func() bool { return st.inFlight > 0 }, func(ctx context.Context) error { return r.waitOne(ctx, st) })
	end(err)
	if err != nil {
		return err
	}
	st.flying = &ack{f: f, id: id}
	st.futs = append(st.futs, flight{a: st.flying, n: p.n})
	st.inFlight += p.n
	// The next message gets a buffer of its own, sized like this one.
	p.data = make([]byte, 0, min(cap(p.data), st.maxBytes+st.maxBytes/8))
	p.n = 0
	return nil
}

// waitOne waits, at most AckTimeout, for the oldest event in flight: the
// oldest queued entry, else the oldest event of the transaction being
// received (confirming nothing: the slot may only be confirmed at the end
// of a transaction).
func (r *Reader) waitOne(ctx context.Context, st *streamState) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	if len(st.queue) > 0 {
		return r.reapOne(ctx, st)
	}
	return r.waitCurrent(ctx, st)
}

// waitCurrent waits for the oldest unacknowledged message of the
// transaction being received and drops it from st.futs, so that the entry
// queued at its commit holds only the messages still unacknowledged. ctx
// bounds the wait.
func (r *Reader) waitCurrent(ctx context.Context, st *streamState) error {
	if len(st.futs) == 0 {
		return fmt.Errorf("%d events in flight, none of them in a queued or the current transaction", st.inFlight)
	}
	a, n := st.futs[0].a, st.futs[0].n
	if err := r.await(ctx, st, a); err != nil {
		return err
	}
	st.settled(a)
	st.futs[0] = flight{}
	st.futs = st.futs[1:]
	st.inFlight -= n
	st.events += int64(n)
	return nil
}

// reapOne waits for the oldest queued entry to be acknowledged.
func (r *Reader) reapOne(ctx context.Context, st *streamState) error {
	q := st.queue
	st.queue = q[:1]
	err := r.reap(ctx, st, true)
	if len(st.queue) == 0 {
		st.queue = q[1:]
	} else {
		st.queue = q
	}
	return err
}
