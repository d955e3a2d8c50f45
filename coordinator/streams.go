package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// StreamConfig sizes the Sluice streams and the workers' consumer.
type StreamConfig struct {
	// Replicas is the JetStream replica count; 0 means 1.
	Replicas int
	// AckWait is the ack wait of the workers' consumer; 0 means 30s.
	AckWait time.Duration
	// MaxDeliver caps deliveries of one task message; 0 means 10.
	MaxDeliver int
	// MaxBytes caps each of SLUICE_TASKS, SLUICE_RESULTS, SLUICE_EVENTS,
	// SLUICE_TRIGGERS and SLUICE_DLQ; 0 means DefaultStreamMaxBytes.
	MaxBytes int64
	// CDCMaxBytes caps SLUICE_CDC; 0 means protocol.CDCMaxBytes.
	CDCMaxBytes int64
	// DLQMaxAge is how long SLUICE_DLQ keeps a dead letter; 0 means
	// DefaultDLQMaxAge.
	DLQMaxAge time.Duration
}

// The default caps of the Sluice streams. What a full stream does is
// chosen per stream (EnsureStreams): a stream whose loss would go unseen
// refuses new messages, so that the publisher gets an error.
const (
	DefaultStreamMaxBytes int64 = 256 << 20
	DefaultDLQMaxAge            = 30 * 24 * time.Hour
	// eventsMaxAge and triggersMaxAge are how long run events and
	// triggers (handled or not) are kept.
	eventsMaxAge   = 7 * 24 * time.Hour
	triggersMaxAge = 7 * 24 * time.Hour
)

// resultsAckWait bounds how long a result the leader took but did not ack
// (it lost leadership meanwhile) waits before the next leader gets it.
const resultsAckWait = 5 * time.Second

// The leader's consumer of SLUICE_TRIGGERS: a trigger not acked is
// delivered again after each of triggerBackOff (the first is its ack
// wait); the leader dead-letters it on delivery TriggerMaxDeliver.
const TriggerMaxDeliver = 5

var triggerBackOff = []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second}

// EnsureStreams creates or updates the Sluice streams (file storage) and the
// durable consumers of the workers and of the leader. It is idempotent.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 10
	}
	cfg.MaxBytes = cmp.Or(cfg.MaxBytes, DefaultStreamMaxBytes)
	cfg.CDCMaxBytes = cmp.Or(cfg.CDCMaxBytes, protocol.CDCMaxBytes)
	cfg.DLQMaxAge = cmp.Or(cfg.DLQMaxAge, DefaultDLQMaxAge)
	// Tasks and results have no age limit (a task waiting for a free
	// worker must not expire) and refuse new messages when full: the
	// leader's publication fails and the run with it, a worker's result
	// is retried; neither is dropped unseen. Events and dead letters drop
	// their oldest: they are records, the newest matter most. Triggers
	// refuse new ones when full (the publisher gets the error), and
	// SLUICE_CDC too: its reader stops and the source keeps the changes
	// (the replication slot) until appliers catch up or the cap is raised.
	streams := []jetstream.StreamConfig{{
		Name:        protocol.StreamTasks,
		Description: "Sluice tasks; all workers pull from the sluice-workers consumer.",
		Subjects:    []string{protocol.SubjectTasksAll},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardNew,
	}, {
		Name:        protocol.StreamResults,
		Description: "Sluice task results, consumed by the coordinator leader.",
		Subjects:    []string{protocol.SubjectResultsAll},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardNew,
	}, {
		Name:        protocol.StreamEvents,
		Description: "Sluice run events.",
		Subjects:    []string{protocol.SubjectEventsAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      eventsMaxAge,
		Duplicates:  2 * time.Minute,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        protocol.StreamDLQ,
		Description: "Sluice dead letters: tasks and triggers that could not be processed.",
		Subjects:    []string{protocol.SubjectDLQAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.DLQMaxAge,
		Duplicates:  2 * time.Minute,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        protocol.StreamTriggers,
		Description: "Sluice trigger events that start runs.",
		Subjects:    []string{protocol.SubjectTriggersAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      triggersMaxAge,
		Duplicates:  2 * time.Minute,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardNew,
	}, {
		// The central change stream: created here, with the cluster's
		// replicas, before any stream lease is granted.
		Name:        protocol.StreamCDC,
		Description: "Sluice change events of every CDC pipeline.",
		Subjects:    []string{protocol.SubjectCDCAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      protocol.CDCRetention,
		Duplicates:  protocol.CDCDuplicateWindow,
		MaxBytes:    cfg.CDCMaxBytes,
		Discard:     jetstream.DiscardNew,
		// A CDC reader gathers its messages into atomic batches on a
		// replicated stream (pgcdc.Reader's gather).
		AllowAtomicPublish: true,
	}}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = cfg.Replicas
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	consumers := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{{protocol.StreamTasks, jetstream.ConsumerConfig{
		Durable:       protocol.ConsumerWorkers,
		Description:   "All Sluice workers pull tasks from here.",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: 10000,
		// Every idle worker slot keeps one pull request waiting: the
		// server's default MaxWaiting (512) bounds the slots of all
		// workers together. It cannot be changed on an existing consumer.
		FilterSubject: protocol.SubjectTasksAll,
		Replicas:      cfg.Replicas,
	}}, {protocol.StreamResults, jetstream.ConsumerConfig{
		Durable:       protocol.ConsumerLeader,
		Description:   "The coordinator leader consumes task results from here.",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       resultsAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
		FilterSubject: protocol.SubjectResultsAll,
		Replicas:      cfg.Replicas,
	}}, {protocol.StreamTriggers, jetstream.ConsumerConfig{
		Durable:       protocol.ConsumerTriggers,
		Description:   "The coordinator leader consumes triggers from here.",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       triggerBackOff[0],
		BackOff:       triggerBackOff,
		MaxDeliver:    TriggerMaxDeliver,
		MaxAckPending: 1000,
		FilterSubject: protocol.SubjectTriggersAll,
		Replicas:      cfg.Replicas,
	}}}
	for _, c := range consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg); err != nil {
			return fmt.Errorf("ensure consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}
	return nil
}
