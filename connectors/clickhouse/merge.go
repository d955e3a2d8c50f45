package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

// commitMerge merges an incremental run's rows into the table by key
// (CommitRequest.Merge). It builds the table's next state beside it, in
// <table>__b_<run>: the table's rows of the keys the run does not hold,
// and of each key it holds the newest row (greatest delta value) of the
// table's and the run's (the run's of a tie), left out where that row is
// a delete marker; then it exposes the build under the table's name in
// one swap (EXCHANGE TABLES on an Atomic database, one RENAME of both
// tables otherwise), as a full load does. Readers see the table before
// the window or after it, never part of it; a commit that fails before
// the swap leaves the table as it was. The run is recorded in
// sluice_windows last: a commit repeated before that merges again, which
// gives the same table (the newest row of each key wins either way), and
// one repeated after finds it recorded and only tidies up. The table is
// read and written whole by each window: the cost grows with the table,
// not the window.
func (s *Sink) commitMerge(ctx context.Context, req connectors.CommitRequest) error {
	if req.Window == nil || req.DeltaColumn == "" {
		return connectors.Permanent(errors.New("a merge by key needs a window and a delta column"))
	}
	st, done, err := s.staged(ctx, req)
	if err != nil || done {
		return err
	}
	names, types, ok, err := s.windowTable(ctx, req, st)
	if err != nil || !ok {
		return err
	}
	var keys []string
	for _, c := range append(append([]string{}, req.Merge.Key...), req.DeltaColumn, req.Merge.Deleted) {
		if c == "" {
			continue
		}
		if _, ok := types[c]; !ok {
			return connectors.Permanent(fmt.Errorf("merge by key: %s has no column %q", s.ident(s.name), c))
		}
	}
	for _, k := range req.Merge.Key {
		keys = append(keys, quoteIdent(k))
	}
	key := strings.Join(keys, ", ")
	if len(keys) > 1 {
		key = "(" + key + ")"
	}
	gone := "0"
	if d := req.Merge.Deleted; d != "" {
		gone = deletedExpr(d, types[d])
	}
	build, win, old := s.buildTable(req.RunID), s.buildTable(req.RunID)+"_w", s.buildTable(req.RunID)+"_o"
	for _, t := range []string{build, win, old} {
		if err := s.drop(ctx, t); err != nil {
			return err
		}
	}
	cols := strings.Join(names, ", ")
	tbl := s.ident(s.name)
	src := quoteIdent("_sluice_src")
	qs := []string{
		"CREATE TABLE " + s.ident(win) + " AS " + tbl,
		"CREATE TABLE " + s.ident(build) + " AS " + tbl,
	}
	for _, t := range st.tables {
		qs = append(qs, "INSERT INTO "+s.ident(win)+" ("+cols+") SELECT "+cols+" FROM "+s.ident(t))
	}
	inWin := key + " IN (SELECT " + strings.Join(keys, ", ") + " FROM " + s.ident(win) + ")"
	qs = append(qs,
		"INSERT INTO "+s.ident(build)+" ("+cols+") SELECT "+cols+" FROM "+tbl+" WHERE NOT ("+inWin+")",
		"INSERT INTO "+s.ident(build)+" ("+cols+") SELECT "+cols+" FROM (SELECT "+cols+", "+src+" FROM ("+
			"SELECT "+cols+", toUInt8(0) AS "+src+" FROM "+tbl+" WHERE "+inWin+
			" UNION ALL SELECT "+cols+", toUInt8(1) AS "+src+" FROM "+s.ident(win)+
			") ORDER BY "+quoteIdent(req.DeltaColumn)+" DESC, "+src+" DESC LIMIT 1 BY "+strings.Join(keys, ", ")+
			") WHERE NOT ("+src+" = 1 AND "+gone+")",
	)
	for _, q := range qs {
		if err := s.cl.Exec(ctx, q); err != nil {
			return fmt.Errorf("build the merged table: %w", err)
		}
	}
	deleted, err := s.cl.Int(ctx, "SELECT count() FROM "+tbl+" WHERE "+inWin+
		" AND NOT ("+key+" IN (SELECT "+strings.Join(keys, ", ")+" FROM "+s.ident(build)+"))")
	if err != nil {
		return err
	}
	if s.beforeReplace != nil {
		s.beforeReplace()
	}
	if err := s.swap(ctx, build, s.name, old); err != nil {
		return fmt.Errorf("expose the merged table: %w", err)
	}
	if err := s.recordWindow(ctx, req, st.rows, deleted, st.sum); err != nil {
		return err
	}
	return s.dropRunTables(ctx, req.RunID)
}
