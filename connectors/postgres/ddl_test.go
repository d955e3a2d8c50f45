package postgres

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/protocol"
)

// A table created from the catalog's description of another is the same
// table by \d: every type with its modifier, NOT NULL, constant defaults,
// the generated column and the primary key. Defaults that refer to a
// sequence or to a function of the source's are left out; a type the
// target does not know becomes its logical type's, without its default.
func TestCreateTableFromDescription(t *testing.T) {
	_, src, conn := testDB(t)
	_, dst, _ := testDB(t)
	ctx := context.Background()
	exec(t, conn, fmt.Sprintf(pgtest.AwkwardDDL, src))
	exec(t, conn, fmt.Sprintf(`CREATE FUNCTION %[1]s.note() RETURNS text LANGUAGE sql AS 'SELECT ''n''';
		ALTER TABLE %[1]s.awkward ADD COLUMN seq serial, ADD COLUMN note text DEFAULT %[1]s.note()`, src))
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", src+".awkward").Scan(&oid); err != nil {
		t.Fatal(err)
	}
	desc, err := DescribeTable(ctx, conn, oid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(desc.Key, []string{"region", "id"}) {
		t.Errorf("key %v, want [region id]", desc.Key)
	}
	byName := map[string]protocol.Column{}
	for _, c := range desc.Columns {
		byName[c.Name] = c
	}
	if c := byName["twice"]; c.Generated != "(id * 2)" || c.Default != "" {
		t.Errorf("generated column described as %+v", c)
	}
	if c := byName["vc"]; c.Default != "'x'::character varying" || !c.NotNull || c.ID != 12 {
		t.Errorf("vc described as %+v, want its default, NOT NULL and ID 12", c)
	}
	for _, name := range []string{"seq", "note"} {
		if c := byName[name]; c.Default != "" {
			t.Errorf("column %s: default %q kept, want none (it refers to an object of the source's)", name, c.Default)
		}
	}

	if err := CreateTable(ctx, conn, pgx.Identifier{dst, "awkward"}, desc, DDLOptions{PrimaryKey: true, Generated: true}); err != nil {
		t.Fatal(err)
	}
	want := pgtest.Describe(t, conn, src+".awkward")
	for i, l := range want {
		if strings.HasPrefix(l, "seq ") || strings.HasPrefix(l, "note ") {
			want[i], _, _ = strings.Cut(l, " default ")
		}
	}
	if got := pgtest.Describe(t, conn, dst+".awkward"); !reflect.DeepEqual(got, want) {
		t.Errorf("created table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A type the target lacks: the column is text, without its default.
	unknown := *desc
	unknown.Columns = slices.Clone(desc.Columns)
	for i, c := range unknown.Columns {
		if c.Name == "m" {
			unknown.Columns[i].Native = "nosuch_" + c.Native
		}
	}
	if err := CreateTable(ctx, conn, pgx.Identifier{dst, "other"}, &unknown, DDLOptions{}); err != nil {
		t.Fatal(err)
	}
	got := pgtest.Describe(t, conn, dst+".other")
	if !slices.Contains(got, "m text") || !slices.Contains(got, "twice bigint") || got[len(got)-1] != "no primary key" {
		t.Errorf("without a known type, generated columns and a key: %q", got)
	}
}

// A description of another system maps logical types to PostgreSQL's and
// ignores the source's expressions.
func TestCreateTableSQLLogical(t *testing.T) {
	s := &protocol.Schema{System: "files", Key: []string{"id"}, Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true, Native: "INT64"},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 12, Scale: 2},
		{Name: "bare", Type: protocol.TypeDecimal},
		{Name: "at", Type: protocol.TypeTimestampTZ, Default: "now()"},
		{Name: "tags", Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeString}},
		{Name: "nested", Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeList, Elem: &protocol.Column{Type: protocol.TypeInt32}}},
		{Name: "doc", Type: protocol.TypeJSON, Generated: "x"},
	}}
	got, err := CreateTableSQL(pgx.Identifier{"s", "t"}, s, DDLOptions{PrimaryKey: true, Generated: true, IfNotExists: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `CREATE TABLE IF NOT EXISTS "s"."t" ("id" bigint NOT NULL, "amount" numeric(12,2), "bare" numeric, "at" timestamptz, "tags" text[], "nested" jsonb, "doc" jsonb, PRIMARY KEY ("id"))`
	if got != want {
		t.Errorf("CreateTableSQL:\n got %s\nwant %s", got, want)
	}
	if _, err := CreateTableSQL(pgx.Identifier{"t"}, &protocol.Schema{}, DDLOptions{}); err == nil {
		t.Error("a description without columns: no error")
	}
}

// A full load into a table that does not exist, of a run with a schema,
// creates its version with the source's types, NOT NULL and defaults (no
// primary key: the view exposes a version table), on staging and on an
// empty run's commit alike.
func TestSinkTypedFromSchema(t *testing.T) {
	dsn, schema, conn := testDB(t)
	ctx := context.Background()
	exec(t, conn, fmt.Sprintf(pgtest.AwkwardDDL, schema))
	exec(t, conn, fmt.Sprintf(pgtest.AwkwardRows, schema))
	src := newSource(t, map[string]any{"dsn": dsn, "table": schema + ".awkward"})
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: "typed"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.ReleaseRun("typed")
	sink := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".copy"})
	var outs []connectors.TaskOutput
	for i, p := range plan.Partitions {
		tw, err := sink.OpenTask(ctx, connectors.TaskRef{RunID: "typed", TaskID: fmt.Sprint(i), Attempt: 1, Schema: plan.Schema})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Read(ctx, p, tw.Write); err != nil {
			t.Fatal(err)
		}
		out, err := tw.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "typed", Version: 1, Tasks: outs, Schema: plan.Schema}); err != nil {
		t.Fatal(err)
	}
	want := pgtest.Describe(t, conn, schema+".awkward")
	for i, l := range want {
		if strings.HasPrefix(l, "twice ") {
			want[i] = "twice bigint" // loaded as values
		}
	}
	want[len(want)-1] = "no primary key"
	if got := pgtest.Describe(t, conn, schema+".copy_v1"); !reflect.DeepEqual(got, want) {
		t.Errorf("version table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wn, wsum := pgtest.Checksum(t, conn, schema+".awkward", "region, id")
	gn, gsum := pgtest.Checksum(t, conn, schema+".copy", "region, id")
	if wn != gn || wsum != gsum {
		t.Errorf("copy holds %d rows (md5 %s), the source %d (md5 %s)", gn, gsum, wn, wsum)
	}

	// An empty run: the version is created from the schema alone.
	empty := newSink(t, map[string]any{"dsn": dsn, "table": schema + ".none"})
	if _, err := empty.Commit(ctx, connectors.CommitRequest{RunID: "e", Version: 1, Schema: plan.Schema}); err != nil {
		t.Fatal(err)
	}
	if got := pgtest.Describe(t, conn, schema+".none_v1"); !reflect.DeepEqual(got, want) {
		t.Errorf("empty version table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestTableDefFor: what a table definition says of a column a contract
// dropped or transformed is left out of the target's; the rest stays, and
// a definition of unknown columns stays only when nothing is transformed.
func TestTableDefFor(t *testing.T) {
	d := TableDef{
		Enums:       []EnumDef{{Schema: "public", Name: "mood", Labels: []string{"a"}}, {Schema: "public", Name: "tier", Labels: []string{"b"}}},
		Collations:  map[string]string{"name": `pg_catalog."C"`, "email": `pg_catalog."C"`},
		Constraints: []ConstraintDef{{Name: "pk", Def: "PRIMARY KEY (id)", Indexed: true, Columns: []string{"id"}}, {Name: "ck", Def: "CHECK ((salary > 0))", Columns: []string{"salary"}}, {Name: "old", Def: "CHECK (true)"}},
		Indexes:     []IndexDef{{Name: "by_email", Def: "USING btree (email)", Columns: []string{"email"}}, {Name: "by_name", Def: "USING btree (lower(name))", Columns: []string{"name"}}, {Name: "by_mood", Def: "USING btree (mood)", Columns: []string{"mood"}}},
		Identity:    []IdentityDef{{Column: "id", Start: 7}, {Column: "salary", Start: 1}},
	}
	s := &protocol.Schema{System: Kind, Columns: []protocol.Column{
		{Name: "id", Native: "bigint"}, {Name: "email", Native: "text", Transformed: "hash"},
		{Name: "mood", Native: "public.mood"}, {Name: "tier", Native: "text", Transformed: "mask"},
		{Name: "salary", Native: "numeric", Transformed: "truncate"},
	}} // name dropped
	got := d.For(s)
	want := TableDef{
		Enums:       []EnumDef{{Schema: "public", Name: "mood", Labels: []string{"a"}}},
		Constraints: []ConstraintDef{{Name: "pk", Def: "PRIMARY KEY (id)", Indexed: true, Columns: []string{"id"}}},
		Indexes:     []IndexDef{{Name: "by_mood", Def: "USING btree (mood)", Columns: []string{"mood"}}},
		Identity:    []IdentityDef{{Column: "id", Start: 7}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// Nothing transformed (a passthrough): everything stays.
	all := &protocol.Schema{System: Kind, Columns: []protocol.Column{{Name: "id"}, {Name: "email"}, {Name: "name"}, {Name: "mood", Native: "public.mood"}, {Name: "tier", Native: "public.tier"}, {Name: "salary"}}}
	if got := d.For(all); !reflect.DeepEqual(got, d) {
		t.Fatalf("passthrough: got %+v\nwant %+v", got, d)
	}
}

// A passthrough's commit raises maintenance_work_mem for its index builds
// only when it has an index to build, only in its transaction, and never
// lowers a higher setting.
func TestIndexBuildMemory(t *testing.T) {
	for _, c := range []struct {
		d    TableDef
		want bool
	}{
		{TableDef{}, false},
		{TableDef{Constraints: []ConstraintDef{{Name: "ck", Def: "CHECK ((n > 0))"}}}, false},
		{TableDef{Constraints: []ConstraintDef{{Name: "ck", Def: "CHECK ((n > 0))"}, {Name: "pk", Def: "PRIMARY KEY (id)", Indexed: true}}}, true},
		{TableDef{Indexes: []IndexDef{{Name: "by_n", Def: "USING btree (n)"}}}, true},
	} {
		if got := c.d.indexed(); got != c.want {
			t.Errorf("%+v: indexed %v, want %v", c.d, got, c.want)
		}
	}
	_, _, conn := pgtest.DB(t)
	ctx := context.Background()
	for _, c := range []struct{ session, want string }{{"64MB", "256MB"}, {"1GB", "1GB"}} {
		if _, err := conn.Exec(ctx, "SET maintenance_work_mem = '"+c.session+"'"); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if _, err := tx.Exec(ctx, indexBuildMemorySQL); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, "SHOW maintenance_work_mem").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("session %s: in the transaction %s, want %s", c.session, got, c.want)
		}
		if err := conn.QueryRow(ctx, "SHOW maintenance_work_mem").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.session {
			t.Errorf("session %s: after the transaction %s", c.session, got)
		}
	}
}
