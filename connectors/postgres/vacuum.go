package postgres

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.Vacuumer = (*Sink)(nil)

// stagingRE matches the staging tables of a sink table's runs,
// <table>__stg_<12 hex>, and their task lists (with _t).
var stagingRE = regexp.MustCompile(`__stg_([0-9a-f]{12})(_t)?$`)

// Vacuum drops the staging tables that runs not in flight left in the
// sink's schema (<table>__stg_<hash> and its task list): those of a run
// that failed while a task of it still wrote, or whose abort did not
// finish. The staging of a run in flight (req.Active) is never touched,
// nor a version a rollback may expose (Kept lists them). DryRun only
// lists, with each table's size.
func (s *Sink) Vacuum(ctx context.Context, req connectors.VacuumRequest) (connectors.VacuumReport, error) {
	var rep connectors.VacuumReport
	conn, err := connect(ctx, s.cfg.DSN)
	if err != nil {
		return rep, err
	}
	defer conn.Close(context.Background())
	vs, err := s.listVersions(ctx, conn)
	if err != nil {
		return rep, classify(fmt.Errorf("vacuum %s: %w", s.cfg.Table, err))
	}
	rep.Kept = keptVersions(vs)
	rows, err := conn.Query(ctx, `SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = coalesce(nullif($1, ''), current_schema()) AND starts_with(c.relname, $2)
		ORDER BY c.relname`, s.schema, s.name+"__stg_")
	if err != nil {
		return rep, classify(fmt.Errorf("vacuum %s: list staging tables: %w", s.cfg.Table, err))
	}
	type staged struct {
		name string
		size int64
	}
	byRun := map[string][]staged{}
	var hashes []string
	for rows.Next() {
		var t staged
		if err := rows.Scan(&t.name, &t.size); err != nil {
			rows.Close()
			return rep, err
		}
		m := stagingRE.FindStringSubmatch(t.name)
		if m == nil || t.name[:len(t.name)-len(m[0])] != s.name {
			continue
		}
		if _, ok := byRun[m[1]]; !ok {
			hashes = append(hashes, m[1])
		}
		byRun[m[1]] = append(byRun[m[1]], t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, classify(fmt.Errorf("vacuum %s: list staging tables: %w", s.cfg.Table, err))
	}
	if len(hashes) == 0 {
		return rep, nil
	}
	var active []string
	if req.Active != nil {
		ids, err := req.Active(ctx)
		if err != nil {
			return rep, err
		}
		for _, id := range ids {
			rowsT, _ := s.staging(id)
			active = append(active, stagingRE.FindStringSubmatch(rowsT[len(rowsT)-1])[1])
		}
	}
	for _, h := range hashes {
		if slices.Contains(active, h) {
			continue
		}
		item := connectors.VacuumItem{Path: s.ident(byRun[h][0].name).Sanitize(), Why: "staging of a run that is not in flight"}
		var idents []string
		for _, t := range byRun[h] {
			item.Files++
			item.Bytes += t.size
			idents = append(idents, s.ident(t.name).Sanitize())
		}
		if !req.DryRun {
			if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(idents, ", ")); err != nil {
				return rep, classify(fmt.Errorf("vacuum %s: drop %s: %w", s.cfg.Table, item.Path, err))
			}
		}
		rep.Removed = append(rep.Removed, item)
	}
	return rep, nil
}
