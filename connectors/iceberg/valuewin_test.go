package iceberg

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// idRows have an integer key, a value and an integer version (the delta
// column of the merge test; the replace test uses id).
var idRows = &protocol.Schema{Columns: []protocol.Column{
	{Name: "id", Type: protocol.TypeInt64, NotNull: true},
	{Name: "v", Type: protocol.TypeString},
	{Name: "ver", Type: protocol.TypeInt64, NotNull: true},
}}

type idRow struct {
	id  int64
	v   string
	ver int64
}

func (r idRow) text() string { return fmt.Sprintf("%d|%s|%d", r.id, r.v, r.ver) }

func idBatch(rows []idRow) connectors.Batch {
	var raw []byte
	for _, r := range rows {
		raw = fmt.Appendf(raw, "%d,%s,%d\n", r.id, r.v, r.ver)
	}
	return connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: idRows.Names(), Rows: int64(len(rows))}
}

// checkIDTable compares the table's rows with want, as sorted texts and
// their checksum.
func checkIDTable(t *testing.T, cfg Config, step string, want []idRow) {
	t.Helper()
	var ws []string
	for _, r := range want {
		ws = append(ws, r.text())
	}
	slices.Sort(ws)
	var got []string
	tr := array.NewTableReader(scanRecords(t, load(t, cfg), 0), 1024)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		idx := func(n string) int { return rec.Schema().FieldIndices(n)[0] }
		id, v, ver := rec.Column(idx("id")).(*array.Int64), rec.Column(idx("v")).(*array.String), rec.Column(idx("ver")).(*array.Int64)
		for r := range int(rec.NumRows()) {
			got = append(got, idRow{id.Value(r), v.Value(r), ver.Value(r)}.text())
		}
	}
	slices.Sort(got)
	var sum, wantSum connectors.Checksum
	for _, r := range got {
		sum.Add([]byte(r))
	}
	for _, r := range ws {
		wantSum.Add([]byte(r))
	}
	if sum != wantSum || !slices.Equal(got, ws) {
		t.Fatalf("%s: the table holds %d rows (checksum %s), want %d (checksum %s)", step, sum.Rows, sum, wantSum.Rows, wantSum)
	}
}

// Windows of integer values of the delta column id replace the table's
// rows in [lo, hi) (an overwrite of those rows): three windows, the
// middle one replaced twice with changed and fewer rows (no duplicates,
// the rows outside it kept), a window across two earlier ones, a repeated
// commit that changes nothing.
func TestValueWindowsReplace(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "byid")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idRows); err != nil {
		t.Fatal(err)
	}
	source := map[int64]idRow{}
	for id := int64(0); id < 300; id++ {
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
		outs := []connectors.TaskOutput{
			write(t, s, run, "t0", 1, idRows, []connectors.Batch{idBatch(rows[:h])}),
			write(t, s, run, "t1", 1, idRows, []connectors.Batch{idBatch(rows[h:])}),
		}
		w := protocol.ValueWindow(lo, hi)
		req := connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "id", Tasks: outs, Schema: idRows}
		for range 2 { // a repeated commit changes nothing
			if _, err := s.Commit(ctx, req); err != nil {
				t.Fatalf("commit %s: %v", run, err)
			}
		}
	}
	commit("w1", 0, 100)
	commit("w2", 100, 200)
	commit("w3", 200, 300)
	checkIDTable(t, cfg.Config, "after three windows", all())
	for id := int64(100); id < 200; id++ {
		if id%3 == 0 {
			delete(source, id)
		} else {
			source[id] = idRow{id, fmt.Sprintf("b%d", id), 1}
		}
	}
	commit("w2-again", 100, 200)
	checkIDTable(t, cfg.Config, "after the window replaced", all())
	commit("w2-third", 100, 200)
	checkIDTable(t, cfg.Config, "after the window replaced twice", all())
	for id := int64(150); id < 250; id++ {
		source[id] = idRow{id, fmt.Sprintf("c%d", id), 2}
	}
	commit("across", 150, 250)
	checkIDTable(t, cfg.Config, "after a window across two", all())
	// Window sums for `sluice check`: the source's count of each window
	// (windows cutting through data files too).
	for _, w := range [][2]int64{{0, 100}, {100, 200}, {200, 300}, {0, 300}, {120, 180}, {300, 400}} {
		checkSum(t, s, protocol.ValueWindow(w[0], w[1]), "id", "", int64(len(inWin(w[0], w[1]))))
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

// Window sums of time windows, rows marked deleted left out (the rows a
// window replaced in, markers and all), and of a table not created yet;
// a column the table lacks is an error naming it.
func TestSumWindowTime(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "sumtime")
	s := newSink(t, cfg)
	defer s.Close()
	hour := connectors.Window{From: t0, To: t0.Add(time.Hour)}
	checkSum(t, s, hour, "updated_at", "gone", 0)
	if err := s.CheckSchema(ctx, versioned); err != nil {
		t.Fatal(err)
	}
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
	out := write(t, s, "r1", "t0", 1, versioned, []connectors.Batch{csvRows(rows)})
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

// Windows of integer values of the delta column ver merged by key: the
// newest version of each id wins, a window merged again adds nothing.
func TestValueWindowsMerge(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, "byver")
	s := newSink(t, cfg)
	defer s.Close()
	if err := s.CheckSchema(ctx, idRows); err != nil {
		t.Fatal(err)
	}
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
		out := write(t, s, run, "t0", 1, idRows, []connectors.Batch{idBatch(rows)})
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
	checkIDTable(t, cfg.Config, "after the first window", current())
	for id := int64(50); id < 150; id++ { // 50 updated, 50 new
		ver++
		log = append(log, idRow{id, fmt.Sprintf("b%d", id), 1000 + ver})
	}
	commit("m2", 1000, 2000)
	checkIDTable(t, cfg.Config, "after the second window", current())
	commit("m2-again", 1000, 2000)
	checkIDTable(t, cfg.Config, "after the second window merged again", current())
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
