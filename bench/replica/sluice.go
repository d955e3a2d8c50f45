package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/protocol"
)

// sluice is Sluice's replica: the pgcdc Reader publishing into SLUICE_CDC
// and the cdc_apply runner applying the events with the PostgreSQL
// applier (create_tables: typed tables), both in this process, as a
// worker runs them; parallel applies each table on a connection of its own
// (parallel: tables).
type sluice struct {
	b        *bench
	parallel bool
	pipeline string
	cfg      pgcdc.Config
	cancel   context.CancelFunc
	done     chan error
}

func (s *sluice) name() string {
	if s.parallel {
		return "sluice-parallel"
	}
	return "sluice"
}

// prepare creates the publication and the slot, so that the workload is
// in the slot's WAL as for native replication.
func (s *sluice) prepare(ctx context.Context, tables []string) error {
	b := s.b
	b.n++
	s.pipeline = fmt.Sprintf("bench-replica-%d", b.n)
	slot := fmt.Sprintf("%s_s%d", b.cfg.schema, b.n)
	s.cfg = pgcdc.Config{DSN: b.cfg.dsn, Slot: slot, Publication: slot, Tables: tables, Pipeline: s.pipeline}
	if _, err := b.src.Exec(ctx, "CREATE PUBLICATION "+slot+" FOR TABLE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("create publication: %w", err)
	}
	if _, err := b.src.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return fmt.Errorf("create slot: %w", err)
	}
	return nil
}

// start runs the Reader and the runner.
func (s *sluice) start(ctx context.Context) error {
	b := s.b
	reader, err := pgcdc.NewReader(s.cfg, b.js, b.log)
	if err != nil {
		return err
	}
	acfg := postgres.ApplierConfig{DSN: b.targetDSN, Schema: b.cfg.schema + "_s", Pipeline: s.pipeline, CreateTables: true, Log: b.log}
	if s.parallel {
		acfg.Parallel = postgres.ParallelTables
	}
	applier, err := postgres.NewApplier(ctx, acfg)
	if err != nil {
		return err
	}
	stream, err := cdcapply.NewStream(b.js, cdcapply.Config{Pipeline: s.pipeline, Upstream: s.pipeline}, applier, b.log)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 2)
	go func() { s.done <- reader.Run(rctx) }()
	go func() { s.done <- stream.Run(rctx) }()
	return nil
}

// stop stops the Reader and the runner, and drops the slot, the
// publication, the events and the consumer.
func (s *sluice) stop() {
	b := s.b
	if s.cancel != nil {
		s.cancel()
		for range 2 {
			if err := <-s.done; err != nil {
				fmt.Printf("replica: sluice stopped with %v\n", err)
			}
		}
		s.cancel = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.dropSlot(s.cfg.Slot)
	if err := pgcdc.DropSlot(ctx, b.cfg.dsn, "", s.cfg.Publication); err != nil {
		fmt.Printf("replica: %v\n", err)
	}
	if err := b.js.DeleteConsumer(ctx, protocol.StreamCDC, cdcapply.ConsumerName(s.pipeline)); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Printf("replica: delete consumer: %v\n", err)
	}
	// The pipeline's events stay: each measurement has a pipeline, and
	// subjects, of its own.
}
