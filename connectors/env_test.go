package connectors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
)

// formatRegistry has a kind "f" whose validator quotes its format field
// in its error, as most validators do, and whose source fails to open
// quoting its whole configuration.
func formatRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{Kind: "f",
		Validate: func(config json.RawMessage) error {
			var c struct{ Format string }
			_ = json.Unmarshal(config, &c)
			if c.Format != "csv" {
				return &connectors.FieldError{Field: "format", Msg: fmt.Sprintf("unknown format %q", c.Format)}
			}
			return nil
		},
		Source: func(_ context.Context, config json.RawMessage) (connectors.Source, error) {
			return nil, fmt.Errorf("connect with %s: refused", config)
		},
	})
	return reg
}

func TestEnvAllowList(t *testing.T) {
	reg := formatRegistry()
	env := map[string]string{"SLUICE_FMT": "csv", "HOME_FMT": "csv"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := reg.Validate("f", connectors.RoleSource, json.RawMessage(`{"format":"${SLUICE_FMT}"}`), lookup); err != nil {
		t.Fatalf("SLUICE_ variable: %v", err)
	}
	err := reg.Validate("f", connectors.RoleSource, json.RawMessage(`{"format":"${HOME_FMT}"}`), lookup)
	var fe *connectors.FieldError
	if !errors.As(err, &fe) || fe.Field != "format" || !strings.Contains(fe.Msg, "environment variable HOME_FMT cannot be used in a spec") {
		t.Fatalf("variable not allowed: err = %v, want a FieldError on format naming HOME_FMT", err)
	}
	// Unset, it is refused all the same: the name is what is not allowed.
	if err := reg.Validate("f", connectors.RoleSource, json.RawMessage(`{"format":"${OTHER}"}`), nil); err == nil || !strings.Contains(err.Error(), "OTHER cannot be used") {
		t.Fatalf("unset variable not allowed: err = %v", err)
	}
	reg.AllowEnv("HOME_FMT", " ")
	if err := reg.Validate("f", connectors.RoleSource, json.RawMessage(`{"format":"${HOME_FMT}"}`), lookup); err != nil {
		t.Fatalf("variable allowed by name: %v", err)
	}

	// Opening expands from the process environment under the same rule.
	t.Setenv("SLUICE_TEST_NOT_ALLOWED", "x")
	t.Setenv("NOT_ALLOWED_TEST_VAR", "x")
	_, err = reg.OpenSource(context.Background(), "f", json.RawMessage(`{"format":"${NOT_ALLOWED_TEST_VAR}"}`))
	if err == nil || !strings.Contains(err.Error(), "NOT_ALLOWED_TEST_VAR cannot be used in a spec") || !connectors.IsPermanent(err) {
		t.Fatalf("open with a variable not allowed: err = %v, want a permanent error naming it", err)
	}
}

func TestExpandedValuesNeverEcho(t *testing.T) {
	const secret = "hunter2-planted-secret"
	reg := formatRegistry()
	lookup := func(string) (string, bool) { return secret, true }
	err := reg.Validate("f", connectors.RoleSource, json.RawMessage(`{"format":"${SLUICE_FMT}"}`), lookup)
	var fe *connectors.FieldError
	if !errors.As(err, &fe) || strings.Contains(err.Error(), secret) || !strings.Contains(fe.Msg, `unknown format "${SLUICE_FMT}"`) {
		t.Fatalf("validation error = %v, want the reference quoted and not the value", err)
	}

	// The fake source's open error quotes its configuration: opening
	// scrubs it.
	t.Setenv("SLUICE_TEST_SECRET_DSN", "postgres://u:"+secret+"@h/db")
	_, err = reg.OpenSource(context.Background(), "f", json.RawMessage(`{"dsn":"${SLUICE_TEST_SECRET_DSN}"}`))
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "connect with {\"dsn\":\"${SLUICE_TEST_SECRET_DSN}\"}") {
		t.Fatalf("open error %v", err)
	}
	// Any later error is scrubbed by ScrubError, keeping what it wraps.
	later := connectors.Permanent(&connectors.FieldError{Field: "dsn", Msg: "cannot reach postgres://u:" + secret + "@h/db"})
	scrubbed := reg.ScrubError(later)
	fe = nil
	if strings.Contains(scrubbed.Error(), secret) || !strings.Contains(scrubbed.Error(), "${SLUICE_TEST_SECRET_DSN}") ||
		!connectors.IsPermanent(scrubbed) || !errors.As(scrubbed, &fe) || strings.Contains(fe.Msg, secret) {
		t.Fatalf("scrubbed = %v", scrubbed)
	}
	joined := reg.ScrubError(errors.Join(errors.New("a "+secret), &connectors.FieldError{Field: "x", Msg: secret}))
	if strings.Contains(joined.Error(), secret) {
		t.Fatalf("joined errors scrubbed = %v", joined)
	}
	// The password alone, quoted, is replaced as well.
	for _, text := range []string{"auth failed for " + secret, fmt.Sprintf("bad %q", "a\t"+secret)} {
		if got := reg.Scrub(text); strings.Contains(got, secret) {
			t.Errorf("Scrub(%q) = %q", text, got)
		}
	}
	if reg.ScrubError(nil) != nil {
		t.Error("ScrubError(nil) is not nil")
	}
}
