package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// cleanupEvery is how often the leader tries the pending cleanups;
// cleanupTimeout bounds one try of one cleanup (a source that does not
// answer must not hold up the others for long).
const (
	cleanupEvery   = time.Second
	cleanupTimeout = 30 * time.Second
)

// cleanupWarnAfter is how long a cleanup may keep failing before each
// failure is logged as a warning: a deleted cdc pipeline's slot stays
// active until its reader notices that its lease is gone.
const cleanupWarnAfter = time.Minute

// replicationDropper is a cdc snapshot source that can drop the slot and
// publication of its configuration (pgcdc.SnapshotSource).
type replicationDropper interface {
	DropReplication(ctx context.Context) error
}

// what says what a cleanup removes.
func (cl cleanup) what() string {
	switch cl.Pattern {
	case protocol.PatternCDC:
		return fmt.Sprintf("replication slot %s, publication %s and the events of %s in %s", cl.Slot, cl.Publication, cl.Pipeline, protocol.StreamCDC)
	case protocol.PatternCDCApply:
		return fmt.Sprintf("consumer %s of %s", protocol.CDCApplyConsumer(cl.Pipeline), protocol.StreamCDC)
	}
	return "nothing"
}

// cleanUps removes what deleted pipelines left behind while leading, apart
// from the streams' loop: dropping a slot waits on the source database.
func (t *leaderTerm) cleanUps(ctx context.Context) {
	log := t.c.log.With("role", "leader")
	tick := time.NewTicker(cleanupEvery)
	defer tick.Stop()
	for {
		t.cleanUp(ctx, log)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// cleanUp tries each pending cleanup once and records those that
// succeeded; a failed one is tried again at the next tick.
func (t *leaderTerm) cleanUp(ctx context.Context, log *slog.Logger) {
	for _, cl := range t.c.fsm.cleanups() {
		cctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
		err := t.cleanUpOne(cctx, cl)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			level := slog.LevelDebug
			if time.Since(cl.Created) > cleanupWarnAfter {
				level = slog.LevelWarn
			}
			log.Log(ctx, level, "clean up deleted pipeline", "pipeline", cl.Pipeline, "cleanup", cl.what(), "err", err)
			continue
		}
		if _, err := apply(t.c, cleanupDoneCmd{ID: cl.ID}); err != nil {
			log.Warn("clean up deleted pipeline: record", "pipeline", cl.Pipeline, "err", err)
			return
		}
		log.Info("deleted pipeline cleaned up", "pipeline", cl.Pipeline, "removed", cl.what())
	}
}

// trimEvery is how often the leader trims the state (stateTrimCmd).
const trimEvery = time.Minute

// trims trims the state every trimEvery while leading.
func (t *leaderTerm) trims(ctx context.Context) {
	log := t.c.log.With("role", "leader")
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.trim(log)
	}
}

// trim applies one stateTrimCmd and logs what it dropped; a cleanup given
// up is a warning naming what is left to remove by hand.
func (t *leaderTerm) trim(log *slog.Logger) {
	out, err := apply(t.c, stateTrimCmd{CleanupExpiry: t.c.cfg.CleanupExpiry, Time: now()})
	if err != nil {
		log.Warn("trim state", "err", err)
		return
	}
	for _, cl := range out.Expired {
		log.Warn("cleanup of a deleted pipeline given up: remove what is left by hand", "pipeline", cl.Pipeline,
			"left", cl.what(), "deleted", cl.Created, "expiry", t.c.cfg.CleanupExpiry)
	}
	if out.changed() {
		log.Info("state trimmed", "dropped_pipelines", out.Dropped, "expired_cleanups", len(out.Expired),
			"runs_stripped", out.Runs, "backfills_stripped", out.Backfills)
	}
}

func (t *leaderTerm) cleanUpOne(ctx context.Context, cl cleanup) error {
	if wait := cl.Lease - time.Since(cl.Created); wait > 0 {
		return fmt.Errorf("waiting %s for the holder of the lease to stop", wait.Round(time.Millisecond))
	}
	switch cl.Pattern {
	case protocol.PatternCDC:
		spec := pipeline.Spec{Name: cl.Pipeline, Pattern: cl.Pattern, CDC: &pipeline.CDC{Slot: cl.Slot, Publication: cl.Publication}}
		spec.Source = protocol.Endpoint{Kind: cl.SourceKind, Config: cl.Source}
		if kinds := t.c.reg.KindsOf(connectors.RoleCDCSource); spec.Source.Kind == "" && len(kinds) == 1 {
			// Recorded before cleanups kept the source kind: the one kind
			// that can be a cdc source.
			spec.Source.Kind = kinds[0]
		}
		src, _, err := snapshotEndpoints(t.c.reg, spec)
		if err != nil {
			return err
		}
		s, err := t.c.reg.OpenSource(ctx, src.Kind, src.Config)
		if err != nil {
			return err
		}
		defer s.Close()
		d, ok := s.(replicationDropper)
		if !ok {
			return fmt.Errorf("source kind %s cannot drop a replication slot", src.Kind)
		}
		if err := d.DropReplication(ctx); err != nil {
			return err
		}
		stream, err := t.c.js.Stream(ctx, protocol.StreamCDC)
		if err != nil {
			return fmt.Errorf("stream %s: %w", protocol.StreamCDC, err)
		}
		subject := protocol.CDCSubjectPrefix(cl.Pipeline) + ">"
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return fmt.Errorf("purge %s of %s: %w", subject, protocol.StreamCDC, err)
		}
	case protocol.PatternCDCApply:
		err := t.c.js.DeleteConsumer(ctx, protocol.StreamCDC, protocol.CDCApplyConsumer(cl.Pipeline))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", protocol.CDCApplyConsumer(cl.Pipeline), err)
		}
	}
	return nil
}
