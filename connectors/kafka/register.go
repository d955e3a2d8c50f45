package kafka

import (
	"context"
	"encoding/json"

	"github.com/sluicehq/sluice/connectors"
)

// Register adds the kafka connector to reg: a source read by position or
// by windows of time, a sink appending each run in one transaction, both
// the sides of a passthrough of records from topic to topic.
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind: Kind,
		Source: func(_ context.Context, raw json.RawMessage) (connectors.Source, error) {
			c, err := parseSourceConfig(raw)
			if err != nil {
				return nil, err
			}
			return NewSource(c)
		},
		Sink: func(_ context.Context, raw json.RawMessage) (connectors.Sink, error) {
			c, err := parseSinkConfig(raw)
			if err != nil {
				return nil, err
			}
			return NewSink(c)
		},
		ValidateSource: ValidateSource,
		ValidateSink:   ValidateSink,
		SinkAppends:    true,
		Positions:      &connectors.Positions{Lag: lag},
		CDCTarget:      &connectors.CDCTarget{Validate: ValidateApplier, Open: openApplier},
		Params:         checkParams,
		Feed:           &connectors.EventFeed{Validate: ValidateFeed, Open: openFeed},
		Passthrough: &connectors.Passthrough{Units: Units, Noun: "records", Source: true, Sink: true,
			ValidateSource: ValidatePassthroughSource, ValidateSink: ValidatePassthroughSink},
	})
}

// lag counts the records of the configured topic past watermark.
func lag(ctx context.Context, raw json.RawMessage, watermark string) (int64, error) {
	c, err := parseSourceConfig(raw)
	if err != nil {
		return 0, err
	}
	s, err := NewSource(c)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return s.Lag(ctx, watermark)
}

// permanent marks err as one no retry cures.
func permanent(err error) error { return connectors.Permanent(err) }
