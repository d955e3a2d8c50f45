package connectors

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
)

// RawSQLFunc names the fields of a configuration (after `${ENV}`
// expansion) whose text reaches SQL as written, unquoted: a filter, a
// column type. It does no I/O; it returns nil when none is set.
type RawSQLFunc func(config json.RawMessage) []string

// rawSQLGate is whether a registry refuses raw SQL; the zero value allows
// it (a library's registry), the sluice processes refuse it unless told.
type rawSQLGate struct{ refuse atomic.Bool }

// RefuseRawSQL makes the registry refuse (true) or accept configurations
// with fields that reach SQL unquoted (Connector.RawSQL), at validation
// and when a connector opens.
func (r *Registry) RefuseRawSQL(refuse bool) { r.rawSQL.refuse.Store(refuse) }

// ErrRawSQL is the message of a refused raw SQL field.
const rawSQLMsg = "reaches SQL as written (unquoted): refused unless the cluster allows raw SQL (--allow-raw-sql or SLUICE_ALLOW_RAW_SQL=1 on the coordinators, the workers and where sluice apply runs)"

// checkRawSQL refuses expanded when the registry refuses raw SQL and a
// field of it holds some.
func (r *Registry) checkRawSQL(e *entry, expanded json.RawMessage) error {
	if e == nil || e.rawSQL == nil || !r.rawSQL.refuse.Load() {
		return nil
	}
	if fs := e.rawSQL(expanded); len(fs) > 0 {
		return &FieldError{Field: fs[0], Msg: rawSQLMsg}
	}
	return nil
}

// RawSQLFields is a RawSQLFunc for the usual shape: a top-level string
// field (such as "where") and the "type" of each object of a top-level
// array (such as "columns").
func RawSQLFields(stringFields []string, arrayTypes []string) RawSQLFunc {
	return func(config json.RawMessage) []string {
		var m map[string]json.RawMessage
		if json.Unmarshal(config, &m) != nil {
			return nil
		}
		var out []string
		for _, f := range stringFields {
			var s string
			if json.Unmarshal(m[f], &s) == nil && s != "" {
				out = append(out, f)
			}
		}
		for _, f := range arrayTypes {
			var items []map[string]json.RawMessage
			if json.Unmarshal(m[f], &items) != nil {
				continue
			}
			for i, it := range items {
				var s string
				if json.Unmarshal(it["type"], &s) == nil && s != "" {
					out = append(out, fmt.Sprintf("%s[%d].type", f, i))
				}
			}
		}
		return out
	}
}
