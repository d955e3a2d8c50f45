package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/protocol"
)

// idRows are rows with an integer key, a value and an integer version
// (the delta column of the merge test; the replace test uses id).
var idRows = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "v", Type: protocol.TypeString},
	{Name: "ver", Type: protocol.TypeInt64, NotNull: true},
}, Key: []string{"id"}}

type idRow struct {
	id  int64
	v   string
	ver int64
}

func (r idRow) text() string { return fmt.Sprintf("%d|%s|%d", r.id, r.v, r.ver) }

// writeIDRows stages rows as one task of run.
func writeIDRows(t *testing.T, s *Sink, run, task string, rows []idRow) connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: task, Attempt: 1, Schema: idRows})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for _, r := range rows {
		raw = fmt.Appendf(raw, "%d,%s,%d\n", r.id, r.v, r.ver)
	}
	if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: idRows.Names(), Rows: int64(len(rows))}); err != nil {
		t.Fatal(err)
	}
	out, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkIDTable compares the table's rows with want, as sorted texts and
// their checksum.
func checkIDTable(t *testing.T, s *Sink, table, step string, want []idRow) {
	t.Helper()
	var ws []string
	for _, r := range want {
		ws = append(ws, r.text())
	}
	ws, wantSum := sortedSum(ws)
	rows, err := s.cl.Rows(context.Background(), "SELECT concat(toString(id), '|', ifNull(v, ''), '|', toString(ver)) FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, string(r[0]))
	}
	got, sum := sortedSum(got)
	if sum != wantSum || !slices.Equal(got, ws) {
		t.Fatalf("%s: the table holds %d rows (checksum %s), want %d (checksum %s)", step, sum.Rows, sum, wantSum.Rows, wantSum)
	}
}

// Windows of integer values of the delta column id replace the table's
// rows in [lo, hi): three windows, the middle one replaced twice with
// changed and fewer rows (no duplicates, the rows outside it kept), a
// commit repeated after it was recorded (nothing changes), and the
// windows listed with their values.
func TestValueWindowsReplace(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s := testSink(t, url, db, "byid", nil)
	defer s.Close()
	table := db + ".byid"
	source := map[int64]idRow{}
	for id := int64(1); id <= 300; id++ {
		source[id] = idRow{id, fmt.Sprintf("a%d", id), 0}
	}
	inWin := func(lo, hi int64) []idRow {
		var out []idRow
		for _, r := range source {
			if r.id >= lo && r.id < hi {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b idRow) int { return int(a.id - b.id) })
		return out
	}
	all := func() []idRow { return inWin(-1<<62, 1<<62) }
	commit := func(run string, lo, hi int64) {
		t.Helper()
		rows := inWin(lo, hi)
		h := len(rows) / 2
		outs := []connectors.TaskOutput{writeIDRows(t, s, run, "t0", rows[:h]), writeIDRows(t, s, run, "t1", rows[h:])}
		w := protocol.ValueWindow(lo, hi)
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "id", Tasks: outs, Schema: idRows}); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	commit("w1", 1, 101)
	commit("w2", 101, 201)
	commit("w3", 201, 301)
	checkIDTable(t, s, table, "after three windows", all())
	// The source changes in [101, 201): rows updated, rows gone.
	for id := int64(101); id < 201; id++ {
		if id%3 == 0 {
			delete(source, id)
		} else {
			source[id] = idRow{id, fmt.Sprintf("b%d", id), 1}
		}
	}
	commit("w2-again", 101, 201)
	checkIDTable(t, s, table, "after the window replaced", all())
	commit("w2-third", 101, 201)
	checkIDTable(t, s, table, "after the window replaced twice", all())
	// A commit repeated after it was recorded changes nothing.
	w := protocol.ValueWindow(1, 101)
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "w1", Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "id", Schema: idRows}); err != nil {
		t.Fatal(err)
	}
	checkIDTable(t, s, table, "after a repeated commit", all())
	// A window with rows outside it is refused.
	out := writeIDRows(t, s, "bad", "t0", []idRow{{500, "x", 0}})
	w = protocol.ValueWindow(301, 401)
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "bad", Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "id", Tasks: []connectors.TaskOutput{out}, Schema: idRows}); !connectors.IsPermanent(err) {
		t.Fatalf("a window with a row outside it: %v, want a permanent error", err)
	}
	s.Abort(ctx, "bad")
	checkIDTable(t, s, table, "after a refused window", all())
	ws, err := Windows(ctx, SinkConfig{URL: url, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 5 || !ws[4].Values || ws[4].Lo != 101 || ws[4].Hi != 201 || ws[4].Rows != int64(len(inWin(101, 201))) || ws[3].Deleted != 100 {
		t.Fatalf("windows %+v", ws)
	}
	// Window sums for `sluice check`: the source's count of each window.
	for _, w := range [][2]int64{{1, 101}, {101, 201}, {201, 301}, {1, 301}, {301, 401}} {
		checkSum(t, s, protocol.ValueWindow(w[0], w[1]), "id", "", int64(len(inWin(w[0], w[1]))))
	}
	if n := count(t, s, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name LIKE 'byid\\\\_\\\\_%'"); n != 0 {
		t.Errorf("%d staging or build tables left after the commits", n)
	}
}

// Windows of integer values of the delta column ver merged by key: the
// newest version of each id wins, a window merged again adds nothing.
func TestValueWindowsMerge(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s := testSink(t, url, db, "byver", nil)
	defer s.Close()
	table := db + ".byver"
	var log []idRow // every version the source wrote, in order
	current := func() []idRow {
		m := map[int64]idRow{}
		for _, r := range log {
			if o, ok := m[r.id]; !ok || r.ver >= o.ver {
				m[r.id] = r
			}
		}
		var out []idRow
		for _, r := range m {
			out = append(out, r)
		}
		return out
	}
	commit := func(run string, lo, hi int64) {
		t.Helper()
		var rows []idRow
		for _, r := range log {
			if r.ver >= lo && r.ver < hi {
				rows = append(rows, r)
			}
		}
		w := protocol.ValueWindow(lo, hi)
		out := writeIDRows(t, s, run, "t0", rows)
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "ver",
			Merge: &connectors.Merge{Key: []string{"id"}}, Tasks: []connectors.TaskOutput{out}, Schema: idRows}); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	ver := int64(0)
	for id := range int64(100) {
		ver++
		log = append(log, idRow{id, fmt.Sprintf("a%d", id), ver})
	}
	commit("m1", 0, 1000)
	checkIDTable(t, s, table, "after the first window", current())
	for id := int64(50); id < 150; id++ { // 50 updated, 50 new
		ver++
		log = append(log, idRow{id, fmt.Sprintf("b%d", id), 1000 + ver})
	}
	commit("m2", 1000, 2000)
	checkIDTable(t, s, table, "after the second window", current())
	commit("m2-again", 1000, 2000)
	checkIDTable(t, s, table, "after the second window merged again", current())
	if n := count(t, s, "SELECT count() - uniqExact(id) FROM "+table); n != 0 {
		t.Fatalf("%d duplicate ids", n)
	}
	for _, w := range [][2]int64{{0, 1000}, {1000, 2000}} {
		var want int64
		for _, r := range current() {
			if r.ver >= w[0] && r.ver < w[1] {
				want++
			}
		}
		checkSum(t, s, protocol.ValueWindow(w[0], w[1]), "ver", "", want)
	}
}

// checkSum asks the sink for a window's sum and compares its count.
func checkSum(t *testing.T, s *Sink, w protocol.Window, delta, deleted string, want int64) {
	t.Helper()
	got, err := s.SumWindow(context.Background(), connectors.SumRequest{Window: w, DeltaColumn: delta, Deleted: deleted, Columns: []string{"id", delta}})
	if err != nil {
		t.Fatalf("sum window %s: %v", w, err)
	}
	if got.Checksum.Rows != want || got.Form != formCount {
		t.Fatalf("sum window %s: %d rows (form %q), the source has %d", w, got.Checksum.Rows, got.Form, want)
	}
}

// Window sums of a time window, rows marked deleted left out (the rows a
// window replaced in, markers and all), and of a table not created yet;
// a column the table lacks is an error naming it.
func TestSumWindowTime(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s := testSink(t, url, db, "sumtime", nil)
	defer s.Close()
	t0 := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)
	hour := connectors.Window{From: t0, To: t0.Add(time.Hour)}
	checkSum(t, s, hour, "updated_at", "gone", 0)
	var rows []srcRow
	for id := range int64(120) {
		rows = append(rows, srcRow{id, fmt.Sprintf("a%d", id), t0.Add(time.Duration(id) * time.Minute), id%7 == 0})
	}
	in := func(w connectors.Window, deleted bool) (n int64) {
		for _, r := range rows {
			if !r.at.Before(w.From) && r.at.Before(w.To) && !(deleted && r.gone) {
				n++
			}
		}
		return n
	}
	two := connectors.Window{From: t0, To: t0.Add(2 * time.Hour)}
	out := writeRows(t, s, "r1", "t0", rows)
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "r1", Mode: connectors.ModeAppend, Window: &two, DeltaColumn: "updated_at", Tasks: []connectors.TaskOutput{out}, Schema: versioned}); err != nil {
		t.Fatal(err)
	}
	checkSum(t, s, hour, "updated_at", "gone", in(hour, true))
	checkSum(t, s, hour, "updated_at", "", in(hour, false))
	checkSum(t, s, two, "updated_at", "gone", in(two, true))
	if _, err := s.SumWindow(ctx, connectors.SumRequest{Window: hour, DeltaColumn: "updated_at", Columns: []string{"id", "nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("a sum over a missing column: %v", err)
	}
}
