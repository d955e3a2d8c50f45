package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// waitStored polls SLUICE_CDC every 5 ms until it holds want messages, or
// until stop delivers (a Reader that stopped).
func (b *bench) waitStored(ctx context.Context, want int64, stop <-chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := b.mon.Info(ctx)
		if err != nil {
			return err
		}
		if int64(info.State.Msgs) >= want {
			return nil
		}
		select {
		case err := <-stop:
			return fmt.Errorf("stopped early: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// eventCounter follows SLUICE_CDC from its first message with a
// headers-only ordered consumer on the monitoring connection and adds up
// the messages' Sluice-Events headers: the events JetStream stored (it
// delivers a message only once stored). It tells when they reach want.
type eventCounter struct {
	want    int64
	cc      jetstream.ConsumeContext
	reached chan struct{} // closed when the sum reached want, or on err

	mu  sync.Mutex
	sum int64
	at  time.Time // when the sum reached want
	err error
}

// countEvents starts an eventCounter on SLUICE_CDC, which should be empty.
func (b *bench) countEvents(ctx context.Context, want int64) (*eventCounter, error) {
	c := &eventCounter{want: want, reached: make(chan struct{})}
	oc, err := b.mon.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("event counter: %w", err)
	}
	if c.cc, err = oc.Consume(c.record); err != nil {
		return nil, fmt.Errorf("event counter: %w", err)
	}
	return c, nil
}

func (c *eventCounter) record(m jetstream.Msg) {
	now := time.Now()
	n, err := eventsHeader(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || !c.at.IsZero() {
		return
	}
	if err != nil {
		c.err = err
		close(c.reached)
		return
	}
	if c.sum += int64(n); c.sum >= c.want {
		c.at = now
		close(c.reached)
	}
}

// wait waits until the stored events reach want and returns when they did,
// or until stop delivers (a Reader that stopped).
func (c *eventCounter) wait(ctx context.Context, stop <-chan error) (time.Time, error) {
	select {
	case <-c.reached:
	case err := <-stop:
		return time.Time{}, fmt.Errorf("stopped early: %v", err)
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		return time.Time{}, fmt.Errorf("%d of %d events stored: %w", c.sum, c.want, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at, c.err
}

// stop stops the consumer, once; a nil counter is left alone.
func (c *eventCounter) stop() {
	if c != nil && c.cc != nil {
		c.cc.Stop()
		c.cc = nil
	}
}

// eventsHeader returns a message's Sluice-Events header.
func eventsHeader(m jetstream.Msg) (int, error) {
	h := m.Headers().Get(protocol.HeaderEvents)
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("message %s: %s header %q, want a positive count", m.Headers().Get(jetstream.MsgIDHeader), protocol.HeaderEvents, h)
	}
	return n, nil
}

// readStream reads every message of SLUICE_CDC in order, with an ordered
// consumer on the monitoring connection, calls fn on each, and returns the
// stream's state as it was before reading.
func (b *bench) readStream(ctx context.Context, fn func(jetstream.Msg) error) (jetstream.StreamState, error) {
	info, err := b.mon.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	state := info.State
	if state.Msgs == 0 {
		return state, nil
	}
	oc, err := b.mon.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return state, err
	}
	it, err := oc.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return state, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return state, fmt.Errorf("read SLUICE_CDC back: %w", err)
		}
		if err := fn(m); err != nil {
			return state, err
		}
		md, err := m.Metadata()
		if err != nil {
			return state, err
		}
		if md.Sequence.Stream >= state.LastSeq {
			return state, nil
		}
	}
}

// tally checks the messages of SLUICE_CDC read back: every change of every
// transaction exactly once, that is, per commit LSN the index spans of the
// messages ([first, first+events), from their Nats-Msg-Id and
// Sluice-Events) tile [0, changes of the transaction), and counts them.
type tally struct {
	spans         map[string][][2]int // by commit LSN: first index, events
	msgs, events  int64
	maxEvents     int
	ins, upd, del int64
}

func (t *tally) add(commitLSN string, first, n int) {
	if t.spans == nil {
		t.spans = map[string][][2]int{}
	}
	t.spans[commitLSN] = append(t.spans[commitLSN], [2]int{first, n})
	t.msgs++
	t.events += int64(n)
	t.maxEvents = max(t.maxEvents, n)
}

// check checks the tally against the workload and the stream's state as
// read, and records the stream's figures in res.
func (t *tally) check(wl *workload, state jetstream.StreamState, res *decodeResult) error {
	if t.msgs != int64(state.Msgs) {
		return fmt.Errorf("verify: read %d messages back, SLUICE_CDC holds %d", t.msgs, state.Msgs)
	}
	if t.events != wl.Changes || t.ins != wl.Inserts || t.upd != wl.Updates || t.del != wl.Deletes {
		return fmt.Errorf("verify: SLUICE_CDC holds %d events (%d inserts, %d updates, %d deletes), want %d (%d, %d, %d)",
			t.events, t.ins, t.upd, t.del, wl.Changes, wl.Inserts, wl.Updates, wl.Deletes)
	}
	if int64(len(t.spans)) != wl.Transactions {
		return fmt.Errorf("verify: events of %d transactions, want %d", len(t.spans), wl.Transactions)
	}
	for commit, spans := range t.spans {
		slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
		next := 0
		for _, s := range spans {
			if s[0] != next {
				return fmt.Errorf("verify: transaction %s: a message starts at index %d, want %d (an event twice or missing)", commit, s[0], next)
			}
			next = s[0] + s[1]
		}
	}
	res.streamBytes, res.messages, res.maxEvents = int64(state.Bytes), t.msgs, t.maxEvents
	return nil
}

// parseMsgID splits a Nats-Msg-Id of protocol.CDCMsgID into its commit LSN
// and index, and checks its slot.
func parseMsgID(id, slot string) (commitLSN string, index int, err error) {
	parts := strings.Split(id, ":")
	if len(parts) == 3 && parts[0] == slot {
		if index, err = strconv.Atoi(parts[2]); err == nil && index >= 0 {
			return parts[1], index, nil
		}
	}
	return "", 0, fmt.Errorf("verify: Nats-Msg-Id %q, want %s:<commit LSN>:<index>", id, slot)
}
