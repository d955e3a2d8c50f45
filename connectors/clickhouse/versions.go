package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// versionsTable is the bookkeeping table of a database's full loads, and
// windowsTable that of its incremental loads. Both are append-only logs
// (ClickHouse has no transactional UPDATE): a version's state is the last
// event recorded for it.
const (
	versionsTable = "sluice_versions"
	windowsTable  = "sluice_windows"
)

// Version events.
const (
	evPending   = "pending"   // the version is assembled, about to be exposed
	evCommitted = "committed" // the version is exposed
	evRollback  = "rollback"  // the version is exposed again by a rollback
	evDropped   = "dropped"   // the version's table was dropped (keep_versions)
)

func (s *Sink) ensureMeta(ctx context.Context) error {
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS " + s.ident(versionsTable) + ` (
			table_name String, version Int64, run String, event String,
			rows Int64, checksum String, at DateTime, seq UInt64)
			ENGINE = MergeTree ORDER BY (table_name, version, seq)`,
		"CREATE TABLE IF NOT EXISTS " + s.ident(windowsTable) + ` (
			table_name String, run String, lo String, hi String,
			rows Int64, deleted Int64, checksum String, at DateTime, seq UInt64)
			ENGINE = MergeTree ORDER BY (table_name, run)`,
	} {
		if err := s.cl.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// Version is one kept version of a table loaded by full loads.
type Version struct {
	Version int64
	Run     string
	Rows    int64
	// Checksum is the run's checksum, as connectors.Checksum.String.
	Checksum string
	Created  time.Time
	// Current tells whether readers of the table see this version.
	Current bool
	// Table is where the version's rows lie: the table's own name for the
	// current version, <table>_v<N> for the others.
	Table string
}

// versionState is what the event log says of a table's versions.
type versionState struct {
	versions map[int64]*versionInfo
	current  int64
}

type versionInfo struct {
	run       string
	rows      int64
	checksum  string
	created   time.Time
	pending   []string // runs recorded as pending for the version
	committed bool
	dropped   bool
}

func (s *Sink) loadState(ctx context.Context) (versionState, error) {
	st := versionState{versions: map[int64]*versionInfo{}}
	rows, err := s.cl.Rows(ctx, "SELECT version, run, event, rows, checksum, toUnixTimestamp(at) FROM "+s.ident(versionsTable)+
		" WHERE table_name = "+quoteString(s.name)+" ORDER BY seq")
	if err != nil {
		return st, err
	}
	for _, r := range rows {
		if len(r) != 6 {
			return st, fmt.Errorf("%s: a row of %d fields", versionsTable, len(r))
		}
		v, _ := strconv.ParseInt(string(r[0]), 10, 64)
		n, _ := strconv.ParseInt(string(r[3]), 10, 64)
		at, _ := strconv.ParseInt(string(r[5]), 10, 64)
		vi := st.versions[v]
		if vi == nil {
			vi = &versionInfo{}
			st.versions[v] = vi
		}
		switch string(r[2]) {
		case evPending:
			vi.pending = append(vi.pending, string(r[1]))
		case evCommitted:
			vi.run, vi.rows, vi.checksum, vi.created, vi.committed = string(r[1]), n, string(r[4]), time.Unix(at, 0).UTC(), true
			st.current = v
		case evRollback:
			st.current = v
		case evDropped:
			vi.dropped = true
		}
	}
	return st, nil
}

// record appends an event. seq orders events: commits of one table are
// serialized by the leader, so the clock orders them.
func (s *Sink) record(ctx context.Context, version int64, run, event string, rows int64, checksum string) error {
	return s.cl.Exec(ctx, fmt.Sprintf("INSERT INTO %s (table_name, version, run, event, rows, checksum, at, seq) VALUES (%s, %d, %s, %s, %d, %s, now(), %d)",
		s.ident(versionsTable), quoteString(s.name), version, quoteString(run), quoteString(event), rows, quoteString(checksum), time.Now().UnixNano()))
}

// commitVersion assembles the run's task tables into one table (ATTACH
// PARTITION ... FROM: the parts are hard-linked, not copied), records it
// as pending, exposes it under the table's name (the previous version
// moves to <table>_v<N>, in one swap), records it as committed, and drops
// the run's staging tables and the versions beyond keep_versions. Each
// step can be repeated: a pending version whose build table is gone was
// exposed.
func (s *Sink) commitVersion(ctx context.Context, req connectors.CommitRequest) error {
	st, err := s.loadState(ctx)
	if err != nil {
		return err
	}
	var total int64
	var sum connectors.Checksum
	for _, t := range req.Tasks {
		total += t.Rows
		sum.Merge(t.Checksum)
	}
	vi := st.versions[req.Version]
	if vi != nil && vi.committed {
		if vi.run != req.RunID {
			return connectors.Permanent(fmt.Errorf("version %d already holds run %s", req.Version, vi.run))
		}
		return s.dropRunTables(ctx, req.RunID) // committed before: only tidy up
	}
	build := s.buildTable(req.RunID)
	if vi == nil || !slices.Contains(vi.pending, req.RunID) {
		if err := s.build(ctx, build, req, total); err != nil {
			return err
		}
		if err := s.record(ctx, req.Version, req.RunID, evPending, total, sum.String()); err != nil {
			return err
		}
	}
	built, err := s.exists(ctx, build)
	if err != nil {
		return err
	}
	if built {
		present, err := s.exists(ctx, s.name)
		if err != nil {
			return err
		}
		if present && st.current == 0 {
			return connectors.Permanent(fmt.Errorf("%s exists and holds no version loaded by Sluice (none recorded in %s): drop or rename it", s.ident(s.name), versionsTable))
		}
		if err := s.swap(ctx, build, s.name, s.versionTable(st.current)); err != nil {
			return fmt.Errorf("expose: %w", err)
		}
	}
	if err := s.record(ctx, req.Version, req.RunID, evCommitted, total, sum.String()); err != nil {
		return err
	}
	if err := s.dropRunTables(ctx, req.RunID); err != nil {
		return err
	}
	return s.prune(ctx)
}

// build assembles the version of a run in the table build from the task
// tables the commit names, checking each holds its task's rows.
func (s *Sink) build(ctx context.Context, build string, req connectors.CommitRequest, total int64) error {
	if err := s.drop(ctx, build); err != nil {
		return err
	}
	var tables []string
	for _, t := range req.Tasks {
		ok, err := s.exists(ctx, t.Location)
		if err != nil {
			return err
		}
		if !ok {
			if t.Rows != 0 {
				return connectors.Permanent(fmt.Errorf("the staging table %s of %d rows is missing (aborted?)", t.Location, t.Rows))
			}
			continue
		}
		n, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(t.Location))
		if err != nil {
			return err
		}
		if n != t.Rows {
			return connectors.Permanent(fmt.Errorf("the staging table %s holds %d rows, its task's output says %d", t.Location, n, t.Rows))
		}
		tables = append(tables, t.Location)
	}
	switch {
	case len(tables) > 0:
		if err := s.cl.Exec(ctx, "CREATE TABLE "+s.ident(build)+" AS "+s.ident(tables[0])); err != nil {
			return err
		}
	case req.Schema != nil:
		c, err := s.serverCaps(ctx)
		if err != nil {
			return err
		}
		cols, err := mapColumns(req.Schema, c, s.cfg.NullArrays == NullArraysEmpty)
		if err != nil {
			return connectors.Permanent(err)
		}
		if err := s.createTable(ctx, build, cols, orderBy(req.Schema, cols)); err != nil {
			return err
		}
	default:
		return connectors.Permanent(errors.New("the run staged no table and its source gave no schema: no columns are known"))
	}
	for _, t := range tables {
		if err := s.cl.Exec(ctx, "ALTER TABLE "+s.ident(build)+" ATTACH PARTITION tuple() FROM "+s.ident(t)); err != nil {
			return fmt.Errorf("attach %s: %w", t, err)
		}
	}
	n, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(build))
	if err != nil {
		return err
	}
	if n != total {
		return fmt.Errorf("the assembled version holds %d rows, the tasks %d", n, total)
	}
	return nil
}

// prune drops the versions beyond keep_versions, newest kept, the current
// one always kept.
func (s *Sink) prune(ctx context.Context) error {
	st, err := s.loadState(ctx)
	if err != nil {
		return err
	}
	var kept []int64
	for v, vi := range st.versions {
		if vi.committed && !vi.dropped && v != st.current {
			kept = append(kept, v)
		}
	}
	slices.Sort(kept)
	slices.Reverse(kept)
	for i, v := range kept {
		if i < s.cfg.keepVersions()-1 {
			continue
		}
		if err := s.drop(ctx, s.versionTable(v)); err != nil {
			return err
		}
		if err := s.record(ctx, v, st.versions[v].run, evDropped, 0, ""); err != nil {
			return err
		}
	}
	return nil
}

// Versions lists the kept versions of a table loaded by the sink, oldest
// first.
func Versions(ctx context.Context, cfg SinkConfig) ([]Version, error) {
	s, err := NewSink(cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	vs, err := s.kept(ctx)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", cfg.Table, err)
	}
	return vs, nil
}

// kept lists the kept versions of the sink's table, oldest first.
func (s *Sink) kept(ctx context.Context) ([]Version, error) {
	if err := s.ensureMeta(ctx); err != nil {
		return nil, err
	}
	st, err := s.loadState(ctx)
	if err != nil {
		return nil, err
	}
	return st.kept(s), nil
}

// kept lists the versions st holds committed and not dropped, oldest
// first.
func (st versionState) kept(s *Sink) []Version {
	var out []Version
	for v, vi := range st.versions {
		if !vi.committed || vi.dropped {
			continue
		}
		ver := Version{Version: v, Run: vi.run, Rows: vi.rows, Checksum: vi.checksum, Created: vi.created,
			Current: v == st.current, Table: s.db + "." + s.versionTable(v)}
		if ver.Current {
			ver.Table = s.db + "." + s.name
		}
		out = append(out, ver)
	}
	slices.SortFunc(out, func(a, b Version) int { return int(a.Version - b.Version) })
	return out
}

var _ connectors.Versioned = (*Sink)(nil)

// Versions lists the kept versions of the table (see connectors.Versioned),
// each located where its rows lie: the table's own name for the exposed
// one, <table>_v<N> for the others.
func (s *Sink) Versions(ctx context.Context) ([]connectors.Version, error) {
	vs, err := s.kept(ctx)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", s.cfg.Table, err)
	}
	return keptVersions(vs), nil
}

// Expose makes kept version v the table readers query, in one swap (the
// commit's): the version exposed before moves to <table>_v<N>, v's table
// takes the table's name. It does nothing when v is exposed already.
func (s *Sink) Expose(ctx context.Context, v int64) error {
	if err := s.expose(ctx, v); err != nil {
		return fmt.Errorf("expose version %d of %s: %w", v, s.cfg.Table, err)
	}
	return nil
}

// keptVersions converts the sink's versions to the capability's.
func keptVersions(vs []Version) []connectors.Version {
	out := make([]connectors.Version, len(vs))
	for i, v := range vs {
		out[i] = connectors.Version{Version: v.Version, Run: v.Run, Rows: v.Rows, Location: v.Table, Time: v.Created, Exposed: v.Current}
	}
	return out
}

// expose swaps kept version to in (see Expose) and records it.
func (s *Sink) expose(ctx context.Context, to int64) error {
	if _, err := s.serverCaps(ctx); err != nil {
		return err
	}
	if err := s.ensureMeta(ctx); err != nil {
		return err
	}
	st, err := s.loadState(ctx)
	if err != nil {
		return err
	}
	vi := st.versions[to]
	switch {
	case vi == nil || !vi.committed:
		return connectors.VersionNotKept(to, "was never committed", keptVersions(st.kept(s)))
	case vi.dropped:
		return connectors.VersionNotKept(to, "was dropped (keep_versions)", keptVersions(st.kept(s)))
	case to == st.current:
		return nil
	}
	ok, err := s.exists(ctx, s.versionTable(to))
	if err != nil {
		return err
	}
	if ok {
		if err := s.swap(ctx, s.versionTable(to), s.name, s.versionTable(st.current)); err != nil {
			return err
		}
	} else if ok, err = s.exists(ctx, s.versionTable(st.current)); err != nil || !ok {
		// Neither the version's table nor the current one's kept name:
		// the swap did not happen and cannot.
		return connectors.Permanent(fmt.Errorf("version %d's table %s is missing", to, s.versionTable(to)))
	}
	return s.record(ctx, to, vi.run, evRollback, vi.rows, vi.checksum)
}
