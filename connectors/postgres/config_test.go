package postgres

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

const okDSN = "postgres://u:secret@127.0.0.1:5432/db"

func TestSourceConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		config string
		field  string // "" means valid
	}{
		{"minimal", `{"dsn":"` + okDSN + `","table":"t"}`, ""},
		{"full", `{"dsn":"host=x dbname=y","table":"s.t","columns":["a","b"],"where":"a > 1","key":"id","format":"csv","snapshot":"none","snapshot_timeout":"2h"}`, ""},
		{"no dsn", `{"table":"t"}`, "dsn"},
		{"bad dsn", `{"dsn":"just words","table":"t"}`, "dsn"},
		{"no table", `{"dsn":"` + okDSN + `"}`, "table"},
		{"three-part table", `{"dsn":"` + okDSN + `","table":"a.b.c"}`, "table"},
		{"empty table part", `{"dsn":"` + okDSN + `","table":"s."}`, "table"},
		{"empty column", `{"dsn":"` + okDSN + `","table":"t","columns":["a",""]}`, "columns[1]"},
		{"duplicate column", `{"dsn":"` + okDSN + `","table":"t","columns":["a","a"]}`, "columns[1]"},
		{"where with semicolon", `{"dsn":"` + okDSN + `","table":"t","where":"true; drop table t"}`, "where"},
		{"long key", `{"dsn":"` + okDSN + `","table":"t","key":"` + strings.Repeat("k", 64) + `"}`, "key"},
		{"format text later", `{"dsn":"` + okDSN + `","table":"t","format":"text"}`, "format"},
		{"unknown format", `{"dsn":"` + okDSN + `","table":"t","format":"xml"}`, "format"},
		{"unknown snapshot", `{"dsn":"` + okDSN + `","table":"t","snapshot":"maybe"}`, "snapshot"},
		{"bad timeout", `{"dsn":"` + okDSN + `","table":"t","snapshot_timeout":"soon"}`, "snapshot_timeout"},
		{"unknown field", `{"dsn":"` + okDSN + `","table":"t","tabel":"x"}`, "tabel"},
		{"wrong type", `{"dsn":"` + okDSN + `","table":"t","columns":"a"}`, "columns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSourceConfig(json.RawMessage(tt.config))
			checkField(t, err, tt.field)
		})
	}
}

func TestSinkConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		config string
		field  string
	}{
		{"minimal", `{"dsn":"` + okDSN + `","table":"t"}`, ""},
		{"full", `{"dsn":"` + okDSN + `","table":"s.t","keep_versions":5,"columns":[{"name":"id","type":"bigint"},{"name":"amount","type":"numeric(20,6)"}]}`, ""},
		{"no dsn", `{"table":"t"}`, "dsn"},
		{"no table", `{"dsn":"` + okDSN + `"}`, "table"},
		{"long table", `{"dsn":"` + okDSN + `","table":"` + strings.Repeat("t", 41) + `"}`, "table"},
		{"negative keep", `{"dsn":"` + okDSN + `","table":"t","keep_versions":-1}`, "keep_versions"},
		{"column without name", `{"dsn":"` + okDSN + `","table":"t","columns":[{"type":"int"}]}`, "columns[0].name"},
		{"column without type", `{"dsn":"` + okDSN + `","table":"t","columns":[{"name":"a"}]}`, "columns[0].type"},
		{"column injection", `{"dsn":"` + okDSN + `","table":"t","columns":[{"name":"a","type":"int); drop table x; --"}]}`, "columns[0].type"},
		{"reserved column", `{"dsn":"` + okDSN + `","table":"t","columns":[{"name":"_sluice_task","type":"int"}]}`, "columns[0].name"},
		{"duplicate column", `{"dsn":"` + okDSN + `","table":"t","columns":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}`, "columns[1].name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSinkConfig(json.RawMessage(tt.config))
			checkField(t, err, tt.field)
		})
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
		return
	}
	var fe *connectors.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *connectors.FieldError for %q", err, field)
	}
	if fe.Field != field {
		t.Fatalf("got field %q (%v), want %q", fe.Field, err, field)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error shows the password: %v", err)
	}
}

func TestValidateSourceAndSink(t *testing.T) {
	if err := ValidateSource(json.RawMessage(`{"dsn":"` + okDSN + `","table":"t","where":"x > 1"}`)); err != nil {
		t.Errorf("source config: %v", err)
	}
	if err := ValidateSink(json.RawMessage(`{"dsn":"` + okDSN + `","table":"t","keep_versions":2,"columns":[{"name":"a","type":"int"}]}`)); err != nil {
		t.Errorf("sink config: %v", err)
	}
	err := ValidateSink(json.RawMessage(`{"dsn":"` + okDSN + `","table":"t","keep_versions":-2}`))
	checkField(t, err, "keep_versions")
	err = ValidateSource(json.RawMessage(`{"dsn":"` + okDSN + `","table":"t","keep_versions":2}`))
	checkField(t, err, "keep_versions")
	reg := connectors.NewRegistry()
	Register(reg)
	if !reg.HasSource(Kind) || !reg.HasSink(Kind) {
		t.Fatalf("registry: source %v, sink %v; want both", reg.HasSource(Kind), reg.HasSink(Kind))
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:secret@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db?password=secret", "postgres://u@h/db?password=xxxxx"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='se cret' dbname=d", "host=h password=xxxxx dbname=d"},
		{"postgres://u@h/db", "postgres://u@h/db"},
	}
	for _, tt := range tests {
		if got := RedactDSN(tt.in); got != tt.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A transform of a table into PostgreSQL runs as a table passthrough with
// its contract (TransformsUnits) when its DSNs are ${ENV} references, as
// in the README's example, just as with DSNs written out; a source or
// sink field a passthrough does not take sends it through the load path.
func TestTransformsUnitsWithEnvDSN(t *testing.T) {
	reg := connectors.NewRegistry()
	Register(reg)
	ep := func(config string) protocol.Endpoint {
		return protocol.Endpoint{Kind: Kind, Config: json.RawMessage(config)}
	}
	for _, c := range []struct {
		source, sink string
		want         bool
	}{
		{`{"dsn":"${SLUICE_PG_DSN}","table":"public.customers"}`, `{"dsn":"${SLUICE_PG_TARGET_DSN}","table":"public.customers_shared","keep_versions":3}`, true},
		{`{"dsn":"` + okDSN + `","table":"public.customers"}`, `{"dsn":"` + okDSN + `","table":"public.customers_shared"}`, true},
		{`{"dsn":"${SLUICE_PG_DSN}","table":"public.customers","where":"id > 5"}`, `{"dsn":"${SLUICE_PG_TARGET_DSN}","table":"public.customers_shared"}`, false},
		{`{"dsn":"${SLUICE_PG_DSN}","table":"public.customers"}`, `{"dsn":"${SLUICE_PG_TARGET_DSN}","table":"public.c","columns":[{"name":"id","type":"bigint"}]}`, false},
	} {
		if got := reg.TransformsUnits(ep(c.source), ep(c.sink)); got != c.want {
			t.Errorf("TransformsUnits(%s, %s) = %v, want %v", c.source, c.sink, got, c.want)
		}
	}
}
