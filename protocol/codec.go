package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrVersion is returned, wrapped, when a message carries a version this
// build does not speak.
var ErrVersion = errors.New("unsupported protocol version")

// Message is any wire message: it can report and set its version.
type Message interface {
	Task | Result | Trigger | RunEvent | Heartbeat | StreamAssignment | ReadyEvent
}

// Encode stamps msg with the current version and encodes it.
func Encode[M Message](msg M) ([]byte, error) {
	switch m := any(&msg).(type) {
	case *Task:
		m.V = Version
	case *Result:
		m.V = Version
	case *Trigger:
		m.V = Version
	case *RunEvent:
		m.V = Version
	case *Heartbeat:
		m.V = Version
	case *StreamAssignment:
		m.V = Version
	case *ReadyEvent:
		m.V = Version
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", msg, err)
	}
	return b, nil
}

// Decode decodes data into a message of type M and checks its version. An
// absent or unknown version, unknown JSON syntax or a missing identity field
// is an error that says what was wrong.
func Decode[M Message](data []byte) (M, error) {
	var msg M
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return msg, fmt.Errorf("decode %T: %w", msg, err)
	}
	if head.V == nil {
		return msg, fmt.Errorf("decode %T: field \"v\" is missing: %w", msg, ErrVersion)
	}
	if *head.V != Version {
		return msg, fmt.Errorf("decode %T: version %d, this build speaks %d: %w", msg, *head.V, Version, ErrVersion)
	}
	if err := json.Unmarshal(data, &msg); err != nil {
		return msg, fmt.Errorf("decode %T: %w", msg, err)
	}
	if err := check(any(msg)); err != nil {
		return msg, fmt.Errorf("decode %T: %w", msg, err)
	}
	return msg, nil
}

func check(msg any) error {
	switch m := msg.(type) {
	case Task:
		switch {
		case m.RunID == "":
			return errors.New(`field "run" is empty`)
		case m.TaskID == "":
			return errors.New(`field "task" is empty`)
		case m.Pipeline == "":
			return errors.New(`field "pipeline" is empty`)
		}
	case Result:
		switch {
		case m.RunID == "":
			return errors.New(`field "run" is empty`)
		case m.TaskID == "":
			return errors.New(`field "task" is empty`)
		}
	case ReadyEvent:
		switch {
		case m.Pipeline == "":
			return errors.New(`field "pipeline" is empty`)
		case m.Partition == "":
			return errors.New(`field "partition" is empty`)
		}
	case Trigger:
		if m.Pipeline != "" && !ValidName(m.Pipeline) {
			return fmt.Errorf(`field "pipeline": %q is not a valid pipeline name`, m.Pipeline)
		}
	case StreamAssignment:
		switch {
		case !ValidName(m.Pipeline):
			return fmt.Errorf(`field "pipeline": %q is not a valid pipeline name`, m.Pipeline)
		case m.Epoch == 0:
			return errors.New(`field "epoch" is 0`)
		case m.Lease <= 0:
			return errors.New(`field "lease" is not positive`)
		case m.Source.Kind == "":
			return errors.New(`field "source": kind is empty`)
		}
	}
	return nil
}
