package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/protocol"
)

// versioned rows: a key, a value, a delta column and a delete marker.
var versioned = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "v", Type: protocol.TypeString},
	{Name: "updated_at", Type: protocol.TypeTimestampTZ, NotNull: true},
	{Name: "gone", Type: protocol.TypeBool, NotNull: true},
}, Key: []string{"id"}}

// srcRow is one row of the test's source table.
type srcRow struct {
	id   int64
	v    string
	at   time.Time
	gone bool
}

func (r srcRow) text() string {
	g := 0
	if r.gone {
		g = 1
	}
	return fmt.Sprintf("%d|%s|%d|%d", r.id, r.v, r.at.UnixMicro(), g)
}

func writeRows(t *testing.T, s *Sink, run, task string, rows []srcRow) connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: task, Attempt: 1, Schema: versioned})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for _, r := range rows {
		g := "f"
		if r.gone {
			g = "t"
		}
		raw = fmt.Appendf(raw, "%d,%s,%s,%s\n", r.id, r.v, r.at.Format("2006-01-02 15:04:05.999999-07"), g)
	}
	if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: versioned.Names(), Rows: int64(len(rows))}); err != nil {
		t.Fatal(err)
	}
	out, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedSum(rows []string) ([]string, connectors.Checksum) {
	sort.Strings(rows)
	var sum connectors.Checksum
	for _, r := range rows {
		sum.Add([]byte(r))
	}
	return rows, sum
}

// Windows merged by key into a ClickHouse table: updated and new keys,
// deletes by the marker, two versions of a key in one window, a retried
// task, a window merged again, a late older version, a commit that fails
// right before its swap (the table stays as it was) and is repeated.
// After each step the table holds the source's current rows by key, once
// each, as the test computes them from its source.
func TestMergeByKey(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s := testSink(t, url, db, "merged", nil)
	defer s.Close()
	table := db + ".merged"
	t0 := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)
	hour := func(i int) *connectors.Window {
		return &connectors.Window{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour)}
	}
	merge := &connectors.Merge{Key: []string{"id"}, Deleted: "gone"}
	source := map[int64]srcRow{}
	windowRows := func(i int) []srcRow {
		w := hour(i)
		var out []srcRow
		for _, r := range source {
			if !r.at.Before(w.From) && r.at.Before(w.To) {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b srcRow) int { return int(a.id - b.id) })
		return out
	}
	request := func(run string, i int, outs []connectors.TaskOutput) connectors.CommitRequest {
		return connectors.CommitRequest{RunID: run, Pipeline: "p", Mode: connectors.ModeAppend, Window: hour(i),
			DeltaColumn: "updated_at", Merge: merge, Tasks: outs, Schema: versioned}
	}
	commitRun := func(run string, i int, tasks ...[]srcRow) {
		t.Helper()
		var outs []connectors.TaskOutput
		for n, rows := range tasks {
			outs = append(outs, writeRows(t, s, run, fmt.Sprintf("t%d", n), rows))
		}
		if _, err := s.Commit(ctx, request(run, i, outs)); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	check := func(step string) {
		t.Helper()
		var want []string
		for _, r := range source {
			if !r.gone {
				want = append(want, r.text())
			}
		}
		want, wantSum := sortedSum(want)
		typ, err := s.cl.Rows(ctx, "SELECT type FROM system.columns WHERE database = '"+db+"' AND table = 'merged' AND name = 'updated_at'")
		if err != nil || len(typ) != 1 {
			t.Fatalf("the type of updated_at: %v", err)
		}
		micros := "toInt64(updated_at)"
		if strings.HasPrefix(string(typ[0][0]), "DateTime64") {
			micros = "toUnixTimestamp64Micro(updated_at)"
		}
		rows, err := s.cl.Rows(ctx, "SELECT concat(toString(id), '|', ifNull(v, ''), '|', toString("+micros+"), '|', toString(toUInt8(gone))) FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, string(r[0]))
		}
		got, sum := sortedSum(got)
		if sum != wantSum || !slices.Equal(got, want) {
			t.Fatalf("%s: the table holds %d rows (checksum %s), the source's current rows are %d (checksum %s); first rows %v, want %v",
				step, sum.Rows, sum, wantSum.Rows, wantSum, got[:min(3, len(got))], want[:min(3, len(want))])
		}
	}
	at := func(h, sec int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(sec)*time.Second) }
	for id := range int64(300) {
		source[id] = srcRow{id, fmt.Sprintf("a%d", id), at(0, int(id)), false}
	}
	rows := windowRows(0)
	commitRun("h0", 0, rows[:150], rows[150:])
	check("after hour 0")
	// Hour 1: ids 0..39 updated, 300..339 new, 100..109 deleted (the
	// marker), id 200 twice in the window, id 50 deleted then inserted
	// again (in two tasks).
	for id := range int64(40) {
		source[id] = srcRow{id, fmt.Sprintf("b%d", id), at(1, int(id)), false}
	}
	for id := int64(300); id < 340; id++ {
		source[id] = srcRow{id, fmt.Sprintf("n%d", id), at(1, int(id)), false}
	}
	for id := int64(100); id < 110; id++ {
		source[id] = srcRow{id, "", at(1, int(id)), true}
	}
	older := srcRow{200, "c-old", at(1, 500), false}
	source[200] = srcRow{200, "c-new", at(1, 600), false}
	source[50] = srcRow{50, "back", at(1, 700), false}
	rows = windowRows(1)
	// A retried task: the first attempt's output is left behind, the run
	// takes the second's.
	writeRows(t, s, "h1", "t0", rows)
	commitRun("h1", 1, append(rows, older), []srcRow{{50, "gone", at(1, 650), true}})
	check("after hour 1")
	commitRun("h1-again", 1, windowRows(1))
	check("after hour 1 merged again")
	commitRun("h0-late", 0, []srcRow{{0, "stale", at(0, 1), false}})
	check("after a late older version")
	// A commit that fails right before its swap leaves the table as it
	// was; repeated, it merges once.
	for id := range int64(20) {
		source[id+1000] = srcRow{id + 1000, "x", at(2, int(id)), false}
		source[id] = srcRow{id, "y", at(2, 100+int(id)), false}
	}
	rows = windowRows(2)
	out := writeRows(t, s, "h2", "t0", rows)
	cctx, cancel := context.WithCancel(ctx)
	s.beforeReplace = cancel
	fail := source
	source = map[int64]srcRow{}
	for k, v := range fail {
		if v.at.Before(hour(2).From) {
			source[k] = v
		}
	}
	// The table before hour 2 is what hour 1 left: the rows of the source
	// before the updates in hour 2.
	for id := range int64(20) {
		source[id] = srcRow{id, fmt.Sprintf("b%d", id), at(1, int(id)), false}
	}
	_, err := s.Commit(cctx, request("h2", 2, []connectors.TaskOutput{out}))
	s.beforeReplace = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a commit cancelled before its swap: %v", err)
	}
	check("after a commit that failed")
	source = fail
	for range 2 {
		if _, err := s.Commit(ctx, request("h2", 2, []connectors.TaskOutput{out})); err != nil {
			t.Fatal(err)
		}
		check("after hour 2")
	}
	if n := count(t, s, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name LIKE 'merged\\\\_\\\\_%'"); n != 0 {
		t.Errorf("%d staging or build tables left after the commits", n)
	}
}
