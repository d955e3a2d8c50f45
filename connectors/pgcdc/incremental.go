package pgcdc

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// Incremental snapshots (DBLog's watermarks): a table added to a streaming
// pipeline, or one asked to be snapshotted again, is read by the Reader
// itself in chunks of its key order, interleaved with the stream, on the
// same slot and without pausing the other tables. For each chunk the
// Reader writes a low watermark into the WAL (a non-transactional logical
// message), and once its stream reaches it, selects the chunk's rows and
// writes a high watermark. Between the two watermarks the stream carries
// the changes committed around the select: each removes its keys from the
// chunk, since the change, published in its place, is as new as the
// select or newer. At the high watermark the rows left are published as
// read events of the high watermark's position. So every row of the table
// reaches the stream, no row is published older than a change of it
// before it, and the other tables' changes flow in between.
//
// The table's snapshot event (protocol.OpSnapshot) is published before
// any change of the table: a Reader that runs with snapshots to take
// first writes a begin mark of each into the WAL, before it adds their
// tables to the publication, and publishes the snapshot event where its
// stream reaches the mark (beginMarks). A consumer starts the table over
// there, and knows a snapshot under way from then on: an update whose
// unchanged TOAST value has no row yet (the table written to while its
// snapshot waits its turn behind another table's, or its first chunk)
// is left to the chunk that brings the row. The last chunk's high
// watermark is where its snapshot_done event is. A Reader that stops
// during a snapshot starts the table over when it runs again, at a begin
// mark of its own; one that meets an earlier Run's begin mark of the same
// snapshot publishes its snapshot event there too, under the same
// Nats-Msg-Id as that Run did (of the mark's position), so the messages
// it publishes again are the same (a Run on a slot it made itself, after
// its marks, begins a snapshot at its first chunk's low watermark).
//
// Only a table whose event key is NOT NULL (a primary key, or a replica
// identity index) can be read in key order; another fails its snapshot,
// which the status reports, while the stream goes on.

// DefaultChunkRows is Config.ChunkRows' default: the most rows of one
// chunk of an incremental snapshot, held in memory between its watermarks.
const DefaultChunkRows = 10000

// watermarkPrefix is the prefix of the logical messages that are the
// watermarks of incremental snapshots.
const watermarkPrefix = "sluice-snapshot"

// Phases of an incremental snapshot job.
const (
	phaseIdle   = iota // no chunk under way: the next low watermark is due
	phaseLow           // the low watermark is written, the stream has not reached it
	phaseWindow        // the chunk is selected, the high watermark is written
	phaseDone
)

// snapJob is the incremental snapshot of one table.
type snapJob struct {
	req           protocol.TableSnapshot
	schema, table string
	subject       string
	// cols are the columns read (those pgoutput sends), key the event key
	// and keyIdx its columns' places in cols, keyTypes their types.
	cols     []string
	key      []string
	keyIdx   []int
	keyTypes []string
	fields   *protocol.TableFields
	columns  *protocol.Columns
	relation []byte // the table's description, on each chunk's first row
	// contract is the pipeline's data contract for the table, nil when
	// there is none or it changes nothing: the rows a chunk publishes
	// pass through it, as the stream's changes do.
	contract *contract.StreamTable

	phase     int
	chunk     int
	tries     int                 // the chunk's low watermarks written before this one (see onLow)
	low, high string              // the payloads of the chunk's watermarks
	next      []string            // key values after which the next chunk starts; nil before the first
	full      bool                // the chunk read as many rows as it may: more may follow
	rows      map[string][][]byte // the chunk's rows left, by key
	order     []string            // the chunk's keys in key order
	published int64
	began     bool

	// status, guarded by the snapshotter's mu: throttled counts the
	// times the slot's lag held a chunk back, lastThrottled is when it
	// last did, throttledFor how long it did in all, not counting the
	// time since throttledAt while it still does (throttledAt is then
	// set).
	state         string
	err           string
	since         time.Time
	throttled     int
	lastThrottled time.Time
	throttledFor  time.Duration
	throttledAt   time.Time
}

// snapshotter runs a Reader's incremental snapshots, one table after the
// other, from the stream loop.
type snapshotter struct {
	jobs  []*snapJob
	nonce string
	// lagAt is when the slot's lag was last asked for; throttled reports
	// whether it was over the bound then.
	lagAt     time.Time
	throttled bool

	mu sync.Mutex // guards the jobs' status fields
}

// newSnapshotter prepares the jobs of cfg.Snapshots.
func newSnapshotter(cfg Config) *snapshotter {
	s := &snapshotter{nonce: strconv.FormatInt(time.Now().UnixNano(), 36)}
	now := time.Now().UTC()
	for _, req := range cfg.Snapshots {
		schema, table, _ := splitTable(req.Table)
		s.jobs = append(s.jobs, &snapJob{req: req, schema: schema, table: table, state: protocol.TableSnapshotPending, since: now})
	}
	return s
}

// current returns the job under way, or nil.
func (s *snapshotter) current() *snapJob {
	for _, j := range s.jobs {
		if j.phase != phaseDone {
			return j
		}
	}
	return nil
}

// set changes a job's status.
func (s *snapshotter) set(j *snapJob, state, err string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.state != state {
		j.since = time.Now().UTC()
	}
	j.state, j.err = state, err
}

// status reports every job.
func (s *snapshotter) status() []protocol.TableStatus {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]protocol.TableStatus, 0, len(s.jobs))
	now := time.Now()
	for _, j := range s.jobs {
		held := j.throttledFor
		if !j.throttledAt.IsZero() {
			held += now.Sub(j.throttledAt)
		}
		out = append(out, protocol.TableStatus{
			Table: j.req.Table, State: j.state, Error: j.err, Since: j.since, Snapshot: j.req.ID, Rows: j.published,
			Throttled: j.throttled, LastThrottled: j.lastThrottled, ThrottledSeconds: held.Seconds(), Throttling: !j.throttledAt.IsZero(),
		})
	}
	return out
}

// prepare looks up the table of j: its columns, key and description. A
// table that cannot be read in key order fails the job (not the stream).
func (r *Reader) prepareSnapshot(ctx context.Context, st *streamState, j *snapJob) error {
	conn, err := r.catalog(ctx, st)
	if err != nil {
		return err
	}
	if !slices.Contains(r.cfg.Tables, j.req.Table) {
		r.snaps.set(j, protocol.TableSnapshotFailed, "the table is not one of the pipeline's tables")
		j.phase = phaseDone
		return nil
	}
	sh, err := shapeOf(ctx, conn, j.req.Table)
	if err != nil {
		return fmt.Errorf("incremental snapshot of %s: %w", j.req.Table, err)
	}
	j.cols, j.key = sh.columns, sh.key
	for _, k := range j.key {
		c, _ := sh.relation.Column(k)
		if !c.NotNull {
			r.snaps.set(j, protocol.TableSnapshotFailed, "an incremental snapshot reads a table in the order of a key of NOT NULL columns: give the table a primary key")
			j.phase = phaseDone
			return nil
		}
		j.keyIdx = append(j.keyIdx, slices.Index(j.cols, k))
		j.keyTypes = append(j.keyTypes, c.Native)
	}
	if len(j.key) == 0 || slices.Contains(j.keyIdx, -1) {
		r.snaps.set(j, protocol.TableSnapshotFailed, "the table has no key its events carry")
		j.phase = phaseDone
		return nil
	}
	desc, cols := sh.relation, j.cols
	if r.cfg.Contract != nil {
		ct, err := r.cfg.Contract.StreamTable(j.schema+"."+j.table, j.cols, j.key)
		if err != nil {
			// A strict contract's unclassified column: nothing of the
			// table is published until the spec classifies it.
			r.snaps.set(j, protocol.TableSnapshotFailed, "contract: "+err.Error())
			j.phase = phaseDone
			return nil
		}
		if !ct.Same() {
			j.contract, cols = ct, ct.Columns()
			if desc, err = ct.Relation(desc); err != nil {
				return fmt.Errorf("incremental snapshot of %s: contract: %w", j.req.Table, err)
			}
		}
	}
	if j.relation, err = json.Marshal(desc); err != nil {
		return err
	}
	j.subject = protocol.CDCSubject(r.cfg.Pipeline, j.schema, j.table)
	j.fields = protocol.NewTableFields(r.cfg.Pipeline, st.database, j.schema, j.table, j.key)
	j.columns = protocol.NewColumns(cols)
	return nil
}

// snapshotStep starts the next chunk of the job under way, when none is
// under way and the slot's lag is under its bound: it writes the chunk's
// low watermark.
func (r *Reader) snapshotStep(ctx context.Context, st *streamState) error {
	j := r.snaps.current()
	if j == nil || j.phase != phaseIdle {
		return nil
	}
	if j.cols == nil {
		if err := r.prepareSnapshot(ctx, st, j); err != nil || j.phase == phaseDone {
			return err
		}
	}
	if over, err := r.lagOver(ctx, st, j); err != nil || over {
		return err
	}
	if j.state != protocol.TableSnapshotting {
		r.snaps.set(j, protocol.TableSnapshotting, "")
	}
	j.chunk++
	j.tries = 0
	return r.writeLow(ctx, st, j)
}

// writeLow writes the low watermark of the job's chunk, tried for the
// (tries+1)th time.
func (r *Reader) writeLow(ctx context.Context, st *streamState, j *snapJob) error {
	mark := fmt.Sprintf("%s %s %s %d", r.cfg.Slot, r.snaps.nonce, j.req.ID, j.chunk)
	if j.tries > 0 {
		mark += "." + strconv.Itoa(j.tries)
	}
	j.low, j.high = mark+" low", mark+" high"
	if err := r.watermark(ctx, st, j.low); err != nil {
		return err
	}
	j.phase = phaseLow
	return nil
}

// deliveredRing is how many of the last transactions delivered by the
// stream a Reader remembers, for onLow's check.
const deliveredRing = 4096

// invisible returns a transaction of delivered that a snapshot does not
// see: one in progress in it (its xip list) or not begun for it (at or
// past its xmax). snap is pg_current_snapshot() as text, xmin:xmax:xip,...
// of 64-bit transaction ids; delivered are the 32-bit ids the stream
// carries, recent ones, placed in xmax's epoch.
func invisible(snap string, delivered []uint32) (uint32, bool, error) {
	parts := strings.Split(snap, ":")
	if len(parts) != 3 {
		return 0, false, fmt.Errorf("snapshot %q is not xmin:xmax:xip", snap)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("snapshot %q: xmax: %w", snap, err)
	}
	running := map[uint32]bool{}
	if parts[2] != "" {
		for f := range strings.SplitSeq(parts[2], ",") {
			x, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("snapshot %q: xip: %w", snap, err)
			}
			running[uint32(x)] = true
		}
	}
	for _, x := range delivered {
		full := xmax&^0xffffffff | uint64(x)
		if full > xmax && full-xmax > 1<<31 && full >= 1<<32 {
			full -= 1 << 32 // of the epoch before xmax's
		}
		if running[x] || full >= xmax {
			return x, true, nil
		}
	}
	return 0, false, nil
}

// lagOver reports whether the slot retains more WAL than
// Config.MaxLagBytes, asking the server at most every lagEvery; the job's
// status counts the times it held a chunk back and for how long.
func (r *Reader) lagOver(ctx context.Context, st *streamState, j *snapJob) (bool, error) {
	s := r.snaps
	if r.cfg.MaxLagBytes <= 0 {
		return false, nil
	}
	if time.Since(s.lagAt) < lagEvery && s.lagAt.After(time.Time{}) {
		return s.throttled, nil
	}
	conn, err := r.catalog(ctx, st)
	if err != nil {
		return false, err
	}
	var lag int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&lag)
	if err != nil {
		return false, fmt.Errorf("slot lag of %q: %w", r.cfg.Slot, err)
	}
	was := s.throttled
	now := time.Now()
	s.lagAt, s.throttled = now, lag > r.cfg.MaxLagBytes
	s.mu.Lock()
	switch {
	case s.throttled && !was:
		j.throttled++
		j.throttledAt = now
	case !s.throttled && was && !j.throttledAt.IsZero():
		j.throttledFor += now.Sub(j.throttledAt)
		j.throttledAt = time.Time{}
	}
	if s.throttled {
		j.lastThrottled = now.UTC()
	}
	held := j.throttledFor
	s.mu.Unlock()
	switch {
	case s.throttled && !was:
		r.log.Info("incremental snapshot throttled: the slot's lag is over cdc.max_lag", "table", j.req.Table, "lag_bytes", lag, "max_lag_bytes", r.cfg.MaxLagBytes)
	case !s.throttled && was:
		r.log.Info("incremental snapshot resumed: the slot's lag is under cdc.max_lag", "table", j.req.Table, "lag_bytes", lag, "throttled_for", held.String())
	}
	return s.throttled, nil
}

// watermark writes a watermark into the WAL.
func (r *Reader) watermark(ctx context.Context, st *streamState, payload string) error {
	conn, err := r.catalog(ctx, st)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2::text)", watermarkPrefix, payload); err != nil {
		return fmt.Errorf("incremental snapshot: write watermark: %w", err)
	}
	return nil
}

// beginMark is the payload of the begin mark of a snapshot, written by a
// Run whose nonce is nonce.
func beginMark(slot, nonce, id string) string {
	return slot + " " + nonce + " " + id + " begin"
}

// beginMarks writes a begin mark of each snapshot to take into the WAL,
// on conn, before the publication is set (see the comment at the top):
// the stream reaches it before any change of the table, and its snapshot
// event is published there (onBegin).
func (r *Reader) beginMarks(ctx context.Context, conn *pgx.Conn) error {
	for _, j := range r.snaps.jobs {
		if j.phase == phaseDone || !slices.Contains(r.cfg.Tables, j.req.Table) {
			continue
		}
		if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2::text)", watermarkPrefix, beginMark(r.cfg.Slot, r.snaps.nonce, j.req.ID)); err != nil {
			return fmt.Errorf("incremental snapshot of %s: write its begin mark: %w", j.req.Table, err)
		}
	}
	return nil
}

// onBegin publishes the snapshot event of the job whose begin mark (of
// this Run or an earlier one) m is, at the mark's position; it reports
// whether m was one. A job that cannot be taken (see prepareSnapshot)
// publishes none.
func (r *Reader) onBegin(ctx context.Context, st *streamState, m *pglogrepl.LogicalDecodingMessage) (bool, error) {
	f := strings.Fields(string(m.Content))
	if len(f) != 4 || f[0] != r.cfg.Slot || f[3] != "begin" {
		return false, nil
	}
	i := slices.IndexFunc(r.snaps.jobs, func(j *snapJob) bool { return j.req.ID == f[2] })
	if i < 0 {
		return true, nil // a snapshot taken (or dropped) since
	}
	j := r.snaps.jobs[i]
	// Each Run writes its marks before it streams, so they come before
	// its first chunk is read; a snapshot event after a chunk would
	// empty the table of the chunk's rows.
	if j.phase == phaseDone || j.chunk > 1 || j.chunk == 1 && j.phase != phaseLow {
		return true, nil
	}
	if j.cols == nil {
		if err := r.prepareSnapshot(ctx, st, j); err != nil || j.phase == phaseDone {
			return true, err
		}
	}
	return true, r.publishBegin(ctx, st, j, m.LSN)
}

// publishBegin publishes the job's snapshot event at lsn.
func (r *Reader) publishBegin(ctx context.Context, st *streamState, j *snapJob, lsn pglogrepl.LSN) error {
	ev := protocol.ChangeEvent{Op: protocol.OpSnapshot, Pipeline: r.cfg.Pipeline, Database: st.database, Schema: j.schema, Table: j.table,
		Key: j.key, LSN: formatLSN(lsn), CommitLSN: formatLSN(lsn), CommitTime: time.Now().UTC()}
	if err := r.publishMarker(ctx, st, j, ev, lsn, "begin"); err != nil {
		return err
	}
	j.began = true
	return nil
}

// onWatermark handles a logical message that may be one of the job's
// watermarks, or a snapshot's begin mark; it reports whether it was.
func (r *Reader) onWatermark(ctx context.Context, st *streamState, m *pglogrepl.LogicalDecodingMessage) (bool, error) {
	if m.Prefix != watermarkPrefix || m.Transactional {
		return false, nil
	}
	if ok, err := r.onBegin(ctx, st, m); ok || err != nil {
		return ok, err
	}
	j := r.snaps.current()
	if j == nil {
		return false, nil
	}
	switch {
	case j.phase == phaseLow && string(m.Content) == j.low:
		return true, r.onLow(ctx, st, j, m.LSN)
	case j.phase == phaseWindow && string(m.Content) == j.high:
		return true, r.onHigh(ctx, st, j, m.LSN)
	}
	return false, nil
}

// onLow selects the chunk and writes its high watermark.
//
// The select must see every transaction whose commit the stream delivered
// before the low watermark: their changes were published before it, and a
// row read older than them would be published after them. PostgreSQL
// makes a transaction visible a moment after its commit record is
// flushed, and so streamable: a backend descheduled in between (a loaded
// machine) leaves its transaction delivered and still in progress for a
// new snapshot. So the chunk is read in a repeatable-read transaction
// whose snapshot is checked against the transactions the stream
// delivered last; when it misses one, the chunk starts again at a new low
// watermark.
func (r *Reader) onLow(ctx context.Context, st *streamState, j *snapJob, lsn pglogrepl.LSN) error {
	conn, err := r.catalog(ctx, st)
	if err != nil {
		return err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("incremental snapshot of %s: chunk %d: %w", j.req.Table, j.chunk, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // nothing to undo after Commit
	var snap string
	if err := tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
		return fmt.Errorf("incremental snapshot of %s: chunk %d: %w", j.req.Table, j.chunk, err)
	}
	xid, missed, err := invisible(snap, st.delivered[:min(st.next, deliveredRing)])
	if err != nil {
		return fmt.Errorf("incremental snapshot of %s: chunk %d: %w", j.req.Table, j.chunk, err)
	}
	if missed {
		if err := tx.Rollback(ctx); err != nil {
			return fmt.Errorf("incremental snapshot of %s: chunk %d: %w", j.req.Table, j.chunk, err)
		}
		if j.tries++; j.tries == 1 || j.tries%100 == 0 {
			r.log.Info("incremental snapshot: a transaction the stream delivered is not visible yet; the chunk starts again at a new low watermark",
				"table", j.req.Table, "chunk", j.chunk, "xid", xid, "tries", j.tries)
		}
		return r.writeLow(ctx, st, j)
	}
	if !j.began {
		// No begin mark of the snapshot was met (the slot was made by
		// this Run, after the marks): it begins at its first chunk.
		if err := r.publishBegin(ctx, st, j, lsn); err != nil {
			return err
		}
	}
	cols := make([]string, len(j.cols))
	for i, c := range j.cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	keys := make([]string, len(j.key))
	for i, k := range j.key {
		keys[i] = pgx.Identifier{k}.Sanitize()
	}
	sql := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{j.schema, j.table}.Sanitize()
	var params [][]byte
	if j.next != nil {
		casts := make([]string, len(j.key))
		for i := range j.key {
			casts[i] = fmt.Sprintf("$%d::%s", i+1, j.keyTypes[i])
			params = append(params, []byte(j.next[i]))
		}
		sql += " WHERE (" + strings.Join(keys, ", ") + ") > (" + strings.Join(casts, ", ") + ")"
	}
	limit := r.cfg.ChunkRows
	sql += " ORDER BY " + strings.Join(keys, ", ") + " LIMIT " + strconv.Itoa(limit)
	j.rows, j.order = map[string][][]byte{}, nil
	n := 0
	var last []string
	rr := conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil) // text in, text out
	for rr.NextRow() {
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = slices.Clone(v)
			}
		}
		k := rowKey(row, j.keyIdx)
		j.rows[k] = row
		j.order = append(j.order, k)
		last = last[:0]
		for _, i := range j.keyIdx {
			last = append(last, string(row[i]))
		}
		n++
	}
	if _, err := rr.Close(); err != nil {
		return fmt.Errorf("incremental snapshot of %s: select chunk %d: %w", j.req.Table, j.chunk, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("incremental snapshot of %s: select chunk %d: %w", j.req.Table, j.chunk, err)
	}
	if n > 0 {
		j.next = slices.Clone(last)
	}
	j.full = n == limit
	if err := r.watermark(ctx, st, j.high); err != nil {
		return err
	}
	j.phase = phaseWindow
	return nil
}

// rowKey joins a row's key values (PostgreSQL text holds no NUL).
func rowKey(row [][]byte, keyIdx []int) string {
	var b strings.Builder
	for n, i := range keyIdx {
		if n > 0 {
			b.WriteByte(0)
		}
		b.Write(row[i])
	}
	return b.String()
}

// onChange removes from the chunk under way the keys of a change of its
// table between the chunk's watermarks: the change, published in its
// place, is as new as the chunk's row or newer. A truncate empties the
// chunk.
func (r *Reader) onChange(rel *relation, op protocol.Op, before, after []protocol.Cell) {
	if j := r.snaps.current(); j != nil {
		j.onChange(rel, op, before, after)
	}
}

// onChange: see Reader.onChange. An update that leaves a value unchanged
// (TOAST, not sent) cannot stand for the row: an applier without the row
// has no value to keep and leaves the update out, counting on the chunk.
// Its key's row, when the chunk has it, is then kept, with the values the
// update sent written over it: a value left unchanged is the chunk's, the
// same before and after the update (or sent whole by a change after it in
// the window, written over it in turn), so at the high watermark the row
// is as new as the window's last change of it.
func (j *snapJob) onChange(rel *relation, op protocol.Op, before, after []protocol.Cell) {
	if j.phase != phaseWindow || rel.schema != j.schema || rel.table != j.table {
		return
	}
	if op == protocol.OpTruncate {
		clear(j.rows)
		return
	}
	if op == protocol.OpUpdate && j.patch(rel, before, after) {
		return
	}
	for _, cells := range [2][]protocol.Cell{before, after} {
		if k, ok := cellsKey(cells, rel.keyIdx); ok {
			delete(j.rows, k)
		}
	}
}

// patch writes an update that leaves a value unchanged over its key's row
// in the chunk (see snapJob.onChange); false when the update sends every
// value, moves the row to another key, or names a column the chunk did
// not read, or the chunk has no row of the key.
func (j *snapJob) patch(rel *relation, before, after []protocol.Cell) bool {
	if !slices.ContainsFunc(after, func(c protocol.Cell) bool { return c.Kind == protocol.CellUnchanged }) {
		return false
	}
	k, ok := cellsKey(after, rel.keyIdx)
	if !ok {
		return false
	}
	if bk, ok := cellsKey(before, rel.keyIdx); ok && bk != k {
		return false
	}
	row, ok := j.rows[k]
	if !ok || len(rel.names) != len(after) {
		return false
	}
	at := make([]int, len(after))
	for i, name := range rel.names {
		if at[i] = slices.Index(j.cols, name); at[i] < 0 && after[i].Kind != protocol.CellUnchanged && after[i].Kind != protocol.CellAbsent {
			return false
		}
	}
	for i, c := range after {
		switch {
		case at[i] < 0:
		case c.Kind == protocol.CellText:
			row[at[i]] = append([]byte{}, c.Text...) // never nil: nil is NULL
		case c.Kind == protocol.CellNull:
			row[at[i]] = nil
		}
	}
	return true
}

// cellsKey joins the key values of a row of cells; ok is false when the
// row lacks one.
func cellsKey(cells []protocol.Cell, keyIdx []int) (string, bool) {
	var b strings.Builder
	for n, i := range keyIdx {
		if i >= len(cells) || cells[i].Kind != protocol.CellText {
			return "", false
		}
		if n > 0 {
			b.WriteByte(0)
		}
		b.Write(cells[i].Text)
	}
	return b.String(), true
}

// onHigh publishes the chunk's rows left as read events at the high
// watermark's position, then, after the last chunk, the table's
// snapshot_done event. The slot is confirmed past the watermark only once
// JetStream acknowledged them.
func (r *Reader) onHigh(ctx context.Context, st *streamState, j *snapJob, lsn pglogrepl.LSN) error {
	at := time.Now().UTC()
	var tx protocol.TxFields
	if err := tx.Set(formatLSN(lsn), 0, at); err != nil {
		return err
	}
	p := &st.pack
	cells := make([]protocol.Cell, len(j.cols))
	index := 0
	flush := func() error {
		if p.n == 0 {
			return nil
		}
		return r.flushAs(ctx, st, fmt.Sprintf("%s:isnap:%s:%s.%s:%d", r.cfg.Slot, formatLSN(lsn), j.schema, j.table, p.first))
	}
	for _, k := range j.order {
		row, ok := j.rows[k]
		if !ok {
			continue // a change of it came between the watermarks
		}
		for i, v := range row {
			if v == nil {
				cells[i] = protocol.Cell{Kind: protocol.CellNull}
			} else {
				cells[i] = protocol.Cell{Kind: protocol.CellText, Text: v}
			}
		}
		out := cells
		if j.contract != nil {
			_, _, after, keep, err := j.contract.Change(protocol.OpRead, nil, cells)
			if err != nil {
				return fmt.Errorf("incremental snapshot of %s: contract: row %d of chunk %d: %w", j.req.Table, index+1, j.chunk, err)
			}
			if !keep {
				continue // the contract's filter leaves the row out
			}
			out = after
		}
		if p.n > 0 && (p.n >= r.cfg.MessageEvents || len(p.data) >= st.maxBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		if p.n == 0 {
			p.subject, p.first = j.subject, index
		} else {
			p.data = append(p.data, '\n')
		}
		p.data = protocol.AppendChange(p.data, protocol.OpRead, j.fields, j.columns, nil, out, uint64(lsn), index, &tx)
		if index == 0 {
			p.data = protocol.AppendRelation(p.data, j.relation)
		}
		p.n++
		index++
	}
	if err := flush(); err != nil {
		return err
	}
	r.snaps.mu.Lock()
	j.published += int64(index)
	r.snaps.mu.Unlock()
	j.rows, j.order = nil, nil
	if j.full {
		j.phase = phaseIdle
		r.queueSnapshot(st, lsn)
		return nil
	}
	ev := protocol.ChangeEvent{Op: protocol.OpSnapshotDone, Pipeline: r.cfg.Pipeline, Database: st.database, Schema: j.schema, Table: j.table,
		Key: j.key, LSN: formatLSN(lsn), CommitLSN: formatLSN(lsn), CommitTime: at}
	if err := r.publishMarker(ctx, st, j, ev, lsn, "done"); err != nil {
		return err
	}
	j.phase = phaseDone
	// Reported taken (and so dropped from the snapshots to take) only
	// once JetStream holds every message of it: a Reader stopped before
	// would leave the next one without the job, and the rows unread.
	st.queue[len(st.queue)-1].acked = func() {
		r.snaps.set(j, protocol.TableSnapshotted, "")
		r.log.Info("incremental snapshot done", "table", j.req.Table, "snapshot", j.req.ID, "rows", j.published, "chunks", j.chunk)
	}
	return nil
}

// publishMarker publishes a snapshot or snapshot_done event of the job's
// table alone, to be confirmed with the watermark at lsn.
func (r *Reader) publishMarker(ctx context.Context, st *streamState, j *snapJob, ev protocol.ChangeEvent, lsn pglogrepl.LSN, what string) error {
	data, err := ev.Encode()
	if err != nil {
		return err
	}
	p := &st.pack
	p.subject, p.first, p.n = j.subject, 0, 1
	p.data = append(p.data[:0], data...)
	if err := r.flushAs(ctx, st, fmt.Sprintf("%s:isnap:%s:%s.%s:%s", r.cfg.Slot, formatLSN(lsn), j.schema, j.table, what)); err != nil {
		return err
	}
	r.queueSnapshot(st, lsn)
	return nil
}

// queueSnapshot queues the messages published outside a transaction, to be
// confirmed with the watermark at lsn once acknowledged.
func (r *Reader) queueSnapshot(st *streamState, lsn pglogrepl.LSN) {
	st.queue = append(st.queue, &pending{end: lsn, futs: st.futs, since: time.Now()})
	st.futs = nil
}

// snapshotStatus reports the incremental snapshots.
func (r *Reader) snapshotStatus() []protocol.TableStatus { return r.snaps.status() }
