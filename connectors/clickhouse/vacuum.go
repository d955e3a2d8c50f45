package clickhouse

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/connectors"
)

var _ connectors.Vacuumer = (*Sink)(nil)

// runTableRE matches what follows a sink table's name in the name of a
// run's table: __s_<hash>_ (a task's staging tables and their attempts)
// or __b_<hash> (the version being assembled).
var runTableRE = regexp.MustCompile(`^__[sb]_([0-9a-f]{12})(_|$)`)

// Vacuum drops the tables that runs not in flight left in the sink's
// database: task staging tables, their attempts and build tables of a run
// that failed while a task of it still wrote, or whose abort did not
// finish. The tables of a run in flight (req.Active) are never touched,
// nor a kept version (Kept lists them; keep_versions prunes them at each
// commit). DryRun only lists, with each run's bytes on disk.
func (s *Sink) Vacuum(ctx context.Context, req connectors.VacuumRequest) (connectors.VacuumReport, error) {
	var rep connectors.VacuumReport
	vs, err := s.kept(ctx)
	if err != nil {
		return rep, fmt.Errorf("vacuum %s: %w", s.cfg.Table, err)
	}
	rep.Kept = keptVersions(vs)
	rows, err := s.cl.Rows(ctx, "SELECT t.name, sum(p.bytes_on_disk) FROM system.tables AS t LEFT JOIN "+
		"(SELECT table, bytes_on_disk FROM system.parts WHERE database = "+quoteString(s.db)+" AND active) AS p ON p.table = t.name "+
		"WHERE t.database = "+quoteString(s.db)+" AND startsWith(t.name, "+quoteString(s.name+"__")+") GROUP BY t.name ORDER BY t.name")
	if err != nil {
		return rep, fmt.Errorf("vacuum %s: list staging tables: %w", s.cfg.Table, err)
	}
	type staged struct {
		name  string
		bytes int64
	}
	byRun := map[string][]staged{}
	var hashes []string
	for _, r := range rows {
		name := string(r[0])
		m := runTableRE.FindStringSubmatch(name[len(s.name):])
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(string(r[1]), 10, 64)
		if _, ok := byRun[m[1]]; !ok {
			hashes = append(hashes, m[1])
		}
		byRun[m[1]] = append(byRun[m[1]], staged{name, n})
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
			active = append(active, hash6(id))
		}
	}
	for _, h := range hashes {
		if slices.Contains(active, h) {
			continue
		}
		item := connectors.VacuumItem{Path: s.db + "." + byRun[h][0].name, Why: "tables of a run that is not in flight"}
		for _, t := range byRun[h] {
			item.Files++
			item.Bytes += t.bytes
			if req.DryRun {
				continue
			}
			if err := s.drop(ctx, t.name); err != nil {
				return rep, fmt.Errorf("vacuum %s: drop %s: %w", s.cfg.Table, t.name, err)
			}
		}
		rep.Removed = append(rep.Removed, item)
	}
	return rep, nil
}
