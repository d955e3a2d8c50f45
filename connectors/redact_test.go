package connectors

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://sluice:s3cret@db:5432/x?sslmode=disable", "postgres://sluice:xxxxx@db:5432/x?sslmode=disable"},
		{"connect to postgres://u:p%40ss@h/db: refused", "connect to postgres://u:xxxxx@h/db: refused"},
		{"postgres://u@h/db?password=s3cret&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"host=h user=u password='a b' dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{`{"dsn":"postgres://u:pw@h/d","password":"pw2","path":"/in"}`, `{"dsn":"postgres://u:xxxxx@h/d","password":"xxxxx","path":"/in"}`},
		{"sink:\n  kind: x\n  password: hunter2 # old\n  token: ${TOKEN}\n", "sink:\n  kind: x\n  password: xxxxx # old\n  token: ${TOKEN}\n"},
		// References and texts without secrets stay as they are.
		{"postgres://u:${PW}@h/db", "postgres://u:${PW}@h/db"},
		{"dsn: ${SLUICE_PG_DSN}", "dsn: ${SLUICE_PG_DSN}"},
		{"max_tokens=5, http://h:8123/?query=1", "max_tokens=5, http://h:8123/?query=1"},
	} {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
		if got := Redact(c.want); got != c.want {
			t.Errorf("Redact of a redacted text changed it: %q -> %q", c.want, got)
		}
	}
}

func TestLiteralSecrets(t *testing.T) {
	cfg := json.RawMessage(`{"dsn":"postgres://u:pw@h/d","target":{"password":"x","token":"${T}"},"path":"/in","url":"http://h:8123"}`)
	if got, want := LiteralSecrets(cfg), []string{"dsn", "target.password"}; !slices.Equal(got, want) {
		t.Errorf("LiteralSecrets = %v, want %v", got, want)
	}
	if got := LiteralSecrets(json.RawMessage(`{"dsn":"${SLUICE_PG_DSN}"}`)); len(got) != 0 {
		t.Errorf("a reference is not a literal secret: %v", got)
	}
}

// A value of the wrong type is named in the user's terms, never Go's.
func TestTypeError(t *testing.T) {
	var v struct {
		KeepVersions int               `json:"keep_versions"`
		Tables       []string          `json:"tables"`
		Params       map[string]string `json:"params"`
	}
	for _, c := range []struct{ in, want string }{
		{`{"keep_versions":"3"}`, "keep_versions: want an integer, not a string"},
		{`{"keep_versions":2.5}`, "keep_versions: want an integer, not the number 2.5"},
		{`{"tables":"a"}`, "tables: want a list, not a string"},
		{`{"params":{"a":1}}`, "params: want a string, not a number"},
	} {
		err := json.Unmarshal([]byte(c.in), &v)
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got := TypeError(te).Error(); got != c.want {
			t.Errorf("%s: %q, want %q", c.in, got, c.want)
		}
	}
}
