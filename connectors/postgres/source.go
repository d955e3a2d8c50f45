package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Plan counts the rows exactly (honouring the filter) instead of trusting
// pg_class.reltuples when the table was never analyzed, for an incremental
// window, below countBelow estimated rows, and with a filter below
// exactCountBelow estimated rows (the estimate is the whole table's). A
// count is a scan of the table before any chunk starts (about 0.15 s for
// 2M rows), and the estimate only sizes the chunks.
const (
	countBelow      = 500_000
	exactCountBelow = 5_000_000
)

// ErrSnapshotGone is wrapped (and marked connectors.Replan) by Read when
// the snapshot its run was planned on no longer exists: the source that
// planned the run closed, released it, or its session ended (a leader
// restart). The run must be planned again.
var ErrSnapshotGone = errors.New("the run's exported snapshot is gone (the source that planned it was closed or restarted): the run must be re-planned")

// Source reads one PostgreSQL table as a full load. See the package
// documentation for how it plans and what it holds.
type Source struct {
	cfg   SourceConfig
	table pgx.Identifier

	mu   sync.Mutex
	runs map[string]*pgx.Conn // sessions holding a run's exported snapshot
}

var _ connectors.Source = (*Source)(nil)

// NewSource returns a source for a validated configuration. It connects
// only when it plans or reads.
func NewSource(cfg SourceConfig) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	table, _ := parseTable(cfg.Table, "table", 0)
	return &Source{cfg: cfg, table: table, runs: map[string]*pgx.Conn{}}, nil
}

// openSource is the connectors.SourceFactory of the kind.
func openSource(_ context.Context, config json.RawMessage) (connectors.Source, error) {
	cfg, err := ParseSourceConfig(config)
	if err != nil {
		return nil, err
	}
	return NewSource(cfg)
}

// chunkSpec is the Spec of a partition: the bounds of one chunk, the
// columns, and the snapshot every chunk of the run reads.
type chunkSpec struct {
	V        int      `json:"v"`
	Run      string   `json:"run,omitempty"`
	Snapshot string   `json:"snapshot,omitempty"`
	Columns  []string `json:"columns"`
	// Key is the integer column of a key-range chunk, with the range
	// [Lo, Hi); a missing bound is open. The chunk without a lower bound
	// also reads the rows whose key is NULL.
	Key string `json:"key,omitempty"`
	Lo  *int64 `json:"lo,omitempty"`
	Hi  *int64 `json:"hi,omitempty"`
	// BlockLo and BlockHi bound a ctid chunk: blocks [BlockLo, BlockHi);
	// a missing bound is open. Ctid is set for ctid chunks.
	Ctid    bool   `json:"ctid,omitempty"`
	BlockLo *int64 `json:"block_lo,omitempty"`
	BlockHi *int64 `json:"block_hi,omitempty"`
	// Delta bounds every chunk of an incremental run to its window.
	Delta *deltaSpec `json:"delta,omitempty"`
	// Format is the COPY format of a passthrough's chunk (formatBinary or
	// formatText); empty for a load's, which reads CSV.
	Format string `json:"format,omitempty"`
	// Text names the columns of a binary chunk read in their text form
	// (a transform's, connectors.PlanRequest.TextColumns); Formatted
	// those of them whose cast to text is not their type's output
	// function (a boolean's gives true, not t: see textCastDiffers).
	Text      []string `json:"text,omitempty"`
	Formatted []string `json:"formatted,omitempty"`
}

// deltaSpec is the window of an incremental run on its delta column.
type deltaSpec struct {
	Column string `json:"column"`
	// Type is "timestamptz" for a timestamptz column, "timestamp" for a
	// timestamp or date column (compared with the window's bounds as UTC
	// wall-clock times), "integer" for an integer column (a window of
	// values [Lo, Hi)).
	Type string    `json:"type"`
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	Lo   int64     `json:"lo,omitempty"`
	Hi   int64     `json:"hi,omitempty"`
}

// cond is the SQL condition `col >= from AND col < to`, with the bounds
// rendered as literals of the column's type (so an index on the column
// serves it).
func (d *deltaSpec) cond() string {
	if d == nil {
		return ""
	}
	k := pgx.Identifier{d.Column}.Sanitize()
	if d.Type == "integer" {
		return fmt.Sprintf("%s >= %d AND %s < %d", k, d.Lo, k, d.Hi)
	}
	lit := func(t time.Time) string {
		if d.Type == "timestamptz" {
			return quoteLiteral(t.UTC().Format(time.RFC3339Nano)) + "::timestamptz"
		}
		return quoteLiteral(t.UTC().Format("2006-01-02 15:04:05.999999")) + "::timestamp"
	}
	return fmt.Sprintf("%s >= %s AND %s < %s", k, lit(d.From), k, lit(d.To))
}

// deltaTypes maps the types a delta column may have to deltaSpec.Type.
var deltaTypes = map[string]string{
	"timestamp with time zone":    "timestamptz",
	"timestamp without time zone": "timestamp",
	"date":                        "timestamp",
}

// intTypes are the types of an integer delta column (and numeric without
// scale, named with its precision, such as numeric(20,0)).
var intTypes = map[string]bool{"smallint": true, "integer": true, "bigint": true}

// integerType reports whether a column of type typ (format_type with its
// modifier) holds integers.
func integerType(typ string) bool {
	return intTypes[typ] || strings.HasPrefix(typ, "numeric(") && strings.HasSuffix(typ, ",0)")
}

// deltaColumn looks up the delta column of an incremental run: a time for
// a time window, an integer for a window of values.
func (s *Source) deltaColumn(ctx context.Context, conn *pgx.Conn, oid uint32, req connectors.PlanRequest) (*deltaSpec, error) {
	if req.Window == nil {
		return nil, nil
	}
	if req.DeltaColumn == "" {
		return nil, connectors.Permanent(errors.New("an incremental run needs a delta column"))
	}
	var typ, full string
	err := conn.QueryRow(ctx, `SELECT format_type(atttypid, NULL), format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped`, oid, req.DeltaColumn).Scan(&typ, &full)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, connectors.Permanent(fmt.Errorf("incremental.delta_column: table %s has no column %q", s.cfg.Table, req.DeltaColumn))
	}
	if err != nil {
		return nil, fmt.Errorf("look up delta column: %w", err)
	}
	w := req.Window
	if w.Values {
		if !integerType(full) {
			return nil, connectors.Permanent(fmt.Errorf("incremental.delta_column: column %q of %s is %s; a window of integer values (window: N) wants smallint, integer, bigint or numeric without scale", req.DeltaColumn, s.cfg.Table, full))
		}
		return &deltaSpec{Column: req.DeltaColumn, Type: "integer", Lo: w.Lo, Hi: w.Hi}, nil
	}
	t, ok := deltaTypes[typ]
	if !ok {
		hint := ""
		if integerType(full) {
			hint = " (for an integer column, give incremental.window as a number of values)"
		}
		return nil, connectors.Permanent(fmt.Errorf("incremental.delta_column: column %q of %s is %s; want timestamptz, timestamp or date%s", req.DeltaColumn, s.cfg.Table, full, hint))
	}
	return &deltaSpec{Column: req.DeltaColumn, Type: t, From: w.From.UTC(), To: w.To.UTC()}, nil
}

// trim ends the capped window of integer values of a live run where the
// delta column's values end (connectors.PlanRequest.Trim): after the
// greatest value below the cap, never below the watermark (tr.From), and,
// with tr.MaxRows, after that many rows from the watermark, the rows of
// one value kept together. It reads in the planning transaction, so the
// window ends where the run's snapshot does.
func (s *Source) trim(ctx context.Context, conn *pgx.Conn, d *deltaSpec, tr *connectors.Trim) error {
	k := pgx.Identifier{d.Column}.Sanitize()
	value := func(sql string) (*int64, error) {
		var v *string
		if err := conn.QueryRow(ctx, sql).Scan(&v); errors.Is(err, pgx.ErrNoRows) || err == nil && v == nil {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		n, err := strconv.ParseInt(*v, 10, 64)
		if err != nil {
			return nil, connectors.Permanent(fmt.Errorf("incremental.delta_column: value %s of %q does not fit in 64 bits", *v, d.Column))
		}
		return &n, nil
	}
	top, err := value("SELECT max(" + k + ")::text FROM " + s.table.Sanitize() + s.whereClause(d.cond()))
	if err != nil {
		return fmt.Errorf("find the greatest value of %s: %w", d.Column, err)
	}
	hi := min(max(d.Lo, tr.From), d.Hi) // nothing new: end at the watermark
	if top != nil && *top+1 > hi {
		hi = *top + 1
	}
	from := max(d.Lo, tr.From)
	if tr.MaxRows > 0 && from < hi {
		after, err := value(fmt.Sprintf("SELECT %s::text AS v FROM %s%s ORDER BY %s OFFSET %d LIMIT 1", k, s.table.Sanitize(),
			s.whereClause(fmt.Sprintf("%s >= %d AND %s < %d", k, from, k, hi)), k, tr.MaxRows))
		if err != nil {
			return fmt.Errorf("bound the rows of the run: %w", err)
		}
		if after != nil {
			hi = min(hi, max(*after, from+1))
		}
	}
	d.Hi = hi
	return nil
}

func (c chunkSpec) key() string {
	b := func(p *int64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatInt(*p, 10)
	}
	switch {
	case c.Key != "":
		return fmt.Sprintf("%s[%s:%s)", c.Key, b(c.Lo), b(c.Hi))
	case c.Ctid:
		return fmt.Sprintf("ctid[%s:%s)", b(c.BlockLo), b(c.BlockHi))
	}
	return "all"
}

// tableInfo is what Plan learns of the table.
type tableInfo struct {
	oid       uint32
	kind      string
	reltuples int64
	blocks    int64
	bytes     int64
}

// Plan splits the table into chunks of about TargetRows rows (250000 by
// default). With snapshot "export" it opens a REPEATABLE READ transaction,
// exports its snapshot into every chunk, keeps the transaction open until
// ReleaseRun or Close, and sets the plan's Holds. For an incremental run
// (req.Window set) every chunk, and the count and key bounds that size
// them, is limited to
// `delta_column >= from AND delta_column < to`. ctx bounds the planning
// only. The plan's Schema describes the columns read, from the catalog
// (see logicalType), with the primary key as its key.
func (s *Source) Plan(ctx context.Context, req connectors.PlanRequest) (connectors.Plan, error) {
	return s.plan(ctx, req, func(ctx context.Context, conn *pgx.Conn, oid uint32, specs []chunkSpec) (*protocol.Schema, error) {
		return DescribeTable(ctx, conn, oid, specs[0].Columns)
	})
}

// plan plans the table's chunks (see Plan) and asks describe, inside the
// planning transaction, for the plan's schema; describe may change the
// chunks' columns and format.
func (s *Source) plan(ctx context.Context, req connectors.PlanRequest,
	describe func(ctx context.Context, conn *pgx.Conn, oid uint32, specs []chunkSpec) (*protocol.Schema, error)) (connectors.Plan, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return connectors.Plan{}, err
	}
	held := false
	defer func() {
		if !held {
			conn.Close(context.Background())
		}
	}()
	export := s.cfg.Snapshot != SnapshotNone
	if export {
		ms := s.cfg.snapshotTimeout().Milliseconds()
		if _, err := conn.Exec(ctx, fmt.Sprintf("SET idle_in_transaction_session_timeout = %d", ms)); err != nil {
			return connectors.Plan{}, classify(fmt.Errorf("plan %s: %w", s.cfg.Table, err))
		}
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("plan %s: %w", s.cfg.Table, err))
	}
	var snapshot string
	if export {
		if err := conn.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
			return connectors.Plan{}, classify(fmt.Errorf("plan %s: export snapshot: %w", s.cfg.Table, err))
		}
	}
	specs, info, rows, err := s.chunks(ctx, conn, req)
	if err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("plan %s: %w", s.cfg.Table, err))
	}
	plan := connectors.Plan{}
	if d := specs[0].Delta; req.Trim != nil && d != nil {
		plan.Window = &connectors.Window{Values: true, Lo: d.Lo, Hi: d.Hi}
	}
	if plan.Schema, err = describe(ctx, conn, info.oid, specs); err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("plan %s: %w", s.cfg.Table, err))
	}
	if plan.Window != nil && plan.Window.Empty() {
		specs = nil // nothing new: no task
	}
	if plan.Partitions, err = partitions(specs, req.RunID, snapshot, rows, info.bytes); err != nil {
		return connectors.Plan{}, err
	}
	if export {
		s.mu.Lock()
		old := s.runs[req.RunID]
		s.runs[req.RunID] = conn
		s.mu.Unlock()
		held = true
		plan.Holds = true
		if old != nil {
			old.Close(context.Background())
		}
	} else if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("plan %s: %w", s.cfg.Table, err))
	}
	return plan, nil
}

// partitions are the partitions of a run's chunks, on snapshot, each with
// its share of the table's rows and bytes.
func partitions(specs []chunkSpec, run, snapshot string, rows, bytes int64) ([]protocol.Partition, error) {
	n := int64(len(specs))
	var out []protocol.Partition
	for _, c := range specs {
		c.V = 1
		c.Run = run
		c.Snapshot = snapshot
		spec, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		out = append(out, protocol.Partition{Key: c.key(), Spec: spec, Rows: rows / n, Bytes: bytes / n})
	}
	return out, nil
}

// chunks computes the chunk bounds inside the planning transaction.
func (s *Source) chunks(ctx context.Context, conn *pgx.Conn, req connectors.PlanRequest) ([]chunkSpec, tableInfo, int64, error) {
	targetRows := req.Partitioning.TargetRows
	var info tableInfo
	var relkind byte
	err := conn.QueryRow(ctx, `
		SELECT c.oid, c.relkind, c.reltuples::bigint,
		       CASE WHEN c.relkind IN ('r', 'm') THEN pg_relation_size(c.oid) ELSE 0 END
		FROM pg_class c WHERE c.oid = $1::regclass`, s.table.Sanitize()).
		Scan(&info.oid, &relkind, &info.reltuples, &info.bytes)
	if err != nil {
		return nil, info, 0, fmt.Errorf("look up table: %w", err)
	}
	info.kind = string(relkind)
	var blockSize int64
	if err := conn.QueryRow(ctx, "SELECT current_setting('block_size')::bigint").Scan(&blockSize); err != nil {
		return nil, info, 0, err
	}
	info.blocks = info.bytes / blockSize

	columns, err := s.columns(ctx, conn, info.oid)
	if err != nil {
		return nil, info, 0, err
	}
	key, err := s.key(ctx, conn, info.oid)
	if err != nil {
		return nil, info, 0, err
	}
	if key != "" && s.cfg.Key == "" {
		// A full load of a table on one exported snapshot reads block
		// ranges even when it has an integer primary key.
		if key, err = s.keyUnlessCtid(ctx, conn, key, info, req); err != nil {
			return nil, info, 0, err
		}
	}
	delta, err := s.deltaColumn(ctx, conn, info.oid, req)
	if err != nil {
		return nil, info, 0, err
	}
	if delta != nil && delta.Type == "integer" {
		if req.Trim != nil {
			if err := s.trim(ctx, conn, delta, req.Trim); err != nil {
				return nil, info, 0, err
			}
		}
		// A window of values is chunked by its own column: each chunk
		// reads its part of the window through the column's index, so the
		// chunks read the window once in all (chunks of another key would
		// each go through all of it).
		key = delta.Column
	}
	window := delta.cond()

	rows := info.reltuples // -1 before the first ANALYZE
	filtered := strings.TrimSpace(s.cfg.Where) != ""
	if rows < countBelow || filtered && rows < exactCountBelow || delta != nil {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+s.table.Sanitize()+s.whereClause(window)).Scan(&rows); err != nil {
			return nil, info, 0, fmt.Errorf("count rows: %w", err)
		}
	}
	if targetRows <= 0 {
		targetRows = DefaultTargetRows
	}
	n := max(1, (rows+targetRows-1)/targetRows)
	one := []chunkSpec{{Columns: columns, Delta: delta}}
	if n == 1 {
		return one, info, rows, nil
	}

	if key != "" {
		bounds, err := s.keyBounds(ctx, conn, key, n, rows, window)
		if err != nil {
			return nil, info, 0, err
		}
		if len(bounds) == 0 {
			return one, info, rows, nil
		}
		specs := make([]chunkSpec, 0, len(bounds)+1)
		for i := 0; i <= len(bounds); i++ {
			c := chunkSpec{Columns: columns, Key: key, Delta: delta}
			if i > 0 {
				c.Lo = &bounds[i-1]
			}
			if i < len(bounds) {
				c.Hi = &bounds[i]
			}
			specs = append(specs, c)
		}
		return specs, info, rows, nil
	}
	if info.kind != "r" && info.kind != "m" || info.blocks < 2 {
		// A partitioned table, a view or a foreign table has no blocks of
		// its own: read it as one chunk unless a key is given.
		return one, info, rows, nil
	}
	n = min(n, info.blocks)
	specs := make([]chunkSpec, 0, n)
	for i := range n {
		c := chunkSpec{Columns: columns, Ctid: true, Delta: delta}
		if i > 0 {
			lo := info.blocks * i / n
			c.BlockLo = &lo
		}
		if i < n-1 {
			hi := info.blocks * (i + 1) / n
			c.BlockHi = &hi
		}
		specs = append(specs, c)
	}
	return specs, info, rows, nil
}

// columns returns the configured columns, checked, or every column.
func (s *Source) columns(ctx context.Context, conn *pgx.Conn, oid uint32) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	if len(s.cfg.Columns) == 0 {
		return all, nil
	}
	for i, c := range s.cfg.Columns {
		if !slices.Contains(all, c) {
			return nil, &connectors.FieldError{Field: fmt.Sprintf("columns[%d]", i), Msg: fmt.Sprintf("table %s has no column %q", s.cfg.Table, c)}
		}
	}
	return s.cfg.Columns, nil
}

var integerTypes = []string{"smallint", "integer", "bigint"}

// key returns the integer column to split on, or "" for ctid ranges.
func (s *Source) key(ctx context.Context, conn *pgx.Conn, oid uint32) (string, error) {
	if s.cfg.Key != "" {
		var typ string
		err := conn.QueryRow(ctx, `SELECT format_type(atttypid, NULL) FROM pg_attribute
			WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped`, oid, s.cfg.Key).Scan(&typ)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", &connectors.FieldError{Field: "key", Msg: fmt.Sprintf("table %s has no column %q", s.cfg.Table, s.cfg.Key)}
		}
		if err != nil {
			return "", fmt.Errorf("look up key column: %w", err)
		}
		if !slices.Contains(integerTypes, typ) {
			return "", &connectors.FieldError{Field: "key", Msg: fmt.Sprintf("column %q is %s; a key must be smallint, integer or bigint", s.cfg.Key, typ)}
		}
		return s.cfg.Key, nil
	}
	rows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, NULL)
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1 AND i.indisprimary AND i.indnkeyatts = 1`, oid)
	if err != nil {
		return "", fmt.Errorf("look up primary key: %w", err)
	}
	var name, typ string
	found := false
	_, err = pgx.ForEachRow(rows, []any{&name, &typ}, func() error { found = true; return nil })
	if err != nil {
		return "", fmt.Errorf("look up primary key: %w", err)
	}
	if found && slices.Contains(integerTypes, typ) {
		return name, nil
	}
	return "", nil
}

// keyUnlessCtid returns "" (read ctid block ranges) instead of the primary
// key when a run can read block ranges exactly and cheaply: a full load
// (no delta window) of a table or materialized view, on one exported
// snapshot, on PostgreSQL 14 or later. A block range is then a TID Range
// Scan, sequential and about 25% cheaper for the server than an index
// range scan (measured: 2M rows in 8 chunks, 4 at a time, 2.2 against 2.9
// CPU-s), and exact: every chunk sees the snapshot's row versions, which
// stay where they are while the snapshot is held. Without a snapshot
// (snapshot "none") a row updated between two chunks may move from a
// block range read later to one read earlier, so key ranges stay; a delta
// window is best served by the key (or the delta column's) index. A
// configured key always wins.
func (s *Source) keyUnlessCtid(ctx context.Context, conn *pgx.Conn, key string, info tableInfo, req connectors.PlanRequest) (string, error) {
	if req.Window != nil || s.cfg.Snapshot == SnapshotNone || info.kind != "r" && info.kind != "m" || info.blocks < 2 {
		return key, nil
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return "", fmt.Errorf("server version: %w", err)
	}
	if version < 140000 { // TID Range Scans came with PostgreSQL 14
		return key, nil
	}
	return "", nil
}

// keyBounds returns the n-1 inner bounds of n key ranges, increasing, or
// none when the table is empty. Ranges are even over [min, max] unless the
// keys are sparse (more than twice as many key values as rows), when they
// come from the keys' percentiles.
func (s *Source) keyBounds(ctx context.Context, conn *pgx.Conn, key string, n, rows int64, window string) ([]int64, error) {
	k := pgx.Identifier{key}.Sanitize()
	var lo, hi *int64
	where := ""
	if window != "" {
		where = s.whereClause(window)
	}
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT min(%s)::bigint, max(%s)::bigint FROM %s%s", k, k, s.table.Sanitize(), where)).Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("key range: %w", err)
	}
	if lo == nil || hi == nil {
		return nil, nil
	}
	span := float64(*hi) - float64(*lo) + 1
	var bounds []int64
	if rows > 0 && span > 2*float64(rows) {
		fracs := make([]float64, n-1)
		for i := range fracs {
			fracs[i] = float64(i+1) / float64(n)
		}
		sample := ""
		if rows > 1_000_000 {
			// About 200k sampled rows are plenty for percentiles.
			sample = fmt.Sprintf(" TABLESAMPLE SYSTEM (%g)", math.Min(100, 100*200_000/float64(rows)))
		}
		q := fmt.Sprintf("SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY %s)::bigint[] FROM %s%s%s",
			k, s.table.Sanitize(), sample, s.whereClause(joinConds(k+" IS NOT NULL", window)))
		var ps []*int64
		if err := conn.QueryRow(ctx, q, fracs).Scan(&ps); err != nil {
			return nil, fmt.Errorf("key percentiles: %w", err)
		}
		for _, p := range ps {
			if p != nil {
				bounds = append(bounds, *p)
			}
		}
	}
	if len(bounds) == 0 {
		for i := int64(1); i < n; i++ {
			bounds = append(bounds, *lo+int64(span*float64(i)/float64(n)))
		}
	}
	// Keep strictly increasing bounds inside (min, max].
	out := bounds[:0]
	prev := *lo
	for _, b := range bounds {
		if b > prev && b <= *hi {
			out = append(out, b)
			prev = b
		}
	}
	return out, nil
}

// whereClause returns " WHERE ..." with the configured filter and the extra
// condition, or "".
func (s *Source) whereClause(extra string) string {
	var conds []string
	if extra != "" {
		conds = append(conds, extra)
	}
	if strings.TrimSpace(s.cfg.Where) != "" {
		conds = append(conds, "("+s.cfg.Where+")")
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// query returns the SELECT of one chunk.
func (s *Source) query(c chunkSpec) string {
	cols := make([]string, len(c.Columns))
	for i, col := range c.Columns {
		cols[i] = pgx.Identifier{col}.Sanitize()
		switch {
		case slices.Contains(c.Formatted, col):
			// The text the text format holds: format's %s is the
			// type's output function, as COPY's.
			cols[i] = "CASE WHEN " + cols[i] + " IS NULL THEN NULL ELSE pg_catalog.format('%s', " + cols[i] + ") END"
		case slices.Contains(c.Text, col):
			// A cast through the output function, or between types
			// of the same text.
			cols[i] += "::pg_catalog.text"
		}
	}
	var conds []string
	switch {
	case c.Key != "":
		k := pgx.Identifier{c.Key}.Sanitize()
		if c.Lo != nil {
			conds = append(conds, fmt.Sprintf("%s >= %d", k, *c.Lo))
		}
		if c.Hi != nil {
			hi := fmt.Sprintf("%s < %d", k, *c.Hi)
			if c.Lo == nil {
				hi = fmt.Sprintf("(%s OR %s IS NULL)", hi, k)
			}
			conds = append(conds, hi)
		}
	case c.Ctid:
		if c.BlockLo != nil {
			conds = append(conds, fmt.Sprintf("ctid >= '(%d,0)'::tid", *c.BlockLo))
		}
		if c.BlockHi != nil {
			conds = append(conds, fmt.Sprintf("ctid < '(%d,0)'::tid", *c.BlockHi))
		}
	}
	if d := c.Delta.cond(); d != "" {
		conds = append(conds, d)
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + s.table.Sanitize() + s.whereClause(strings.Join(conds, " AND "))
}

// joinConds AND-s the non-empty conditions.
func joinConds(conds ...string) string {
	var out []string
	for _, c := range conds {
		if c != "" {
			out = append(out, c)
		}
	}
	return strings.Join(out, " AND ")
}

var snapshotIDRE = regexp.MustCompile(`^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+$`)

// Read copies one chunk with COPY ... TO STDOUT (FORMAT csv) and emits its
// CSV records, undecoded, in Raw batches of about 1 MiB (Format csv,
// Columns set, no header, Checksum set: summed while splitting, so that a
// sink passing the bytes through need not scan them again). A chunk without rows emits one empty batch, so
// that a sink still learns the columns. With an exported snapshot the read
// sees exactly the rows of the run's snapshot, however often it is
// repeated; a snapshot that is gone fails with a connectors.Replan error
// wrapping ErrSnapshotGone. ctx bounds the whole read.
func (s *Source) Read(ctx context.Context, p protocol.Partition, emit connectors.Emit) error {
	c, err := s.chunk(p)
	if err != nil {
		return err
	}
	err = s.read(ctx, c, p.Key, emit)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// chunk decodes and checks a partition's chunk spec.
func (s *Source) chunk(p protocol.Partition) (chunkSpec, error) {
	var c chunkSpec
	if err := json.Unmarshal(p.Spec, &c); err != nil {
		return c, connectors.Permanent(fmt.Errorf("read %s %s: bad partition spec: %w", s.cfg.Table, p.Key, err))
	}
	if c.V != 1 || len(c.Columns) == 0 {
		return c, connectors.Permanent(fmt.Errorf("read %s %s: partition spec version %d is not one this build reads", s.cfg.Table, p.Key, c.V))
	}
	if c.Snapshot != "" && !snapshotIDRE.MatchString(c.Snapshot) {
		return c, connectors.Permanent(fmt.Errorf("read %s %s: bad snapshot id %q", s.cfg.Table, p.Key, c.Snapshot))
	}
	return c, nil
}

// hijackChunk connects, begins the transaction of chunk c on its
// snapshot and takes the idle connection from pgx, for a COPY read
// straight off it (see copyOut). The caller closes the connection.
func (s *Source) hijackChunk(ctx context.Context, c chunkSpec, where string) (net.Conn, error) {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) {
		conn.Close(context.Background())
		return nil, err
	}
	if err := beginInSnapshot(ctx, conn, c.Snapshot, c.Run, where); err != nil {
		return fail(err)
	}
	if err := conn.PgConn().SyncConn(ctx); err != nil {
		return fail(classify(fmt.Errorf("%s: %w", where, err)))
	}
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		return fail(fmt.Errorf("%s: %w", where, err))
	}
	return hc.Conn, nil
}

func (s *Source) read(ctx context.Context, c chunkSpec, key string, emit connectors.Emit) error {
	where := fmt.Sprintf("read %s %s", s.cfg.Table, key)
	bw := &batchWriter{
		emit: emit, columns: c.Columns,
		split:    newRecordSplitter(batchBytes + rawReadBuffer + batchBytes/8),
		position: s.cfg.Table + " " + key,
	}
	// The COPY and the COMMIT go in one simple query, read straight off
	// the connection (see copyOut).
	sql := "COPY (" + s.query(c) + ") TO STDOUT WITH (FORMAT csv); COMMIT"
	conn, err := s.hijackChunk(ctx, c, where)
	if err != nil {
		return err
	}
	defer conn.Close()
	copied, err := copyOut(ctx, conn, sql, bw)
	if err != nil {
		if bw.emitErr != nil {
			return fmt.Errorf("%s: %w", where, bw.emitErr)
		}
		return classify(fmt.Errorf("%s: copy: %w", where, err))
	}
	if bw.split.Partial() {
		return fmt.Errorf("%s: copy output ends inside a record", where)
	}
	if err := bw.flush(ctx); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if bw.rows != copied {
		return fmt.Errorf("%s: split %d records but COPY sent %d rows", where, bw.rows, copied)
	}
	if bw.rows == 0 {
		if err := emit(ctx, connectors.Batch{Format: connectors.FormatCSV, Columns: c.Columns, Position: bw.position + " row 1"}); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

// rawReadBuffer is the size of copyOut's reads, and copyLowWater how much
// the socket holds before a read wakes up. The server sends one CopyData
// message per row, in 8 KiB writes: a reader woken for each of them (as
// the process takes far less time to split a write than the server takes
// to produce it) costs both processes more CPU than the split itself
// (measured, 2M rows in 8 chunks 4 at a time: 1.5 CPU-s for the process
// and 3.2 for the server, against 0.6 and 2.5 when woken every 128 KiB).
const (
	rawReadBuffer = 256 << 10
	copyLowWater  = 128 << 10
)

// copyOut sends sql, a simple query made of one COPY ... TO STDOUT and
// then COMMIT, on conn, a connection taken from pgconn (Hijack) while idle
// inside a transaction, and reads the response off the connection itself:
// the payloads of the CopyData messages (one per row) are appended to the
// splitter as they come, and the splitter scans each read's worth at once,
// instead of a call through pgconn, an io.Writer and the splitter per row.
// bw emits whole batches as they fill. A Terminate follows the query, so
// the server closes the session once it is done, which also wakes a read
// waiting for copyLowWater bytes that will never come. It returns the row
// count of the COPY's command tag once the server is ready for the next
// query, or the server's error (a *pgconn.PgError) then; closing conn is
// the caller's. ctx bounds the whole read: its cancellation makes the
// pending read fail.
func copyOut(ctx context.Context, conn net.Conn, sql string, bw *batchWriter) (int64, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	q, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return 0, err
	}
	// Terminate right behind the query: the server reads it once it is
	// ready for the next query, and ends the session.
	q = append(q, 'X', 0, 0, 0, 4)
	if _, err := conn.Write(q); err != nil {
		return 0, err
	}
	setReadLowWater(conn, copyLowWater)
	buf := make([]byte, rawReadBuffer)
	var (
		rp, wp  int   // unparsed bytes: buf[rp:wp]
		data    int   // bytes of the current CopyData message still to come
		copied  int64 // rows of the COPY's command tag
		tagged  bool
		serrErr error // the server's ErrorResponse, reported at ReadyForQuery
	)
	split := bw.split
	for {
		n, err := conn.Read(buf[wp:])
		wp += n
		if n == 0 && err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, err
		}
	parse:
		for rp < wp {
			if data > 0 {
				k := min(data, wp-rp)
				split.add(buf[rp : rp+k])
				rp += k
				data -= k
				continue
			}
			if wp-rp < 5 {
				break
			}
			typ := buf[rp]
			size := int(binary.BigEndian.Uint32(buf[rp+1:])) - 4
			if size < 0 {
				return 0, fmt.Errorf("bad message length %d", size+4)
			}
			if typ == 'd' {
				rp += 5
				data = size
				continue
			}
			if wp-rp-5 < size {
				if 5+size > len(buf) {
					if size > 1<<30 {
						return 0, fmt.Errorf("message %q of %d bytes", typ, size)
					}
					buf = append(buf[:wp], make([]byte, 5+size-(wp-rp))...)
				}
				break parse
			}
			body := buf[rp+5 : rp+5+size]
			rp += 5 + size
			switch typ {
			case 'H', 'c', 'N', 'S', 'A': // copy out, copy done, notices, parameters, notifications
			case 'C':
				if !tagged {
					// Each statement's tag ends in a NUL: "COPY 123",
					// then "COMMIT".
					ct := pgconn.NewCommandTag(string(bytes.TrimSuffix(body, []byte{0})))
					copied, tagged = ct.RowsAffected(), true
				}
			case 'E':
				var er pgproto3.ErrorResponse
				if err := er.Decode(body); err != nil {
					return 0, err
				}
				if serrErr == nil {
					serrErr = pgconn.ErrorResponseToPgError(&er)
				}
			case 'Z':
				if rp != wp || data != 0 {
					return 0, errors.New("data after ReadyForQuery")
				}
				if serrErr != nil {
					return 0, serrErr
				}
				if !tagged {
					return 0, errors.New("no command tag for the COPY")
				}
				split.scan()
				return copied, nil
			default:
				return 0, fmt.Errorf("unexpected message %q during COPY", typ)
			}
		}
		split.scan()
		if split.WholeLen() >= batchBytes {
			if err := bw.flush(ctx); err != nil {
				bw.emitErr = err
				return 0, err
			}
		}
		if rp == wp {
			rp, wp = 0, 0
		} else if rp > 0 && len(buf)-wp < len(buf)/4 {
			wp = copy(buf, buf[rp:wp])
			rp = 0
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, err
		}
	}
}

// batchWriter receives COPY output and emits whole records in batches.
type batchWriter struct {
	emit     connectors.Emit
	columns  []string
	split    *recordSplitter
	position string
	rows     int64 // records emitted
	emitErr  error
}

func (w *batchWriter) flush(ctx context.Context) error {
	if w.split.WholeLen() == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err // no batch after a cancellation
	}
	raw, sum := w.split.TakeSummed()
	n := sum.Rows
	b := connectors.Batch{
		Raw: raw, Format: connectors.FormatCSV, Columns: w.columns, Rows: n,
		Position: fmt.Sprintf("%s row %d", w.position, w.rows+1),
		Checksum: &sum,
	}
	w.rows += n
	return w.emit(ctx, b)
}

// ReleaseRun ends the transaction that holds the exported snapshot of a
// run; chunks of the run read after it fail with ErrSnapshotGone. The
// coordinator leader calls it when the run ends (committed, failed or
// aborted). Releasing a run that holds nothing does nothing.
func (s *Source) ReleaseRun(runID string) error {
	s.mu.Lock()
	conn := s.runs[runID]
	delete(s.runs, runID)
	s.mu.Unlock()
	if conn == nil {
		return nil
	}
	return release(conn)
}

// release ends the session holding a snapshot: ending the session ends its
// transaction, which is all a release needs, even when the session already
// ended on the server (snapshot_timeout).
func release(conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// ROLLBACK first: closing alone ends the session asynchronously on the
	// server, and a chunk read right after could still import the
	// snapshot. An error means the session is gone already.
	_, _ = conn.Exec(ctx, "ROLLBACK")
	return conn.Close(ctx)
}

// HeldRuns lists the runs whose snapshot the source holds, sorted.
func (s *Source) HeldRuns() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.runs))
	for id := range s.runs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Close releases the snapshots of every run the source planned.
func (s *Source) Close() error {
	var errs []error
	for _, id := range s.HeldRuns() {
		errs = append(errs, s.ReleaseRun(id))
	}
	return errors.Join(errs...)
}

// classify marks errors that another attempt would not cure as permanent:
// SQL errors of class 42 (syntax, unknown table or column, privileges) and
// 22 (bad data).
func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "42") || strings.HasPrefix(pgErr.Code, "22")) {
		return connectors.Permanent(err)
	}
	return err
}

// PlanSnapshot plans the table's chunks like Plan, but on snapshot: a
// snapshot another session exported (pg_export_snapshot, or the
// CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT of a logical replication
// slot). Inside BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY and SET
// TRANSACTION SNAPSHOT it counts and bounds the chunks, stamps snapshot into
// every chunk, and commits. It holds nothing: the session that exported
// snapshot must stay open until every chunk is read (a chunk read after it
// ended fails with ErrSnapshotGone), and ReleaseRun has nothing to release
// for the run. A snapshot that is already gone fails with a
// connectors.Replan error wrapping ErrSnapshotGone. ctx bounds the planning
// only.
func (s *Source) PlanSnapshot(ctx context.Context, req connectors.PlanRequest, snapshot string) (connectors.Plan, error) {
	where := "plan " + s.cfg.Table
	if !snapshotIDRE.MatchString(snapshot) {
		return connectors.Plan{}, connectors.Permanent(fmt.Errorf("%s: bad snapshot id %q", where, snapshot))
	}
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return connectors.Plan{}, err
	}
	defer conn.Close(context.Background())
	if err := beginInSnapshot(ctx, conn, snapshot, req.RunID, where); err != nil {
		return connectors.Plan{}, err
	}
	specs, info, rows, err := s.chunks(ctx, conn, req)
	if err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("%s: %w", where, err))
	}
	plan := connectors.Plan{}
	if d := specs[0].Delta; req.Trim != nil && d != nil {
		plan.Window = &connectors.Window{Values: true, Lo: d.Lo, Hi: d.Hi}
	}
	if plan.Schema, err = DescribeTable(ctx, conn, info.oid, specs[0].Columns); err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("%s: %w", where, err))
	}
	if plan.Partitions, err = partitions(specs, req.RunID, snapshot, rows, info.bytes); err != nil {
		return connectors.Plan{}, err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return connectors.Plan{}, classify(fmt.Errorf("%s: %w", where, err))
	}
	return plan, nil
}

// beginInSnapshot starts a REPEATABLE READ READ ONLY transaction on
// snapshot; a snapshot that is gone is a connectors.Replan error wrapping
// ErrSnapshotGone.
func beginInSnapshot(ctx context.Context, conn *pgx.Conn, snapshot, run, where string) error {
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return classify(fmt.Errorf("%s: %w", where, err))
	}
	if snapshot == "" {
		return nil
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "22023" || pgErr.Code == "0A000") {
			return connectors.Replan(fmt.Errorf("%s: snapshot %s of run %s: %w (%s)", where, snapshot, run, ErrSnapshotGone, pgErr.Message))
		}
		return classify(fmt.Errorf("%s: set snapshot: %w", where, err))
	}
	return nil
}

// ReadText reads one chunk planned by Plan or PlanSnapshot and calls fn once
// per row with the chunk's columns and the row's values in PostgreSQL's text
// output format, rendered under this package's session settings (UTC, ISO
// dates, hex bytea): a nil value is SQL NULL, a non-nil empty one the empty
// string. columns, values and the values' bytes are valid only during the
// call.
//
// Rows come in the same order on every read of the chunk: block order for a
// block range or a one-chunk table (the read runs without parallel workers
// or synchronized scans, which would change it), key order for a key range.
// Like Read, it sees exactly the rows of the chunk's snapshot however often
// it is repeated; a snapshot that is gone fails with a connectors.Replan
// error wrapping ErrSnapshotGone. An error from fn stops the read and is returned
// wrapped. ctx bounds the whole read; ReadText returns ctx.Err() when it is
// cancelled.
func (s *Source) ReadText(ctx context.Context, p protocol.Partition, fn func(columns []string, values [][]byte) error) error {
	c, err := s.chunk(p)
	if err != nil {
		return err
	}
	err = s.readText(ctx, c, p.Key, fn)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (s *Source) readText(ctx context.Context, c chunkSpec, key string, fn func(columns []string, values [][]byte) error) error {
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	where := fmt.Sprintf("read %s %s", s.cfg.Table, key)
	if err := beginInSnapshot(ctx, conn, c.Snapshot, c.Run, where); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL synchronize_seqscans = off"); err != nil {
		return classify(fmt.Errorf("%s: %w", where, err))
	}
	sql := s.query(c)
	if c.Key != "" {
		sql += " ORDER BY " + pgx.Identifier{c.Key}.Sanitize()
	}
	rr := conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil)
	for rr.NextRow() {
		if err := fn(c.Columns, rr.Values()); err != nil {
			// Closing the session (deferred) ends the query at once;
			// rr.Close would read the rest of the chunk first.
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if _, err := rr.Close(); err != nil {
		return classify(fmt.Errorf("%s: %w", where, err))
	}
	_, err = conn.Exec(ctx, "COMMIT")
	return err
}

// SessionParams returns the session settings every connection of this
// package runs with (TimeZone UTC, DateStyle ISO, hex bytea, ...), which fix
// how values are rendered as text whatever the server's or the DSN's
// defaults. Another session that must render values exactly as ReadText
// does, such as a logical replication connection whose changes are applied
// over rows ReadText read, sets the same.
func SessionParams() map[string]string { return maps.Clone(sessionParams) }
