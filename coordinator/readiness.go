package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// readinessTick is how often the leader looks for readiness pipelines
// whose next check is due.
const readinessTick = 250 * time.Millisecond

// maxReadyPerCheck bounds the partitions one check of a pipeline
// announces, so that catching up a long history shares the leader.
const maxReadyPerCheck = 100

// readiness runs the readiness pipelines while the term lasts: every
// readiness.check each one's next partition is checked with its source's
// Readiness capability (or its table's new snapshots listed with its
// Snapshots capability), on the leader, and each partition found complete
// is recorded (readyFoundCmd), announced on sluice.events.ready.<pipeline>,
// starts the pipelines that run after it, and is recorded as announced
// (readyAnnouncedCmd). No task is published and no worker slot is held.
func (t *leaderTerm) readiness(ctx context.Context) {
	log := t.c.log.With("role", "leader")
	due := map[string]time.Time{}
	tick := time.NewTicker(readinessTick)
	defer tick.Stop()
	for {
		for _, p := range t.c.fsm.pipelines() {
			if p.Spec.Pattern != protocol.PatternReadiness || now().Before(due[p.Spec.Name]) {
				continue
			}
			started := now()
			due[p.Spec.Name] = started.Add(p.Spec.Readiness.CheckEvery())
			if err := t.watch(ctx, log.With("pipeline", p.Spec.Name), p); err != nil {
				if ctx.Err() == nil {
					log.Warn("check readiness", "pipeline", p.Spec.Name, "err", err)
				}
			} else {
				t.checks.done(p.Spec.Name, started)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// readyChecks counts the readiness checks a term completed, by pipeline.
type readyChecks struct {
	mu sync.Mutex
	by map[string]readyCount
}

type readyCount struct {
	n       int64
	started time.Time
}

// done counts a check of pipeline that started at started and completed.
func (c *readyChecks) done(pipeline string, started time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]readyCount{}
	}
	n := c.by[pipeline]
	c.by[pipeline] = readyCount{n: n.n + 1, started: started}
}

// get returns the checks of pipeline completed and when the last started.
func (c *readyChecks) get(pipeline string) (int64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.by[pipeline]
	return n.n, n.started
}

// watch announces the partition p has pending, then checks the partitions
// after it in order and announces each complete one, up to
// maxReadyPerCheck, stopping at the first that is not.
func (t *leaderTerm) watch(ctx context.Context, log *slog.Logger, p *pipelineState) error {
	c := t.c
	name := p.Spec.Name
	if p.Ready != nil && p.Ready.Pending != nil {
		if err := t.announceReady(ctx, log, p, *p.Ready.Pending); err != nil {
			return err
		}
	}
	if c.reg.WatchesSnapshots(p.Spec.Source.Kind) {
		return t.watchSnapshots(ctx, log, p)
	}
	size := c.reg.PartitionSize(p.Spec.Source.Kind, p.Spec.Source.Config)
	if size <= 0 {
		return fmt.Errorf("source %s is not laid out by time partitions", p.Spec.Source.Kind)
	}
	src, err := c.reg.OpenSource(ctx, p.Spec.Source.Kind, p.Spec.Source.Config)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer func() {
		if err := src.Close(); err != nil {
			log.Warn("close source after readiness check", "err", err)
		}
	}()
	rd, ok := src.(connectors.Readiness)
	if !ok {
		return fmt.Errorf("source %s cannot tell when a partition is complete", p.Spec.Source.Kind)
	}
	for range maxReadyPerCheck {
		cur, ok := c.fsm.pipeline(name)
		if !ok || cur.Spec.Pattern != protocol.PatternReadiness {
			return nil // deleted or changed meanwhile
		}
		from := cur.readyNext()
		w := protocol.Window{From: from, To: from.Add(size)}
		ready, what, err := rd.Ready(ctx, connectors.PlanRequest{Pipeline: name, Window: &w, LogicalTime: from})
		if err != nil {
			return fmt.Errorf("check partition %s: %w", w, err)
		}
		if !ready {
			return nil
		}
		if _, err := apply(c, readyFoundCmd{Pipeline: name, Window: w, Partition: what, Time: now()}); err != nil {
			return fmt.Errorf("record partition %s found: %w", what, err)
		}
		cur, ok = c.fsm.pipeline(name)
		if !ok || cur.Ready == nil || cur.Ready.Pending == nil {
			return nil
		}
		if err := t.announceReady(ctx, log, cur, *cur.Ready.Pending); err != nil {
			return err
		}
	}
	return nil
}

// watchSnapshots announces the snapshots committed to the table p watches
// since the last announced (since readiness.start before the first), in
// the order of the table's lineage, up to maxReadyPerCheck; p's pending
// snapshot, if any, is announced already (watch).
func (t *leaderTerm) watchSnapshots(ctx context.Context, log *slog.Logger, p *pipelineState) error {
	c := t.c
	name := p.Spec.Name
	src, err := c.reg.OpenSource(ctx, p.Spec.Source.Kind, p.Spec.Source.Config)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer func() {
		if err := src.Close(); err != nil {
			log.Warn("close source after readiness check", "err", err)
		}
	}()
	sw, ok := src.(connectors.Snapshots)
	if !ok {
		return fmt.Errorf("source %s cannot list its snapshots", p.Spec.Source.Kind)
	}
	cur, ok := c.fsm.pipeline(name)
	if !ok || cur.Spec.Pattern != protocol.PatternReadiness {
		return nil
	}
	var last string
	if cur.Ready != nil && cur.Ready.Last != nil {
		last = cur.Ready.Last.Snapshot
	}
	snaps, err := sw.SnapshotsAfter(ctx, last, cur.readyNext(), maxReadyPerCheck)
	if err != nil {
		return fmt.Errorf("list the snapshots after %q: %w", last, err)
	}
	for _, sn := range snaps {
		w := protocol.Window{From: sn.Time, To: sn.Time}
		if _, err := apply(c, readyFoundCmd{Pipeline: name, Window: w, Partition: sn.ID, Time: now(), Snapshot: sn.ID, Summary: sn.Summary}); err != nil {
			return fmt.Errorf("record snapshot %s found: %w", sn.ID, err)
		}
		cur, ok := c.fsm.pipeline(name)
		if !ok || cur.Spec.Pattern != protocol.PatternReadiness {
			return nil // deleted or changed meanwhile
		}
		if cur.Ready == nil || cur.Ready.Pending == nil {
			continue // announced already
		}
		if err := t.announceReady(ctx, log, cur, *cur.Ready.Pending); err != nil {
			return err
		}
	}
	return nil
}

// announceReady publishes the ready event of part, a partition p found
// complete, unless the last event on the pipeline's subject is already
// this one (a leader that published it and stopped before recording it:
// the message id also makes JetStream drop a repeat within its duplicate
// window); then it starts the pipelines that run after p, and records the
// partition announced.
func (t *leaderTerm) announceReady(ctx context.Context, log *slog.Logger, p *pipelineState, part readyPartition) error {
	c := t.c
	name := p.Spec.Name
	subject := protocol.ReadyEventSubject(name)
	msgID := part.msgID(name)
	published, err := t.lastEventIs(ctx, subject, msgID)
	if err != nil {
		return err
	}
	if !published {
		data, err := protocol.Encode(protocol.ReadyEvent{Pipeline: name, Partition: part.Partition, Window: part.Window,
			Source: p.Spec.Source.Kind, Seq: part.Seq, Time: part.Found, Snapshot: part.Snapshot, Summary: part.Summary})
		if err != nil {
			return err
		}
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(protocol.HeaderMsgID, msgID)
		if _, err := c.js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("publish ready event: %w", err)
		}
	}
	if err := t.startAfter(ctx, log, name, msgID, protocol.TriggerContext{
		Subject: subject, MsgID: msgID, Source: "after:" + name, EventTime: part.Found,
		After: &protocol.UpstreamRun{Pipeline: name, RunID: msgID, Location: part.Partition},
	}); err != nil {
		return err
	}
	if _, err := apply(c, readyAnnouncedCmd{Pipeline: name, From: part.Window.From, Time: now(), Snapshot: part.Snapshot}); err != nil {
		return fmt.Errorf("record partition %s announced: %w", part.Partition, err)
	}
	log.Info("partition ready", "partition", part.Partition, "seq", part.Seq)
	return nil
}

// lastEventIs reports whether the last message on subject in the events
// stream has the message id msgID.
func (t *leaderTerm) lastEventIs(ctx context.Context, subject, msgID string) (bool, error) {
	s, err := t.c.js.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		return false, fmt.Errorf("look up events stream: %w", err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read last ready event: %w", err)
	}
	return m.Header.Get(protocol.HeaderMsgID) == msgID, nil
}
