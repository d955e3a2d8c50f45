package connectors

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

type jetStreamKey struct{}

// WithJetStream returns ctx carrying the JetStream context of the process
// opening connectors: a worker passes its own to the connectors it opens,
// so that a sink publishing to Sluice's streams (the SLUICE_CDC events of a
// snapshot) uses the worker's connection.
func WithJetStream(ctx context.Context, js jetstream.JetStream) context.Context {
	return context.WithValue(ctx, jetStreamKey{}, js)
}

// JetStreamFrom returns the JetStream context WithJetStream put in ctx, or
// nil.
func JetStreamFrom(ctx context.Context) jetstream.JetStream {
	js, _ := ctx.Value(jetStreamKey{}).(jetstream.JetStream)
	return js
}
