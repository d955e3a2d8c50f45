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
	n, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(windowsTable)+" WHERE table_name = "+quoteString(s.name)+" AND run = "+quoteString(req.RunID))
	if err != nil {
		return err
	}
	if n > 0 {
		return s.dropRunTables(ctx, req.RunID) // committed before
	}
	var total int64
	var sum connectors.Checksum
	var staged []string
	for _, t := range req.Tasks {
		total += t.Rows
		sum.Merge(t.Checksum)
		ok, err := s.exists(ctx, t.Location)
		if err != nil {
			return err
		}
		switch {
		case ok:
			staged = append(staged, t.Location)
		case t.Rows != 0:
			return connectors.Permanent(fmt.Errorf("the staging table %s of %d rows is missing (aborted?)", t.Location, t.Rows))
		}
	}
	var got int64
	for _, t := range staged {
		c, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(t))
		if err != nil {
			return err
		}
		got += c
	}
	if got != total {
		return connectors.Permanent(fmt.Errorf("the staging tables hold %d rows, the tasks' outputs say %d", got, total))
	}
	present, err := s.exists(ctx, s.name)
	if err != nil {
		return err
	}
	if !present {
		if len(staged) == 0 {
			return s.recordWindow(ctx, req, 0, 0, sum)
		}
		if err := s.createWindowTable(ctx, staged[0], req); err != nil {
			return err
		}
	}
	colRows, err := s.cl.Rows(ctx, "SELECT name, type FROM system.columns WHERE database = "+quoteString(s.db)+" AND table = "+quoteString(s.name))
	if err != nil {
		return err
	}
	types := map[string]string{}
	var names []string
	for _, r := range colRows {
		types[string(r[0])] = string(r[1])
		names = append(names, quoteIdent(string(r[0])))
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
		if strings.Contains(types[d], "String") {
			gone = "lower(ifNull(" + quoteIdent(d) + ", '')) IN ('t', 'true', '1')"
		} else {
			gone = "ifNull(toUInt8(" + quoteIdent(d) + "), 0) != 0"
		}
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
	for _, t := range staged {
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
	if err := s.recordWindow(ctx, req, total, deleted, sum); err != nil {
		return err
	}
	return s.dropRunTables(ctx, req.RunID)
}
