package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSchemaValidate(t *testing.T) {
	good := &Schema{
		Columns: []Column{
			{Name: "id", Type: TypeInt64, NotNull: true, Native: "bigint"},
			{Name: "amount", Type: TypeDecimal, Precision: 38, Scale: 10, Native: "numeric(38,10)"},
			{Name: "tags", Type: TypeList, Elem: &Column{Type: TypeString}, Native: "text[]"},
		},
		Key: []string{"id"},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid schema: %v", err)
	}
	if got, want := good.Columns[2].String(), "list<string>"; got != want {
		t.Errorf("list type = %q, want %q", got, want)
	}
	if got, want := good.Columns[1].String(), "decimal(38,10)"; got != want {
		t.Errorf("decimal type = %q, want %q", got, want)
	}
	// The wire form round-trips.
	b, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	var back Schema
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Columns[2].Elem == nil || back.Columns[2].Elem.Type != TypeString || back.Key[0] != "id" {
		t.Errorf("round trip lost fields: %s", b)
	}
	for _, tc := range []struct {
		name string
		s    Schema
		want string
	}{
		{"unnamed", Schema{Columns: []Column{{Type: TypeInt32}}}, "column 1 has no name"},
		{"twice", Schema{Columns: []Column{{Name: "a", Type: TypeInt32}, {Name: "a", Type: TypeBool}}}, `"a" appears twice`},
		{"unknown type", Schema{Columns: []Column{{Name: "a", Type: "money"}}}, `unknown type "money"`},
		{"scale", Schema{Columns: []Column{{Name: "a", Type: TypeDecimal, Precision: 4, Scale: 5}}}, "decimal(4,5)"},
		{"list", Schema{Columns: []Column{{Name: "a", Type: TypeList}}}, "element type"},
		{"key", Schema{Columns: []Column{{Name: "a", Type: TypeInt32}}, Key: []string{"b"}}, `key column "b"`},
	} {
		err := tc.s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
