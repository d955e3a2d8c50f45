package connectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// The contract of streamed pipelines. A cdc pipeline captures the changes
// of its source into the SLUICE_CDC stream; a cdc_apply pipeline applies
// the events of one cdc pipeline to its sink. Each runs as a Stream on
// exactly one worker at a time, under a lease the coordinator leader grants
// (protocol.StreamAssignment). What a connector kind contributes is a
// capability registered beside its Source and Sink:
//
//   - CDCSource, for the source of a cdc pipeline: the Stream that captures
//     the changes (a change reader), and optionally how the initial snapshot
//     run is made;
//   - CDCTarget, for the sink of a cdc_apply pipeline: an Applier, which the
//     generic runner (connectors/cdcapply) feeds with batches of events.

// Stream is the long-running part of a streamed pipeline, held by one
// worker under a lease. The worker calls Run once; Run streams until ctx
// ends (it then returns nil) or an error stops it, after which the worker
// opens a new Stream and runs it again, with a backoff, while it holds the
// lease. Status is called from another goroutine, concurrently with Run and
// before and after it, to report the stream's progress with each lease
// renewal; ctx bounds that one call, and Status must not block on Run.
type Stream interface {
	Run(ctx context.Context) error
	Status(ctx context.Context) protocol.StreamStatus
}

// StreamSettings are the settings of a streamed pipeline beside its
// connectors' configurations.
type StreamSettings = protocol.StreamSettings

// StreamRequest is what a worker opens a stream with: the connector's part
// of a protocol.StreamAssignment.
type StreamRequest struct {
	// Pipeline is the streamed pipeline's name.
	Pipeline string
	// Config is the configuration of the connector asked (the source of a
	// cdc pipeline, the sink of a cdc_apply pipeline), with its `${ENV}`
	// references expanded.
	Config json.RawMessage
	// Settings are the pipeline's stream settings.
	Settings StreamSettings
	// JS is the worker's own JetStream context, for streams that publish to
	// or consume from Sluice's streams. The stream does not close it.
	JS jetstream.JetStream
	// Log is the worker's logger, scoped to the pipeline.
	Log *slog.Logger
	// Contract is the pipeline's data contract (see package contract, its
	// JSON form, the key a ${NAME} reference), which a CDC source
	// registered with CDCSource.AppliesContract applies to every event
	// before it is published; nil when the pipeline has none.
	Contract json.RawMessage
	// Trace, when set, traces the stream's batches (see BatchTrace).
	Trace BatchTrace
	// Purge, when set, has the coordinator leader purge the messages on
	// subject (a subject filter within the target's CDCTarget.Stream) from
	// the target's stream, and returns once they are gone: a worker may
	// not purge a stream itself. Nil where the process may (a test with
	// its own server): the target then purges through JS. ctx bounds the
	// call.
	Purge func(ctx context.Context, subject string) error
}

// CDCApplyConsumer is the configuration of the durable pull consumer on
// SLUICE_CDC through which cdc_apply pipeline pipeline applies upstream's
// events, holding at most maxAckPending messages unacknowledged. The
// coordinator leader creates it when the worker holding the pipeline's
// lease asks (a worker may not create a consumer: one delivering to a
// subject of its choosing would publish there on its behalf).
func CDCApplyConsumer(pipeline, upstream string, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       protocol.CDCApplyConsumer(pipeline),
		Description:   "Sluice cdc_apply " + pipeline + " of " + upstream,
		FilterSubject: protocol.CDCSubjectPrefix(upstream) + ">",
		AckPolicy:     jetstream.AckAllPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: maxAckPending,
		// One replica: a replicated consumer sends a pull request's
		// closing status (409 Batch Completed, or Message Size Exceeds
		// MaxBytes) before the messages it holds back until their delivery
		// is replicated, and the fetch ends on the status with those
		// messages lost, every time. Its state is disposable: every start
		// positions it after the target's applied offset.
		Replicas: 1,
	}
}

// EnsureCDCApplyConsumer creates or updates the consumer of cdc_apply
// pipeline pipeline on SLUICE_CDC (CDCApplyConsumer), deleting it first
// when recreate is set.
func EnsureCDCApplyConsumer(ctx context.Context, js jetstream.JetStream, pipeline, upstream string, maxAckPending int, recreate bool) error {
	cfg := CDCApplyConsumer(pipeline, upstream, maxAckPending)
	if recreate {
		if err := js.DeleteConsumer(ctx, protocol.StreamCDC, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", cfg.Durable, err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, protocol.StreamCDC, cfg); err != nil {
		return fmt.Errorf("create consumer %s: %w", cfg.Durable, err)
	}
	return nil
}

// BatchTrace is called by a stream around each batch of change events it
// publishes (a cdc reader: one message) or applies (the cdc_apply runner:
// one Apply), from the goroutine of its Run. It returns the context the
// batch's work runs in and the function the stream calls once with the
// batch's outcome. A nil BatchTrace traces nothing (see StartBatch).
type BatchTrace func(ctx context.Context, b BatchInfo) (context.Context, func(err error))

// BatchInfo describes one batch of a stream.
type BatchInfo struct {
	// Events is the number of events in the batch.
	Events int
	// Subject and MsgID are a published batch's subject and Nats-Msg-Id.
	Subject, MsgID string
	// From and To are the SLUICE_CDC stream sequences of the first and the
	// last message of an applied batch.
	From, To uint64
}

// StartBatch starts tracing a batch with t, or does nothing when t is nil.
func (t BatchTrace) StartBatch(ctx context.Context, b BatchInfo) (context.Context, func(err error)) {
	if t == nil {
		return ctx, func(error) {}
	}
	return t(ctx, b)
}

// StreamFactory opens the change reader of a cdc pipeline. It is called by
// the worker holding the pipeline's lease, again after each time the
// stream's Run returned; ctx bounds the opening only (Run gets its own).
// It should do no more I/O than needed to refuse a bad configuration early.
type StreamFactory func(ctx context.Context, req StreamRequest) (Stream, error)

// ApplierFactory opens the Applier of a cdc_apply pipeline's sink. It is
// called like a StreamFactory; the runner closes the Applier when its Run
// ends.
type ApplierFactory func(ctx context.Context, req StreamRequest) (Applier, error)

// SnapshotRequest describes the initial snapshot run of a cdc pipeline.
type SnapshotRequest struct {
	// Pipeline is the cdc pipeline's name.
	Pipeline string
	// Config is the cdc source's configuration as the spec holds it, its
	// `${ENV}` references not expanded: the endpoints carry them to the
	// processes that open them, which expand them.
	Config json.RawMessage
	// Settings are the pipeline's stream settings.
	Settings StreamSettings
}

// SnapshotEndpoints are the source and sink of the initial snapshot run of
// a cdc pipeline: an ordinary run of registered connectors, planned,
// published and committed like any other, whose commit marks the snapshot
// done. Its rows must reach SLUICE_CDC as read events consistent with the
// position the change reader then streams from (the plan's watermark).
type SnapshotEndpoints struct {
	Source protocol.Endpoint
	Sink   protocol.Endpoint
}

// CDCSource is the capability of a connector kind to be the source of a
// cdc pipeline: it captures the changes of the system into SLUICE_CDC, on
// the subjects sluice.cdc.<pipeline>.<schema>.<table>, as packed
// protocol.ChangeEvent messages (see protocol.DecodeChangeEvents).
type CDCSource struct {
	// Validate checks a cdc pipeline's source configuration without I/O;
	// errors are *FieldError naming the field. Nil accepts any.
	Validate Validator
	// Open opens the change reader. Its Stream publishes every change
	// exactly once in effect (a change published again after a restart
	// carries the same Nats-Msg-Id, so JetStream drops it) and moves the
	// source's position only past changes JetStream acknowledged. Its
	// Status reports the position and lag (ConfirmedLSN, ReceivedLSN,
	// LagBytes, LagTime, LastCommit, Events).
	Open StreamFactory
	// Snapshot, when set, says how the initial snapshot run of a cdc
	// pipeline is made: the coordinator leader calls it (no I/O) before the
	// pipeline streams, and again for each attempt after a failed one. Nil
	// means the kind has no initial snapshot: its pipelines must set
	// cdc.snapshot to never.
	Snapshot func(req SnapshotRequest) (SnapshotEndpoints, error)
	// Tables, when set, lists the tables a source configuration captures
	// ("schema.table"; no I/O). The coordinator leader compares them with
	// the tables the pipeline has a snapshot of, and asks the stream for
	// an incremental snapshot of each table added to a streaming pipeline
	// (StreamSettings.Snapshots); the stream reports each in its status
	// (protocol.TableStatus with Snapshot set). Nil means the kind takes
	// no incremental snapshots.
	Tables func(config json.RawMessage) ([]string, error)
	// Check, when set, checks that the source can capture what the
	// configuration names (the server's settings, the role's rights, each
	// table and its replica identity), as Checker does; nil means the kind
	// has no check.
	Check CheckFunc
	// AppliesContract says the change reader applies a pipeline's data
	// contract (StreamRequest.Contract) to every event before it is
	// published, and the snapshot's sink to every row (TaskRef.Contract):
	// a cdc pipeline with a contract is refused for a source kind without
	// it, since nothing else stands between its events and SLUICE_CDC.
	AppliesContract bool
}

// CDCTarget is the capability of a connector kind to be the sink of a
// cdc_apply pipeline: it opens an Applier, which the generic runner
// (connectors/cdcapply) feeds with the upstream's events in stream order.
type CDCTarget struct {
	// Validate checks a cdc_apply pipeline's sink configuration without
	// I/O; errors are *FieldError naming the field. Nil accepts any.
	Validate Validator
	// Open opens the Applier.
	Open ApplierFactory
	// Stream, when set, returns the configuration of the JetStream stream
	// the target writes into, for a cdc_apply pipeline with req's
	// Pipeline, Config (its `${ENV}` references expanded) and Settings; it
	// does no I/O. A worker may not create, update or purge a stream: the
	// coordinator leader creates or updates this one before it grants the
	// pipeline's lease, and purges subjects of it when the Applier asks
	// (StreamRequest.Purge). Nil means the target keeps no stream.
	Stream func(req StreamRequest) (jetstream.StreamConfig, error)
	// Check, when set, checks that the target can take the events (a
	// directory, a schema), as Checker does; nil means the kind has no
	// check.
	Check CheckFunc
}

// Event is a change event as an Applier receives it: the event and the
// SLUICE_CDC stream sequence of its message. A message holds one or more
// events (of one table and one transaction, or one snapshot chunk), so
// consecutive events may share a Seq.
type Event struct {
	Seq uint64 `json:"seq"`
	protocol.ChangeEvent
}

// Applier makes batches of change events durable in a target, in stream
// order, together with the stream sequence of the last one: that sequence,
// stored with the events, is the only record of progress, so each event
// is applied exactly once across crashes and restarts. The runner calls
// its methods from one goroutine, one at a time, in the order Applied,
// then Apply any number of times (with CloseHours in between for an
// HourCloser), then Close; ctx bounds each call. An Applier may be opened
// again on the same target (by another worker, after a crash) and must go
// on from what the last one made durable.
type Applier interface {
	// Applied returns the stream sequence of the last message made
	// durable (0: none). The runner resumes after it.
	Applied(ctx context.Context) (uint64, error)
	// Apply makes events durable. Events are in stream order (Seq never
	// decreases) and a batch holds every event of each of its messages,
	// so the events of one Seq are applied together or not at all. Events
	// with Seq <= Applied are skipped: a batch delivered again, whole or in
	// part, is applied once. Either the whole batch and its last Seq are
	// durable, or an error is returned and nothing of it is: also when ctx
	// is cancelled during the call. An error leaves the Applier usable: the
	// runner stops and, restarted, opens a new one or calls Applied again.
	Apply(ctx context.Context, events []Event) error
	// Close releases what the Applier holds (connections). Nothing applied
	// is lost by closing.
	Close() error
}

// HourCloser is implemented by an Applier that finishes time partitions
// once it is caught up with the stream (the files change log writes their
// _SUCCESS markers). The runner calls CloseHours at least every
// cdcapply.Config.CheckInterval, between batches, with caughtUp true when
// the consumer had no message left to deliver or to acknowledge; now is
// the wall clock. ctx bounds the call.
type HourCloser interface {
	CloseHours(ctx context.Context, now time.Time, caughtUp bool) error
}

// BatchSizer is implemented by an Applier that works best with batches of
// another size than the runner's default (1000 events within 200ms): the
// files change log writes a file per table and hour and batch, so larger
// batches make fewer, larger files. The runner calls it once, before the
// first Apply; a zero value keeps the default.
type BatchSizer interface {
	BatchSize() (events int, wait time.Duration)
}

// EventsAfter returns events without those of messages already applied:
// the leading events with Seq <= applied (a batch delivered again, whole
// or in part).
func EventsAfter(events []Event, applied uint64) []Event {
	for len(events) > 0 && events[0].Seq <= applied {
		events = events[1:]
	}
	return events
}

// TableReporter is implemented by an Applier that stops applying one
// source table after a permanent error on it while it goes on with the
// others, and by a Stream that reports tables in another state than
// streaming. TableStatus lists those tables; it is called from another
// goroutine, concurrently with the other methods, and must not block on
// them. The stream's Status carries them (protocol.StreamStatus.Tables),
// and so `sluice cdc status` shows them.
type TableReporter interface {
	TableStatus() []protocol.TableStatus
}
