package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/connectors"
)

// FeedConfig configures a trigger that reads a topic (trigger: {kafka:
// {topic, brokers}}): each record is an event whose value is its payload.
type FeedConfig struct {
	Cluster
	Topic string `json:"topic"`
	// Start is where the trigger starts reading when it has read nothing
	// yet: latest (the default: records produced from then on) or
	// earliest (every record the topic holds).
	Start string `json:"start,omitempty"`
}

// Validate checks the configuration without I/O.
func (c FeedConfig) Validate() error {
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if err := checkTopic("topic", c.Topic); err != nil {
		return err
	}
	switch c.Start {
	case "", startLatest, startEarliest:
	default:
		return &connectors.FieldError{Field: "start", Msg: fmt.Sprintf("%q is not latest or earliest", c.Start)}
	}
	return nil
}

func parseFeedConfig(raw json.RawMessage) (FeedConfig, error) {
	var c FeedConfig
	if err := connectors.DecodeConfig(raw, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateFeed checks a trigger feed's configuration without I/O.
func ValidateFeed(raw json.RawMessage) error {
	_, err := parseFeedConfig(raw)
	return err
}

// feed reads a topic as the consumer group name, committing a record's
// offset once the leader marked it done.
type feed struct {
	cl    *kgo.Client
	topic string
	buf   []*kgo.Record
}

func openFeed(_ context.Context, raw json.RawMessage, name string) (connectors.Feed, error) {
	c, err := parseFeedConfig(raw)
	if err != nil {
		return nil, err
	}
	reset := kgo.NewOffset().AtEnd()
	if c.Start == startEarliest {
		reset = kgo.NewOffset().AtStart()
	}
	cl, err := c.newClient(kgo.ConsumerGroup(name), kgo.ConsumeTopics(c.Topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(reset), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	return &feed{cl: cl, topic: c.Topic}, nil
}

// Next returns the next record as an event.
func (f *feed) Next(ctx context.Context) (connectors.FeedEvent, error) {
	for len(f.buf) == 0 {
		fs := f.cl.PollRecords(ctx, 100)
		if err := ctx.Err(); err != nil {
			return connectors.FeedEvent{}, err
		}
		var errs []error
		fs.EachError(func(t string, p int32, err error) { errs = append(errs, fmt.Errorf("%s/%d: %w", t, p, err)) })
		f.buf = fs.Records()
		if len(f.buf) == 0 && len(errs) > 0 {
			return connectors.FeedEvent{}, errors.Join(errs...)
		}
	}
	r := f.buf[0]
	f.buf = f.buf[1:]
	ev := connectors.FeedEvent{
		ID:     r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "@" + strconv.FormatInt(r.Offset, 10),
		Source: "kafka topic " + r.Topic, Data: r.Value, Headers: map[string]string{}, Time: r.Timestamp.UTC(), Position: r,
	}
	for _, h := range r.Headers {
		if _, ok := ev.Headers[h.Key]; !ok {
			ev.Headers[h.Key] = string(h.Value)
		}
	}
	return ev, nil
}

// Done commits the record's offset for the group.
func (f *feed) Done(ctx context.Context, ev connectors.FeedEvent) error {
	r, ok := ev.Position.(*kgo.Record)
	if !ok {
		return fmt.Errorf("event %s is not of this feed", ev.ID)
	}
	return f.cl.CommitRecords(ctx, r)
}

// Close leaves the group.
func (f *feed) Close() error {
	f.cl.Close()
	return nil
}
