package contract

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseJSONRoundTrip(t *testing.T) {
	for _, y := range []string{people, shop} {
		s, ps := Parse([]byte(y))
		if len(ps) > 0 {
			t.Fatal(ps)
		}
		raw, err := s.JSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s, back) {
			t.Fatalf("round trip through %s changed the contract", raw)
		}
	}
	s, _ := Parse([]byte(people))
	if c := s.Columns["phone"]; c.PII != "phone" || c.Action != Mask || c.keepLast() != DefaultKeepLast {
		t.Fatalf("phone = %+v", c)
	}
	if f := s.Filter[0]; f.Column != "country" || f.Op != OpIn || strings.Join(f.Values, ",") != "DE,FR" {
		t.Fatalf("filter = %+v", f)
	}
	if nilSpec, err := Decode(nil); nilSpec != nil || err != nil {
		t.Fatalf("Decode(nil) = %v, %v", nilSpec, err)
	}
}

func TestParseProblemsNameFieldAndLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown action", "columns:\n  id: keep\n  email: {action: hsah}\n", []string{`line 3: contract.columns.email.action: unknown action "hsah"`}},
		{"scalar action", "columns:\n  id: kep\n", []string{`line 2: contract.columns.id.action: unknown action "kep"`}},
		{"literal key", "key: hunter2hunter2hunter2\ncolumns:\n  e: hash\n", []string{"line 1: contract.key: must be a reference to an environment variable"}},
		{"no key", "columns:\n  e: hash\n", []string{"contract.key: is required by hash and tokenize"}},
		{"unknown field", "colums:\n  a: keep\n", []string{"line 1: contract.colums: unknown field"}},
		{"both", "columns: {a: keep}\ntables: {public.t: {columns: {a: keep}}}\n", []string{"contract.tables: a contract has columns or tables, not both"}},
		{"bad table", "tables:\n  t:\n    columns: {a: keep}\n", []string{`line 2: contract.tables.t: "t" is not a table name`}},
		{"truncate without how", "columns:\n  d: truncate\n", []string{"line 2: contract.columns.d: truncate needs exactly one of to"}},
		{"truncate bad unit", "columns:\n  d: {action: truncate, to: week}\n", []string{`contract.columns.d.to: "week"`}},
		{"bad bucket", "columns:\n  d: {action: truncate, bucket: -5}\n", []string{`contract.columns.d.bucket: "-5"`}},
		{"params of another action", "columns:\n  d: {action: hash, to: day}\n", []string{"to, bucket and length are for action truncate, not hash"}},
		{"mask keep", "columns:\n  d: {action: mask, keep_last: many}\n", []string{`line 2: contract.columns.d.keep_last: "many": want a whole number`}},
		{"email keep", "columns:\n  d: {action: mask, pii: email, keep_last: 2}\n", []string{"an email is masked whole but its domain"}},
		{"filter no op", "columns: {a: keep}\nfilter:\n  - {column: a}\n", []string{"line 3: contract.filter[0]: needs a comparison"}},
		{"filter two ops", "columns: {a: keep}\nfilter:\n  - {column: a, equals: 1, gt: 2}\n", []string{"a condition has one comparison"}},
		{"filter null", "columns: {a: keep}\nfilter:\n  - {column: a, equals: null}\n", []string{"compare with NULL by is: null"}},
		{"filter in scalar", "columns: {a: keep}\nfilter:\n  - {column: a, in: DE}\n", []string{"must be a list of values"}},
		{"filter is", "columns: {a: keep}\nfilter:\n  - {column: a, is: empty}\n", []string{"want null or not null"}},
		{"filter no column", "columns: {a: keep}\nfilter:\n  - {is: null}\n", []string{"contract.filter[0].column: is required"}},
		{"strict not bool", "strict: yes please\ncolumns: {a: keep}\n", []string{`line 1: contract.strict: "yes please": want true or false`}},
		{"file and more", "file: c.yaml\nstrict: true\n", []string{"contract.file: a contract given by file has no other field here"}},
		{"not a mapping", "[a, b]\n", []string{"contract: must be a mapping"}},
		{"duplicate", "columns:\n  a: keep\n  a: drop\n", []string{"line 3: contract.columns.a: appears twice"}},
		{"key file relative", "key_file: secrets/k\ncolumns: {e: hash}\n", []string{`contract.key_file: "secrets/k": want an absolute path`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := parseAt(t, tc.in)
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			all := strings.Join(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems\n%s\nlack %q", all, w)
				}
			}
		})
	}
}

// parseAt parses y as the value of a spec's contract field.
func parseAt(t *testing.T, y string) []Problem {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(y), &root); err != nil {
		t.Fatal(err)
	}
	_, ps := ParseNode(root.Content[0], "contract")
	return ps
}

func TestCompileKey(t *testing.T) {
	s, _ := Parse([]byte("key: ${K}\ncolumns: {e: hash}\n"))
	if _, err := Compile(s, func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "K is not set") {
		t.Fatalf("unset: %v", err)
	}
	_, err := Compile(s, func(string) (string, bool) { return "short-secret", true })
	if err == nil || strings.Contains(err.Error(), "short-secret") || !strings.Contains(err.Error(), "12 bytes") {
		t.Fatalf("short: %v", err)
	}
	// No action needs a key: none is read.
	s, _ = Parse([]byte("key: ${K}\ncolumns: {e: mask}\n"))
	if _, err := Compile(s, func(string) (string, bool) { return "", false }); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(people))
	f.Add([]byte(shop))
	f.Add([]byte("columns: {a: {action: truncate, bucket: 0.5}}\nfilter: [{column: a, is: not null}]\n"))
	f.Add([]byte("tables: {public.t: {columns: {a: tokenize}}}\nkey_file: /k\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, ps := Parse(data)
		if len(ps) > 0 || s == nil {
			return
		}
		// What parses is valid, and survives the trip a task makes.
		if vs := s.Validate(); len(vs) > 0 {
			t.Fatalf("Parse accepted a contract Validate refuses: %v", vs)
		}
		raw, err := s.JSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(raw)
		if err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		again, _ := back.JSON()
		if string(again) != string(raw) {
			t.Fatalf("JSON round trip: %s then %s", raw, again)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
	})
}
