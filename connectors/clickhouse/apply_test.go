package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/clickhouse/chtest"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/protocol"
)

// testApplier opens an Applier of pipeline into database db, closed when
// the test ends.
func testApplier(t *testing.T, url, db, pipeline string) *Applier {
	t.Helper()
	a, err := NewApplier(context.Background(), ApplierConfig{URL: url, Database: db, Pipeline: pipeline})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// testClient returns a client of the server at url, closed when the test
// ends.
func testClient(t *testing.T, url string) *Client {
	t.Helper()
	cl, err := NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// current reads the view of a target's current state: its rows as text,
// NULL as \N, sorted (cdctest.Model.Rows's form).
func current(t *testing.T, cl *Client, db, table string, cols []string) []string {
	t.Helper()
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quoteIdent(c)
	}
	rows, err := cl.Rows(context.Background(), "SELECT "+strings.Join(q, ", ")+" FROM "+tableIdent(db, table+ViewSuffix))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		vals := make([]string, len(r))
		for j, v := range r {
			vals[j] = string(v)
			if v == nil {
				vals[j] = `\N`
			}
		}
		out[i] = strings.Join(vals, "|")
	}
	slices.Sort(out)
	return out
}

// The conformance suite's targets are databases of their own, which the
// Applier creates; the dump reads every view of one, its columns named. No
// client outlives a call (the suite checks for goroutines left behind).
func TestConformanceApplier(t *testing.T) {
	url, db := chtest.DB(t)
	conformance.TestApplier(t, conformance.ApplierHarness{
		Open: func(t *testing.T, name string) connectors.Applier {
			a, err := NewApplier(context.Background(), ApplierConfig{URL: url, Database: db + "_" + name, Pipeline: "conf"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { chtest.Exec(context.Background(), url, "DROP DATABASE IF EXISTS "+db+"_"+name) })
			return a
		},
		Dump: func(t *testing.T, name string) []string {
			cl, err := NewClient(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			views, err := cl.Strings(context.Background(), "SELECT name FROM system.tables WHERE database = "+quoteString(db+"_"+name)+" AND engine = 'View'")
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, v := range views {
				cols, err := cl.Strings(context.Background(), "SELECT name FROM system.columns WHERE database = "+quoteString(db+"_"+name)+" AND table = "+quoteString(v))
				if err != nil {
					t.Fatal(err)
				}
				slices.Sort(cols)
				table := strings.TrimSuffix(v, ViewSuffix)
				for _, r := range current(t, cl, db+"_"+name, table, cols) {
					out = append(out, fmt.Sprintf("%s %v=%s", table, cols, r))
				}
			}
			slices.Sort(out)
			return out
		},
		Events: conformance.ChangeEvents(),
	})
}

// TestApplierPackedRuns: the packed workload (messages of several events,
// key changes, deletes, a truncate and inserts after it in one message)
// applied by Runs that fail before and after a batch is durable, crash
// between the staging tables and the commit record, and are stopped in the
// middle of an Apply: every event is applied exactly once, in order (see
// cdctest.Packed.RunPacked), the current state equals the model's, and no
// staging table is left; applied again by a new Applier, nothing changes.
func TestApplierPackedRuns(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	js := cdctest.StartJS(t)
	p := cdctest.PublishWorkload(t, js, "s", 160, 7, 5)
	m := p.Model(t)
	crash := errors.New("crash between the staging tables and the commit record")
	stopped := map[string]bool{}
	p.RunPacked(t, js, cdctest.PackedCase{
		Name: "clickhouse",
		Open: func(t *testing.T) connectors.Applier {
			a := testApplier(t, url, db, "apply_ch")
			calls := 0
			a.afterStage = func() error {
				// A target made by this batch holds no row yet: its
				// merges stop before any, so that every version the
				// applier stores stays for checkVersions.
				if err := stopMerges(cl, db, stopped); err != nil {
					return err
				}
				if calls++; calls == 5 {
					return crash
				}
				return nil
			}
			return a
		},
		Fails: []string{"before batch 3", "after batch 5", crash.Error()},
		Check: func(t *testing.T, a connectors.Applier, durable [][]connectors.Event) {
			check := func(what string) {
				t.Helper()
				for _, tb := range []string{"p1", "p2", "p3"} {
					got := current(t, cl, db, tb, []string{"id", "v"})
					if want := m.Rows("s."+tb, []string{"id", "v"}); !slices.Equal(got, want) {
						t.Errorf("%s: %s holds %d rows %q, want %d rows %q", what, tb, len(got), got, len(want), want)
					}
				}
			}
			check("after the restarts")
			pairs := 0
			for _, tb := range []string{"p1", "p2", "p3"} {
				pairs += checkVersions(t, cl, db, tb, p.Want)
			}
			if pairs == 0 {
				t.Error("no key holds two versions: the order check checked nothing")
			}
			t.Logf("per key order: %d stored versions checked against the key's version before", pairs)
			if left := stagingTables(t, cl); len(left) > 0 {
				t.Errorf("staging tables left: %v", left)
			}
			again := testApplier(t, url, db, "apply_ch")
			for _, b := range durable {
				if err := again.Apply(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			check("after every batch applied again")
		},
	})
}

// stopMerges stops the merges of the workload's tables in db that exist
// and are not in stopped yet.
func stopMerges(cl *Client, db string, stopped map[string]bool) error {
	names, err := cl.Strings(context.Background(), "SELECT name FROM system.tables WHERE database = "+quoteString(db)+" AND name IN ('p1', 'p2', 'p3')")
	if err != nil {
		return err
	}
	for _, n := range names {
		if !stopped[n] {
			if err := cl.Exec(context.Background(), "SYSTEM STOP MERGES "+tableIdent(db, n)); err != nil {
				return err
			}
			stopped[n] = true
		}
	}
	return nil
}

// checkVersions reads every row the target table of source table s.<table>
// stores (every version of every key, not FINAL) and fails the test
// unless each is labelled with the position in the source of the change
// that made it: its version and index are the commit LSN and index of an
// event of want on its key (a truncate of the table for any key), and it
// holds that event's row (a deletion for a delete, the old key of a key
// change or a truncate). The versions of a key, ordered as the table
// orders them (FINAL keeps the highest), then follow the source's commit
// order. It returns how many stored versions followed an earlier one of
// their key.
func checkVersions(t *testing.T, cl *Client, db, table string, want []connectors.Event) int {
	t.Helper()
	type state struct {
		deleted bool
		v       string
	}
	at := map[string]state{} // id NUL version NUL index
	truncates := map[string]bool{}
	pos := func(e connectors.Event) string {
		lsn, err := parseLSN(e.CommitLSN)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d\x00%d", lsn, e.Index)
	}
	for _, e := range want {
		if e.Schema != "s" || e.Table != table {
			continue
		}
		switch {
		case e.Op == protocol.OpTruncate:
			truncates[pos(e)] = true
		case e.After != nil:
			v := e.After["v"].Text
			if e.After["v"].Null {
				v = `\N`
			}
			at[e.After["id"].Text+"\x00"+pos(e)] = state{false, v}
			if e.Before != nil && e.Before["id"].Text != e.After["id"].Text {
				at[e.Before["id"].Text+"\x00"+pos(e)] = state{deleted: true}
			}
		default:
			at[e.Before["id"].Text+"\x00"+pos(e)] = state{deleted: true}
		}
	}
	rows, err := cl.Rows(context.Background(), "SELECT id, v, _sluice_version, _sluice_index, _sluice_deleted FROM "+tableIdent(db, table)+
		" ORDER BY id, _sluice_version, _sluice_index")
	if err != nil {
		t.Fatal(err)
	}
	pairs, bad := 0, 0
	for i, r := range rows {
		id, p := string(r[0]), string(r[2])+"\x00"+string(r[3])
		got := state{deleted: string(r[4]) == "1", v: string(r[1])}
		if r[1] == nil {
			got.v = `\N`
		}
		w, ok := at[id+"\x00"+p]
		switch {
		case !ok && got.deleted && truncates[p]:
		case !ok:
			bad++
			t.Errorf("%s: key %s stored at version %s/%s, the position of no change of the key", table, id, r[2], r[3])
		case got.deleted != w.deleted || !got.deleted && got.v != w.v:
			bad++
			t.Errorf("%s: key %s at version %s/%s holds (deleted %v, v %q); the source's change there made (deleted %v, v %q)",
				table, id, r[2], r[3], got.deleted, got.v, w.deleted, w.v)
		}
		if i > 0 && string(rows[i-1][0]) == id {
			pairs++
		}
		if bad > 5 {
			t.Fatalf("%s: more than 5 stored versions are not their source change's", table)
		}
	}
	return pairs
}

func stagingTables(t *testing.T, cl *Client) []string {
	t.Helper()
	names, err := cl.Strings(context.Background(), "SELECT name FROM system.tables WHERE startsWith(name, 'sluice_cdc_') AND name != "+quoteString(OffsetsTable))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// events numbers change events as messages of one event each, from seq,
// with commit LSNs rising with their sequence.
func events(seq uint64, evs ...protocol.ChangeEvent) []connectors.Event {
	out := cdctest.Numbered(seq, evs...)
	for i := range out {
		out[i].CommitLSN = fmt.Sprintf("1/%X", 0x100*out[i].Seq)
		out[i].LSN = out[i].CommitLSN
	}
	return out
}

// A batch recorded but not moved into its tables (a crash between the
// commit record and the moves) is durable: a new Applier reports it
// applied, its first call moves it in, and delivered again it is skipped.
func TestApplierFinishesRecordedBatch(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	row := func(id, v string) protocol.Row { return protocol.Row{"id": protocol.Text(id), "v": protocol.Text(v)} }
	first := events(1,
		cdctest.Change(protocol.OpInsert, "s", "t", nil, row("1", "a")),
		cdctest.Change(protocol.OpInsert, "s", "u", nil, row("1", "b")))
	second := events(3,
		cdctest.Change(protocol.OpTruncate, "s", "t", nil, nil),
		cdctest.Change(protocol.OpInsert, "s", "t", nil, row("2", "c")),
		cdctest.Change(protocol.OpUpdate, "s", "u", nil, row("1", "b2")))
	a := testApplier(t, url, db, "rec")
	if err := a.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash after the commit record")
	a.afterCommit = func() error { return crash }
	if err := a.Apply(ctx, second); !errors.Is(err, crash) {
		t.Fatalf("Apply: %v, want the injected crash", err)
	}
	if got := current(t, cl, db, "t", []string{"id", "v"}); !slices.Equal(got, []string{"1|a"}) {
		t.Fatalf("before recovery t holds %q, want the first batch's rows", got)
	}
	if left := stagingTables(t, cl); len(left) != 2 {
		t.Fatalf("staging tables %v, want the recorded batch's 2", left)
	}
	b := testApplier(t, url, db, "rec")
	if got := cdctest.Applied(t, b); got != 5 {
		t.Fatalf("Applied %d, want 5", got)
	}
	if got := current(t, cl, db, "t", []string{"id", "v"}); !slices.Equal(got, []string{"2|c"}) {
		t.Errorf("t holds %q, want the truncate then row 2", got)
	}
	if got := current(t, cl, db, "u", []string{"id", "v"}); !slices.Equal(got, []string{"1|b2"}) {
		t.Errorf("u holds %q, want the update", got)
	}
	if left := stagingTables(t, cl); len(left) != 0 {
		t.Errorf("staging tables %v left after recovery", left)
	}
	if err := b.Apply(ctx, append(first, second...)); err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Int(ctx, "SELECT count() FROM "+db+".u"); err != nil || n != 2 {
		t.Errorf("u holds %d versions (%v) after the batches were delivered again, want 2 (insert, update)", n, err)
	}
}

// Two Appliers of one pipeline at once, as when a worker that lost the
// stream's lease finishes a batch while the new holder starts. The new
// holder keeps the old one's staging tables, whose batch may be recorded
// yet: when the old one records it and dies before moving it in, the new
// one moves it in before going on. When the new one records first, the old
// one's record is refused (it follows a record that is no longer the last)
// and its staging tables are dropped once a record passes them. Every event
// counts once.
func TestApplierTwoHolders(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	T := protocol.Text
	ev := func(table string, op protocol.Op, id, v string) protocol.ChangeEvent {
		row := protocol.Row{"id": T(id), "v": T(v)}
		if op == protocol.OpDelete {
			return cdctest.Change(op, "s", table, row, nil)
		}
		return cdctest.Change(op, "s", table, nil, row)
	}
	workload := func(table string) []connectors.Event {
		return events(1, ev(table, protocol.OpInsert, "1", "v1"), ev(table, protocol.OpInsert, "2", "v2"), ev(table, protocol.OpInsert, "3", "v3"),
			ev(table, protocol.OpInsert, "4", "v4"), ev(table, protocol.OpUpdate, "1", "new"), ev(table, protocol.OpDelete, "2", ""),
			ev(table, protocol.OpInsert, "7", "v7"), ev(table, protocol.OpInsert, "8", "v8"))
	}
	want := []string{"1|new", "3|v3", "4|v4", "7|v7", "8|v8"}
	// old applies events 1-6 and stops after staging them, until release.
	start := func(pipeline string, all []connectors.Event) (old *Applier, release func() error) {
		old = testApplier(t, url, db, pipeline)
		staged, proceed := make(chan struct{}), make(chan struct{})
		old.afterStage = func() error { close(staged); <-proceed; return nil }
		done := make(chan error, 1)
		go func() { done <- old.Apply(ctx, all[:6]) }()
		<-staged
		return old, func() error { close(proceed); return <-done }
	}
	check := func(pipeline, table string) {
		t.Helper()
		if got := current(t, cl, db, table, []string{"id", "v"}); !slices.Equal(got, want) {
			t.Errorf("%s: %s_current holds %q, want %q", pipeline, table, got, want)
		}
		if left := stagingTables(t, cl); len(left) != 0 {
			t.Errorf("%s: staging tables left: %v", pipeline, left)
		}
	}

	// The old holder records first and dies before moving its batch in.
	all := workload("z1")
	old, release := start("two1", all)
	holder := testApplier(t, url, db, "two1")
	if got := cdctest.Applied(t, holder); got != 0 {
		t.Fatalf("Applied %d before any record, want 0", got)
	}
	crash := errors.New("crash after the commit record")
	old.afterCommit = func() error { return crash }
	if err := release(); !errors.Is(err, crash) {
		t.Fatalf("the old holder's Apply: %v, want the injected crash", err)
	}
	for _, b := range [][]connectors.Event{all[:4], all[4:]} {
		if err := holder.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if got := cdctest.Applied(t, holder); got != 8 {
		t.Errorf("Applied %d, want 8", got)
	}
	check("old holder recording first", "z1")

	// The new holder records first: the old holder's record is refused.
	all = workload("z2")
	_, release = start("two2", all)
	holder = testApplier(t, url, db, "two2")
	if err := holder.Apply(ctx, all[:4]); err != nil {
		t.Fatal(err)
	}
	if err := release(); err == nil || !strings.Contains(err.Error(), "two Appliers") {
		t.Fatalf("the old holder's Apply after the new one recorded: %v, want its record refused", err)
	}
	if err := holder.Apply(ctx, all[4:]); err != nil {
		t.Fatal(err)
	}
	check("new holder recording first", "z2")
}

// Values an update leaves unchanged (TOAST) come from the target's current
// row when the batch does not hold them, also across a key change; a
// deletion hides the row; a column added at the source is added to the
// table and its view; a truncate of a table never created creates nothing;
// an unchanged value the target cannot give fails the batch, whole.
func TestApplierAcrossBatches(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	a := testApplier(t, url, db, "across")
	T, U, N := protocol.Text, protocol.UnchangedValue, protocol.NullValue
	seq := uint64(1)
	apply := func(evs ...protocol.ChangeEvent) error {
		t.Helper()
		b := events(seq, evs...)
		seq += uint64(len(evs))
		return a.Apply(ctx, b)
	}
	must := func(evs ...protocol.ChangeEvent) {
		t.Helper()
		if err := apply(evs...); err != nil {
			t.Fatal(err)
		}
	}
	ch := func(op protocol.Op, before, after protocol.Row) protocol.ChangeEvent {
		return cdctest.Change(op, "s", "docs", before, after)
	}
	must(ch(protocol.OpInsert, nil, protocol.Row{"id": T("1"), "title": T("one"), "body": T("big\tbody\n'1'")}),
		ch(protocol.OpInsert, nil, protocol.Row{"id": T("2"), "title": T("two"), "body": N}),
		ch(protocol.OpInsert, nil, protocol.Row{"id": T("3"), "title": T("three"), "body": T("b3")}))
	must(ch(protocol.OpUpdate, nil, protocol.Row{"id": T("1"), "title": T("one'"), "body": U}))
	must(ch(protocol.OpUpdate, protocol.Row{"id": T("2")}, protocol.Row{"id": T("20"), "title": T("moved"), "body": U}),
		cdctest.Change(protocol.OpTruncate, "s", "never", nil, nil))
	must(ch(protocol.OpDelete, protocol.Row{"id": T("3")}, nil),
		ch(protocol.OpInsert, nil, protocol.Row{"id": T("4"), "title": T("four"), "body": T("b4"), "tag": T("new column")}))
	want := []string{"1|one'|big\tbody\n'1'|\\N", "20|moved|\\N|\\N", "4|four|b4|new column"}
	cols := []string{"id", "title", "body", "tag"}
	if got := current(t, cl, db, "docs", cols); !slices.Equal(got, want) {
		t.Fatalf("docs_current holds %q, want %q", got, want)
	}
	if got := chRows(t, cl, "SELECT id, _sluice_deleted FROM "+db+".docs FINAL WHERE _sluice_deleted = 1"); !slices.Equal(got, []string{`"2" | "1"`, `"3" | "1"`}) {
		t.Errorf("deletions in the table: %q, want keys 2 (moved) and 3", got)
	}
	if n, err := cl.Int(ctx, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name LIKE 'never%'"); err != nil || n != 0 {
		t.Errorf("a truncate of a table never written created %d tables (%v)", n, err)
	}
	// An unchanged value of a key the target does not hold: the batch
	// fails, and the insert before it in the batch is not applied.
	before := cdctest.Applied(t, a)
	err := apply(ch(protocol.OpInsert, nil, protocol.Row{"id": T("5"), "title": T("five"), "body": T("b5"), "tag": N}),
		ch(protocol.OpUpdate, nil, protocol.Row{"id": T("99"), "title": T("x"), "body": U, "tag": N}))
	if err == nil || !strings.Contains(err.Error(), "missing rows") {
		t.Fatalf("Apply of an unchanged value without a row: %v, want an error", err)
	}
	if got := cdctest.Applied(t, a); got != before {
		t.Errorf("the failed batch moved Applied from %d to %d", before, got)
	}
	if got := current(t, cl, db, "docs", cols); !slices.Equal(got, want) {
		t.Errorf("after the failed batch docs_current holds %q, want %q", got, want)
	}
	if left := stagingTables(t, cl); len(left) != 0 {
		t.Errorf("staging tables %v left after a failed batch", left)
	}
}

// The sink of a cdc_apply pipeline is {url, database, settings}: the url is
// required, anything else is refused naming the field, and a password
// never shows in an error; the kind is registered as a cdc target.
// Unchanged values of thousands of keys, more than one query can name, are
// read from the target in several queries; also for a key of two columns.
func TestApplierManyUnchanged(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	a := testApplier(t, url, db, "many")
	key := func(i int) protocol.Value {
		return protocol.Text(fmt.Sprintf("key %04d %s", i, strings.Repeat("k", 40)))
	}
	var inserts, updates []protocol.ChangeEvent
	var want []string
	for i := range 4000 {
		inserts = append(inserts, cdctest.Change(protocol.OpInsert, "s", "docs", nil, protocol.Row{"id": key(i), "v": protocol.Text("old"), "body": protocol.Text(fmt.Sprintf("body %d", i))}))
		updates = append(updates, cdctest.Change(protocol.OpUpdate, "s", "docs", nil, protocol.Row{"id": key(i), "v": protocol.Text("new"), "body": protocol.UnchangedValue}))
		want = append(want, fmt.Sprintf("%s|new|body %d", key(i).Text, i))
	}
	slices.Sort(want)
	if err := a.Apply(context.Background(), events(1, inserts...)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(context.Background(), events(4001, updates...)); err != nil {
		t.Fatal(err)
	}
	if got := current(t, cl, db, "docs", []string{"id", "v", "body"}); !slices.Equal(got, want) {
		t.Errorf("docs_current holds %d rows, want %d; first %q, want %q", len(got), len(want), got[:min(len(got), 1)], want[0])
	}
	// A key of two columns.
	pair := func(op protocol.Op, a, b, v string, body protocol.Value) protocol.ChangeEvent {
		e := cdctest.Change(op, "s", "pairs", nil, protocol.Row{"a": protocol.Text(a), "b": protocol.Text(b), "v": protocol.Text(v), "body": body})
		e.Key = []string{"a", "b"}
		return e
	}
	if err := a.Apply(context.Background(), events(8001, pair(protocol.OpInsert, "1", "x'", "old", protocol.Text("b1")), pair(protocol.OpInsert, "1", "y", "old", protocol.Text("b2")))); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(context.Background(), events(8003, pair(protocol.OpUpdate, "1", "x'", "new", protocol.UnchangedValue), pair(protocol.OpUpdate, "1", "y", "new", protocol.UnchangedValue))); err != nil {
		t.Fatal(err)
	}
	if got, want := current(t, cl, db, "pairs", []string{"a", "b", "v", "body"}), []string{"1|x'|new|b1", "1|y|new|b2"}; !slices.Equal(got, want) {
		t.Errorf("pairs_current holds %q, want %q", got, want)
	}
}

// A truncate applied while the server merges the table's parts: the rows
// the table held stay deleted once the merge ends. (ClickHouse 18.x's
// REPLACE PARTITION, which would swap the rows out in one step, lets a
// running merge bring the replaced rows back.)
func TestApplierTruncateDuringMerge(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	a := testApplier(t, url, db, "trunc")
	ins := func(id string) protocol.ChangeEvent {
		return cdctest.Change(protocol.OpInsert, "s", "big", nil, protocol.Row{"id": protocol.Text(id), "v": protocol.Text("v" + id)})
	}
	if err := a.Apply(ctx, events(1, ins("a"))); err != nil {
		t.Fatal(err)
	}
	// Parts large enough that merging them takes a while (merges stopped
	// until they are all in), older than any change (version 1).
	if err := cl.Exec(ctx, "SYSTEM STOP MERGES "+db+".big"); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		q := fmt.Sprintf("INSERT INTO %s.big (id, v, _sluice_version, _sluice_index, _sluice_deleted) SELECT toString(number + %d), concat(toString(rand64()), toString(rand64()), toString(rand64()), toString(rand64())), 1, 0, 0 FROM system.numbers LIMIT 200000", db, i*1000000)
		if err := cl.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Exec(ctx, "SYSTEM START MERGES "+db+".big"); err != nil {
		t.Fatal(err)
	}
	// The merge starts once the batch is recorded, right before it is
	// moved into the table.
	merged := make(chan error, 1)
	a.afterCommit = func() error {
		go func() { merged <- cl.Exec(ctx, "OPTIMIZE TABLE "+db+".big FINAL") }()
		waitForMerge(t, cl, db, "big")
		return nil
	}
	if err := a.Apply(ctx, events(2, cdctest.Change(protocol.OpTruncate, "s", "big", nil, nil), ins("after"))); err != nil {
		t.Fatal(err)
	}
	if err := <-merged; err != nil {
		t.Fatal(err)
	}
	if got := current(t, cl, db, "big", []string{"id", "v"}); !slices.Equal(got, []string{"after|vafter"}) {
		t.Errorf("after the truncate and the merge big_current holds %d rows (%.3q), want the row written after the truncate", len(got), got[:min(len(got), 3)])
	}
}

func TestParseApplierConfig(t *testing.T) {
	reg := connectors.NewRegistry()
	Register(reg)
	if !reg.Has(Kind, connectors.RoleCDCTarget) {
		t.Error("clickhouse is not registered as a cdc target")
	}
	c, err := ParseApplierConfig([]byte(`{"url": "http://u:secret@h:8123", "database": "replica", "settings": {"max_threads": "2"}}`))
	if err != nil || c.URL != "http://u:secret@h:8123" || c.Database != "replica" || c.Settings["max_threads"] != "2" {
		t.Fatalf("%+v %v", c, err)
	}
	for in, field := range map[string]string{
		`{}`:                                     "url",
		`{"url": "ftp://h"}`:                     "url",
		`{"url": "http://h", "database": "a.b"}`: "database",
		`{"url": "http://h", "table": "x"}`:      "table",
		`{"url": "http://h", "settings": {"a b": "1"}}`: "settings.a b",
	} {
		_, err := ParseApplierConfig([]byte(in))
		var fe *connectors.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v, want an error on %s", in, err, field)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", in, err)
		}
	}
}

// fold keeps each key's last state and version, resolves unchanged values
// within the batch, and refuses what it cannot apply.
func TestFold(t *testing.T) {
	T, U := protocol.Text, protocol.UnchangedValue
	ch := func(op protocol.Op, before, after protocol.Row) protocol.ChangeEvent {
		return cdctest.Change(op, "s", "t", before, after)
	}
	evs := events(1,
		ch(protocol.OpInsert, nil, protocol.Row{"id": T("1"), "v": T("a"), "w": T("w1")}),
		ch(protocol.OpUpdate, nil, protocol.Row{"id": T("1"), "v": T("b"), "w": U}),
		ch(protocol.OpUpdate, protocol.Row{"id": T("1")}, protocol.Row{"id": T("2"), "v": T("c"), "w": U}),
		ch(protocol.OpUpdate, nil, protocol.Row{"id": T("7"), "v": T("d"), "w": U}),
		ch(protocol.OpUpdate, protocol.Row{"id": T("8"), "w": T("full")}, protocol.Row{"id": T("8"), "v": T("e"), "w": U}))
	evs[2].Index = 3
	tables, err := fold(evs, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range tables[0].touched {
		got[s.vals[0]] = fmt.Sprintf("gone=%v lsn=%X index=%d v=%v w=%v from=%v", s.gone, s.lsn, s.index, s.row["v"], s.row["w"], s.from)
	}
	want := map[string]string{
		"1": "gone=true lsn=100000300 index=3 v={ false false} w={ false false} from=[]",
		"2": "gone=false lsn=100000300 index=3 v={c false false} w={w1 false false} from=[1]",
		"7": "gone=false lsn=100000400 index=0 v={d false false} w={ false true} from=[7]",
		"8": "gone=false lsn=100000500 index=0 v={e false false} w={full false false} from=[8]",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("key %s: %s\n want %s", k, got[k], w)
		}
	}
	if c := tables[0].cols; !slices.Equal(c, []string{"id", "v", "w"}) {
		t.Errorf("columns %v", c)
	}
	for name, bad := range map[string][]connectors.Event{
		"unchanged after truncate": events(1, cdctest.Change(protocol.OpTruncate, "s", "t", nil, nil), ch(protocol.OpUpdate, nil, protocol.Row{"id": T("1"), "w": U})),
		"no key":                   events(1, protocol.ChangeEvent{Op: protocol.OpInsert, Schema: "s", Table: "t", After: protocol.Row{"id": T("1")}, CommitLSN: "0/1"}),
		"bad lsn":                  {{Seq: 1, ChangeEvent: ch(protocol.OpInsert, nil, protocol.Row{"id": T("1")})}},
	} {
		if _, err := fold(bad, nil); err == nil {
			t.Errorf("%s: fold accepted it", name)
		}
	}
}

// The columns of a target are typed from a schema when the events carry
// one, the key never Nullable; without one they hold the source's text.
func TestCDCColumns(t *testing.T) {
	sc := &protocol.Schema{Key: []string{"id"}, Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
		{Name: "at", Type: protocol.TypeTimestampTZ},
		{Name: "tags", Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeString}},
	}}
	types := func(cols []column) []string {
		var out []string
		for _, c := range cols {
			out = append(out, c.name+" "+c.chType)
		}
		return out
	}
	cols, err := cdcColumns(sc, capsOf(ServerVersion{18, 16, 1}), []string{"id", "amount", "at", "tags"}, sc.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := types(cols), []string{"id Int64", "amount Nullable(Decimal(12, 2))", "at Nullable(Int64)", "tags Array(Nullable(String))"}; !slices.Equal(got, want) {
		t.Errorf("typed on 18.16: %q, want %q", got, want)
	}
	cols, err = cdcColumns(nil, caps{}, []string{"id", "v"}, []string{"id"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := types(cols), []string{"id String", "v Nullable(String)"}; !slices.Equal(got, want) {
		t.Errorf("text: %q, want %q", got, want)
	}
	sc.Columns[0].NotNull = false
	if _, err := cdcColumns(sc, capsOf(ServerVersion{18, 16, 1}), []string{"id"}, sc.Key); err == nil {
		t.Error("a key column that may be NULL was accepted")
	}
}

// An incremental snapshot (pgcdc's: its marker once, its chunks read at
// later positions between the table's changes, then snapshot_done) leaves
// the table equal to the source: rows the target held that no chunk reads
// go, a change of a row before its chunk is replaced by the chunk's row,
// and the snapshot_done event changes nothing.
func TestApplierIncrementalSnapshot(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	a := testApplier(t, url, db, "isnap")
	T := protocol.Text
	seq := uint64(1)
	must := func(evs ...protocol.ChangeEvent) {
		t.Helper()
		b := events(seq, evs...)
		seq += uint64(len(evs))
		if err := a.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	row := func(id, v string) protocol.Row { return protocol.Row{"id": T(id), "v": T(v)} }
	ch := func(op protocol.Op, after protocol.Row) protocol.ChangeEvent {
		return cdctest.Change(op, "s", "items", nil, after)
	}
	// The target holds 2 and 4, which the source no longer has (a diverged
	// replica: the reason for taking the table again).
	must(ch(protocol.OpInsert, row("1", "one")), ch(protocol.OpInsert, row("2", "two")),
		ch(protocol.OpInsert, row("3", "three")), ch(protocol.OpInsert, row("4", "four")))
	must(ch(protocol.OpSnapshot, nil), ch(protocol.OpInsert, row("5", "streamed")),
		ch(protocol.OpUpdate, row("3", "changed before its chunk")))
	must(ch(protocol.OpRead, row("1", "one read")), ch(protocol.OpRead, row("3", "three read")))
	must(ch(protocol.OpRead, row("5", "streamed")), ch(protocol.OpSnapshotDone, nil), ch(protocol.OpInsert, row("6", "after")))
	want := []string{"1|one read", "3|three read", "5|streamed", "6|after"}
	if got := current(t, cl, db, "items", []string{"id", "v"}); !slices.Equal(got, want) {
		t.Fatalf("items_current holds %q, want %q", got, want)
	}
}

// An update leaving a TOAST value unchanged of a row the target lacks,
// while a snapshot of its table is under way (the snapshot event deleted
// the row, or the table was added and no chunk read it yet; pgcdc sends
// the snapshot event before any change of the table), is left to the
// snapshot's chunk, which brings the row; after snapshot_done it stops
// the applier, the target missing a row of the source.
func TestApplierSnapshotLeavesTOASTToChunk(t *testing.T) {
	url, db := chtest.DB(t)
	cl := testClient(t, url)
	ctx := context.Background()
	a := testApplier(t, url, db, "isnaptoast")
	T, U := protocol.Text, protocol.UnchangedValue
	seq := uint64(1)
	apply := func(evs ...protocol.ChangeEvent) error {
		t.Helper()
		b := events(seq, evs...)
		seq += uint64(len(evs))
		return a.Apply(ctx, b)
	}
	must := func(evs ...protocol.ChangeEvent) {
		t.Helper()
		if err := apply(evs...); err != nil {
			t.Fatal(err)
		}
	}
	row := func(id, v string, big protocol.Value) protocol.Row {
		return protocol.Row{"id": T(id), "v": T(v), "big": big}
	}
	ch := func(op protocol.Op, after protocol.Row) protocol.ChangeEvent {
		return cdctest.Change(op, "s", "docs", nil, after)
	}
	must(ch(protocol.OpInsert, row("1", "one", T("B1"))), ch(protocol.OpInsert, row("2", "two", T("B2"))))
	must(ch(protocol.OpSnapshot, nil), ch(protocol.OpUpdate, row("2", "two+", U)))
	must(ch(protocol.OpUpdate, row("1", "one+", U)), ch(protocol.OpUpdate, row("7", "seven+", U)))
	must(ch(protocol.OpRead, row("1", "one+", T("B1"))), ch(protocol.OpRead, row("2", "two+", T("B2"))),
		ch(protocol.OpUpdate, row("2", "two++", U)))
	must(ch(protocol.OpRead, row("7", "seven+", T("B7"))), ch(protocol.OpSnapshotDone, nil))
	want := []string{"1|one+|B1", "2|two++|B2", "7|seven+|B7"}
	if got := current(t, cl, db, "docs", []string{"id", "v", "big"}); !slices.Equal(got, want) {
		t.Fatalf("docs_current holds %q, want %q", got, want)
	}
	if err := apply(ch(protocol.OpUpdate, row("9", "nine+", U))); err == nil || !strings.Contains(err.Error(), "unchanged (TOAST)") {
		t.Errorf("an update leaving a value unchanged of a row the target lacks after snapshot_done: %v, want an error", err)
	}
}
