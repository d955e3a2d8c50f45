package clickhouse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/protocol"
)

// waitForMerge waits until the server merges parts of db.table.
func waitForMerge(t *testing.T, cl *Client, db, table string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		n, err := cl.Int(context.Background(), "SELECT count() FROM system.merges WHERE database = "+quoteString(db)+" AND table = "+quoteString(table))
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no merge of %s.%s started (%v)", db, table, err)
		}
	}
}

// A window committed while the server merges the parts of its day: the
// day holds each row once after the merge, and merges run again after the
// commit. (ClickHouse 18.x's REPLACE PARTITION does not stop a merge
// running in the partition, whose result brings the replaced parts back.)
func TestWindowDuringMerge(t *testing.T) {
	url, db := chtest.DB(t)
	ctx := context.Background()
	sc := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "at", Type: protocol.TypeTimestampTZ, NotNull: true},
	}, Key: []string{"id"}}
	s := testSink(t, url, db, "winmerge", nil)
	defer s.Close()
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	commit := func(run string, lo, hi, rowsLo, rowsHi int) {
		t.Helper()
		outs := writeRun(t, s, run, rowsLo, rowsHi, sc)
		w := connectors.Window{From: day.Add(time.Duration(lo) * time.Minute), To: day.Add(time.Duration(hi) * time.Minute)}
		if _, err := s.Commit(ctx, connectors.CommitRequest{RunID: run, Mode: connectors.ModeAppend, Window: &w, DeltaColumn: "at", Tasks: outs, Schema: sc}); err != nil {
			t.Fatalf("commit %s: %v", run, err)
		}
	}
	commit("w1", 0, 1440, 0, 1440)
	// Parts of the day large enough that merging them takes a while,
	// outside the window committed again below.
	table := db + ".winmerge"
	exec := func(q string) {
		t.Helper()
		if err := s.cl.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec("SYSTEM STOP MERGES " + table)
	const filler = 8 * 200000
	for i := range 8 {
		exec(fmt.Sprintf("INSERT INTO %s (id, at) SELECT number + %d, %d + number %% 3600000000 FROM system.numbers LIMIT 200000",
			table, 10_000_000+i*200000, day.Add(23*time.Hour).UnixMicro()))
	}
	// The merge starts right before the commit replaces the day: merges
	// stay stopped until then, so that the server has not merged the
	// parts already (an OPTIMIZE of one part merges nothing).
	merged := make(chan error, 1)
	s.beforeReplace = func() {
		exec("SYSTEM START MERGES " + table)
		go func() {
			merged <- s.cl.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s PARTITION %s FINAL", table, partitionLiteral(day, deltaMicros)))
		}()
		waitForMerge(t, s.cl, db, "winmerge")
	}
	commit("part", 600, 660, 600, 630) // the window again, with half its rows
	s.beforeReplace = nil
	<-merged // done, or cancelled by the commit
	want := int64(1440 - 60 + 30 + filler)
	if n, u := count(t, s, "SELECT count() FROM "+table), count(t, s, "SELECT uniqExact(id) FROM "+table); n != want || u != want {
		t.Fatalf("after a window committed during a merge the table holds %d rows (%d ids), want %d once each", n, u, want)
	}
	// Merges run again: the day merges into one part.
	exec(fmt.Sprintf("OPTIMIZE TABLE %s PARTITION %s FINAL", table, partitionLiteral(day, deltaMicros)))
	if n := count(t, s, "SELECT count() FROM system.parts WHERE database = '"+db+"' AND table = 'winmerge' AND active"); n != 1 {
		t.Errorf("%d active parts after OPTIMIZE FINAL, want 1: merges stay stopped", n)
	}
}
