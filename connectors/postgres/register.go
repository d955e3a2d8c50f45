package postgres

import (
	"encoding/json"

	"github.com/sluicehq/sluice/connectors"
)

// Register adds the "postgres" connector to reg: source, sink (which
// appends runs by position), their validators, and the Applier of cdc_apply pipelines (CDCTarget). The
// source of cdc pipelines is added by connectors/pgcdc.
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind:             Kind,
		Source:           openSource,
		Sink:             openSink,
		ValidateSource:   ValidateSource,
		ValidateSink:     ValidateSink,
		SinkAppends:      true,
		SinkValueWindows: true,
		SinkMerges:       true,
		CDCTarget:        &connectors.CDCTarget{Validate: ValidateApplier, Open: openApplier, Check: checkApplier},
	})
}

// ValidateSource checks a source configuration without I/O.
func ValidateSource(config json.RawMessage) error {
	_, err := ParseSourceConfig(config)
	return err
}

// ValidateSink checks a sink configuration without I/O.
func ValidateSink(config json.RawMessage) error {
	_, err := ParseSinkConfig(config)
	return err
}
