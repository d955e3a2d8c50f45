package connectors

import (
	"errors"
	"fmt"
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
