package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TriggerError is a trigger payload that cannot be used; Field names the
// field at fault ("" for the payload as a whole).
type TriggerError struct {
	Field string
	Msg   string
}

func (e *TriggerError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// ParseTrigger decodes and checks a trigger payload. An empty payload is a
// trigger without parameters. The errors name the field at fault, such as
// `logical_time: "x" is not RFC 3339`; an unknown field is an error.
// Parameters are strings.
func ParseTrigger(data []byte) (Trigger, error) {
	var tr Trigger
	if len(bytes.TrimSpace(data)) == 0 {
		return tr, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return tr, &TriggerError{Msg: fmt.Sprintf("payload is not a JSON object: %v", err)}
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := raw[k]
		if string(v) == "null" {
			continue
		}
		bad := func(format string, args ...any) error {
			return &TriggerError{Field: k, Msg: fmt.Sprintf(format, args...)}
		}
		switch k {
		case "v":
			if err := json.Unmarshal(v, &tr.V); err != nil {
				return tr, bad("%s is not an integer", v)
			}
			if tr.V > Version {
				return tr, bad("version %d is newer than this build's %d", tr.V, Version)
			}
		case "pipeline", "source":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return tr, bad("%s is not a string", v)
			}
			if k == "pipeline" {
				tr.Pipeline = s
			} else {
				tr.Source = s
			}
		case "params":
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(v, &obj); err != nil {
				return tr, bad("is not an object of strings")
			}
			tr.Params = map[string]string{}
			for pk, pv := range obj {
				if pk == "" {
					return tr, bad("a parameter has an empty name")
				}
				var s string
				if err := json.Unmarshal(pv, &s); err != nil {
					return tr, &TriggerError{Field: "params." + pk, Msg: fmt.Sprintf("%s is not a string", pv)}
				}
				tr.Params[pk] = s
			}
		case "event_time", "logical_time":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return tr, bad("%s is not an RFC 3339 string", v)
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return tr, bad("%q is not RFC 3339", s)
			}
			if k == "event_time" {
				tr.EventTime = t
			} else {
				tr.LogicalTime = t
			}
		default:
			return tr, bad("unknown field (want %s)", strings.Join([]string{"v", "pipeline", "params", "event_time", "logical_time", "source"}, ", "))
		}
	}
	return tr, nil
}
