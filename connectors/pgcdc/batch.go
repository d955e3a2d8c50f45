package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// The headers of a JetStream atomic batch (nats-server 2.12 and later):
// the server stores the messages of a batch together when its last one
// (the commit) arrives, or none of them.
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// Bounds of one atomic batch: the server's default most messages
// (max_batch_size), and a bound of its bytes.
const (
	maxBatchMessages = 1000
	maxBatchBytes    = 4 << 20
)

// ack is the acknowledgement of one publish to SLUICE_CDC: of a message
// alone, or of an atomic batch of messages (the ack of its commit),
// shared by the flights of every message it covers. f is nil while the
// batch is gathered and not sent yet.
type ack struct {
	f   jetstream.PubAckFuture
	id  string // the Nats-Msg-Id of its (first) message, for errors
	ok  bool
	dup bool // stored before: JetStream dropped this copy (Nats-Msg-Id)
	err error
}

// poll reports without blocking whether the ack arrived; err when the
// publish failed. Ok and Err are asked once each at most per call: each
// takes the publisher's lock and makes a channel on first use.
func (a *ack) poll() (bool, error) {
	if a.ok || a.err != nil || a.f == nil {
		return a.ok, a.err
	}
	select {
	case pa := <-a.f.Ok():
		a.ok, a.dup = true, pa.Duplicate
		return true, nil
	default:
	}
	select {
	case err := <-a.f.Err():
		a.err = fmt.Errorf("publish %s: %w", a.id, err)
		return false, a.err
	default:
		return false, nil
	}
}

// wait waits until the ack arrives, the publish fails or ctx ends; the
// ack must have been sent. timeout, when ctx's deadline ends the wait,
// is named in the error.
func (a *ack) wait(ctx context.Context, timeout time.Duration) error {
	if a.ok || a.err != nil {
		return a.err
	}
	select {
	case pa := <-a.f.Ok():
		a.ok, a.dup = true, pa.Duplicate
		return nil
	case err := <-a.f.Err():
		a.err = fmt.Errorf("publish %s: %w", a.id, err)
		return a.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && timeout > 0 {
			return fmt.Errorf("publish %s: no ack after %s", a.id, timeout)
		}
		return ctx.Err()
	}
}

// gathered are the messages packed while a publish was in flight, sent
// together once it is acknowledged (see Reader.gather).
type gathered struct {
	msgs  []*nats.Msg
	bytes int
	a     *ack
}

// atomicBatches reports whether the Reader may gather its messages into
// atomic batches: SLUICE_CDC is replicated (every publish waits for a
// round trip between its servers) and allows them. One stored alone
// costs the server a staging store of its own per batch, so an R1 stream
// gets one message at a time.
func (r *Reader) atomicBatches(ctx context.Context) bool {
	if r.cfg.NoBatches {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		r.log.Warn("cdc reader: no info of the stream, publishing one message at a time", "stream", protocol.StreamCDC, "err", err)
		return false
	}
	info := s.CachedInfo()
	return info != nil && info.Config.Replicas > 1 && info.Config.AllowAtomicPublish
}

// settled notes an ack that arrived: the first message of this Run that
// JetStream stored (not a duplicate of one an earlier Run published)
// lets the Reader gather messages into batches from then on. Until then
// it republishes, one at a time, what an earlier Run may have stored
// already: an atomic batch holding such a message would be refused whole.
// The messages of a slot in SLUICE_CDC are always a prefix of what it
// published (one publish in flight at a time, a batch stored whole or not
// at all), so every message after one that was new is new too.
func (st *streamState) settled(a *ack) {
	if st.batchable && !a.dup {
		st.batching = true
	}
}

// gather adds the message being packed, under the Nats-Msg-Id id, to the
// messages gathered while a publish is in flight (sent at once when none
// is): its flight shares the ack of their batch. A full batch first waits
// for the publish in flight, then goes.
func (r *Reader) gather(ctx context.Context, st *streamState, id string) error {
	p, g := &st.pack, &st.gather
	if len(g.msgs) > 0 && (len(g.msgs) >= maxBatchMessages || g.bytes+len(p.data) > maxBatchBytes) {
		if err := r.waitFlying(ctx, st); err != nil {
			return err
		}
		if err := r.sendGathered(ctx, st); err != nil {
			return err
		}
	}
	if g.a == nil {
		g.a = &ack{id: id}
	}
	g.msgs = append(g.msgs, cdcMsg(p.subject, id, p.data, p.n))
	g.bytes += len(p.data)
	st.futs = append(st.futs, flight{a: g.a, n: p.n})
	st.inFlight += p.n
	p.data = make([]byte, 0, min(cap(p.data), st.maxBytes+st.maxBytes/8))
	p.n = 0
	return r.pump(ctx, st)
}

// pump sends the gathered messages when no publish is in flight; it does
// not block.
func (r *Reader) pump(ctx context.Context, st *streamState) error {
	if len(st.gather.msgs) == 0 {
		return nil
	}
	if st.flying != nil {
		done, err := st.flying.poll()
		if err != nil {
			return err
		}
		if !done {
			return nil
		}
		st.flying = nil
	}
	return r.sendGathered(ctx, st)
}

// waitFlying waits, at most AckTimeout, for the publish in flight.
func (r *Reader) waitFlying(ctx context.Context, st *streamState) error {
	if st.flying == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	if err := st.flying.wait(ctx, r.cfg.AckTimeout); err != nil {
		return err
	}
	st.flying = nil
	return nil
}

// sendGathered publishes the gathered messages, no publish being in
// flight: one alone as it is, several as one atomic batch whose commit's
// ack acknowledges them all. Only the commit asks for a reply: a message
// before it that is lost (a stream leader changing) makes the server
// refuse the batch.
func (r *Reader) sendGathered(ctx context.Context, st *streamState) error {
	g := &st.gather
	msgs, a := g.msgs, g.a
	*g = gathered{}
	none := func() bool { return false }
	bid := ""
	if len(msgs) > 1 {
		bid = nuid.Next()
	}
	var f jetstream.PubAckFuture
	for i, m := range msgs {
		commit := i == len(msgs)-1
		if bid != "" {
			m.Header[batchIDHeader] = []string{bid}
			m.Header[batchSeqHeader] = []string{strconv.Itoa(i + 1)}
			if commit {
				m.Header[batchCommitHeader] = []string{"1"}
			}
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		var end func(error)
		if r.cfg.Trace != nil {
			n, _ := strconv.Atoi(m.Header.Get(protocol.HeaderEvents))
			_, end = r.cfg.Trace.StartBatch(ctx, connectors.BatchInfo{Events: n, Subject: m.Subject, MsgID: id})
		}
		var err error
		if commit {
			f, err = publishAsync(ctx, r.js, m, none, nil)
		} else if err = r.js.Conn().PublishMsg(m); err != nil {
			err = fmt.Errorf("publish %s: %w", id, err)
		}
		if end != nil {
			end(err)
		}
		if err != nil {
			return err
		}
	}
	if len(msgs) > 1 {
		a.id = fmt.Sprintf("%s (the first of an atomic batch of %d messages)", a.id, len(msgs))
	}
	a.f = f
	st.flying = a
	return nil
}
