package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// cdcMsg is a SLUICE_CDC message of n events with its Nats-Msg-Id: the
// headers jetstream.WithExpectStream(protocol.StreamCDC) would add are set
// directly, without an option and its allocations per message.
func cdcMsg(subject, id string, data []byte, n int) *nats.Msg {
	return &nats.Msg{Subject: subject, Data: data, Header: nats.Header{
		jetstream.MsgIDHeader:          []string{id},
		jetstream.ExpectedStreamHeader: []string{protocol.StreamCDC},
		protocol.HeaderEvents:          []string{strconv.Itoa(n)},
	}}
}

// publishAsync publishes msg asynchronously. While nats.go's own bound of
// pending acks is full (nothing was sent) and the caller has messages of
// its own in flight (ours), it waits for the caller's oldest one
// (waitOldest) and tries again. nats.go keeps msg.Data until the ack (it
// publishes it again after a no-responders reply): the caller must not
// reuse it.
func publishAsync(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, ours func() bool, waitOldest func(context.Context) error) (jetstream.PubAckFuture, error) {
	for {
		f, err := js.PublishMsgAsync(msg)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ours() {
			if err := waitOldest(ctx); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", msg.Header.Get(jetstream.MsgIDHeader), err)
		}
		return f, nil
	}
}
