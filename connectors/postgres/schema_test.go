package postgres

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Plan describes the columns it reads from the catalog: every logical type
// with its precision and scale, NOT NULL, the native name, arrays with
// their element type (domains resolved), types without a lossless logical
// type as string, and the primary key in key order.
func TestPlanSchema(t *testing.T) {
	dsn, schema, conn := testDB(t)
	exec(t, conn, "CREATE TYPE "+schema+".mood AS ENUM ('sad', 'ok')")
	exec(t, conn, "CREATE DOMAIN "+schema+".price AS numeric(6,2) CHECK (VALUE >= 0)")
	exec(t, conn, "CREATE DOMAIN "+schema+".prices AS "+schema+".price[]")
	exec(t, conn, "CREATE DOMAIN "+schema+".short AS "+schema+".price")
	table := schema + ".awkward"
	exec(t, conn, `CREATE TABLE `+table+` (
		region int NOT NULL,
		s smallint, i integer, b bigint NOT NULL,
		r real, d double precision,
		n numeric(12,2) NOT NULL, bare numeric, nneg numeric(5,-2), nbig numeric(3,5), n38 numeric(38,0),
		t text, v varchar(10), c char(3), nm name,
		blob bytea, ok boolean,
		day date, tod time, todz time with time zone, tod0 time(0),
		ts timestamp, ts0 timestamp(0), tstz timestamptz, tstz3 timestamptz(3),
		js json, jsb jsonb, id uuid,
		ints int[], tags text[] NOT NULL, amounts numeric(8,3)[], stamps timestamptz[],
		m `+schema+`.mood, ip inet, iv interval, money money, bits bit(3), rng int4range,
		p `+schema+`.price, ps `+schema+`.prices, sh `+schema+`.short NOT NULL,
		"Odd ""name""" text,
		PRIMARY KEY (b, region))`)
	exec(t, conn, "INSERT INTO "+table+" (region, b, n, tags, sh) VALUES (1, 1, 1, '{}', 1)")

	s, err := NewSource(SourceConfig{DSN: dsn, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plan, err := s.Plan(context.Background(), connectors.PlanRequest{RunID: "schema"})
	if err != nil {
		t.Fatal(err)
	}
	s.ReleaseRun("schema")
	got := plan.Schema
	if got == nil {
		t.Fatal("Plan gave no schema")
	}
	dec := func(p, sc int) protocol.Column {
		return protocol.Column{Type: protocol.TypeDecimal, Precision: p, Scale: sc}
	}
	typ := func(ty protocol.ColumnType) protocol.Column { return protocol.Column{Type: ty} }
	list := func(e protocol.Column) protocol.Column {
		e.Name = "element"
		return protocol.Column{Type: protocol.TypeList, Elem: &e}
	}
	notNull := func(c protocol.Column) protocol.Column { c.NotNull = true; return c }
	want := []struct {
		name   string
		col    protocol.Column
		native string
	}{
		{"region", notNull(typ(protocol.TypeInt32)), "integer"},
		{"s", typ(protocol.TypeInt16), "smallint"},
		{"i", typ(protocol.TypeInt32), "integer"},
		{"b", notNull(typ(protocol.TypeInt64)), "bigint"},
		{"r", typ(protocol.TypeFloat32), "real"},
		{"d", typ(protocol.TypeFloat64), "double precision"},
		{"n", notNull(dec(12, 2)), "numeric(12,2)"},
		{"bare", dec(0, 0), "numeric"},
		{"nneg", typ(protocol.TypeString), "numeric(5,-2)"},
		{"nbig", typ(protocol.TypeString), "numeric(3,5)"},
		{"n38", dec(38, 0), "numeric(38,0)"},
		{"t", typ(protocol.TypeString), "text"},
		{"v", typ(protocol.TypeString), "character varying(10)"},
		{"c", typ(protocol.TypeString), "character(3)"},
		{"nm", typ(protocol.TypeString), "name"},
		{"blob", typ(protocol.TypeBytes), "bytea"},
		{"ok", typ(protocol.TypeBool), "boolean"},
		{"day", typ(protocol.TypeDate), "date"},
		{"tod", typ(protocol.TypeTime), "time without time zone"},
		{"todz", typ(protocol.TypeString), "time with time zone"},
		{"tod0", typ(protocol.TypeTime), "time(0) without time zone"},
		{"ts", typ(protocol.TypeTimestamp), "timestamp without time zone"},
		{"ts0", typ(protocol.TypeTimestamp), "timestamp(0) without time zone"},
		{"tstz", typ(protocol.TypeTimestampTZ), "timestamp with time zone"},
		{"tstz3", typ(protocol.TypeTimestampTZ), "timestamp(3) with time zone"},
		{"js", typ(protocol.TypeJSON), "json"},
		{"jsb", typ(protocol.TypeJSON), "jsonb"},
		{"id", typ(protocol.TypeUUID), "uuid"},
		{"ints", list(typ(protocol.TypeInt32)), "integer[]"},
		{"tags", notNull(list(typ(protocol.TypeString))), "text[]"},
		{"amounts", list(dec(8, 3)), "numeric(8,3)[]"},
		{"stamps", list(typ(protocol.TypeTimestampTZ)), "timestamp with time zone[]"},
		{"m", typ(protocol.TypeString), schema + ".mood"},
		{"ip", typ(protocol.TypeString), "inet"},
		{"iv", typ(protocol.TypeString), "interval"},
		{"money", typ(protocol.TypeString), "money"},
		{"bits", typ(protocol.TypeString), "bit(3)"},
		{"rng", typ(protocol.TypeString), "int4range"},
		{"p", dec(6, 2), schema + ".price"},
		{"ps", list(dec(6, 2)), schema + ".prices"},
		{"sh", notNull(dec(6, 2)), schema + ".short"},
		{`Odd "name"`, typ(protocol.TypeString), "text"},
	}
	if len(got.Columns) != len(want) {
		t.Fatalf("schema has %d columns, want %d: %v", len(got.Columns), len(want), got.Names())
	}
	for i, w := range want {
		w.col.Name, w.col.Native, w.col.ID = w.name, w.native, i+1
		g := got.Columns[i]
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w.col)
		if string(gj) != string(wj) {
			t.Errorf("column %d:\n got %s\nwant %s", i+1, gj, wj)
		}
	}
	if len(got.Key) != 2 || got.Key[0] != "b" || got.Key[1] != "region" {
		t.Errorf("key %v, want [b region]", got.Key)
	}
	if got.System != Kind {
		t.Errorf("system %q, want %q", got.System, Kind)
	}

	// Configured columns: the schema follows their order; the key is
	// dropped when a key column is not read.
	s2, err := NewSource(SourceConfig{DSN: dsn, Table: table, Columns: []string{"tags", "b", "ok"}, Snapshot: SnapshotNone})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	plan, err = s2.Plan(context.Background(), connectors.PlanRequest{RunID: "cols"})
	if err != nil {
		t.Fatal(err)
	}
	if names := plan.Schema.Names(); len(names) != 3 || names[0] != "tags" || names[1] != "b" || names[2] != "ok" {
		t.Errorf("columns %v, want [tags b ok]", names)
	}
	if len(plan.Schema.Key) != 0 {
		t.Errorf("key %v with region not read, want none", plan.Schema.Key)
	}
}
