package connectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Registry maps connector kinds to their constructors. main builds one and
// hands it to the coordinator and the workers; there is no global registry.
type Registry struct {
	sources    map[string]SourceFactory
	sinks      map[string]SinkFactory
	validators map[string]map[Role]Validator
	partitions map[string]func(json.RawMessage) time.Duration
}

// Role says which side of a pipeline a connector configuration is for.
type Role string

// The roles.
const (
	RoleSource Role = "source"
	RoleSink   Role = "sink"
)

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		sources:    map[string]SourceFactory{},
		sinks:      map[string]SinkFactory{},
		validators: map[string]map[Role]Validator{},
		partitions: map[string]func(json.RawMessage) time.Duration{},
	}
}

// Connector is what a connector package registers.
type Connector struct {
	Kind string
	// Source and Sink are nil when the connector is not one.
	Source SourceFactory
	Sink   SinkFactory
	// ValidateSource and ValidateSink check a configuration for that role
	// without I/O; Validate serves a role that has none of its own. All may
	// be nil.
	ValidateSource Validator
	ValidateSink   Validator
	Validate       Validator
	// SourcePartitions returns the size of the time partitions a source
	// configuration is laid out by (1h for date=.../hour=..., 24h for
	// date=...), of which an incremental run reads exactly one, or 0 for a
	// source that is not laid out by time (or a configuration that is not
	// valid). Nil means never. It does no I/O.
	SourcePartitions func(config json.RawMessage) time.Duration
}

// Register adds a connector. Registering a kind twice panics: it is a wiring
// bug in main.
func (r *Registry) Register(c Connector) {
	if _, dup := r.validators[c.Kind]; dup {
		panic(fmt.Sprintf("connectors: kind %q registered twice", c.Kind))
	}
	if c.Source != nil {
		r.sources[c.Kind] = c.Source
	}
	if c.Sink != nil {
		r.sinks[c.Kind] = c.Sink
	}
	pick := func(v Validator) Validator {
		switch {
		case v != nil:
			return v
		case c.Validate != nil:
			return c.Validate
		}
		return func(json.RawMessage) error { return nil }
	}
	r.validators[c.Kind] = map[Role]Validator{RoleSource: pick(c.ValidateSource), RoleSink: pick(c.ValidateSink)}
	if c.SourcePartitions != nil {
		r.partitions[c.Kind] = c.SourcePartitions
	}
}

// PartitionSize returns the size of the time partitions a source of the
// given kind and configuration is laid out by, or 0 when it is not (see
// Connector.SourcePartitions).
func (r *Registry) PartitionSize(kind string, config json.RawMessage) time.Duration {
	f, ok := r.partitions[kind]
	if !ok {
		return 0
	}
	return f(config)
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	var ks []string
	for k := range r.validators {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// HasSource reports whether kind can be used as a source.
func (r *Registry) HasSource(kind string) bool { _, ok := r.sources[kind]; return ok }

// HasSink reports whether kind can be used as a sink.
func (r *Registry) HasSink(kind string) bool { _, ok := r.sinks[kind]; return ok }

// Validate checks the configuration of a connector of the given kind in the
// given role, after expanding `${ENV}` references with lookup (nil: none is
// set). A field whose value refers to a variable lookup does not know
// cannot be judged here, where the variable may be unset while it is set
// where the connector runs: an error on such a field is not reported.
func (r *Registry) Validate(kind string, role Role, config json.RawMessage, lookup func(string) (string, bool)) error {
	vs, ok := r.validators[kind]
	if !ok {
		return &FieldError{Field: "kind", Msg: fmt.Sprintf("unknown connector kind %q (known: %v)", kind, r.Kinds())}
	}
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	var unset []string
	expanded, err := expandEnv(config, lookup, func(field, _ string) { unset = append(unset, field) })
	if err != nil {
		return err
	}
	err = vs[role](expanded)
	var fe *FieldError
	if errors.As(err, &fe) {
		for _, f := range unset {
			if fe.Field == f || strings.HasPrefix(f, fe.Field+".") || strings.HasPrefix(f, fe.Field+"[") {
				return nil
			}
		}
	}
	return err
}

// OpenSource expands `${ENV}` references from the process environment and
// opens a source of the given kind.
func (r *Registry) OpenSource(ctx context.Context, kind string, config json.RawMessage) (Source, error) {
	f, ok := r.sources[kind]
	if !ok {
		return nil, Permanent(fmt.Errorf("open source: unknown source kind %q", kind))
	}
	expanded, err := ExpandEnv(config, os.LookupEnv)
	if err != nil {
		return nil, Permanent(fmt.Errorf("open %s source: %w", kind, err))
	}
	s, err := f(ctx, expanded)
	if err != nil {
		return nil, fmt.Errorf("open %s source: %w", kind, err)
	}
	return s, nil
}

// OpenSink expands `${ENV}` references from the process environment and
// opens a sink of the given kind.
func (r *Registry) OpenSink(ctx context.Context, kind string, config json.RawMessage) (Sink, error) {
	f, ok := r.sinks[kind]
	if !ok {
		return nil, Permanent(fmt.Errorf("open sink: unknown sink kind %q", kind))
	}
	expanded, err := ExpandEnv(config, os.LookupEnv)
	if err != nil {
		return nil, Permanent(fmt.Errorf("open %s sink: %w", kind, err))
	}
	s, err := f(ctx, expanded)
	if err != nil {
		return nil, fmt.Errorf("open %s sink: %w", kind, err)
	}
	return s, nil
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// ExpandEnv replaces every `${NAME}` inside the string values of a JSON
// configuration with the value lookup gives. An unset variable is an error
// naming it; `$${NAME}` stays as the literal text `${NAME}`.
func ExpandEnv(config json.RawMessage, lookup func(string) (string, bool)) (json.RawMessage, error) {
	var missing error
	out, err := expandEnv(config, lookup, func(field, name string) {
		if missing == nil {
			missing = &FieldError{Field: field, Msg: fmt.Sprintf("environment variable %s is not set", name)}
		}
	})
	if err != nil {
		return nil, err
	}
	if missing != nil {
		return nil, missing
	}
	return out, nil
}

// expandEnv expands like ExpandEnv, calling unset for each reference to a
// variable lookup does not know (which expands to "").
func expandEnv(config json.RawMessage, lookup func(string) (string, bool), unset func(field, name string)) (json.RawMessage, error) {
	if len(config) == 0 {
		return config, nil
	}
	var v any
	if err := json.Unmarshal(config, &v); err != nil {
		return nil, fmt.Errorf("config is not JSON: %w", err)
	}
	var walk func(path string, v any) any
	walk = func(path string, v any) any {
		switch x := v.(type) {
		case string:
			return expandString(x, lookup, func(name string) { unset(path, name) })
		case map[string]any:
			for k, e := range x {
				x[k] = walk(joinPath(path, k), e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
		return v
	}
	v = walk("", v)
	return json.Marshal(v)
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func expandString(s string, lookup func(string) (string, bool), unset func(string)) string {
	const escaped = "\x00sluice-dollar\x00"
	s = strings.ReplaceAll(s, "$${", escaped)
	s = envRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		val, ok := lookup(name)
		if !ok {
			unset(name)
		}
		return val
	})
	return strings.ReplaceAll(s, escaped, "${")
}
