package pgcdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// EventsKind is the kind of the sink connector that publishes snapshot rows
// as read events into SLUICE_CDC.
const EventsKind = "sluice_cdc"

// DefaultEventsInFlight is EventsConfig.MaxInFlight's default.
const DefaultEventsInFlight = 1000

// eventsAckTimeout bounds the wait for one event's JetStream ack.
const eventsAckTimeout = 30 * time.Second

// EventsConfig configures the sluice_cdc sink.
type EventsConfig struct {
	// Pipeline names the CDC pipeline whose subjects the read events go to,
	// sluice.cdc.<pipeline>.<schema>.<table>: the Reader's Config.Pipeline.
	Pipeline string `json:"pipeline"`
	// Slot is the CDC pipeline's slot, the first part of every event's
	// Nats-Msg-Id.
	Slot string `json:"slot"`
	// MaxInFlight bounds the events of one task published but not yet
	// acknowledged; 0 means DefaultEventsInFlight.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// MessageEvents is the most read events packed into one message (rows
	// of one chunk, in chunk order); 0 means DefaultMessageEvents, 1
	// publishes every row alone.
	MessageEvents int `json:"message_events,omitempty"`
}

// Validate checks the configuration without I/O. Errors are
// *connectors.FieldError naming the field.
func (c EventsConfig) Validate() error {
	if !protocol.ValidName(c.Pipeline) {
		return &connectors.FieldError{Field: "pipeline", Msg: fmt.Sprintf("pipeline %q is not a valid name", c.Pipeline)}
	}
	if !slotNameRE.MatchString(c.Slot) {
		return &connectors.FieldError{Field: "slot", Msg: fmt.Sprintf("slot %q: want 1-63 of [a-z0-9_]", c.Slot)}
	}
	if c.MaxInFlight < 0 {
		return &connectors.FieldError{Field: "max_in_flight", Msg: "must not be negative (0 means 1000)"}
	}
	if c.MessageEvents < 0 {
		return &connectors.FieldError{Field: "message_events", Msg: fmt.Sprintf("must not be negative (0 means %d)", DefaultMessageEvents)}
	}
	return nil
}

// ParseEventsConfig decodes and validates a sluice_cdc sink configuration;
// unknown fields are errors.
func ParseEventsConfig(config json.RawMessage) (EventsConfig, error) {
	var c EventsConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateEventsConfig checks a sluice_cdc sink configuration without I/O.
func ValidateEventsConfig(config json.RawMessage) error {
	_, err := ParseEventsConfig(config)
	return err
}

// SnapshotMsgID is the Nats-Msg-Id of a message of read events:
// <slot>:snapshot:<lsn>:<schema>.<table>:<chunk>:<row>, lsn being the
// snapshot's consistent LSN and row the 1-based number in its chunk of the
// message's first row. A chunk read again is packed into the same messages
// with the same ids, so JetStream drops the messages it stored within its
// duplicate window; another snapshot (a retried one, or a pipeline applied
// again after a delete, on a slot of the same name) has another consistent
// LSN, so its messages are never taken for the first one's.
func SnapshotMsgID(slot, lsn, schema, table, chunk string, row int64) string {
	return fmt.Sprintf("%s:snapshot:%s:%s.%s:%s:%d", slot, lsn, schema, table, chunk, row)
}

// SnapshotBeginMsgID is the Nats-Msg-Id of the snapshot event of a table
// (protocol.OpSnapshot): <slot>:snapshot:<lsn>:<schema>.<table>:begin.
// Every chunk of the table publishes it before its rows, under the same
// id: JetStream stores the first and drops the others within its
// duplicate window, so the event precedes every read event of the table.
func SnapshotBeginMsgID(slot, lsn, schema, table string) string {
	return fmt.Sprintf("%s:snapshot:%s:%s.%s:begin", slot, lsn, schema, table)
}

// EventsSink publishes the rows of a snapshot source (SnapshotRow lines) as
// protocol.ChangeEvent{Op: read} into SLUICE_CDC, and each chunk's Begin
// line as its table's snapshot event (protocol.OpSnapshot). Its output goes straight
// to the stream: there is no staging place, and nothing to commit or roll
// back. A snapshot run that fails leaves the read events it published
// behind; the pipeline must then start over with a new slot, whose events
// supersede them for a consumer that applies the stream in order.
type EventsSink struct {
	cfg EventsConfig
	js  jetstream.JetStream
}

var _ connectors.Sink = (*EventsSink)(nil)

// NewEventsSink returns a sink publishing through js, which may be nil in a
// process that only plans and commits (the coordinator): OpenTask then
// fails. The SLUICE_CDC stream must exist (EnsureStream).
func NewEventsSink(cfg EventsConfig, js jetstream.JetStream) (*EventsSink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultEventsInFlight
	}
	if cfg.MessageEvents == 0 {
		cfg.MessageEvents = DefaultMessageEvents
	}
	return &EventsSink{cfg: cfg, js: js}, nil
}

// OpenTask starts publishing one task attempt's rows. It fails when the
// sink has no JetStream connection (it was registered with a nil one).
func (s *EventsSink) OpenTask(_ context.Context, t connectors.TaskRef) (connectors.TaskWriter, error) {
	if s.js == nil {
		return nil, fmt.Errorf("%s sink of task %s: this process registered the sink without a JetStream connection (it plans only); run the task on a worker", EventsKind, t.TaskID)
	}
	w := &eventsWriter{cfg: s.cfg, js: s.js, maxBytes: MaxMessageBytes}
	if len(t.Contract) > 0 {
		ct, err := openContract(t.Contract)
		if err != nil {
			return nil, connectors.Permanent(err)
		}
		w.contract = ct.Events()
	}
	if nc := s.js.Conn(); nc != nil {
		if mp := int(nc.MaxPayload()); mp > 0 && mp/2 < w.maxBytes {
			w.maxBytes = mp / 2
		}
	}
	return w, nil
}

// Commit does nothing: every task's events are already in the stream. It
// reports where they are.
func (s *EventsSink) Commit(_ context.Context, _ connectors.CommitRequest) (connectors.CommitResult, error) {
	return connectors.CommitResult{Location: s.location()}, nil
}

// Abort does nothing: events published by the run's tasks stay in the
// stream (see EventsSink).
func (s *EventsSink) Abort(context.Context, string) error { return nil }

// Close does nothing: the JetStream connection is the caller's.
func (s *EventsSink) Close() error { return nil }

func (s *EventsSink) location() string { return location(s.cfg.Pipeline) }

// location is where the events of a pipeline are:
// "stream SLUICE_CDC sluice.cdc.<pipeline>.>".
func location(pipeline string) string {
	return "stream " + protocol.StreamCDC + " " + strings.TrimSuffix(protocol.SubjectCDCAll, ">") + pipeline + ".>"
}

// eventsWriter publishes the events of one task attempt asynchronously,
// packed into messages of consecutive rows of one chunk, with at most
// cfg.MaxInFlight events awaiting their ack.
type eventsWriter struct {
	cfg      EventsConfig
	js       jetstream.JetStream
	maxBytes int
	futs     []flight // unacknowledged, oldest first
	inFlight int      // events in futs
	out      connectors.TaskOutput
	// contract is the pipeline's data contract, applied to every row
	// before its event is encoded; nil without one.
	contract *contract.Events
	// skipped counts the rows the contract's filter left out since the
	// first row of the message being packed, which stays one run of
	// the chunk's rows.
	skipped int64

	// the message being packed: rows of one chunk from row first on
	subject, lsn, schema, table, chunk string
	first                              int64
	data                               []byte
	n                                  int
}

// Write publishes one event per SnapshotRow line of b. A line that is not a
// SnapshotRow is a permanent *connectors.RowError.
func (w *eventsWriter) Write(ctx context.Context, b connectors.Batch) error {
	if b.Record != nil || b.Format != connectors.FormatJSONL {
		return connectors.Permanent(fmt.Errorf("%s sink: want JSONL snapshot rows (from a %s source), got a %s batch", EventsKind, SnapshotKind, b.Format))
	}
	raw := b.Raw
	var lines int64
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		lines++
		if err := w.add(ctx, line, b.Position, lines); err != nil {
			return err
		}
	}
	if lines != b.Rows {
		return fmt.Errorf("%s sink: batch at %s holds %d lines, says %d rows", EventsKind, b.Position, lines, b.Rows)
	}
	return nil
}

// add adds the read event of one SnapshotRow line to the message being
// packed, publishing that message first when it holds another chunk's
// rows, is full, or would grow past maxBytes.
func (w *eventsWriter) add(ctx context.Context, line []byte, position string, lineNo int64) error {
	var r SnapshotRow
	if err := json.Unmarshal(line, &r); err != nil {
		return &connectors.RowError{Location: position, Row: lineNo, Err: err}
	}
	if r.Begin {
		if r.Schema == "" || r.Table == "" || r.LSN == "" || r.N != 0 || r.Row != nil {
			return &connectors.RowError{Location: position, Row: lineNo, Err: errors.New("not a snapshot's begin line: schema, table and lsn are required, n and row must be left out")}
		}
		return w.begin(ctx, r, line)
	}
	if r.Schema == "" || r.Table == "" || r.Chunk == "" || r.LSN == "" || r.N <= 0 || r.Row == nil {
		return &connectors.RowError{Location: position, Row: lineNo, Err: errors.New("not a snapshot row: schema, table, chunk, lsn, n and row are required")}
	}
	ev := protocol.ChangeEvent{
		Op: protocol.OpRead, Pipeline: w.cfg.Pipeline, Database: r.Database, Schema: r.Schema, Table: r.Table,
		Key: r.Key, After: r.Row, LSN: r.LSN, CommitLSN: r.LSN, CommitTime: r.Time, Relation: r.Relation,
	}
	if w.contract != nil {
		keep, err := w.contract.Event(&ev)
		if err != nil {
			return &connectors.RowError{Location: position, Row: lineNo, Err: fmt.Errorf("contract: %w", err)}
		}
		if !keep {
			if w.n > 0 && r.N == w.first+int64(w.n)+w.skipped {
				w.skipped++
			}
			return nil
		}
	}
	data, err := ev.Encode()
	if err != nil {
		return connectors.Permanent(err)
	}
	if w.n > 0 && (w.lsn != r.LSN || w.schema != r.Schema || w.table != r.Table || w.chunk != r.Chunk || r.N != w.first+int64(w.n)+w.skipped ||
		w.n >= w.cfg.MessageEvents || len(w.data)+1+len(data) > w.maxBytes) {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	if w.n == 0 {
		w.subject, w.lsn, w.schema, w.table, w.chunk, w.first = protocol.CDCSubject(w.cfg.Pipeline, r.Schema, r.Table), r.LSN, r.Schema, r.Table, r.Chunk, r.N
		w.skipped = 0
	} else {
		w.data = append(w.data, '\n')
	}
	w.data = append(w.data, data...)
	w.n++
	w.out.Rows++
	w.out.Bytes += int64(len(data))
	if w.contract != nil {
		w.out.Checksum.Add(data) // never a sum over values the contract hides
	} else {
		w.out.Checksum.Add(line)
	}
	return nil
}

// begin publishes the snapshot event of a table (protocol.OpSnapshot), as
// a message of its own, after the message being packed, and waits for its
// ack: the rows that follow are published only once it is stored, so that
// it precedes them even when its first publish is lost with the stream's
// leader and published again (by the task's next attempt).
func (w *eventsWriter) begin(ctx context.Context, r SnapshotRow, line []byte) error {
	if err := w.flush(ctx); err != nil {
		return err
	}
	ev := protocol.ChangeEvent{
		Op: protocol.OpSnapshot, Pipeline: w.cfg.Pipeline, Database: r.Database, Schema: r.Schema, Table: r.Table,
		Key: r.Key, LSN: r.LSN, CommitLSN: r.LSN, CommitTime: r.Time,
	}
	data, err := ev.Encode()
	if err != nil {
		return connectors.Permanent(err)
	}
	w.subject, w.data, w.n = protocol.CDCSubject(w.cfg.Pipeline, r.Schema, r.Table), data, 1
	if err := w.publish(ctx, SnapshotBeginMsgID(w.cfg.Slot, r.LSN, r.Schema, r.Table)); err != nil {
		return err
	}
	for len(w.futs) > 0 {
		if err := w.waitOldest(ctx); err != nil {
			return err
		}
	}
	// The begin event is a marker, not a row of the table: the task's
	// rows (and the snapshot's progress) count the table's rows only.
	w.out.Bytes += int64(len(data))
	w.out.Checksum.Add(line)
	return nil
}

// flush publishes the message being packed, if it holds any row, once the
// events in flight leave room for its own.
func (w *eventsWriter) flush(ctx context.Context) error {
	if w.n == 0 {
		return nil
	}
	return w.publish(ctx, SnapshotMsgID(w.cfg.Slot, w.lsn, w.schema, w.table, w.chunk, w.first))
}

// publish publishes the message being packed under id, once the events in
// flight leave room for its own.
func (w *eventsWriter) publish(ctx context.Context, id string) error {
	for w.inFlight > 0 && w.inFlight+w.n > w.cfg.MaxInFlight {
		if err := w.waitOldest(ctx); err != nil {
			return err
		}
	}
	msg := cdcMsg(w.subject, id, w.data, w.n)
	f, err := publishAsync(ctx, w.js, msg, func() bool { return len(w.futs) > 0 }, w.waitOldest)
	if err != nil {
		return err
	}
	w.futs = append(w.futs, flight{a: &ack{f: f, id: id}, n: w.n})
	w.inFlight += w.n
	w.data = make([]byte, 0, min(cap(w.data), w.maxBytes+w.maxBytes/8))
	w.n = 0
	return nil
}

// waitOldest waits for the oldest unacknowledged message's ack.
func (w *eventsWriter) waitOldest(ctx context.Context) error {
	f := w.futs[0].a.f
	t := time.NewTimer(eventsAckTimeout)
	defer t.Stop()
	select {
	case <-f.Ok():
	case err := <-f.Err():
		return fmt.Errorf("publish %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err)
	case <-t.C:
		return fmt.Errorf("publish %s: no ack after %s", f.Msg().Header.Get(jetstream.MsgIDHeader), eventsAckTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	w.inFlight -= w.futs[0].n
	w.futs[0] = flight{}
	w.futs = w.futs[1:]
	return nil
}

// Close publishes the last message and waits until JetStream acknowledged
// every event of the attempt, and reports them: Rows events, Bytes their
// encoded size, Checksum over the SnapshotRow lines.
func (w *eventsWriter) Close(ctx context.Context) (connectors.TaskOutput, error) {
	if err := w.flush(ctx); err != nil {
		return connectors.TaskOutput{}, err
	}
	for len(w.futs) > 0 {
		if err := w.waitOldest(ctx); err != nil {
			return connectors.TaskOutput{}, err
		}
	}
	w.out.Location = location(w.cfg.Pipeline)
	return w.out, nil
}

// Abort stops waiting for acks. Events already published stay in the
// stream; a retried attempt publishes them again with the same ids, which
// JetStream drops within its duplicate window.
func (w *eventsWriter) Abort(context.Context) error {
	w.futs = nil
	w.data, w.n = nil, 0
	return nil
}
