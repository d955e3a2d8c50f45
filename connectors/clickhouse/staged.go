package clickhouse

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/connectors"
)

// stagedRun is an incremental run's staging tables as its commit finds
// them, checked against the tasks' outputs.
type stagedRun struct {
	tables []string // the staging tables present
	rows   int64    // rows the tasks' outputs say they wrote
	sum    connectors.Checksum
}

// staged returns the run's staging tables: each task's table present
// unless the task wrote no rows, and the tables holding as many rows as
// the outputs say. done reports a run recorded in sluice_windows before
// (a commit repeated after it succeeded): its leftovers are then dropped
// and there is nothing more to do.
func (s *Sink) staged(ctx context.Context, req connectors.CommitRequest) (st stagedRun, done bool, err error) {
	n, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(windowsTable)+" WHERE table_name = "+quoteString(s.name)+" AND run = "+quoteString(req.RunID))
	if err != nil {
		return st, false, err
	}
	if n > 0 {
		return st, true, s.dropRunTables(ctx, req.RunID)
	}
	for _, t := range req.Tasks {
		st.rows += t.Rows
		st.sum.Merge(t.Checksum)
		ok, err := s.exists(ctx, t.Location)
		if err != nil {
			return st, false, err
		}
		switch {
		case ok:
			st.tables = append(st.tables, t.Location)
		case t.Rows != 0:
			return st, false, connectors.Permanent(fmt.Errorf("the staging table %s of %d rows is missing (aborted?)", t.Location, t.Rows))
		}
	}
	var got int64
	for _, t := range st.tables {
		c, err := s.cl.Int(ctx, "SELECT count() FROM "+s.ident(t))
		if err != nil {
			return st, false, err
		}
		got += c
	}
	if got != st.rows {
		return st, false, connectors.Permanent(fmt.Errorf("the staging tables hold %d rows, the tasks' outputs say %d", got, st.rows))
	}
	return st, false, nil
}

// inside checks that no staged row lies outside the window, in being the
// condition "in the window" (NULL counting as outside).
func (s *Sink) inside(ctx context.Context, st stagedRun, in string, w connectors.Window) error {
	for _, t := range st.tables {
		out, err := s.cl.Int(ctx, "SELECT countIf(NOT ifNull("+in+", 0)) FROM "+s.ident(t))
		if err != nil {
			return err
		}
		if out > 0 {
			return connectors.Permanent(fmt.Errorf("the staging table %s holds %d rows outside the window %v", t, out, w))
		}
	}
	return nil
}

// windowTable makes sure the incremental table exists, created with the
// columns of the first staging table where it does not, and returns its
// columns: names quoted in the table's order, and types by name. ok is
// false where there is no table and no staged row to create it from: the
// run is then recorded as an empty window and there is nothing more to do.
func (s *Sink) windowTable(ctx context.Context, req connectors.CommitRequest, st stagedRun) (names []string, types map[string]string, ok bool, err error) {
	present, err := s.exists(ctx, s.name)
	if err != nil {
		return nil, nil, false, err
	}
	if !present {
		if len(st.tables) == 0 {
			return nil, nil, false, s.recordWindow(ctx, req, 0, 0, st.sum)
		}
		if err := s.createWindowTable(ctx, st.tables[0], req); err != nil {
			return nil, nil, false, err
		}
	}
	rows, err := s.cl.Rows(ctx, "SELECT name, type FROM system.columns WHERE database = "+quoteString(s.db)+" AND table = "+quoteString(s.name))
	if err != nil {
		return nil, nil, false, err
	}
	types = make(map[string]string, len(rows))
	for _, r := range rows {
		names = append(names, quoteIdent(string(r[0])))
		types[string(r[0])] = string(r[1])
	}
	return names, types, true, nil
}
