package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/protocol"
)

// writeRun stages rows [lo, hi) of (id, v) as one task per 100 rows.
func writeRun(t *testing.T, s *Sink, run string, lo, hi int, sc *protocol.Schema) []connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	var outs []connectors.TaskOutput
	for start := lo; start < hi; start += 100 {
		w, err := s.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: fmt.Sprintf("t%d", start), Attempt: 1, Schema: sc})
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		n := 0
		for i := start; i < min(start+100, hi); i++ {
			raw = fmt.Appendf(raw, "%d,%s\n", i, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Minute).Format("2006-01-02 15:04:05+00"))
			n++
		}
		if err := w.Write(ctx, connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: []string{"id", "at"}, Rows: int64(n)}); err != nil {
			t.Fatal(err)
		}
		out, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	return outs
}

func count(t *testing.T, s *Sink, query string) int64 {
	t.Helper()
	n, err := s.cl.Int(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Full loads: each commit exposes a new version under the table's name
// while readers query it without ever missing the table or seeing part of
// a version; a failed run leaves the previous version; the last
// keep_versions stay, and Rollback exposes an earlier one.
func TestVersionsAndRollback(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	cfg := SinkConfig{URL: url, Table: db + ".ver", KeepVersions: 2}
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commit := func(run string, v int64, rows int) {
		t.Helper()
		outs := writeRun(t, s, run, 0, rows, nil)
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Version: v, Tasks: outs}); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	commit("run-1", 1, 1000)

	// A reader counts the table while versions of 2000 and 3000 rows are
	// committed: it sees whole versions only.
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var wg sync.WaitGroup
	var badMsg atomic.Value
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				n, err := s.cl.Int(ctx, "SELECT count() FROM "+db+".ver")
				reads.Add(1)
				if err != nil || n != 1000 && n != 2000 && n != 3000 {
					bad.Add(1)
					badMsg.Store(fmt.Sprint(n, err))
				}
			}
		})
	}
	commit("run-2", 2, 2000)
	commit("run-3", 3, 3000)
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 || reads.Load() < 10 {
		t.Fatalf("%d of %d reads during commits saw no whole version (last: %v)", bad.Load(), reads.Load(), badMsg.Load())
	}

	// A run that fails leaves version 3 exposed and no staging behind.
	writeRun(t, s, "run-4", 0, 500, nil)
	if err := s.Abort(ctx, "run-4"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM "+db+".ver"); n != 3000 {
		t.Fatalf("after a failed run: %d rows, want 3000", n)
	}
	if left, err := s.cl.Strings(ctx, "SELECT name FROM system.tables WHERE database = '"+db+"' AND position(name, '__') > 0"); err != nil || len(left) > 0 {
		t.Errorf("staging tables left after the abort: %v %v", left, err)
	}
	// A commit repeated after a crash changes nothing.
	if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: "run-3", Version: 3, Tasks: nil}); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	vs, err := Versions(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Version != 2 || vs[1].Version != 3 || !vs[1].Current || vs[0].Rows != 2000 {
		t.Fatalf("versions %+v, want 2 and 3 (current) kept", vs)
	}
	if err := s.Expose(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM "+db+".ver"); n != 2000 {
		t.Fatalf("after rollback: %d rows, want 2000", n)
	}
	if err := s.Expose(ctx, 1); err == nil || !strings.Contains(err.Error(), "version 1 was dropped") || !connectors.IsPermanent(err) {
		t.Errorf("rollback to a dropped version = %v", err)
	}
	if err := s.Expose(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM "+db+".ver"); n != 3000 {
		t.Fatalf("after rolling forward: %d rows, want 3000", n)
	}
	commit("run-5", 5, 100)
	vs, _ = Versions(ctx, cfg)
	if len(vs) != 2 || vs[1].Version != 5 || !vs[1].Current || vs[0].Version != 3 {
		t.Fatalf("versions after another commit %+v, want 3 and 5 (current)", vs)
	}
}

// A table that Sluice did not load is never replaced.
func TestForeignTableRefused(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	s := testSink(t, url, db, "mine", nil)
	defer s.Close()
	if err := s.cl.Exec(ctx, "CREATE TABLE "+db+".mine (x Int8) ENGINE = TinyLog"); err != nil {
		t.Fatal(err)
	}
	outs := writeRun(t, s, "r", 0, 10, nil)
	_, err := s.Commit(ctx, connectors.CommitRequest{RunID: "r", Version: 1, Tasks: outs})
	if err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("commit over a foreign table = %v, want a permanent error", err)
	}
}

// Incremental windows: a window committed again replaces exactly its rows,
// a window spanning midnight replaces both days' parts, rows outside the
// window stay, and a repeated commit changes nothing. Typed (Int64
// microseconds) and text (no schema) delta columns alike.
func TestWindows(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	typed := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "at", Type: protocol.TypeTimestampTZ, NotNull: true},
	}, Key: []string{"id"}}
	for _, tc := range []struct {
		name string
		sc   *protocol.Schema
	}{{"typed", typed}, {"text", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSink(t, url, db, "win_"+tc.name, nil)
			defer s.Close()
			day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			win := func(run string, lo, hi int, rowsLo, rowsHi int) {
				t.Helper()
				outs := writeRun(t, s, run, rowsLo, rowsHi, tc.sc)
				w := connectors.Window{From: day.Add(time.Duration(lo) * time.Minute), To: day.Add(time.Duration(hi) * time.Minute)}
				req := connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "at", Tasks: outs, Schema: tc.sc}
				if _, err := s.Commit(ctx, req); err != nil {
					t.Fatalf("commit %s: %v", run, err)
				}
				if _, err := s.Commit(ctx, req); err != nil {
					t.Fatalf("repeated commit %s: %v", run, err)
				}
			}
			total := func() int64 { return count(t, s, "SELECT count() FROM "+db+".win_"+tc.name) }
			ids := func() int64 { return count(t, s, "SELECT uniqExact(id) FROM "+db+".win_"+tc.name) }
			// Rows are one a minute: [0, 1440) is day 1, [1440, 2880) day 2.
			win("w1", 0, 1440, 0, 1440)
			win("w2", 1440, 2880, 1440, 2880)
			if n := total(); n != 2880 {
				t.Fatalf("after two days: %d rows, want 2880", n)
			}
			win("w1-again", 0, 1440, 0, 1440)
			win("cross", 1380, 1500, 1380, 1500) // 23:00 to 01:00 across midnight
			win("part", 600, 660, 600, 630)      // the window re-loaded with half its rows gone
			if n, u := total(), ids(); n != 2850 || u != 2850 {
				t.Fatalf("after re-runs: %d rows (%d ids), want 2850 once each", n, u)
			}
			ws, err := Windows(ctx, SinkConfig{URL: url, Table: db + ".win_" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			if len(ws) != 5 || ws[4].Rows != 30 || ws[4].Deleted != 60 || ws[3].Deleted != 120 {
				t.Fatalf("windows %+v", ws)
			}
		})
	}
}
