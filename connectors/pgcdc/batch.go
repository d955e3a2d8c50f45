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

// probeLastSeq is the Nats-Expected-Last-Sequence of a probe: no stream
// reaches it, so JetStream refuses a probe unless its Nats-Msg-Id is a
// duplicate, which it checks first.
const probeLastSeq = "4611686018427387904"

// errProbeRefused reports that a probe's message is not stored yet.
var errProbeRefused = errors.New("probe refused: the message is not stored")

// ack is the acknowledgement of one publish to SLUICE_CDC: of a message
// alone, or of an atomic batch of messages (the ack of its commit),
// shared by the flights of every message it covers. f is nil while the
// batch is gathered and not sent yet. With probe set, f is the ack of a
// probe of the last of those messages (see sendGathered).
type ack struct {
	f     jetstream.PubAckFuture
	probe []*nats.Msg
	id    string // the Nats-Msg-Id of its (first) message, for errors
	ok    bool
	dup   bool // stored before: JetStream dropped this copy (Nats-Msg-Id)
	err   error
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
		return false, a.failed(err)
	default:
		return false, nil
	}
}

// failed records the error of a publish, or returns errProbeRefused when
// a probe was refused because its message is not stored.
func (a *ack) failed(err error) error {
	var api *jetstream.APIError
	if a.probe != nil && errors.As(err, &api) &&
		(api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return errProbeRefused
	}
	a.err = fmt.Errorf("publish %s: %w", a.id, err)
	return a.err
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
		return a.failed(err)
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
// lets the Reader publish atomic batches from then on. Until then it
// republishes what an earlier Run may have stored already, and an atomic
// batch holding such a message would be refused whole: the messages
// gathered meanwhile are probed instead (see sendGathered). The messages
// of a slot in SLUICE_CDC are always a prefix of what it published (one
// publish in flight at a time, a batch stored whole or not at all), so
// every message after one that was new is new too, and every message
// before one that was stored is stored.
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
		done, err := r.check(ctx, st, st.flying)
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

// check reports without blocking whether a's publish is acknowledged; a
// probe refused first publishes its messages (publishRefused, which
// blocks).
func (r *Reader) check(ctx context.Context, st *streamState, a *ack) (bool, error) {
	ok, err := a.poll()
	if errors.Is(err, errProbeRefused) {
		if err := r.publishRefused(ctx, st, a); err != nil {
			return false, err
		}
		return a.poll()
	}
	return ok, err
}

// await waits, at most AckTimeout, until a's publish is acknowledged; a
// probe refused first publishes its messages (publishRefused).
func (r *Reader) await(ctx context.Context, st *streamState, a *ack) error {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	err := a.wait(wctx, r.cfg.AckTimeout)
	cancel()
	if errors.Is(err, errProbeRefused) {
		if err := r.publishRefused(ctx, st, a); err != nil {
			return err
		}
		return r.await(ctx, st, a)
	}
	return err
}

// publishRefused publishes the messages of a refused probe: they are not
// all stored. One at a time, each awaited, until JetStream stores one it
// did not hold (those before it were stored); the rest go as one atomic
// batch, under a.
func (r *Reader) publishRefused(ctx context.Context, st *streamState, a *ack) error {
	msgs := a.probe
	a.probe, a.f = nil, nil
	for i, m := range msgs {
		if st.batching {
			return r.publishMsgs(ctx, st, a, msgs[i:])
		}
		f, err := publishAsync(ctx, r.js, m, func() bool { return false }, nil)
		if err != nil {
			return err
		}
		one := &ack{f: f, id: m.Header.Get(jetstream.MsgIDHeader)}
		if err := r.await(ctx, st, one); err != nil {
			return err
		}
		st.settled(one)
	}
	a.ok = true
	return nil
}

// waitFlying waits, at most AckTimeout, for the publish in flight.
func (r *Reader) waitFlying(ctx context.Context, st *streamState) error {
	if st.flying == nil {
		return nil
	}
	if err := r.await(ctx, st, st.flying); err != nil {
		return err
	}
	st.flying = nil
	return nil
}

// sendGathered publishes the gathered messages, no publish being in
// flight (see publishMsgs). Before this Run stored a new message (see
// settled), several are probed instead: their last one alone, empty,
// under its Nats-Msg-Id and a Nats-Expected-Last-Sequence no stream
// reaches. JetStream acks a duplicate, and then every one of them is
// stored; else it refuses the probe, stores nothing, and they are
// published (publishRefused). A Run restarted on an unconfirmed tail
// gets through it at one round trip per batch, not per message.
func (r *Reader) sendGathered(ctx context.Context, st *streamState) error {
	g := &st.gather
	msgs, a := g.msgs, g.a
	*g = gathered{}
	if st.batching || len(msgs) == 1 {
		return r.publishMsgs(ctx, st, a, msgs)
	}
	last := msgs[len(msgs)-1]
	probe := &nats.Msg{Subject: last.Subject, Header: nats.Header{
		jetstream.MsgIDHeader:           last.Header[jetstream.MsgIDHeader],
		jetstream.ExpectedStreamHeader:  []string{protocol.StreamCDC},
		jetstream.ExpectedLastSeqHeader: []string{probeLastSeq},
	}}
	f, err := publishAsync(ctx, r.js, probe, func() bool { return false }, nil)
	if err != nil {
		return err
	}
	a.f, a.probe = f, msgs
	st.flying = a
	return nil
}

// publishMsgs publishes msgs under a, no publish being in flight: one
// alone as it is, several as one atomic batch whose commit's ack
// acknowledges them all. Only the commit asks for a reply: a message
// before it that is lost (a stream leader changing) makes the server
// refuse the batch.
func (r *Reader) publishMsgs(ctx context.Context, st *streamState, a *ack, msgs []*nats.Msg) error {
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
	a.id = msgs[0].Header.Get(jetstream.MsgIDHeader)
	if len(msgs) > 1 {
		a.id = fmt.Sprintf("%s (the first of an atomic batch of %d messages)", a.id, len(msgs))
	}
	a.f = f
	st.flying = a
	return nil
}
