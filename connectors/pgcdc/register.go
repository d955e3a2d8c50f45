package pgcdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/postgres"
)

// Register adds to reg the source of cdc pipelines, as a capability of the
// postgres kind (connectors.CDCSource: the Reader as the pipeline's
// stream, and its initial snapshot run), and the two connectors of that
// run: the snapshot source (SnapshotKind) and the read-event sink
// (EventsKind). The sink publishes through js or, when js is nil, through
// the JetStream context of the context it is opened with
// (connectors.WithJetStream: a worker's own); a sink opened with neither,
// as a coordinator would, fails its tasks.
func Register(reg *connectors.Registry, js jetstream.JetStream) {
	reg.Register(connectors.Connector{
		Kind:      postgres.Kind,
		CDCSource: &connectors.CDCSource{Validate: ValidateSource, Open: openReader, Snapshot: snapshotEndpoints, Check: checkSource, AppliesContract: true},
	})
	reg.Register(connectors.Connector{
		Kind: SnapshotKind,
		Source: func(_ context.Context, config json.RawMessage) (connectors.Source, error) {
			cfg, err := ParseSnapshotConfig(config)
			if err != nil {
				return nil, err
			}
			return NewSnapshotSource(cfg)
		},
		ValidateSource: ValidateSnapshotConfig,
		Internal:       true,
	})
	reg.Register(connectors.Connector{
		Kind: EventsKind,
		Sink: func(ctx context.Context, config json.RawMessage) (connectors.Sink, error) {
			cfg, err := ParseEventsConfig(config)
			if err != nil {
				return nil, err
			}
			pub := js
			if pub == nil {
				pub = connectors.JetStreamFrom(ctx) // the opening worker's
			}
			return NewEventsSink(cfg, pub)
		},
		ValidateSink:        ValidateEventsConfig,
		SinkAppliesContract: true,
		Internal:            true,
	})
}

// validateDSN checks that dsn looks like a libpq URL or key=value string,
// without I/O and without showing it.
func validateDSN(dsn string) error {
	switch {
	case strings.TrimSpace(dsn) == "":
		return &connectors.FieldError{Field: "dsn", Msg: "dsn is required"}
	case strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return &connectors.FieldError{Field: "dsn", Msg: "not a valid URL"}
		}
	case !strings.Contains(dsn, "="):
		return &connectors.FieldError{Field: "dsn", Msg: "want a postgres:// URL or key=value settings"}
	}
	return nil
}

// decodeStrict decodes a JSON object into the struct v points to,
// rejecting fields v does not declare (names match exactly); an error is a
// *connectors.FieldError naming the field when it is known.
func decodeStrict(config json.RawMessage, v any) error {
	if len(bytes.TrimSpace(config)) == 0 {
		config = json.RawMessage("{}")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(config, &fields); err != nil {
		return &connectors.FieldError{Msg: fmt.Sprintf("config is not a JSON object: %v", err)}
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !known[k] {
			return &connectors.FieldError{Field: k, Msg: "unknown field"}
		}
	}
	if err := json.Unmarshal(config, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return connectors.TypeError(te)
		}
		return &connectors.FieldError{Msg: fmt.Sprintf("config: %v", err)}
	}
	return nil
}
