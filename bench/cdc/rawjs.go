package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/protocol"
)

// rawPacker packs the raw pgoutput messages of the changes of each
// transaction into SLUICE_CDC messages as the Reader packs their events: a
// message holds consecutive changes of one table, at most limit of them and
// at most pgcdc.MaxMessageBytes (a single larger change goes alone), each
// as its length (4 bytes, big-endian) then the pgoutput message. It
// publishes each with PublishMsgAsync and the Reader's headers: the
// Nats-Msg-Id of its first change (protocol.CDCMsgID), the expected
// stream, and Sluice-Events. It does not bound the publishes in flight
// beyond nats.go's own bound: the floor of the Reader's publishing.
type rawPacker struct {
	js    jetstream.JetStream
	slot  string
	limit int
	// subjects holds the subject of each relation, by its ID, from the
	// Relation messages.
	subjects map[uint32]string
	expect   []string

	commitLSN string // of the transaction being received
	index     int    // of its next change

	// The message being packed: its subject, the index of its first
	// change, its change count and its records.
	subject  string
	first, n int
	data     []byte
}

// add adds a change of relation rel, the pgoutput message rec, to the
// message being packed, after publishing that message when it holds
// another table's changes, is full, or would grow past
// pgcdc.MaxMessageBytes with rec.
func (p *rawPacker) add(rel uint32, rec []byte) error {
	subject, ok := p.subjects[rel]
	if !ok {
		return fmt.Errorf("bare loop: change of relation %d before its Relation message", rel)
	}
	if p.n > 0 && (subject != p.subject || p.n >= p.limit) {
		if err := p.flush(); err != nil {
			return err
		}
	}
	if p.n == 0 {
		p.subject, p.first = subject, p.index
	}
	p.index++
	start := len(p.data)
	p.data = binary.BigEndian.AppendUint32(p.data, uint32(len(rec)))
	p.data = append(p.data, rec...)
	p.n++
	if p.n == 1 || len(p.data) <= pgcdc.MaxMessageBytes {
		return nil
	}
	// Too big with rec: publish the others, then start the next message
	// with it (flush leaves the published buffer as it is).
	moved := p.data[start:]
	p.data, p.n = p.data[:start], p.n-1
	if err := p.flush(); err != nil {
		return err
	}
	p.data = append(p.data, moved...)
	p.subject, p.first, p.n = subject, p.index-1, 1
	return nil
}

// flush publishes the message being packed, if it holds any change.
func (p *rawPacker) flush() error {
	if p.n == 0 {
		return nil
	}
	id := protocol.CDCMsgID(p.slot, p.commitLSN, p.first)
	msg := &nats.Msg{Subject: p.subject, Data: p.data, Header: nats.Header{
		jetstream.MsgIDHeader:          []string{id},
		jetstream.ExpectedStreamHeader: p.expect,
		protocol.HeaderEvents:          []string{strconv.Itoa(p.n)},
	}}
	for {
		_, err := p.js.PublishMsgAsync(msg)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue // nats.go's bound of pending acks stayed full: nothing was sent
		}
		if err != nil {
			return fmt.Errorf("bare loop: publish %s: %w", id, err)
		}
		break
	}
	// nats.go keeps msg.Data until the ack: the next message gets a buffer
	// of its own, as the Reader's do.
	p.data = make([]byte, 0, min(cap(p.data), pgcdc.MaxMessageBytes+pgcdc.MaxMessageBytes/8))
	p.n = 0
	return nil
}

// verifyRaw reads back what a bare loop published to SLUICE_CDC (see
// rawPacker) and checks it holds every change of the workload exactly
// once, at most limit per message; it records the stream's figures in res.
func (b *bench) verifyRaw(ctx context.Context, wl *workload, slot string, limit int, res *decodeResult) error {
	defer func(began time.Time) { res.checkSecs = time.Since(began).Seconds() }(time.Now())
	var t tally
	state, err := b.readStream(ctx, func(m jetstream.Msg) error {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		commit, first, err := parseMsgID(id, slot)
		if err != nil {
			return err
		}
		n, err := eventsHeader(m)
		if err != nil {
			return err
		}
		data := m.Data()
		if n > limit || (n > 1 && len(data) > pgcdc.MaxMessageBytes) {
			return fmt.Errorf("verify: message %s holds %d changes in %d bytes, over %d or %d", id, n, len(data), limit, pgcdc.MaxMessageBytes)
		}
		var rel uint32
		for k := range n {
			if len(data) < 4 || len(data)-4 < int(binary.BigEndian.Uint32(data)) {
				return fmt.Errorf("verify: message %s: change %d of %d is cut short", id, k+1, n)
			}
			rec := data[4 : 4+binary.BigEndian.Uint32(data)]
			data = data[4+len(rec):]
			msg, err := pglogrepl.Parse(rec)
			if err != nil {
				return fmt.Errorf("verify: message %s: change %d: %w", id, k+1, err)
			}
			var r uint32
			switch msg := msg.(type) {
			case *pglogrepl.InsertMessage:
				t.ins, r = t.ins+1, msg.RelationID
			case *pglogrepl.UpdateMessage:
				t.upd, r = t.upd+1, msg.RelationID
			case *pglogrepl.DeleteMessage:
				t.del, r = t.del+1, msg.RelationID
			default:
				return fmt.Errorf("verify: message %s: change %d is a %T", id, k+1, msg)
			}
			if k > 0 && r != rel {
				return fmt.Errorf("verify: message %s holds changes of relations %d and %d", id, rel, r)
			}
			rel = r
		}
		if len(data) > 0 {
			return fmt.Errorf("verify: message %s holds more than its %d changes", id, n)
		}
		t.add(commit, first, n)
		return nil
	})
	if err != nil {
		return err
	}
	if err := t.check(wl, state, res); err != nil {
		return err
	}
	return nil
}
