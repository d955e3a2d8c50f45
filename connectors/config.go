package connectors

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
)

// DecodeConfig decodes a connector's JSON configuration into v, refusing
// fields v does not have. An error is a *FieldError naming the field (a
// value of the wrong JSON type, an unknown field); an empty configuration
// decodes as {}.
func DecodeConfig(config json.RawMessage, v any) error {
	if len(bytes.TrimSpace(config)) == 0 {
		config = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return TypeError(te)
		}
		field := ""
		if m := unknownFieldRE.FindStringSubmatch(err.Error()); m != nil {
			field = m[1]
		}
		return &FieldError{Field: field, Msg: err.Error()}
	}
	return nil
}

// encoding/json says which field it does not know only in its message.
var unknownFieldRE = regexp.MustCompile(`unknown field "([^"]*)"`)
