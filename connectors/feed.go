package connectors

import (
	"context"
	"encoding/json"
	"time"
)

// EventFeed is the capability of a kind to deliver events of its system
// to the coordinator leader, which starts runs of the pipelines whose
// trigger names the kind (trigger: {<kind>: {...}}): a Kafka topic, say.
type EventFeed struct {
	// Validate checks the feed's configuration without I/O; errors are
	// *FieldError naming the field. Nil accepts any.
	Validate Validator
	// Open opens the feed of a pipeline's trigger. name names the reader
	// durably (a consumer group): a feed opened again with the same name
	// goes on after the last event marked Done. config has its `${ENV}`
	// references expanded. ctx bounds the opening only.
	Open func(ctx context.Context, config json.RawMessage, name string) (Feed, error)
}

// Feed delivers events in order, one at a time. Next and Done are called
// from one goroutine; Close ends it.
type Feed interface {
	// Next returns the next event, waiting for one until ctx ends.
	Next(ctx context.Context) (FeedEvent, error)
	// Done records that ev was handled (a run started for it, or it was
	// ignored or dead-lettered): a feed opened again starts after it. An
	// event not marked Done is delivered again.
	Done(ctx context.Context, ev FeedEvent) error
	Close() error
}

// FeedEvent is one event of a feed.
type FeedEvent struct {
	// ID identifies the event for good ("orders/3@1200"): a run request
	// id is made of it, so an event delivered twice starts one run.
	ID string
	// Source says where it came from, for people ("kafka topic orders").
	Source  string
	Data    []byte
	Headers map[string]string
	// Time is when the system stored it (zero when unknown).
	Time time.Time
	// Position is the feed's own, opaque to the leader.
	Position any
}

// HasFeed reports whether kind delivers events for triggers.
func (r *Registry) HasFeed(kind string) bool {
	e, ok := r.kinds[kind]
	return ok && e.feed != nil && e.feed.Open != nil
}

// ValidateFeed checks a trigger feed's configuration of kind without I/O.
func (r *Registry) ValidateFeed(kind string, config json.RawMessage) error {
	if !r.HasFeed(kind) {
		return &FieldError{Msg: "kind " + kind + " delivers no events for triggers"}
	}
	if v := r.kinds[kind].feed.Validate; v != nil {
		return v(config)
	}
	return nil
}

// OpenFeed expands the `${ENV}` references of config from the process
// environment and opens the feed of kind.
func (r *Registry) OpenFeed(ctx context.Context, kind string, config json.RawMessage, name string) (Feed, error) {
	if !r.HasFeed(kind) {
		return nil, Permanent(&FieldError{Msg: "kind " + kind + " delivers no events for triggers"})
	}
	expanded, err := r.expand(config)
	if err != nil {
		return nil, Permanent(err)
	}
	f, err := r.kinds[kind].feed.Open(ctx, expanded, name)
	return f, r.ScrubError(err)
}
