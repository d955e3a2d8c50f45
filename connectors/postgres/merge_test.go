package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// Windows merged by key: each key keeps its newest row (by the delta
// column), of the window and of what the target held; a row marked deleted
// removes its key unless the target's row is newer; other keys stay; a
// repeated commit changes nothing; a re-run of an older window cannot
// bring an older version back. A target without a unique index on the key
// is refused; one the sink creates gets it.
func TestSinkMergeByKey(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	typed := schema + ".typed"
	pgtest.Exec(t, conn, "CREATE TABLE "+typed+" (id bigint PRIMARY KEY, v text, version bigint, gone boolean)")
	for _, table := range []string{typed, schema + ".created"} {
		sink, err := NewSink(SinkConfig{DSN: dsn, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		commit := func(run, csv string, w protocol.Window) {
			t.Helper()
			out := stageRows(t, sink, run, csv)
			req := connectors.CommitRequest{RunID: run, Version: 1, Tasks: []connectors.TaskOutput{out}, Mode: connectors.ModeAppend,
				Window: &w, DeltaColumn: "version", Merge: &connectors.Merge{Key: []string{"id"}, Deleted: "gone"}}
			for range 2 {
				if _, err := sink.Commit(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
		}
		rows := func() string { return strings.Join(pgtest.Rows(t, conn, table, []string{"id", "v", "version"}), " ") }
		commit("r1", "1,a,1,f\n2,b,2,f\n3,c,3,f\n", protocol.ValueWindow(0, 10))
		// Window 2: key 1 twice (the newest wins), key 2 deleted, key 4 new.
		commit("r2", "1,a2,10,f\n1,a3,12,f\n2,,11,t\n4,d,13,\n", protocol.ValueWindow(10, 20))
		if got, want := rows(), "1|a3|12 3|c|3 4|d|13"; got != want {
			t.Fatalf("%s after two windows: %s, want %s", table, got, want)
		}
		// A re-run of the first window reads what the source holds in it
		// now (keys 1 and 2 moved to later versions): nothing changes.
		commit("r3", "3,c,3,f\n", protocol.ValueWindow(0, 10))
		// An older version of key 1 merged late (a lookback) loses to
		// the newer one; key 2's deletion is merged again.
		commit("r4", "1,old,11,f\n2,,11,t\n", protocol.ValueWindow(10, 20))
		if got, want := rows(), "1|a3|12 3|c|3 4|d|13"; got != want {
			t.Fatalf("%s after re-runs: %s, want %s", table, got, want)
		}
		ws, err := Windows(ctx, dsn, table)
		if err != nil || len(ws) != 4 || ws[1].Deleted != 1 || ws[1].Rows != 4 {
			t.Fatalf("windows %+v (%v)", ws, err)
		}
	}
	// An existing target without a unique index on the key is refused.
	plain := schema + ".plain"
	pgtest.Exec(t, conn, "CREATE TABLE "+plain+" (id bigint, v text, version bigint, gone boolean)")
	sink, _ := NewSink(SinkConfig{DSN: dsn, Table: plain})
	out := stageRows(t, sink, "p1", "1,a,1,f\n")
	w := protocol.ValueWindow(0, 10)
	_, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "p1", Version: 1, Tasks: []connectors.TaskOutput{out}, Mode: connectors.ModeAppend,
		Window: &w, DeltaColumn: "version", Merge: &connectors.Merge{Key: []string{"id"}}})
	if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "CREATE UNIQUE INDEX") {
		t.Fatalf("merge into a table without a unique key: %v", err)
	}
}

func stageRows(t *testing.T, sink *Sink, run, csv string) connectors.TaskOutput {
	t.Helper()
	ctx := context.Background()
	tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: run, TaskID: "t00000", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Write(ctx, connectors.Batch{Raw: []byte(csv), Format: connectors.FormatCSV, Columns: []string{"id", "v", "version", "gone"}, Rows: int64(strings.Count(csv, "\n"))}); err != nil {
		t.Fatal(err)
	}
	out, err := tw.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Without a deleted column the staged rows are upserted as they are; a key
// staged twice (an append-only source of versions) falls back to the
// newest of each key, in the same commit.
func TestSinkMergeWithoutDeletes(t *testing.T) {
	dsn, schema, conn := pgtest.DB(t)
	ctx := context.Background()
	table := schema + ".versions_of"
	pgtest.Exec(t, conn, "CREATE TABLE "+table+" (id bigint PRIMARY KEY, v text, version bigint, gone boolean)")
	sink, err := NewSink(SinkConfig{DSN: dsn, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	commit := func(run, csv string, w protocol.Window) {
		t.Helper()
		out := stageRows(t, sink, run, csv)
		if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: run, Version: 1, Tasks: []connectors.TaskOutput{out}, Mode: connectors.ModeAppend,
			Window: &w, DeltaColumn: "version", Merge: &connectors.Merge{Key: []string{"id"}}}); err != nil {
			t.Fatal(err)
		}
	}
	rows := func() string { return strings.Join(pgtest.Rows(t, conn, table, []string{"id", "v", "version"}), " ") }
	commit("r1", "1,a,1,f\n2,b,2,f\n", protocol.ValueWindow(0, 10))
	commit("r2", "2,b2,12,f\n3,c,13,f\n", protocol.ValueWindow(10, 20))
	if got, want := rows(), "1|a|1 2|b2|12 3|c|13"; got != want {
		t.Fatalf("unique keys: %s, want %s", got, want)
	}
	commit("r3", "1,x,21,f\n1,y,25,f\n1,z,22,f\n3,c0,3,f\n", protocol.ValueWindow(20, 30))
	if got, want := rows(), "1|y|25 2|b2|12 3|c|13"; got != want {
		t.Fatalf("a key staged three times, an older version of another: %s, want %s", got, want)
	}
}
