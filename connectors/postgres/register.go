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
		// A source's filter and a sink's column types are SQL as
		// written.
		RawSQL:    connectors.RawSQLFields([]string{"where"}, []string{"columns"}),
		CDCTarget: &connectors.CDCTarget{Validate: ValidateApplier, Open: openApplier, Check: checkApplier},
		Passthrough: &connectors.Passthrough{Units: Units, Source: true, Sink: true, Rows: true,
			ValidateSource: ValidatePassthroughSource, ValidateSink: ValidatePassthroughSink},
	})
}

// Units are what the postgres connector exchanges in a passthrough
// (connectors.Passthrough.Units): chunks of a table's rows in COPY's
// format.
const Units = "postgres-copy"

// ValidatePassthroughSource checks the configuration of a passthrough
// source without I/O: a table is copied whole, every column as it is.
func ValidatePassthroughSource(config json.RawMessage) error {
	// The fields a passthrough refuses first, whatever the rest holds (a
	// DSN that is still a ${ENV} reference).
	var c SourceConfig
	if json.Unmarshal(config, &c) == nil {
		switch {
		case len(c.Columns) > 0:
			return passOnly("columns", "it copies every column (a data contract leaves columns out)")
		case c.Where != "":
			return passOnly("where", "it copies every row")
		case c.Format != "":
			return passOnly("format", "it moves rows in COPY's binary format")
		}
	}
	_, err := ParseSourceConfig(config)
	return err
}

// ValidatePassthroughSink checks the configuration of a passthrough sink
// without I/O: the versioned tables take the source's definition.
func ValidatePassthroughSink(config json.RawMessage) error {
	var c SinkConfig
	if json.Unmarshal(config, &c) == nil && len(c.Columns) > 0 {
		return passOnly("columns", "the target takes the source table's definition")
	}
	_, err := ParseSinkConfig(config)
	return err
}

func passOnly(field, why string) error {
	return &connectors.FieldError{Field: field, Msg: "is not used by pattern passthrough: " + why}
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
