package conformance

import (
	"slices"
	"strings"
	"testing"
)

// The decoders read what the suite's harnesses write: PostgreSQL's CSV
// (NULL unquoted, "" quoted, fields over lines), JSON lines (keys in any
// order, missing keys, nested values), and Compare tells every kind of
// difference apart.
func TestRows(t *testing.T) {
	csv, err := CSVRows([]byte("\ufeffid,v\r\n1,\"a,\"\"b\"\"\nc\"\r\n2,\n3,\"\"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	want := Table{Columns: []string{"id", "v"}, Rows: [][]string{{"1", "a,\"b\"\nc"}, {"2", Null}, {"3", ""}}}
	if err := Compare(csv, want); err != nil || !slices.Equal(csv.Columns, want.Columns) {
		t.Errorf("CSVRows = %q: %v", csv, err)
	}
	js, err := JSONLRows([]byte("{\"id\":1,\"v\":\"x\",\"o\":{\"b\":1,\"a\":[2.50,null]}}\n\n{\"v\":null,\"id\":2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want = Table{Columns: []string{"o", "id", "v"}, Rows: [][]string{{`{"a":[2.50,null],"b":1}`, "1", "x"}, {Null, "2", Null}}}
	if err := Compare(js, want); err != nil {
		t.Errorf("JSONLRows = %q: %v", js, err)
	}

	base := Table{Columns: []string{"a", "b"}, Rows: [][]string{{"1", "x"}, {"2", "y"}}}
	for _, c := range []struct {
		name string
		got  Table
		want string // in the error; "" for equal
	}{
		{"same rows in another order, columns too", Table{Columns: []string{"b", "a"}, Rows: [][]string{{"y", "2"}, {"x", "1"}}}, ""},
		{"a row more", Table{Columns: []string{"a", "b"}, Rows: [][]string{{"1", "x"}, {"2", "y"}, {"2", "y"}}}, "3 rows, want 2"},
		{"a value changed", Table{Columns: []string{"a", "b"}, Rows: [][]string{{"1", "x"}, {"2", "z"}}}, `column "b"`},
		{"a null for an empty text", Table{Columns: []string{"a", "b"}, Rows: [][]string{{"1", "x"}, {"2", Null}}}, `column "b"`},
		{"values swapped between rows", Table{Columns: []string{"a", "b"}, Rows: [][]string{{"1", "y"}, {"2", "x"}}}, "not in the right rows"},
		{"a column missing", Table{Columns: []string{"a"}, Rows: [][]string{{"1"}, {"2"}}}, `no column "b"`},
		{"a column more", Table{Columns: []string{"a", "b", "c"}, Rows: [][]string{{"1", "x", "1"}, {"2", "y", "1"}}}, "columns"},
	} {
		err := Compare(c.got, base)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Compare = %v, want %q", c.name, err, c.want)
		}
	}
}
