package connectors

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// FieldError is a configuration error that names the field at fault, as a
// dotted path inside the connector's configuration ("path", "columns[2]").
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// RowError is bad input at a known position: which file or object, which
// row (1-based line or record number) and, where known, which field.
type RowError struct {
	Location string
	Row      int64
	Field    string
	Err      error
}

func (e *RowError) Error() string {
	s := fmt.Sprintf("%s: row %d", e.Location, e.Row)
	if e.Field != "" {
		s += fmt.Sprintf(", field %q", e.Field)
	}
	return s + ": " + e.Err.Error()
}

func (e *RowError) Unwrap() error { return e.Err }

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one that another attempt would not cure (bad data,
// bad configuration). Workers terminate such a task instead of retrying it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked
// Permanent or Replan, or is a *RowError or *FieldError.
func IsPermanent(err error) bool {
	var p permanent
	var r *RowError
	var f *FieldError
	return errors.As(err, &p) || errors.As(err, &r) || errors.As(err, &f)
}

type replan struct{ err error }

func (r replan) Error() string { return r.err.Error() }
func (r replan) Unwrap() error { return r.err }

// Replan marks err as one that no attempt of the task can cure but a new
// plan of its run can: what the run was planned on is gone, such as the
// snapshot a source exported for the run and held on the leader that
// planned it (see RunHolder). Workers terminate such a task and report it
// as protocol.ErrorReplan; the coordinator leader then plans the run again,
// as a new attempt of the same run. A Replan error is permanent too
// (IsPermanent): retrying the task would not help.
func Replan(err error) error {
	if err == nil {
		return nil
	}
	return permanent{replan{err}}
}

// IsReplan reports whether err, or an error it wraps, was marked Replan.
func IsReplan(err error) bool {
	var r replan
	return errors.As(err, &r)
}

// TypeError turns a JSON decoding error of a value of the wrong type into
// a *FieldError in the user's terms: "keep_versions: want an integer, not
// a string", never Go's type names.
func TypeError(te *json.UnmarshalTypeError) *FieldError {
	return &FieldError{Field: te.Field, Msg: fmt.Sprintf("want %s, not %s", DescribeType(te.Type), describeJSONValue(te.Value))}
}

// DescribeType names what a Go type holds in a user's terms: "an integer",
// "a string", "a list".
func DescribeType(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "a value"
	}
	if t == reflect.TypeFor[time.Time]() {
		return "an RFC 3339 time"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer of 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return "a value"
}

// describeJSONValue names the JSON value encoding/json reports ("number
// 2.5", "string", "bool", "array", "object").
func describeJSONValue(v string) string {
	switch {
	case strings.HasPrefix(v, "number "):
		return "the number " + strings.TrimPrefix(v, "number ")
	case v == "bool":
		return "true or false"
	case v == "array":
		return "a list"
	case v == "object":
		return "a mapping"
	case v == "":
		return "that value"
	}
	return "a " + v
}
