package cdcapply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Event, Applier and HourCloser are the cdc_apply part of the connector
// contract (connectors.Event, connectors.Applier, connectors.HourCloser).
type (
	Event      = connectors.Event
	Applier    = connectors.Applier
	HourCloser = connectors.HourCloser
)

// Config configures Run.
type Config struct {
	// Pipeline is the cdc_apply pipeline's name: it names the durable
	// consumer "cdc_apply_<pipeline>" and the offset record.
	Pipeline string
	// Upstream is the cdc pipeline whose events are applied: the filter
	// subject is sluice.cdc.<upstream>.>.
	Upstream string
	// BatchSize is the most events per Apply; 0 means 1000. A batch holds
	// whole messages, and at least one: a message of more events than
	// BatchSize is a batch of its own.
	BatchSize int
	// BatchWait is the longest wait to fill a batch; 0 means 200ms. Run
	// returns within about BatchWait after its context ends.
	BatchWait time.Duration
	// CheckInterval is how often Run reads the consumer's pending count and
	// calls CloseHours; 0 means 2s.
	CheckInterval time.Duration
	// Transform, when set, is applied to each batch before the Applier
	// sees it (a pipeline's data contract): it returns the events to
	// apply, which may be fewer (a filter) or changed, in stream order. An
	// error stops Run as an Apply error does. A batch it leaves empty is
	// acknowledged without an Apply; its messages are delivered again
	// after a restart, and left out again.
	Transform func([]Event) ([]Event, error)
	// Trace, when set, traces each batch applied.
	Trace connectors.BatchTrace
	// Consumer, when set, has the coordinator leader create the
	// pipeline's consumer (connectors.CDCApplyConsumer) with
	// maxAckPending, after deleting it when recreate is set, and returns
	// once it exists: a worker may not create or delete a consumer. Nil
	// where the process may (a test with its own server): the runner then
	// does it through its JetStream context.
	Consumer func(ctx context.Context, maxAckPending int, recreate bool) error
	// Eager applies the messages waiting rather than wait up to BatchWait
	// for a batch to fill: a fetch asks for as many messages as the
	// consumer reported waiting at its last delivery (up to a batch), and
	// when none were, for the next message alone, which it takes as soon
	// as it comes (waiting at most BatchWait) along with any found
	// waiting behind it. A batch then holds what arrived during the last
	// Apply, at least one message: for an Applier whose cost per batch is
	// small (one transaction), the time from the source's commit to the
	// target's shrinks by up to BatchWait, while a backlog still goes in
	// full batches. NewRunner sets it for an EagerApplier.
	Eager bool
}

// EagerApplier is implemented by an Applier that would rather apply the
// messages waiting at once than wait to fill a batch (Config.Eager): the
// PostgreSQL applier, whose batch is one transaction. The runner calls
// ApplyEagerly once, before the first Apply.
type EagerApplier interface {
	ApplyEagerly() bool
}

// Validate checks the configuration without I/O.
func (c Config) Validate() error {
	var errs []error
	if !protocol.ValidName(c.Pipeline) {
		errs = append(errs, fmt.Errorf("pipeline %q is not a valid name", c.Pipeline))
	}
	if !protocol.ValidName(c.Upstream) {
		errs = append(errs, fmt.Errorf("upstream %q is not a valid name", c.Upstream))
	}
	if c.BatchSize < 0 || c.BatchWait < 0 || c.CheckInterval < 0 {
		errs = append(errs, errors.New("batch_size, batch_wait and check_interval must not be negative"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait == 0 {
		c.BatchWait = 200 * time.Millisecond
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 2 * time.Second
	}
	return c
}

// ConsumerName is the durable consumer of a cdc_apply pipeline.
func ConsumerName(pipeline string) string { return protocol.CDCApplyConsumer(pipeline) }

// FilterSubject is the subject filter of the events of an upstream cdc
// pipeline.
func FilterSubject(upstream string) string { return protocol.CDCSubjectPrefix(upstream) + ">" }

// Status is a Runner's progress.
type Status struct {
	// Applied is the stream sequence of the last message applied (0:
	// none).
	Applied uint64
	// Events counts the events this Runner applied (skipped ones
	// excluded); a message holds one or more.
	Events uint64
	// Pending counts the upstream's messages (of one or more events each)
	// not applied yet, as of the last batch or check: not yet delivered,
	// or fetched and waiting for a batch.
	Pending uint64
	// CaughtUp reports whether, at the last check, every message of the
	// upstream in the stream was applied.
	CaughtUp bool
	// CommitTime is the source commit time of the last event applied;
	// time.Since gives the lag in time.
	CommitTime time.Time
}

// Runner applies one pipeline's events. Run may be called once at a time;
// Status may be called concurrently with Run.
type Runner struct {
	js  jetstream.JetStream
	cfg Config
	a   Applier
	log *slog.Logger

	mu     sync.Mutex
	status Status
}

// NewRunner returns a Runner applying cfg.Upstream's events to a. When cfg
// leaves BatchSize and BatchWait zero, an Applier that is a
// connectors.BatchSizer chooses them.
func NewRunner(js jetstream.JetStream, cfg Config, a Applier, log *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cdc apply config: %w", err)
	}
	if bs, ok := a.(connectors.BatchSizer); ok && cfg.BatchSize == 0 && cfg.BatchWait == 0 {
		cfg.BatchSize, cfg.BatchWait = bs.BatchSize()
	}
	if e, ok := a.(EagerApplier); ok && e.ApplyEagerly() {
		cfg.Eager = true
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Runner{js: js, cfg: cfg, a: a, log: log.With("pipeline", cfg.Pipeline, "upstream", cfg.Upstream)}, nil
}

// Run consumes the upstream's events with a durable pull consumer (AckAll
// policy, DeliverAll, created idempotently) and applies them batch by batch
// until ctx ends (it returns nil) or an error stops it. See NewRunner and
// Runner.Run.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, a Applier, log *slog.Logger) error {
	r, err := NewRunner(js, cfg, a, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Status returns the Runner's progress.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Run creates the consumer when missing, positions it after the Applier's
// last applied message, and applies batches until ctx ends (it returns nil)
// or an error stops it: a fetch, apply or consumer error, or a malformed
// message (after applying the messages before it, and none of its events).
// ctx bounds every call Run makes; Run does not close the Applier. A batch
// is acknowledged only after Apply returned nil, and never a message
// fetched for a later batch.
func (r *Runner) Run(ctx context.Context) error {
	err := r.run(ctx)
	if ctx.Err() != nil {
		// Stopping: whatever was cut short is applied again by the next Run.
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			r.log.Warn("cdc apply stopping", "err", err)
		}
		r.log.Info("cdc apply stopped", "applied", r.Status().Applied)
		return nil
	}
	return err
}

func (r *Runner) run(ctx context.Context) error {
	name := ConsumerName(r.cfg.Pipeline)
	// The batcher holds at most BatchSize messages unacknowledged.
	maxAckPending := 2 * r.cfg.BatchSize
	if err := r.ensureConsumer(ctx, maxAckPending, false); err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", name, protocol.StreamCDC, err)
	}
	cons, err := r.js.Consumer(ctx, protocol.StreamCDC, name)
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", name, protocol.StreamCDC, err)
	}
	applied, err := r.a.Applied(ctx)
	if err != nil {
		return fmt.Errorf("read applied offset: %w", err)
	}
	stream, err := r.js.Stream(ctx, protocol.StreamCDC)
	if err != nil {
		return fmt.Errorf("stream %s: %w", protocol.StreamCDC, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", protocol.StreamCDC, err)
	}
	if applied > info.State.LastSeq {
		return fmt.Errorf("the target applied up to sequence %d, past the last sequence %d of %s: was the stream recreated? reset the target's offset to go on",
			applied, info.State.LastSeq, protocol.StreamCDC)
	}
	if info.State.FirstSeq > applied+1 {
		r.log.Warn("cdc apply: the stream no longer holds every event after the applied offset; events of the upstream in between, if any, are lost",
			"applied", applied, "first_seq", info.State.FirstSeq)
	}
	r.setApplied(applied)
	r.log.Info("cdc apply starting", "applied", applied)

	b := newBatcher(r, cons, applied)
	if err := b.reset(ctx); err != nil {
		// The consumer's one replica may be on a NATS server that is
		// gone: make it again, on a live one.
		if derr := r.ensureConsumer(ctx, maxAckPending, true); derr != nil {
			r.log.Warn("cdc apply: recreate consumer", "consumer", name, "err", derr)
		}
		return err
	}
	closer, _ := r.a.(HourCloser)
	var lastCheck time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lastCheck) >= r.cfg.CheckInterval {
			if err := r.check(ctx, cons, closer, len(b.carry)); err != nil {
				return err
			}
			lastCheck = time.Now()
		}
		if err := b.next(ctx); err != nil {
			return err
		}
	}
}

// ensureConsumer creates the pipeline's consumer, deleting it first when
// recreate is set: through Config.Consumer when set, else through the
// runner's JetStream context.
func (r *Runner) ensureConsumer(ctx context.Context, maxAckPending int, recreate bool) error {
	if r.cfg.Consumer != nil {
		return r.cfg.Consumer(ctx, maxAckPending, recreate)
	}
	return connectors.EnsureCDCApplyConsumer(ctx, r.js, r.cfg.Pipeline, r.cfg.Upstream, maxAckPending, recreate)
}

// fetchBytesPerEvent sizes the byte budget of a fetch: a full batch of
// events of about this size. A message may hold many events, so a fetch is
// bounded by bytes as well as by its count of messages.
const fetchBytesPerEvent = 1 << 10

// fetchOverhead is what a delivered message adds to its headers and data in
// the byte count of a pull request (its subject and ack reply subject), with
// room to spare.
const fetchOverhead = 64 << 10

// defaultMaxPayload is NATS's default max_payload, assumed when the
// connection does not report the server's.
const defaultMaxPayload = 1 << 20

// batcher fetches, applies and acknowledges batches. It tracks the
// consumer's delivery sequence: the server numbers every delivery, so a
// delivery Run did not see (sent to a pull request that had already ended)
// shows up as a gap, and the consumer is reset to the message after the
// last applied one.
//
// A message holds one or more events and a batch holds whole messages: the
// offset is a stream sequence, so a message is applied whole or not at all.
// The messages fetched beyond a batch wait in the carry for the next
// batches, in stream order. A fetch happens only when the carry does not
// fill a batch, and asks for no more messages than events are missing from
// it (each message holds at least one) and for about the bytes of a full
// batch, less what the carry holds (but room for one message of the largest
// size the server accepts). While a batch is applied, a goroutine fetches
// the next one (when the consumer reported a backlog and the carry after
// the batch holds less) and decodes it (see ahead). So the carry holds
// less than two batches of events plus one fetch's bytes, at most twice
// BatchSize messages unacknowledged (MaxAckPending), and two batches are
// decoded at a time at most. With Config.Eager a fetch asks for no more messages than the
// consumer reported waiting at the last delivery, and for one when none
// were (then at once for those its delivery reports behind it): BatchWait
// is then the longest wait for a message, never for a batch to fill.
type batcher struct {
	r       *Runner
	cons    jetstream.Consumer
	applied uint64
	// nextDelivery is the consumer sequence the next message must carry.
	nextDelivery uint64
	// carry holds the messages fetched and not applied yet, in stream
	// order, all after applied; carryEvents and carryBytes sum their events
	// and data.
	carry       []held
	carryEvents int
	carryBytes  int
	// stop, once set, ends fetching; next returns it once every message
	// held before its cause is applied.
	stop error
	// fetchBytes is the byte budget of a fetch; minFetchBytes the least a
	// fetch asks for: room for the largest message the server accepts,
	// since the server never delivers a message over a request's budget.
	fetchBytes, minFetchBytes int
	// decoded is reused to decode each message.
	decoded []protocol.ChangeEvent
	// waiting is the number of messages the consumer had not delivered
	// yet at the last delivery (its NumPending), or -1 when unknown (no
	// delivery since the last reset); Config.Eager's fetches ask for them.
	waiting int64
}

// held is a message fetched and not applied yet.
type held struct {
	msg     jetstream.Msg
	seq     uint64 // stream sequence
	pending uint64 // the consumer's undelivered messages at its delivery
	events  int
	bytes   int
	// decoded holds the message's events when they were decoded ahead
	// (while the batch before was applied); nil when not, or when
	// decoding failed (take decodes it again, which reports the error).
	decoded []protocol.ChangeEvent
}

func newBatcher(r *Runner, cons jetstream.Consumer, applied uint64) *batcher {
	maxPayload := defaultMaxPayload
	if nc := r.js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		maxPayload = int(nc.MaxPayload())
	}
	b := &batcher{r: r, cons: cons, applied: applied, minFetchBytes: maxPayload + fetchOverhead, waiting: -1}
	b.fetchBytes = max(r.cfg.BatchSize*fetchBytesPerEvent, b.minFetchBytes)
	return b
}

// reset positions the consumer at the message after the last applied one
// and forgets every delivery made so far, the carry included.
func (b *batcher) reset(ctx context.Context) error {
	b.drop(0)
	name := ConsumerName(b.r.cfg.Pipeline)
	if _, err := b.r.js.ResetConsumerToSequence(ctx, protocol.StreamCDC, name, b.applied+1); err != nil {
		return fmt.Errorf("reset consumer %s to sequence %d: %w", name, b.applied+1, err)
	}
	b.nextDelivery = 1
	b.waiting = -1
	return nil
}

// drop removes the messages of the carry from index i on.
func (b *batcher) drop(i int) {
	for _, h := range b.carry[i:] {
		b.carryEvents -= h.events
		b.carryBytes -= h.bytes
	}
	clear(b.carry[i:])
	b.carry = b.carry[:i]
}

// remove removes the first n messages of the carry.
func (b *batcher) remove(n int) {
	for _, h := range b.carry[:n] {
		b.carryEvents -= h.events
		b.carryBytes -= h.bytes
	}
	b.carry = slices.Delete(b.carry, 0, n)
}

// tail is the stream sequence of the last message held, or else of the
// last one applied.
func (b *batcher) tail() uint64 {
	if len(b.carry) > 0 {
		return b.carry[len(b.carry)-1].seq
	}
	return b.applied
}

// next fetches when the carry does not fill a batch, then applies a batch
// from the head of the carry and acknowledges it.
func (b *batcher) next(ctx context.Context) error {
	r := b.r
	var (
		gap     bool
		skipped jetstream.Msg // delivered again, applied before
	)
	// Eager, messages held and none waiting behind them: apply them now.
	if b.stop == nil && b.carryEvents < r.cfg.BatchSize && !(r.cfg.Eager && len(b.carry) > 0 && b.waiting == 0) {
		count := r.cfg.BatchSize - b.carryEvents
		if r.cfg.Eager {
			// As many as were waiting; none, or not known yet: the next
			// one as soon as it comes.
			count = int(max(min(int64(count), b.waiting), 1))
		}
		var err error
		if gap, skipped, err = b.fetch(count); err != nil {
			return err
		}
		if r.cfg.Eager && count == 1 && !gap && b.stop == nil && b.waiting > 0 && b.carryEvents < r.cfg.BatchSize {
			// The one message came with others behind it: take them too.
			var again jetstream.Msg
			gap, again, err = b.fetch(int(min(int64(r.cfg.BatchSize-b.carryEvents), b.waiting)))
			if err != nil {
				return err
			}
			if again != nil {
				skipped = again
			}
		}
	}
	n, events := b.take()
	// The next batch is fetched (when a backlog waits) and decoded while
	// this one is applied: that is the runner's own work, applying mostly
	// the target's. Until ahead returns, the batcher is the goroutine's.
	ahead := b.ahead(n, !gap)
	defer func() { ahead() }()
	var aheadErr error    // a fetch ahead that failed: Run stops after this batch
	var ack jetstream.Msg // the last message to acknowledge
	if n > 0 {
		from, to := events[0].Seq, events[len(events)-1].Seq
		commitTime := events[len(events)-1].CommitTime
		if r.cfg.Transform != nil {
			var err error
			if events, err = r.cfg.Transform(events); err != nil {
				return fmt.Errorf("apply events %d-%d: %w", from, to, err)
			}
		}
		if len(events) > 0 {
			actx, end := r.cfg.Trace.StartBatch(ctx, connectors.BatchInfo{Events: len(events), From: from, To: to})
			err := r.a.Apply(actx, events)
			end(err)
			if err != nil {
				return fmt.Errorf("apply events %d-%d: %w", from, to, err)
			}
		}
		var gapAhead bool
		gapAhead, aheadErr = ahead()
		gap = gap || gapAhead
		last := b.carry[n-1]
		b.applied, ack = last.seq, last.msg
		r.mu.Lock()
		r.status.Applied = b.applied
		r.status.Events += uint64(len(events))
		r.status.Pending = last.pending
		r.status.CommitTime = commitTime
		r.mu.Unlock()
		r.log.Debug("cdc apply batch", "from", from, "to", b.applied, "messages", n, "events", len(events))
		b.remove(n)
	} else if skipped != nil && len(b.carry) == 0 {
		ack = skipped
	}
	if ack != nil {
		// With AckAll one ack covers every message up to ack's stream
		// sequence, all of them applied: never a held one. A redelivered
		// message is acknowledged only when nothing is held, as the server
		// ignores an ack below its floor of delivery sequences, which that
		// later delivery would raise past the held messages. A lost ack
		// costs nothing: the next ack covers it too, and a restart resets
		// the consumer from the applied offset.
		if err := ack.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("cdc apply: ack", "err", err)
		}
	}
	if aheadErr != nil {
		return aheadErr
	}
	if b.stop != nil && len(b.carry) == 0 {
		return b.stop
	}
	if gap {
		return b.reset(ctx)
	}
	return nil
}

// fetch adds the messages of one pull request for at most count messages
// to the carry. It reports a gap in the delivery sequence (the messages
// from the gap on are left out), and returns the last message delivered
// again that was applied before, which has to be acknowledged. A message
// without metadata sets b.stop.
func (b *batcher) fetch(count int) (gap bool, skipped jetstream.Msg, err error) {
	r := b.r
	budget := max(b.fetchBytes-b.carryBytes, b.minFetchBytes)
	batch, err := b.cons.Fetch(count, jetstream.FetchMaxWait(r.cfg.BatchWait), jetstream.FetchMaxBytes(budget))
	if err != nil {
		return false, nil, fmt.Errorf("fetch: %w", err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil {
		return false, nil, fmt.Errorf("fetch: %w", err)
	}
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			b.stop = fmt.Errorf("message on %s: metadata: %w", m.Subject(), err)
			return false, skipped, nil
		}
		if md.Sequence.Consumer != b.nextDelivery {
			r.log.Warn("cdc apply: delivery sequence gap, repositioning the consumer",
				"want", b.nextDelivery, "got", md.Sequence.Consumer, "stream_seq", md.Sequence.Stream)
			return true, skipped, nil
		}
		b.nextDelivery++
		b.waiting = int64(md.NumPending)
		seq := md.Sequence.Stream
		if seq <= b.tail() {
			// Delivered again after its ack wait ran out: applied
			// already, or held.
			if seq <= b.applied {
				skipped = m
			}
			continue
		}
		data := m.Data()
		h := held{msg: m, seq: seq, pending: md.NumPending, events: protocol.CountChangeEvents(data), bytes: len(data)}
		b.carry = append(b.carry, h)
		b.carryEvents += h.events
		b.carryBytes += h.bytes
	}
	return false, skipped, nil
}

// ahead prepares the next batch in a goroutine while the batch of the
// carry's first n messages is applied: when the consumer reported a
// backlog at its last delivery and the carry after them holds less than a
// batch, it fetches unless fetchOK is false (a gap, or a message without metadata, is handled as
// after any fetch: it ends the carry); then it decodes the messages after
// the first n that the next batch takes, and keeps their events in the
// carry. It returns the function that waits for the goroutine and reports
// a gap and a fetch error: until it is called, the goroutine owns the
// batcher (only the events already taken may be used). It may be called
// more than once.
func (b *batcher) ahead(n int, fetchOK bool) (wait func() (gap bool, err error)) {
	if n == 0 {
		return func() (bool, error) { return false, nil }
	}
	rest := b.carryEvents
	for _, h := range b.carry[:n] {
		rest -= h.events
	}
	fetch := fetchOK && b.stop == nil && b.waiting > 0 && rest < b.r.cfg.BatchSize
	count := int(min(int64(b.r.cfg.BatchSize-rest), b.waiting))
	type result struct {
		gap bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		var res result
		if fetch {
			res.gap, _, res.err = b.fetch(count)
		}
		size := 0
		for i := n; i < len(b.carry); i++ {
			h := &b.carry[i]
			if i > n && size+h.events > b.r.cfg.BatchSize {
				break
			}
			size += h.events
			if h.decoded == nil {
				// On an error take decodes it again, and stops there.
				if evs, err := protocol.AppendChangeEvents(nil, h.msg.Data()); err == nil {
					h.decoded = evs
				}
			}
		}
		done <- res
	}()
	var once sync.Once
	var res result
	return func() (bool, error) {
		once.Do(func() { res = <-done })
		return res.gap, res.err
	}
}

// take decodes the batch at the head of the carry: whole messages up to
// BatchSize events, and at least one message. n is the number of messages
// taken. A malformed message sets b.stop and is dropped from the carry with
// every message after it; the messages before it are taken.
func (b *batcher) take() (n int, events []Event) {
	size := 0
	for n < len(b.carry) && (n == 0 || size+b.carry[n].events <= b.r.cfg.BatchSize) {
		size += b.carry[n].events
		n++
	}
	if n == 0 {
		return 0, nil
	}
	events = make([]Event, 0, size)
	defer func() { clear(b.decoded[:cap(b.decoded)]) }() // keep no rows alive
	for i, h := range b.carry[:n] {
		decoded := h.decoded
		if decoded == nil {
			var err error
			b.decoded, err = protocol.AppendChangeEvents(b.decoded[:0], h.msg.Data())
			if err != nil {
				b.stop = fmt.Errorf("malformed message at stream sequence %d on %s: %w", h.seq, h.msg.Subject(), err)
				b.drop(i)
				return i, events
			}
			decoded = b.decoded
		}
		for _, ev := range decoded {
			events = append(events, Event{Seq: h.seq, ChangeEvent: ev})
		}
	}
	return n, events
}

// check reads the consumer's counts and lets an HourCloser close hours;
// held is the number of messages fetched and not applied yet.
func (r *Runner) check(ctx context.Context, cons jetstream.Consumer, closer HourCloser, held int) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	caughtUp := info.NumPending == 0 && info.NumAckPending == 0 && held == 0
	r.mu.Lock()
	r.status.Pending = info.NumPending + uint64(held)
	r.status.CaughtUp = caughtUp
	r.mu.Unlock()
	if closer != nil {
		if err := closer.CloseHours(ctx, time.Now(), caughtUp); err != nil {
			return fmt.Errorf("close hours: %w", err)
		}
	}
	return nil
}

func (r *Runner) setApplied(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Applied = seq
}
