package coordinator

import (
	"errors"
	"fmt"
	"slices"
)

// refusal is a request or a command that cannot be carried out as asked.
// Its code says why, for the caller to decide by (the API's error code, a
// trigger retried or dead-lettered, a schedule tick skipped); its message
// says it in the user's terms. The FSM refuses commands with one, and the
// leader refuses requests with one before it logs anything.
type refusal struct {
	code refusalCode
	msg  string
}

func (e *refusal) Error() string { return e.msg }

// refusalCode classifies a refusal by what the caller can do about it.
type refusalCode int

const (
	// refusedNotFound: the pipeline, run or backfill named does not exist
	// (or was deleted).
	refusedNotFound refusalCode = iota + 1
	// refusedInvalid: the request asks for something the pipeline cannot
	// do; asking again will not help.
	refusedInvalid
	// refusedConflict: the request does not fit the pipeline's state now (a
	// live window that no longer starts at the watermark, a second live run
	// or backfill in flight, a run in progress); it may fit later.
	refusedConflict
	// refusedRunState: the run is not in the state the command needs (a
	// command of the leader's that another entry overtook).
	refusedRunState
)

func (c refusalCode) String() string {
	switch c {
	case refusedNotFound:
		return "not found"
	case refusedInvalid:
		return "invalid"
	case refusedConflict:
		return "conflict"
	case refusedRunState:
		return "wrong run state"
	}
	return fmt.Sprintf("refusal %d", int(c))
}

// refuse returns a refusal with code and the formatted message.
func refuse(code refusalCode, format string, args ...any) error {
	return &refusal{code: code, msg: fmt.Sprintf(format, args...)}
}

// refusalOf returns the refusal err is or wraps; nil when it is none (a
// Raft error, an I/O error).
func refusalOf(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	return nil
}

// refused reports whether err is or wraps a refusal with one of codes.
func refused(err error, codes ...refusalCode) bool {
	r := refusalOf(err)
	return r != nil && slices.Contains(codes, r.code)
}
