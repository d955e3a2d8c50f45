package contract

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

const shop = `strict: true
key: ${TEST_CONTRACT_KEY}
tables:
  public.customers:
    columns:
      id: keep
      email: {pii: email, action: hash}
      name: {pii: name, action: drop}
      phone: {pii: phone, action: mask}
      country: keep
    filter:
      - {column: country, not_equals: US}
  public.orders:
    columns:
      id: {action: hash}
      amount: keep
`

func text(s string) protocol.Cell { return protocol.Cell{Kind: protocol.CellText, Text: []byte(s)} }

func cellsText(cols []string, cells []protocol.Cell) string {
	var parts []string
	for i, c := range cells {
		switch c.Kind {
		case protocol.CellAbsent:
			continue
		case protocol.CellNull:
			parts = append(parts, cols[i]+"=NULL")
		case protocol.CellUnchanged:
			parts = append(parts, cols[i]+"=TOAST")
		default:
			parts = append(parts, cols[i]+"="+string(c.Text))
		}
	}
	return strings.Join(parts, " ")
}

func TestStreamTableChanges(t *testing.T) {
	c := compileYAML(t, shop)
	cols := []string{"id", "email", "name", "phone", "country"}
	st, err := c.StreamTable("public.customers", cols, []string{"id"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.Columns(), ","); got != "id,email,phone,country" {
		t.Fatalf("columns %s", got)
	}
	h := HashValue(testKey, "a@x.io")
	row := []protocol.Cell{text("1"), text("a@x.io"), text("Ann"), text("555-0100-1234"), text("DE")}
	tests := []struct {
		name          string
		op            protocol.Op
		before, after []protocol.Cell
		wantOp        protocol.Op
		want          string // before | after
		drop          bool
	}{
		{"insert", protocol.OpInsert, nil, row, protocol.OpInsert, " | id=1 email=" + h + " phone=***-****-1234 country=DE", false},
		{"read of a US row left out", protocol.OpRead, nil, []protocol.Cell{text("2"), text("b@x.io"), text("Bo"), {Kind: protocol.CellNull}, text("US")}, "", "", true},
		{"update with TOAST and the old key", protocol.OpUpdate, []protocol.Cell{text("1"), {}, {}, {}, {}},
			[]protocol.Cell{text("1"), {Kind: protocol.CellUnchanged}, text("Ann B"), {Kind: protocol.CellNull}, text("FR")},
			protocol.OpUpdate, "id=1 | id=1 email=TOAST phone=NULL country=FR", false},
		{"update leaving the filter is a delete of the key", protocol.OpUpdate, nil, []protocol.Cell{text("1"), text("a@x.io"), text("Ann"), text("1"), text("US")},
			protocol.OpDelete, "id=1 | ", false},
		{"update of a FULL row leaving the filter", protocol.OpUpdate, row, []protocol.Cell{text("7"), text("a@x.io"), text("Ann"), text("1"), text("US")},
			protocol.OpDelete, "id=1 | ", false},
		{"delete by key", protocol.OpDelete, []protocol.Cell{text("1"), {}, {}, {}, {}}, nil, protocol.OpDelete, "id=1 | ", false},
		{"delete of a FULL row that was never copied", protocol.OpDelete, []protocol.Cell{text("3"), text("c@x.io"), text("C"), text("1"), text("US")}, nil, "", "", true},
		{"truncate", protocol.OpTruncate, nil, nil, protocol.OpTruncate, " | ", false},
	}
	for _, tc := range tests {
		op, b, a, keep, err := st.Change(tc.op, tc.before, tc.after)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if keep == tc.drop {
			t.Fatalf("%s: keep = %v", tc.name, keep)
		}
		if !keep {
			continue
		}
		got := cellsText(st.Columns(), b) + " | " + cellsText(st.Columns(), a)
		if op != tc.wantOp || got != tc.want {
			t.Errorf("%s: %s %q, want %s %q", tc.name, op, got, tc.wantOp, tc.want)
		}
	}
}

func TestStreamTableStrictAndKeys(t *testing.T) {
	c := compileYAML(t, shop)
	// A column added mid-stream.
	_, err := c.StreamTable("public.customers", []string{"id", "email", "name", "phone", "country", "ssn"}, []string{"id"})
	if !IsUnclassified(err) || !strings.Contains(err.Error(), `"ssn"`) || !strings.Contains(err.Error(), "public.customers") {
		t.Fatalf("err = %v", err)
	}
	// A table the contract does not name: every column unclassified.
	if _, err := c.StreamTable("public.other", []string{"id"}, []string{"id"}); !IsUnclassified(err) {
		t.Fatalf("err = %v", err)
	}
	// A hashed key is a key still.
	st, err := c.StreamTable("public.orders", []string{"id", "amount"}, []string{"id"})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := st.Relation(&protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64, NotNull: true, Native: "bigint"}, {Name: "amount", Type: protocol.TypeDecimal, Native: "numeric(12,2)", Precision: 12, Scale: 2}}, Key: []string{"id"}})
	if err != nil || rel.Columns[0].Type != protocol.TypeString || !rel.Columns[0].NotNull || rel.Columns[1].Native != "numeric(12,2)" || len(rel.Key) != 1 {
		t.Fatalf("relation %+v, %v", rel, err)
	}
	masked := compileYAML(t, "tables:\n  public.t:\n    columns:\n      id: mask\n")
	if _, err := masked.StreamTable("public.t", []string{"id", "x"}, []string{"id"}); err == nil || !strings.Contains(err.Error(), "key column") {
		t.Fatalf("a masked key column: err = %v", err)
	}
	// Not strict: a table the contract does not name passes as it is.
	lax := compileYAML(t, "tables:\n  public.t:\n    columns:\n      x: drop\n")
	st, err = lax.StreamTable("public.u", []string{"id", "x"}, []string{"id"})
	if err != nil || !st.Same() {
		t.Fatalf("lax: %v", err)
	}
}

func TestEventsApply(t *testing.T) {
	c := compileYAML(t, shop)
	e := c.Events()
	h := HashValue(testKey, "a@x.io")
	evs := []connectors.Event{
		{Seq: 1, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpRead, Schema: "public", Table: "customers", Key: []string{"id"},
			After:    protocol.Row{"id": protocol.Text("1"), "email": protocol.Text("a@x.io"), "name": protocol.Text("Ann"), "phone": protocol.NullValue, "country": protocol.Text("DE")},
			Relation: &protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64}, {Name: "email", Type: protocol.TypeString}, {Name: "name", Type: protocol.TypeString}, {Name: "phone", Type: protocol.TypeString}, {Name: "country", Type: protocol.TypeString}}, Key: []string{"id"}}}},
		{Seq: 2, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpInsert, Schema: "public", Table: "customers", Key: []string{"id"},
			After: protocol.Row{"id": protocol.Text("2"), "email": protocol.Text("b@x.io"), "name": protocol.Text("Bo"), "phone": protocol.NullValue, "country": protocol.Text("US")}}},
		{Seq: 2, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpUpdate, Schema: "public", Table: "customers", Key: []string{"id"},
			After: protocol.Row{"id": protocol.Text("1"), "email": protocol.UnchangedValue, "name": protocol.Text("Ann"), "phone": protocol.NullValue, "country": protocol.Text("US")}}},
		{Seq: 3, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpSnapshot, Schema: "public", Table: "customers"}},
	}
	out, err := e.Apply(evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[0].Seq != 1 || out[1].Op != protocol.OpDelete || out[2].Op != protocol.OpSnapshot {
		t.Fatalf("events %+v", out)
	}
	a := out[0].After
	if _, ok := a["name"]; ok || a["email"].Text != h || a["country"].Text != "DE" || !a["phone"].Null {
		t.Fatalf("read after = %v", a)
	}
	if len(out[0].Relation.Columns) != 4 {
		t.Fatalf("relation %+v", out[0].Relation)
	}
	if b := out[1].Before; len(b) != 1 || b["id"].Text != "1" || out[1].After != nil {
		t.Fatalf("delete %v / %v", b, out[1].After)
	}
	// Strict: an event with a column the contract does not classify.
	_, err = c.Events().Apply([]connectors.Event{{Seq: 9, ChangeEvent: protocol.ChangeEvent{Op: protocol.OpInsert, Schema: "public", Table: "orders", LSN: "0/1",
		After: protocol.Row{"id": protocol.Text("1"), "amount": protocol.Text("2"), "coupon": protocol.Text("SECRET-CODE")}}}})
	if !IsUnclassified(err) || !strings.Contains(err.Error(), "sequence 9") || strings.Contains(err.Error(), "SECRET-CODE") {
		t.Fatalf("err = %v", err)
	}
}

func TestSchema(t *testing.T) {
	s, ps := Parse([]byte(people))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	in := &protocol.Schema{Columns: []protocol.Column{
		{Name: "id", Type: protocol.TypeInt64, NotNull: true},
		{Name: "email", Type: protocol.TypeString, NotNull: true, Default: "'x@y.z'::text"},
		{Name: "name", Type: protocol.TypeString},
		{Name: "born", Type: protocol.TypeDate, Default: "'2000-01-01'::date"},
		{Name: "notes", Type: protocol.TypeString, NotNull: true},
		{Name: "card", Type: protocol.TypeInt64},
		{Name: "country", Type: protocol.TypeString},
	}, Key: []string{"id"}, System: "postgres"}
	out, err := s.Schema(in)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range out.Columns {
		got = append(got, c.Name+":"+c.String()+map[bool]string{true: "!", false: ""}[c.NotNull]+c.Default)
	}
	if strings.Join(got, " ") != "id:int64! email:string! born:date notes:string card:string country:string" || len(out.Key) != 1 || out.System != "postgres" {
		t.Fatalf("schema %v key %v", got, out.Key)
	}
	in.Columns = append(in.Columns, protocol.Column{Name: "ssn", Type: protocol.TypeString})
	if _, err := s.Schema(in); !IsUnclassified(err) {
		t.Fatalf("err = %v", err)
	}
	// A masked key is no key of the copy.
	m, _ := Parse([]byte("columns:\n  id: mask\n"))
	out, err = m.Schema(&protocol.Schema{Columns: []protocol.Column{{Name: "id", Type: protocol.TypeInt64}}, Key: []string{"id"}})
	if err != nil || out.Key != nil {
		t.Fatalf("key %v, %v", out.Key, err)
	}
}
