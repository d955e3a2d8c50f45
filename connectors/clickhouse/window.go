package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// deltaKind says how the delta column of an incremental table is stored,
// which fixes its day partitions and how a window bounds it.
type deltaKind int

const (
	deltaMicros deltaKind = iota // Int64 microseconds since 1970 UTC
	deltaDate                    // Date or Date32
	deltaTime                    // DateTime or DateTime64 in UTC
	deltaText                    // text in PostgreSQL's ISO form (no schema)
)

func deltaKindOf(chType string) (deltaKind, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(chType, "Nullable("), ")")
	switch {
	case t == "Int64":
		return deltaMicros, nil
	case t == "Date" || t == "Date32":
		return deltaDate, nil
	case strings.HasPrefix(t, "DateTime"):
		return deltaTime, nil
	case t == "String":
		return deltaText, nil
	}
	return 0, fmt.Errorf("a delta column of type %s cannot bound a window (want a timestamp, a date, or text)", chType)
}

// partitionExpr is the PARTITION BY expression of an incremental table:
// the day of its delta column.
func partitionExpr(col string, k deltaKind) string {
	// The incremental table's delta column is never Nullable: 18.16
	// crashes inserting into a table partitioned by an expression of a
	// Nullable column (and the source never sends a NULL delta value).
	c := quoteIdent(col)
	switch k {
	case deltaMicros:
		return "intDiv(" + c + ", 86400000000)"
	case deltaText:
		return "substring(" + c + ", 1, 10)"
	}
	return "toYYYYMMDD(" + c + ")"
}

// partitionLiteral is the partition of the day d (midnight UTC).
func partitionLiteral(d time.Time, k deltaKind) string {
	switch k {
	case deltaMicros:
		return strconv.FormatInt(d.Unix()/86400, 10)
	case deltaText:
		return quoteString(d.Format("2006-01-02"))
	}
	return d.Format("20060102")
}

// inWindow is the condition "the delta column lies in [lo, hi)"; for a
// date, its midnight UTC does. Text is compared as text, which orders
// PostgreSQL's ISO timestamps, dates and timestamps with +00 alike (a date
// is taken as its midnight).
func inWindow(col string, k deltaKind, w connectors.Window) string {
	c := quoteIdent(col)
	lo, hi := w.From.UTC(), w.To.UTC()
	switch k {
	case deltaMicros:
		return fmt.Sprintf("%s >= %d AND %s < %d", c, lo.UnixMicro(), c, hi.UnixMicro())
	case deltaDate:
		ceil := func(t time.Time) string {
			d := t.Truncate(24 * time.Hour)
			if d.Before(t) {
				d = d.Add(24 * time.Hour)
			}
			return quoteString(d.Format("2006-01-02"))
		}
		return fmt.Sprintf("%s >= toDate(%s) AND %s < toDate(%s)", c, ceil(lo), c, ceil(hi))
	case deltaTime:
		f := func(t time.Time) string {
			return fmt.Sprintf("toDateTime64(%s, 6, 'UTC')", quoteString(t.Format("2006-01-02 15:04:05.000000")))
		}
		return fmt.Sprintf("%s >= %s AND %s < %s", c, f(lo), c, f(hi))
	}
	f := func(t time.Time) string { return quoteString(t.Format("2006-01-02 15:04:05.999999")) }
	v := fmt.Sprintf("if(length(%s) = 10, concat(%s, ' 00:00:00'), %s)", c, c, c)
	return fmt.Sprintf("%s >= %s AND %s < %s", v, f(lo), v, f(hi))
}

// commitWindow commits an incremental run (ModeAppend) into the one table
// <table>, partitioned by the day of its delta column: for each day the
// window touches, it builds the day anew (the table's rows of that day
// outside the window, and the run's staged rows of that day) and swaps it
// in with ALTER TABLE ... REPLACE PARTITION, which readers see whole. A
// window inside one day is thus replaced atomically; one spanning several
// days is replaced a day at a time. The run is recorded in sluice_windows
// last; a commit repeated before that does the same again, which gives the
// same table (the window's rows are replaced, never added to), and one
// repeated after finds it recorded and only tidies up.
func (s *Sink) commitWindow(ctx context.Context, req connectors.CommitRequest) error {
	if req.Window == nil || req.Window.Empty() || req.DeltaColumn == "" {
		return connectors.Permanent(errors.New("an append commit needs a non-empty window and a delta column"))
	}
	if req.Window.Values {
		return s.commitValueWindow(ctx, req)
	}
	w := *req.Window
	st, done, err := s.staged(ctx, req)
	if err != nil || done {
		return err
	}
	names, types, ok, err := s.windowTable(ctx, req, st)
	if err != nil || !ok {
		return err
	}
	typ, found := types[req.DeltaColumn]
	if !found {
		return connectors.Permanent(fmt.Errorf("%s has no delta column %q", s.ident(s.name), req.DeltaColumn))
	}
	kind, err := deltaKindOf(typ)
	if err != nil {
		return connectors.Permanent(err)
	}
	in := inWindow(req.DeltaColumn, kind, w)
	if err := s.inside(ctx, st, in, w); err != nil {
		return err
	}
	deleted, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(s.name)+" WHERE "+in)
	if err != nil {
		return err
	}
	part := partitionExpr(req.DeltaColumn, kind)
	cols := strings.Join(names, ", ")
	last := w.To.UTC().Add(-time.Microsecond)
	for d := w.From.UTC().Truncate(24 * time.Hour); !d.After(last); d = d.Add(24 * time.Hour) {
		lit := partitionLiteral(d, kind)
		build := s.buildTable(req.RunID) + "_" + d.Format("20060102")
		if err := s.drop(ctx, build); err != nil {
			return err
		}
		qs := []string{
			"CREATE TABLE " + s.ident(build) + " AS " + s.ident(s.name),
			"INSERT INTO " + s.ident(build) + " (" + cols + ") SELECT " + cols + " FROM " + s.ident(s.name) +
				" WHERE " + part + " = " + lit + " AND NOT ifNull(" + in + ", 0)",
		}
		for _, t := range st.tables {
			qs = append(qs, "INSERT INTO "+s.ident(build)+" ("+cols+") SELECT "+cols+" FROM "+s.ident(t)+" WHERE "+part+" = "+lit)
		}
		for _, q := range qs {
			if err := s.cl.Exec(ctx, q); err != nil {
				return fmt.Errorf("build the day %s: %w", d.Format("2006-01-02"), err)
			}
		}
		if err := s.replacePartition(ctx, lit, build); err != nil {
			return fmt.Errorf("replace the day %s: %w", d.Format("2006-01-02"), err)
		}
		if err := s.drop(ctx, build); err != nil {
			return err
		}
	}
	if err := s.recordWindow(ctx, req, st.rows, deleted, st.sum); err != nil {
		return err
	}
	return s.dropRunTables(ctx, req.RunID)
}

// replacePartition swaps the partition lit of the table for the rows of
// build (ALTER TABLE ... REPLACE PARTITION, which readers see whole), with
// the table's merges stopped and none running: on 18.x REPLACE PARTITION
// does not stop a merge running in the partition, whose result would bring
// the replaced parts back (later servers stop and wait for merges
// themselves). The merges start again after it, also when it fails; a
// crash in between leaves them stopped until the next window's commit (or
// the server's restart).
func (s *Sink) replacePartition(ctx context.Context, lit, build string) error {
	if s.beforeReplace != nil {
		s.beforeReplace()
	}
	if err := s.cl.Exec(ctx, "SYSTEM STOP MERGES "+s.ident(s.name)); err != nil {
		return fmt.Errorf("stop merges: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.cl.Exec(sctx, "SYSTEM START MERGES "+s.ident(s.name))
	}()
	for {
		// A merge told to stop ends within moments; none starts while
		// merges are stopped.
		n, err := s.cl.Int(ctx, "SELECT count() FROM system.merges WHERE database = "+quoteString(s.db)+" AND table = "+quoteString(s.name))
		if err != nil {
			return fmt.Errorf("wait for merges to stop: %w", err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s.cl.Exec(ctx, "ALTER TABLE "+s.ident(s.name)+" REPLACE PARTITION "+lit+" FROM "+s.ident(build))
}

// createWindowTable creates the incremental table with the columns of a
// staging table, partitioned by the day of the delta column.
func (s *Sink) createWindowTable(ctx context.Context, like string, req connectors.CommitRequest) error {
	rows, err := s.cl.Rows(ctx, "SELECT name, type FROM system.columns WHERE database = "+quoteString(s.db)+" AND table = "+quoteString(like))
	if err != nil {
		return err
	}
	var cols []column
	var kind deltaKind
	found := false
	for _, r := range rows {
		cols = append(cols, column{name: string(r[0]), chType: string(r[1]), nullable: strings.HasPrefix(string(r[1]), "Nullable(")})
		if string(r[0]) == req.DeltaColumn {
			cols[len(cols)-1].chType = strings.TrimSuffix(strings.TrimPrefix(string(r[1]), "Nullable("), ")")
			cols[len(cols)-1].nullable = false
			if req.Window != nil && req.Window.Values {
				err = integerDelta(string(r[1]))
			} else {
				kind, err = deltaKindOf(string(r[1]))
			}
			if err != nil {
				return connectors.Permanent(err)
			}
			found = true
		}
	}
	if !found {
		return connectors.Permanent(fmt.Errorf("the staged rows have no delta column %q", req.DeltaColumn))
	}
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = quoteIdent(c.name) + " " + c.chType
	}
	part := " PARTITION BY " + partitionExpr(req.DeltaColumn, kind)
	if req.Window != nil && req.Window.Values {
		// Windows of values are replaced by a swap of the whole table
		// (commitValueWindow): no partitions.
		part = ""
	}
	return s.cl.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.ident(s.name)+" ("+strings.Join(defs, ", ")+") ENGINE = MergeTree"+
		part+" ORDER BY "+orderBy(req.Schema, cols))
}

// integerDelta checks that a column of type chType can bound a window of
// integer values.
func integerDelta(chType string) error {
	t := strings.TrimSuffix(strings.TrimPrefix(chType, "Nullable("), ")")
	if strings.HasPrefix(t, "Int") || strings.HasPrefix(t, "UInt") {
		return nil
	}
	return fmt.Errorf("a delta column of type %s cannot bound a window of integer values (want an integer)", chType)
}

// inValues is the condition "the delta column lies in [lo, hi)".
func inValues(col string, w connectors.Window) string {
	c := quoteIdent(col)
	return fmt.Sprintf("%s >= %d AND %s < %d", c, w.Lo, c, w.Hi)
}

// commitValueWindow commits an incremental run over a window of integer
// values [lo, hi) of the delta column (an id, a sequence): it builds the
// table's next state beside it, in <table>__b_<run> (the table's rows
// outside the window and the run's staged rows), and exposes it under the
// table's name in one swap, as a merge by key does. Readers see the table
// before the window or after it, whole. The run is recorded in
// sluice_windows last: a commit repeated before that replaces the window
// again (same table), one repeated after finds it recorded and only tidies
// up. The table is read and written whole by each window: the cost grows
// with the table, not the window.
func (s *Sink) commitValueWindow(ctx context.Context, req connectors.CommitRequest) error {
	w := *req.Window
	st, done, err := s.staged(ctx, req)
	if err != nil || done {
		return err
	}
	in := inValues(req.DeltaColumn, w)
	if err := s.inside(ctx, st, in, w); err != nil {
		return err
	}
	names, types, ok, err := s.windowTable(ctx, req, st)
	if err != nil || !ok {
		return err
	}
	typ, found := types[req.DeltaColumn]
	if !found {
		return connectors.Permanent(fmt.Errorf("%s has no delta column %q", s.ident(s.name), req.DeltaColumn))
	}
	if err := integerDelta(typ); err != nil {
		return connectors.Permanent(err)
	}
	tbl := s.ident(s.name)
	deleted, err := s.cl.Int(ctx, "SELECT count() FROM "+tbl+" WHERE "+in)
	if err != nil {
		return err
	}
	build, old := s.buildTable(req.RunID), s.buildTable(req.RunID)+"_o"
	for _, t := range []string{build, old} {
		if err := s.drop(ctx, t); err != nil {
			return err
		}
	}
	cols := strings.Join(names, ", ")
	qs := []string{
		"CREATE TABLE " + s.ident(build) + " AS " + tbl,
		"INSERT INTO " + s.ident(build) + " (" + cols + ") SELECT " + cols + " FROM " + tbl + " WHERE NOT ifNull(" + in + ", 0)",
	}
	for _, t := range st.tables {
		qs = append(qs, "INSERT INTO "+s.ident(build)+" ("+cols+") SELECT "+cols+" FROM "+s.ident(t))
	}
	for _, q := range qs {
		if err := s.cl.Exec(ctx, q); err != nil {
			return fmt.Errorf("build the table with the window %v: %w", w, err)
		}
	}
	if s.beforeReplace != nil {
		s.beforeReplace()
	}
	if err := s.swap(ctx, build, s.name, old); err != nil {
		return fmt.Errorf("expose the table with the window %v: %w", w, err)
	}
	if err := s.recordWindow(ctx, req, st.rows, deleted, st.sum); err != nil {
		return err
	}
	return s.dropRunTables(ctx, req.RunID)
}

func (s *Sink) recordWindow(ctx context.Context, req connectors.CommitRequest, rows, deleted int64, sum connectors.Checksum) error {
	lo, hi := req.Window.From.UTC().Format(time.RFC3339Nano), req.Window.To.UTC().Format(time.RFC3339Nano)
	if req.Window.Values {
		lo, hi = strconv.FormatInt(req.Window.Lo, 10), strconv.FormatInt(req.Window.Hi, 10)
	}
	return s.cl.Exec(ctx, fmt.Sprintf("INSERT INTO %s (table_name, run, lo, hi, rows, deleted, checksum, at, seq) VALUES (%s, %s, %s, %s, %d, %d, %s, now(), %d)",
		s.ident(windowsTable), quoteString(s.name), quoteString(req.RunID), quoteString(lo),
		quoteString(hi), rows, deleted, quoteString(sum.String()), time.Now().UnixNano()))
}

// Window is one committed window of an incremental table.
type Window struct {
	Run      string
	From, To time.Time
	// Values marks a window of integer values [Lo, Hi).
	Values bool
	Lo, Hi int64
	Rows   int64
	// Deleted counts the rows the commit replaced (a re-run of the window).
	Deleted  int64
	Checksum string
}

// Windows lists the windows committed into an incremental table, in
// commit order.
func Windows(ctx context.Context, cfg SinkConfig) ([]Window, error) {
	s, err := NewSink(cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := s.ensureMeta(ctx); err != nil {
		return nil, err
	}
	rows, err := s.cl.Rows(ctx, "SELECT run, lo, hi, rows, deleted, checksum FROM "+s.ident(windowsTable)+
		" WHERE table_name = "+quoteString(s.name)+" ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("list windows of %s: %w", cfg.Table, err)
	}
	var out []Window
	for _, r := range rows {
		var w Window
		w.Run = string(r[0])
		lo, errLo := strconv.ParseInt(string(r[1]), 10, 64)
		hi, errHi := strconv.ParseInt(string(r[2]), 10, 64)
		if errLo == nil && errHi == nil {
			w.Values, w.Lo, w.Hi = true, lo, hi
		} else {
			w.From, _ = time.Parse(time.RFC3339Nano, string(r[1]))
			w.To, _ = time.Parse(time.RFC3339Nano, string(r[2]))
		}
		w.Rows, _ = strconv.ParseInt(string(r[3]), 10, 64)
		w.Deleted, _ = strconv.ParseInt(string(r[4]), 10, 64)
		w.Checksum = string(r[5])
		out = append(out, w)
	}
	return out, nil
}
