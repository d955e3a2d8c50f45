package cdcapply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// Event is a change event with its SLUICE_CDC stream sequence.
type Event struct {
	Seq uint64 `json:"seq"`
	protocol.ChangeEvent
}

// Applier makes batches of events durable, in stream order, together with
// the sequence of the last one. Run calls its methods from one goroutine, one
// at a time; ctx bounds each call.
type Applier interface {
	// Applied returns the stream sequence of the last event made durable
	// (0: none).
	Applied(ctx context.Context) (uint64, error)
	// Apply makes events durable; events with Seq <= Applied are skipped.
	// Either the whole batch and its last Seq are durable, or an error is
	// returned and nothing of it is. Events are in stream order.
	Apply(ctx context.Context, events []Event) error
	// Close releases the Applier's resources.
	Close() error
}

// HourCloser is implemented by an Applier that finishes time partitions when
// it is caught up with the stream (Files). Run calls CloseHours at least
// every Config.CheckInterval, between batches, with caughtUp true when the
// consumer had no message left to deliver or to acknowledge.
type HourCloser interface {
	CloseHours(ctx context.Context, now time.Time, caughtUp bool) error
}

// Config configures Run.
type Config struct {
	// Pipeline is the cdc_apply pipeline's name: it names the durable
	// consumer "cdc_apply_<pipeline>" and the offset record.
	Pipeline string
	// Upstream is the cdc pipeline whose events are applied: the filter
	// subject is sluice.cdc.<upstream>.>.
	Upstream string
	// BatchSize is the most events per Apply; 0 means 1000.
	BatchSize int
	// BatchWait is the longest wait to fill a batch; 0 means 200ms. Run
	// returns within about BatchWait after its context ends.
	BatchWait time.Duration
	// CheckInterval is how often Run reads the consumer's pending count and
	// calls CloseHours; 0 means 2s.
	CheckInterval time.Duration
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
func ConsumerName(pipeline string) string { return "cdc_apply_" + pipeline }

// FilterSubject is the subject filter of the events of an upstream cdc
// pipeline.
func FilterSubject(upstream string) string { return "sluice.cdc." + upstream + ".>" }

// Status is a Runner's progress.
type Status struct {
	// Applied is the stream sequence of the last event applied (0: none).
	Applied uint64
	// Events counts the events this Runner applied (skipped ones excluded).
	Events uint64
	// Pending is the consumer's count of events not yet delivered, as of
	// the last batch or check.
	Pending uint64
	// CaughtUp reports whether, at the last check, every event of the
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

// NewRunner returns a Runner applying cfg.Upstream's events to a.
func NewRunner(js jetstream.JetStream, cfg Config, a Applier, log *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cdc apply config: %w", err)
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
// last applied event, and applies batches until ctx ends (it returns nil) or
// an error stops it: a fetch, apply or consumer error, or a malformed event
// (after applying the events before it). ctx bounds every call Run makes;
// Run does not close the Applier. A batch is acknowledged only after Apply
// returned nil.
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
	cons, err := r.js.CreateOrUpdateConsumer(ctx, protocol.StreamCDC, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "Sluice cdc_apply " + r.cfg.Pipeline + " of " + r.cfg.Upstream,
		FilterSubject: FilterSubject(r.cfg.Upstream),
		AckPolicy:     jetstream.AckAllPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 2 * r.cfg.BatchSize,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", name, protocol.StreamCDC, err)
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

	b := &batcher{r: r, cons: cons, applied: applied}
	if err := b.reset(ctx); err != nil {
		return err
	}
	closer, _ := r.a.(HourCloser)
	var lastCheck time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lastCheck) >= r.cfg.CheckInterval {
			if err := r.check(ctx, cons, closer); err != nil {
				return err
			}
			lastCheck = time.Now()
		}
		if err := b.next(ctx); err != nil {
			return err
		}
	}
}

// batcher fetches, applies and acknowledges batches. It tracks the
// consumer's delivery sequence: the server numbers every delivery, so a
// delivery Run did not see (sent to a pull request that had already ended)
// shows up as a gap, and the consumer is reset to the event after the last
// applied one.
type batcher struct {
	r       *Runner
	cons    jetstream.Consumer
	applied uint64
	// nextDelivery is the consumer sequence the next message must carry.
	nextDelivery uint64
}

// reset positions the consumer at the event after the last applied one and
// forgets every delivery made so far.
func (b *batcher) reset(ctx context.Context) error {
	name := ConsumerName(b.r.cfg.Pipeline)
	if _, err := b.r.js.ResetConsumerToSequence(ctx, protocol.StreamCDC, name, b.applied+1); err != nil {
		return fmt.Errorf("reset consumer %s to sequence %d: %w", name, b.applied+1, err)
	}
	b.nextDelivery = 1
	return nil
}

func (b *batcher) next(ctx context.Context) error {
	r := b.r
	batch, err := b.cons.Fetch(r.cfg.BatchSize, jetstream.FetchMaxWait(r.cfg.BatchWait))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if len(msgs) == 0 {
		return nil
	}
	events := make([]Event, 0, len(msgs))
	var (
		last    jetstream.Msg // the last message to acknowledge
		pending uint64
		stop    error // returned after the events before it are applied
		gap     bool
	)
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			stop = fmt.Errorf("message on %s: metadata: %w", m.Subject(), err)
			break
		}
		if md.Sequence.Consumer != b.nextDelivery {
			r.log.Warn("cdc apply: delivery sequence gap, repositioning the consumer",
				"want", b.nextDelivery, "got", md.Sequence.Consumer, "stream_seq", md.Sequence.Stream)
			gap = true
			break
		}
		b.nextDelivery++
		seq := md.Sequence.Stream
		ev, err := protocol.DecodeChangeEvent(m.Data())
		if err != nil {
			stop = fmt.Errorf("malformed event at stream sequence %d on %s: %w", seq, m.Subject(), err)
			break
		}
		last, pending = m, md.NumPending
		if seq <= b.applied {
			continue
		}
		events = append(events, Event{Seq: seq, ChangeEvent: ev})
	}
	if len(events) > 0 {
		if err := r.a.Apply(ctx, events); err != nil {
			return fmt.Errorf("apply events %d-%d: %w", events[0].Seq, events[len(events)-1].Seq, err)
		}
		b.applied = events[len(events)-1].Seq
		r.mu.Lock()
		r.status.Applied = b.applied
		r.status.Events += uint64(len(events))
		r.status.Pending = pending
		r.status.CommitTime = events[len(events)-1].CommitTime
		r.mu.Unlock()
		r.log.Debug("cdc apply batch", "from", events[0].Seq, "to", b.applied, "events", len(events))
	}
	if last != nil {
		// With AckAll one ack covers every message up to last, all of them
		// applied or skipped. A lost ack costs nothing: the next ack covers
		// it too, and a restart resets the consumer from the applied offset.
		if err := last.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("cdc apply: ack", "err", err)
		}
	}
	if stop != nil {
		return stop
	}
	if gap {
		return b.reset(ctx)
	}
	return nil
}

// check reads the consumer's counts and lets an HourCloser close hours.
func (r *Runner) check(ctx context.Context, cons jetstream.Consumer, closer HourCloser) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	caughtUp := info.NumPending == 0 && info.NumAckPending == 0
	r.mu.Lock()
	r.status.Pending = info.NumPending
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
