package connectors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
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

// FuzzExpandEnv: `${NAME}` expansion of any configuration with any value.
// An expanded value never shows in a validation error, even from a
// validator that quotes the whole expanded configuration; a variable specs
// may not name is never looked up; ExpandEnv gives JSON, and leaves a
// configuration without references as it was.
func FuzzExpandEnv(f *testing.F) {
	f.Add(`{"dsn":"postgres://u:${SLUICE_PW}@h/db","format":"${SLUICE_FMT}"}`, "hunter2-planted-secret")
	f.Add(`{"a":["${SLUICE_A}x${SLUICE_A}",{"b":"$${SLUICE_A}"}],"n":1}`, `p"w\d`)
	f.Add(`{"path":"${HOME}/x","k":"${SLUICE_K}"}`, "s3cr3t\u00e9\n")
	f.Add(`{"x":"${SLUICE_}${}${1A}${A-B}"}`, "abcd")
	f.Add(`["${SLUICE_A}"]`, "abcd")
	f.Add(`"${SLUICE_A}"`, "abcd")
	f.Add(`{"a":"plain","b":[1,2.5,true,null]}`, "value")
	f.Add(`{"a":"${SLUICE_A}"}`, "a<b>&c")
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{Kind: "echo",
		Validate: func(config json.RawMessage) error {
			return &connectors.FieldError{Field: "config", Msg: fmt.Sprintf("refused %s (%q)", config, config)}
		},
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, errors.New("no source") },
	})
	reg.AllowEnv("ALSO_ALLOWED")
	f.Fuzz(func(t *testing.T, config, value string) {
		// Marked, the value cannot be a word of an error by chance.
		secret := "§" + value + "§"
		lookup := func(name string) (string, bool) {
			if !reg.EnvAllowed(name) {
				t.Fatalf("looked up %s, which specs may not name", name)
			}
			return secret, !strings.HasSuffix(name, "_UNSET")
		}
		err := reg.Validate("echo", connectors.RoleSource, json.RawMessage(config), lookup)
		// A value written in the configuration itself, or holding a part of
		// a reference, is not a secret this can see.
		if err != nil && !strings.Contains(config, secret) && !strings.ContainsAny(value, "${}") && containsAnyForm(err.Error(), secret) {
			t.Fatalf("validation error echoes the expanded value %q: %v", secret, err)
		}

		out, err := connectors.ExpandEnv(json.RawMessage(config), func(name string) (string, bool) { return secret, true })
		if err != nil || len(config) == 0 && len(out) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("ExpandEnv(%s) = %s: not JSON", config, out)
		}
		if !strings.Contains(config, "${") {
			var a, b any
			if json.Unmarshal([]byte(config), &a) != nil || json.Unmarshal(out, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("ExpandEnv changed a configuration without references: %s -> %s", config, out)
			}
		}
	})
}

// containsAnyForm reports whether text holds value as is, as %q writes it
// or as JSON writes it.
func containsAnyForm(text, value string) bool {
	q := strconv.Quote(value)
	j, _ := json.Marshal(value)
	return strings.Contains(text, value) || strings.Contains(text, q[1:len(q)-1]) || strings.Contains(text, string(j[1:len(j)-1]))
}
