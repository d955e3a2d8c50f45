// Package cdcstream runs, on a worker, the streams of the cdc and
// cdc_apply pipelines the coordinator leader gives it under a lease: a
// PostgreSQL slot streamed into SLUICE_CDC (connectors/pgcdc), or the
// events of a cdc pipeline applied to a target (connectors/cdcapply).
package cdcstream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/worker"
)

// Opener opens the streams of one worker. It implements
// worker.StreamOpener.
type Opener struct {
	// JS publishes and consumes; the worker's own connection.
	JS jetstream.JetStream
	// Lookup expands ${ENV} references of the specs; nil means none is set.
	Lookup func(string) (string, bool)
}

// OpenStream builds the stream of an assignment.
func (o Opener) OpenStream(ctx context.Context, a protocol.StreamAssignment, log *slog.Logger) (worker.Stream, error) {
	var spec pipeline.Spec
	if err := json.Unmarshal(a.Spec, &spec); err != nil {
		return nil, fmt.Errorf("stream %s: spec: %w", a.Pipeline, err)
	}
	switch spec.Pattern {
	case protocol.PatternCDC:
		return o.openReader(ctx, spec, log)
	case protocol.PatternCDCApply:
		return o.openApply(ctx, spec, log)
	}
	return nil, fmt.Errorf("stream %s: pattern %s does not stream", a.Pipeline, spec.Pattern)
}

func (o Opener) expand(config json.RawMessage, v any) error {
	lookup := o.Lookup
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	cfg, err := connectors.ExpandEnv(config, lookup)
	if err != nil {
		return err
	}
	return json.Unmarshal(cfg, v)
}

func (o Opener) openReader(ctx context.Context, spec pipeline.Spec, log *slog.Logger) (worker.Stream, error) {
	var src pipeline.CDCSourceConfig
	if err := o.expand(spec.Source.Config, &src); err != nil {
		return nil, fmt.Errorf("cdc source: %w", err)
	}
	// SLUICE_CDC is the leader's to create (EnsureStreams): a reader
	// creating it would set its own replicas.
	cfg := pgcdc.Config{
		DSN: src.DSN, Slot: spec.SlotName(), Publication: spec.PublicationName(),
		Tables: src.Tables, Pipeline: spec.Name,
	}
	if spec.CDC != nil {
		cfg.Heartbeat = spec.CDC.Heartbeat
		cfg.MessageEvents = spec.CDC.MessageEvents
	}
	r, err := pgcdc.NewReader(cfg, o.JS, log)
	if err != nil {
		return nil, err
	}
	return &reader{r: r, dsn: src.DSN, slot: cfg.Slot, log: log}, nil
}

// reader is the stream of a cdc pipeline.
type reader struct {
	r    *pgcdc.Reader
	dsn  string
	slot string
	log  *slog.Logger

	mu    sync.Mutex
	lag   pgcdc.Lag
	lagAt time.Time
}

func (s *reader) Run(ctx context.Context) error { return s.r.Run(ctx) }

// Status reports the slot's progress and its lag: in bytes as the server
// counts it (asked at most every few seconds), in time as the age of what
// was received but is not confirmed yet.
func (s *reader) Status(ctx context.Context) protocol.StreamStatus {
	st := s.r.Status()
	out := protocol.StreamStatus{
		State: protocol.StreamStreaming, ConfirmedLSN: st.ConfirmedLSN, ReceivedLSN: st.ReceivedLSN,
		LastCommit: st.AckedCommitTime, Events: st.Events, Time: time.Now().UTC(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lagAt) > 2*time.Second {
		lag, err := pgcdc.SlotLag(ctx, s.dsn, s.slot)
		if err != nil {
			s.log.Debug("slot lag", "err", err)
		} else {
			s.lag, s.lagAt = lag, time.Now()
		}
	}
	out.LagBytes = s.lag.Bytes
	if !st.OldestPending.IsZero() {
		out.LagTime = time.Since(st.OldestPending)
	}
	return out
}

func (o Opener) openApply(ctx context.Context, spec pipeline.Spec, log *slog.Logger) (worker.Stream, error) {
	var src pipeline.ApplySourceConfig
	if err := o.expand(spec.Source.Config, &src); err != nil {
		return nil, fmt.Errorf("cdc_apply source: %w", err)
	}
	var sink json.RawMessage
	if err := o.expand(spec.Sink.Config, &sink); err != nil {
		return nil, fmt.Errorf("cdc_apply sink: %w", err)
	}
	var a cdcapply.Applier
	switch spec.Sink.Kind {
	case "postgres":
		c, err := postgres.ParseApplierConfig(sink)
		if err != nil {
			return nil, err
		}
		c.Pipeline, c.Log = spec.Name, log
		p, err := postgres.NewApplier(ctx, c)
		if err != nil {
			return nil, err
		}
		a = p
	case "files":
		c, err := files.ParseApplierConfig(sink)
		if err != nil {
			return nil, err
		}
		f, err := files.NewApplier(c)
		if err != nil {
			return nil, err
		}
		a = f
	default:
		return nil, fmt.Errorf("cdc_apply sink kind %q: want postgres or files", spec.Sink.Kind)
	}
	return cdcapply.NewStream(o.JS, cdcapply.Config{Pipeline: spec.Name, Upstream: src.Pipeline}, a, log)
}
