package postgres_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors/cdcapply/cdctest"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// TestPostgresSchemaChanges: a target created from the source's
// description follows it as it changes between events: an added column
// takes its backfill in the rows the target has (not its default, which
// changed since), a dropped one goes, a renamed one (the same ID) keeps
// its values, a retyped one is cast, NOT NULL and defaults follow (NOT
// NULL once the rows allow it); several shapes within one batch apply in
// order. A retype the values cannot take stops the table with
// an error naming it and the column, and nothing of its batch is applied;
// another table's events of the batch are.
func TestPostgresSchemaChanges(t *testing.T) {
	dsn, s, conn := pgtest.DB(t)
	ctx := context.Background()
	p := cdctest.PostgresApplier(t, postgres.ApplierConfig{DSN: dsn, Schema: s, Pipeline: "shapes", CreateTables: true})
	col := func(id int, name, native string, typ protocol.ColumnType) protocol.Column {
		return protocol.Column{ID: id, Name: name, Native: native, Type: typ}
	}
	id := col(1, "id", "integer", protocol.TypeInt32)
	id.NotNull = true
	a, b := col(2, "a", "text", protocol.TypeString), col(3, "b", "integer", protocol.TypeInt32)
	c := col(4, "c", "character varying(5)", protocol.TypeString)
	d := col(5, "d", "text", protocol.TypeString)
	d.Default, d.Backfill = "'dflt'::text", "'dflt'::text"
	rel := func(cols ...protocol.Column) *protocol.Schema {
		return &protocol.Schema{System: postgres.Kind, Key: []string{"id"}, Columns: cols}
	}
	I, Up := protocol.OpInsert, protocol.OpUpdate
	ev := func(op protocol.Op, r *protocol.Schema, kv ...string) protocol.ChangeEvent {
		row := protocol.Row{}
		for i := 0; i < len(kv); i += 2 {
			row[kv[i]] = T(kv[i+1])
		}
		e := cdctest.Change(op, "src", "t", nil, row)
		e.Relation = r
		return e
	}
	seq := uint64(1)
	apply := func(evs ...protocol.ChangeEvent) {
		t.Helper()
		if err := p.Apply(ctx, cdctest.Numbered(seq, evs...)); err != nil {
			t.Fatal(err)
		}
		seq += uint64(len(evs))
		if st := p.TableStatus(); len(st) > 0 {
			t.Fatalf("stopped tables %+v", st)
		}
	}
	apply(ev(I, rel(id, a, b, c), "id", "1", "a", "one", "b", "10", "c", "x"),
		ev(I, nil, "id", "2", "a", "two", "b", "20", "c", "y"),
		ev(I, nil, "id", "3", "a", "three", "b", "30", "c", "z"),
		ev(I, nil, "id", "9", "a", "nine", "b", "90", "c", "n"))
	// Added with a default the rows take (then changed: the rows keep the
	// backfill), then dropped, in one batch.
	d2 := d
	d2.NotNull, d2.Default = true, "'x2'::text"
	a2 := a
	a2.Name = "a2"
	c2 := col(4, "c", "text", protocol.TypeString)
	// Described after it was made NOT NULL, with rows still NULL.
	e := col(6, "e", "text", protocol.TypeString)
	e.NotNull = true
	apply(ev(Up, rel(id, a, b, c, d), "id", "1", "a", "one!", "b", "11", "c", "x", "d", "set"),
		ev(Up, rel(id, a, c, d), "id", "2", "a", "two!", "c", "y", "d", "dflt"))
	apply(ev(Up, rel(id, a2, c, d), "id", "3", "a2", "three!", "c", "z", "d", "dflt"))
	apply(ev(I, rel(id, a2, c2, d2, e), "id", "4", "a2", "four", "c", "longer than five", "d", "four", "e", "E"))
	want := []string{
		"id integer not null", "a2 text", "c text", "d text not null default 'x2'::text", "e text", "PRIMARY KEY (id)",
	}
	if got := pgtest.Describe(t, conn, s+".t"); !reflect.DeepEqual(got, want) {
		t.Errorf("target:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got, want := pgtest.Rows(t, conn, s+".t", []string{"id", "a2", "c", "d", "e"}), []string{
		`1|one!|x|set|\N`, `2|two!|y|dflt|\N`, `3|three!|z|dflt|\N`, "4|four|longer than five|four|E", `9|nine|n|dflt|\N`,
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("target holds %q, want %q", got, want)
	}
	// Once the rows are filled, the next description sets NOT NULL.
	apply(ev(Up, nil, "id", "1", "a2", "one!", "c", "x", "d", "set", "e", "E"),
		ev(Up, nil, "id", "2", "a2", "two!", "c", "y", "d", "dflt", "e", "E"),
		ev(Up, nil, "id", "3", "a2", "three!", "c", "z", "d", "dflt", "e", "E"),
		ev(Up, nil, "id", "9", "a2", "nine", "c", "n", "d", "dflt", "e", "E"))
	apply(ev(Up, rel(id, a2, c2, d2, e), "id", "4", "a2", "four", "c", "longer than five", "d", "four", "e", "E"))
	want[4] = "e text not null"
	if got := pgtest.Describe(t, conn, s+".t"); !reflect.DeepEqual(got, want) {
		t.Errorf("target:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A retype the values cannot take.
	a3 := col(2, "a2", "integer", protocol.TypeInt32)
	other := cdctest.Change(I, "src", "other", nil, protocol.Row{"id": T("1")})
	other.Relation = rel(id)
	if err := p.Apply(ctx, cdctest.Numbered(seq, ev(Up, rel(id, a3, c2, d2, e), "id", "4", "a2", "4", "c", "c", "d", "four", "e", "E"), other)); err != nil {
		t.Fatal(err)
	}
	st := p.TableStatus()
	if len(st) != 1 || st[0].Table != "src.t" || st[0].Seq != seq || !strings.Contains(st[0].Error, `column "a2"`) || !strings.Contains(st[0].Error, s+".t") {
		t.Fatalf("stopped tables %+v, want src.t at %d with an error naming %s.t and column a2", st, seq, s)
	}
	if got := pgtest.Describe(t, conn, s+".t"); !reflect.DeepEqual(got, want) {
		t.Errorf("target after a failed retype:\n%s\nwant it unchanged", strings.Join(got, "\n"))
	}
	if rows := pgtest.Rows(t, conn, s+".other", []string{"id"}); !reflect.DeepEqual(rows, []string{"1"}) {
		t.Errorf("other table holds %q, want its row applied beside the stopped table", rows)
	}
}

// TestMatchColumns: columns are matched by ID, else by name, else (an ID
// unknown) by place and type when the old name is gone.
func TestMatchColumns(t *testing.T) {
	c := func(id int, name string) protocol.Column {
		return protocol.Column{ID: id, Name: name, Type: protocol.TypeString, Native: "text"}
	}
	s := func(cols ...protocol.Column) *protocol.Schema { return &protocol.Schema{Columns: cols} }
	old := s(c(1, "id"), c(2, "a"), c(3, "b"))
	for _, tc := range []struct {
		name string
		rel  *protocol.Schema
		want []int
	}{
		{"same", s(c(1, "id"), c(2, "a"), c(3, "b")), []int{0, 1, 2}},
		{"renamed", s(c(1, "id"), c(2, "a2"), c(3, "b")), []int{0, 1, 2}},
		{"dropped and added", s(c(1, "id"), c(3, "b"), c(4, "a")), []int{0, 2, -1}},
		{"name reused", s(c(1, "id"), c(4, "a"), c(3, "b")), []int{0, -1, 2}},
		{"unknown ID by name", s(c(1, "id"), c(0, "b")), []int{0, 2}},
		{"unknown ID by place", s(c(1, "id"), c(0, "a9"), c(3, "b")), []int{0, 1, 2}},
		{"unknown ID, other type", s(c(1, "id"), protocol.Column{Name: "a9", Type: protocol.TypeInt32, Native: "integer"}, c(3, "b")), []int{0, -1, 2}},
	} {
		if got := postgres.MatchColumns(old, tc.rel); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := postgres.MatchColumns(nil, old); !reflect.DeepEqual(got, []int{-1, -1, -1}) {
		t.Errorf("without an old description: %v", got)
	}
}
