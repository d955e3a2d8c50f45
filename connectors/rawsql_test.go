package connectors

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// A registry refusing raw SQL refuses a configuration whose filter or
// column type reaches SQL as written, at validation and at open, naming
// the field; one allowing it, or a configuration without it, passes.
func TestRawSQLRefusedUnlessAllowed(t *testing.T) {
	r := NewRegistry()
	r.Register(Connector{Kind: "sqlish",
		Source: func(context.Context, json.RawMessage) (Source, error) { return nil, errors.New("opened") },
		RawSQL: RawSQLFields([]string{"where"}, []string{"columns"}),
	})
	r.RefuseRawSQL(true)
	for cfg, field := range map[string]string{
		`{"where":"1=1) OR (true"}`:                                    "where",
		`{"columns":[{"name":"a"},{"name":"b","type":"text); DROP"}]}`: "columns[1].type",
	} {
		err := r.Validate("sqlish", RoleSource, json.RawMessage(cfg), nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field || !strings.Contains(fe.Msg, "raw SQL") {
			t.Errorf("validate %s: %v, want a refusal of %s", cfg, err, field)
		}
		if _, err := r.OpenSource(context.Background(), "sqlish", json.RawMessage(cfg)); err == nil || !strings.Contains(err.Error(), "raw SQL") {
			t.Errorf("open %s: %v, want a refusal", cfg, err)
		}
	}
	if err := r.Validate("sqlish", RoleSource, json.RawMessage(`{"columns":[{"name":"a"}]}`), nil); err != nil {
		t.Errorf("no raw SQL: %v", err)
	}
	r.RefuseRawSQL(false)
	if err := r.Validate("sqlish", RoleSource, json.RawMessage(`{"where":"a > 1"}`), nil); err != nil {
		t.Errorf("raw SQL allowed: %v", err)
	}
}
