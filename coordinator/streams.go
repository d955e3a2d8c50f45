package coordinator

import (
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
}

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
	streams := []jetstream.StreamConfig{{
		Name:        protocol.StreamTasks,
		Description: "Sluice tasks; all workers pull from the sluice-workers consumer.",
		Subjects:    []string{protocol.SubjectTasksAll},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
	}, {
		Name:        protocol.StreamResults,
		Description: "Sluice task results, consumed by the coordinator leader.",
		Subjects:    []string{protocol.SubjectResultsAll},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
	}, {
		Name:        protocol.StreamEvents,
		Description: "Sluice run events.",
		Subjects:    []string{protocol.SubjectEventsAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
	}, {
		Name:        protocol.StreamDLQ,
		Description: "Sluice dead letters: tasks and triggers that could not be processed.",
		Subjects:    []string{protocol.SubjectDLQAll},
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  2 * time.Minute,
	}, {
		Name:        protocol.StreamTriggers,
		Description: "Sluice trigger events that start runs.",
		Subjects:    []string{protocol.SubjectTriggersAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
	}, {
		// The central change stream: created here, with the cluster's
		// replicas, before any stream lease is granted.
		Name:        protocol.StreamCDC,
		Description: "Sluice change events of every CDC pipeline.",
		Subjects:    []string{protocol.SubjectCDCAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      protocol.CDCRetention,
		Duplicates:  protocol.CDCDuplicateWindow,
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
