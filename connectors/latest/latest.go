// Package latest is the "latest" connector: the sink of a cdc_apply
// pipeline that keeps the latest state of every row of a cdc pipeline's
// tables in a JetStream stream, one subject per table and key and one
// message per subject (MaxMsgsPerSubject 1): key-based compaction of the
// change stream. A consumer rebuilds the current state of the tables by
// reading the stream's messages (one per live row, plus tombstones of
// deleted ones) instead of replaying the whole history of SLUICE_CDC.
//
// The stream of cdc pipeline <cdc> is SLUICE_LATEST_<CDC> (StreamName,
// StreamConfig), which the coordinator leader creates or updates before it
// grants the cdc_apply pipeline's lease, and purges subjects of when the
// Applier asks (a worker may only write into it), on the subjects
//
//	sluice.latest.<cdc>.<schema>.<table>.<key token>...   one per row
//	sluice.latest.<cdc>._applied.<cdc_apply pipeline>      the applier's progress
//
// A row's message is its last change event (protocol.ChangeEvent, JSON):
// an insert, update or snapshot read with the whole new row in after (an
// unchanged TOAST value taken from the row's previous state), or a delete
// (a tombstone: op delete, the key in before), with the header Sluice-Op.
// A truncate purges the table's subjects. An update that changes the key
// writes a tombstone on the old key's subject and the row on the new one.
// A table's snapshot event (protocol.OpSnapshot at position L) of a later
// position than the table's last one starts the table over: its subjects
// are purged, and the snapshot's read events (at L) write its rows again;
// the marker again (each chunk of a snapshot sends it), an earlier one, or
// a read event of an earlier snapshot (a failed attempt's) change nothing.
// Each table's last snapshot position is kept with the applied position.
//
// Subjects: each key column's value is one token (Token: letters, digits,
// '-' and '_' as they are, every other byte as %XX; "%" the empty string,
// "%%" NULL), in the key's column order, after the schema and table
// escaped the same way. NATS limits a subject's length (the server's
// max_control_line, 4 KiB by default): a key whose tokens pass
// MaxKeyBytes (512) is written as one token "#<sha256>", so such a row is
// found by its message's key, not by its subject. A table without key
// columns cannot be compacted by key: its events fail the apply.
//
// Exactly once in effect: a batch's row messages are published (and
// acknowledged) before its last stream sequence (and the tables' snapshot
// positions, as JSON: position) is written on the _applied subject; a batch applied again after a crash publishes the
// same rows again, in order, so the latest state ends the same (a reader
// may meanwhile see a row go back to a state of the batch and forward
// again).
package latest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Kind is the connector kind this package registers.
const Kind = "latest"

// HeaderOp carries a row message's operation.
const HeaderOp = "Sluice-Op"

// maxInFlight bounds the row messages published and not yet acknowledged.
const maxInFlight = 4096

// Config configures the latest-state stream: the sink of a cdc_apply
// pipeline, {kind: latest, replicas: N, max_bytes: N}.
type Config struct {
	// Replicas of the stream; 0 means 1 (3 in a NATS cluster of three).
	Replicas int `json:"replicas,omitempty"`
	// MaxBytes caps the stream; 0 means DefaultMaxBytes. A full stream
	// refuses new rows: the pipeline's apply fails and says so, no row's
	// state is dropped.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// DefaultMaxBytes is the default cap of a latest-state stream.
const DefaultMaxBytes int64 = 1 << 30

// ParseConfig decodes and checks a configuration without I/O.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := connectors.DecodeConfig(raw, &c); err != nil {
		return c, err
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return c, &connectors.FieldError{Field: "replicas", Msg: fmt.Sprintf("want 1 to 5, not %d", c.Replicas)}
	}
	if c.MaxBytes < 0 {
		return c, &connectors.FieldError{Field: "max_bytes", Msg: fmt.Sprintf("want a number of bytes, not %d", c.MaxBytes)}
	}
	return c, nil
}

// Register adds the "latest" connector (a cdc_apply target) to reg.
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{Kind: Kind, CDCTarget: &connectors.CDCTarget{
		Validate: func(raw json.RawMessage) error {
			_, err := ParseConfig(raw)
			return err
		},
		Open: open,
		Stream: func(req connectors.StreamRequest) (jetstream.StreamConfig, error) {
			cfg, err := ParseConfig(req.Config)
			if err != nil {
				return jetstream.StreamConfig{}, err
			}
			if up := req.Settings.Upstream; !protocol.ValidName(up) {
				return jetstream.StreamConfig{}, fmt.Errorf("latest: upstream %q is not a pipeline name", up)
			}
			return StreamConfig(req.Settings.Upstream, cfg), nil
		},
	}})
}

// StreamConfig is the configuration of the latest-state stream of cdc
// pipeline upstream. The coordinator leader creates or updates the stream
// (CDCTarget.Stream): the Applier only writes into it.
func StreamConfig(upstream string, cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              StreamName(upstream),
		Description:       "Sluice: the latest state of every row of cdc pipeline " + upstream,
		Subjects:          []string{SubjectPrefix + upstream + ".>"},
		MaxMsgsPerSubject: 1,
		Storage:           jetstream.FileStorage,
		Replicas:          max(cfg.Replicas, 1),
		MaxBytes:          cmp.Or(cfg.MaxBytes, DefaultMaxBytes),
		// A row's older state is replaced (MaxMsgsPerSubject); a full
		// stream refuses new rows rather than drop another row's state.
		Discard: jetstream.DiscardNew,
	}
}

func open(ctx context.Context, req connectors.StreamRequest) (connectors.Applier, error) {
	if _, err := ParseConfig(req.Config); err != nil {
		return nil, err
	}
	up := req.Settings.Upstream
	if !protocol.ValidName(up) || !protocol.ValidName(req.Pipeline) {
		return nil, connectors.Permanent(fmt.Errorf("latest: upstream %q or pipeline %q is not a pipeline name", up, req.Pipeline))
	}
	if req.JS == nil {
		return nil, connectors.Permanent(errors.New("latest: no JetStream connection"))
	}
	a, err := NewApplier(ctx, req.JS, up, req.Pipeline, req.Log)
	if err != nil {
		return nil, err
	}
	a.purge = req.Purge
	return a, nil
}

// Applier writes the latest state of the rows of cdc pipeline upstream's
// tables into its latest-state stream (see the package documentation).
type Applier struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	upstream string
	pipeline string
	log      *slog.Logger
	// purge, when set, purges subjects of the stream through the
	// coordinator leader (connectors.StreamRequest.Purge).
	purge func(ctx context.Context, subject string) error
}

var _ connectors.Applier = (*Applier)(nil)

// NewApplier returns the Applier of cdc_apply pipeline pipeline into the
// latest-state stream of upstream, which must exist (StreamConfig: the
// coordinator leader creates it before it grants the pipeline's lease). It
// purges through js.
func NewApplier(ctx context.Context, js jetstream.JetStream, upstream, pipeline string, log *slog.Logger) (*Applier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := StreamName(upstream)
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("latest: stream %s not found: the coordinator leader creates it when it grants the pipeline's lease", name)
	}
	if err != nil {
		return nil, fmt.Errorf("latest: look up stream %s: %w", name, err)
	}
	return &Applier{js: js, stream: s, upstream: upstream, pipeline: pipeline, log: log}, nil
}

// position is the message on the pipeline's _applied subject: the last
// stream sequence applied, and the position of each table's last snapshot
// (by the table's subject, TableSubject).
type position struct {
	Applied   uint64            `json:"applied"`
	Snapshots map[string]uint64 `json:"snapshots,omitempty"`
}

// position reads the pipeline's position; the zero one when none is
// written.
func (a *Applier) position(ctx context.Context) (position, error) {
	var p position
	m, err := a.stream.GetLastMsgForSubject(ctx, offsetSubject(a.upstream, a.pipeline))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("latest: read applied position: %w", err)
	}
	if err := json.Unmarshal(m.Data, &p); err != nil {
		return p, fmt.Errorf("latest: applied position %q: %w", m.Data, err)
	}
	return p, nil
}

// Applied returns the sequence on the pipeline's _applied subject.
func (a *Applier) Applied(ctx context.Context) (uint64, error) {
	p, err := a.position(ctx)
	return p.Applied, err
}

// Apply writes the events after the applied position: each row's new
// state (or tombstone) on its subject, in order, then the position.
func (a *Applier) Apply(ctx context.Context, events []connectors.Event) error {
	pos, err := a.position(ctx)
	if err != nil {
		return err
	}
	if events = connectors.EventsAfter(events, pos.Applied); len(events) == 0 {
		return nil
	}
	if pos.Snapshots == nil {
		pos.Snapshots = map[string]uint64{}
	}
	b := batch{a: a, rows: map[string]protocol.Row{}, snapshots: pos.Snapshots}
	for _, ev := range events {
		if err := b.apply(ctx, ev.ChangeEvent); err != nil {
			return fmt.Errorf("latest: event %d (%s %s.%s): %w", ev.Seq, ev.Op, ev.Schema, ev.Table, err)
		}
	}
	if err := b.flush(ctx); err != nil {
		return err
	}
	pos.Applied = events[len(events)-1].Seq
	data, err := json.Marshal(pos)
	if err != nil {
		return err
	}
	if _, err := a.js.Publish(ctx, offsetSubject(a.upstream, a.pipeline), data); err != nil {
		return fmt.Errorf("latest: write applied position %d: %w", pos.Applied, err)
	}
	return nil
}

// Close releases nothing: the JetStream connection is the worker's.
func (a *Applier) Close() error { return nil }

// batch is one Apply: the publications in flight, the rows written in it
// by subject (for an unchanged TOAST value of a later update), and the
// position of each table's last snapshot.
type batch struct {
	a         *Applier
	inFlight  []jetstream.PubAckFuture
	rows      map[string]protocol.Row
	snapshots map[string]uint64
}

func (b *batch) apply(ctx context.Context, ev protocol.ChangeEvent) error {
	a := b.a
	switch ev.Op {
	case protocol.OpTruncate:
		return b.purge(ctx, ev)
	case protocol.OpSnapshot, protocol.OpRead:
		lsn, err := protocol.ParseLSN(ev.LSN)
		if err != nil {
			return connectors.Permanent(err)
		}
		table := TableSubject(a.upstream, ev.Schema, ev.Table)
		last := b.snapshots[table]
		if ev.Op == protocol.OpRead && lsn < last {
			return nil // a row of an earlier, superseded snapshot
		}
		if ev.Op == protocol.OpSnapshot {
			if lsn <= last {
				return nil // the marker again, or an earlier snapshot's
			}
			b.snapshots[table] = lsn
			return b.purge(ctx, ev)
		}
	case protocol.OpDelete:
		subj, err := rowSubject(a.upstream, ev, ev.Before)
		if err != nil {
			return err
		}
		delete(b.rows, subj)
		return b.publish(ctx, subj, ev)
	case protocol.OpInsert, protocol.OpUpdate:
	default:
		return connectors.Permanent(fmt.Errorf("unknown operation %q", ev.Op))
	}
	subj, err := rowSubject(a.upstream, ev, ev.After)
	if err != nil {
		return err
	}
	if ev.Op == protocol.OpUpdate && ev.Before != nil {
		if old, err := rowSubject(a.upstream, ev, ev.Before); err == nil && old != subj {
			// The key changed: the old key's row is gone.
			gone := ev
			gone.Op, gone.After = protocol.OpDelete, nil
			delete(b.rows, old)
			if err := b.publish(ctx, old, gone); err != nil {
				return err
			}
		}
	}
	row, cloned := ev.After, false
	for col, v := range ev.After {
		if !v.Unchanged {
			continue
		}
		prev, err := b.previous(ctx, subj)
		if err != nil {
			return err
		}
		if pv, ok := prev[col]; ok && !pv.Unchanged {
			if !cloned {
				row, cloned = cloneRow(ev.After), true
			}
			row[col] = pv
		} else {
			a.log.Warn("latest: an unchanged TOAST value without a previous state of its row", "subject", subj, "column", col)
		}
	}
	ev.After = row
	b.rows[subj] = row
	return b.publish(ctx, subj, ev)
}

// purge removes every row of the event's table: its subjects in the
// stream, once the publications in flight are stored, and its rows of
// the batch.
func (b *batch) purge(ctx context.Context, ev protocol.ChangeEvent) error {
	if err := b.flush(ctx); err != nil {
		return err
	}
	prefix := TableSubject(b.a.upstream, ev.Schema, ev.Table)
	for s := range b.rows {
		if strings.HasPrefix(s, prefix+".") {
			delete(b.rows, s)
		}
	}
	purge := func(ctx context.Context, subject string) error {
		return b.a.stream.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}
	if b.a.purge != nil {
		purge = b.a.purge
	}
	if err := purge(ctx, prefix+".>"); err != nil {
		return fmt.Errorf("purge %s: %w", prefix, err)
	}
	return nil
}

// previous returns the latest state of the row on subj: written in this
// batch, or stored in the stream; nil when there is none.
func (b *batch) previous(ctx context.Context, subj string) (protocol.Row, error) {
	if r, ok := b.rows[subj]; ok {
		return r, nil
	}
	if err := b.flush(ctx); err != nil {
		return nil, err
	}
	m, err := b.a.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the state of %s: %w", subj, err)
	}
	var prev protocol.ChangeEvent
	if err := json.Unmarshal(m.Data, &prev); err != nil {
		return nil, fmt.Errorf("the state of %s: %w", subj, err)
	}
	return prev.After, nil
}

func cloneRow(r protocol.Row) protocol.Row {
	out := make(protocol.Row, len(r))
	for k, v := range r {
		out[k] = v
	}
	return out
}

func (b *batch) publish(ctx context.Context, subj string, ev protocol.ChangeEvent) error {
	data, err := ev.Encode()
	if err != nil {
		return connectors.Permanent(err)
	}
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(HeaderOp, string(ev.Op))
	f, err := b.a.js.PublishMsgAsync(m)
	if err != nil {
		return fmt.Errorf("publish %s: %w", subj, err)
	}
	b.inFlight = append(b.inFlight, f)
	if len(b.inFlight) >= maxInFlight {
		return b.flush(ctx)
	}
	return nil
}

// flush waits until every publication in flight is acknowledged.
func (b *batch) flush(ctx context.Context) error {
	for _, f := range b.inFlight {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.inFlight = b.inFlight[:0]
	return nil
}

// rowSubject returns the subject of the row whose values row holds (the
// event's key columns in it).
func rowSubject(upstream string, ev protocol.ChangeEvent, row protocol.Row) (string, error) {
	if len(ev.Key) == 0 {
		return "", connectors.Permanent(fmt.Errorf("table %s.%s has no key columns: its rows cannot be kept by key", ev.Schema, ev.Table))
	}
	key := make([]protocol.Value, len(ev.Key))
	for i, col := range ev.Key {
		v, ok := row[col]
		if !ok || v.Unchanged {
			return "", connectors.Permanent(fmt.Errorf("the event holds no value of key column %q", col))
		}
		key[i] = v
	}
	return Subject(upstream, ev.Schema, ev.Table, key), nil
}
