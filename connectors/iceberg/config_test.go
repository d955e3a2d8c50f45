package iceberg

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

// A credential written under s3 is refused, named with its path and told
// where credentials come from, as the files connector does; the keys the
// README lists are accepted.
func TestConfigS3Fields(t *testing.T) {
	tests := []struct {
		config    string
		wantField string // empty: accepted
	}{
		{`{"table": "a.b", "warehouse": "s3://x/y", "catalog": "sqlite:/tmp/c.db", "s3": {"endpoint": "http://127.0.0.1:7070", "region": "us-east-1", "path_style": true}}`, ""},
		{`{"table": "a.b", "warehouse": "s3://x/y", "catalog": "sqlite:/tmp/c.db", "s3": {"secret_access_key": "abc"}}`, "s3.secret_access_key"},
		{`{"table": "a.b", "warehouse": "s3://x/y", "catalog": "sqlite:/tmp/c.db", "s3": {"region": "eu-west-1", "access_key_id": "abc"}}`, "s3.access_key_id"},
		{`{"table": "a.b", "warehouse": "s3://x/y", "catalog": "sqlite:/tmp/c.db", "password": "abc"}`, "password"},
	}
	for _, tt := range tests {
		for name, parse := range map[string]func(json.RawMessage) error{
			"sink":   func(c json.RawMessage) error { _, err := ParseSinkConfig(c); return err },
			"source": func(c json.RawMessage) error { _, err := ParseSourceConfig(c); return err },
		} {
			err := parse(json.RawMessage(tt.config))
			if tt.wantField == "" {
				if err != nil {
					t.Errorf("%s %s: %v, want accepted", name, tt.config, err)
				}
				continue
			}
			var fe *connectors.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Errorf("%s %s: %v, want a field error on %s", name, tt.config, err, tt.wantField)
				continue
			}
			if strings.HasPrefix(tt.wantField, "s3.") && !strings.Contains(fe.Msg, "credentials come from the AWS environment") {
				t.Errorf("%s %s: %q does not say where credentials come from", name, tt.config, fe.Msg)
			}
		}
	}
}

// read: appended reads only by position: appendedOnly names the field for
// every other pipeline to refuse; a source that reads whole passes.
func TestAppendedOnly(t *testing.T) {
	for in, want := range map[string]string{
		`{"table":"a.b","read":"appended"}`: "read",
		`{"table":"a.b","read":"snapshot"}`: "",
		`{"table":"a.b"}`:                   "",
	} {
		got := ""
		if fe := appendedOnly(json.RawMessage(in)); fe != nil {
			got = fe.Field
		}
		if got != want {
			t.Errorf("appendedOnly(%s) names %q, want %q", in, got, want)
		}
	}
}
