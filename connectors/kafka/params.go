package kafka

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/sluicehq/sluice/connectors"
)

// checkParams checks the run parameter a kafka source takes: partition,
// one partition number of the topic.
func checkParams(_ json.RawMessage, params map[string]string) (*connectors.Window, error) {
	if v, ok := params[connectors.ParamPartition]; ok {
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n < 0 {
			return nil, &connectors.FieldError{Field: "params." + connectors.ParamPartition, Msg: fmt.Sprintf("%q is not a partition number", v)}
		}
	}
	return nil, nil
}
