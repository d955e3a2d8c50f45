package coordinator

import (
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// readyState is where a readiness pipeline is: the partitions it watches
// are announced one at a time, in order. A partition found complete is
// Pending until the leader records that its ready event is published; a
// leader taking over publishes a pending partition's event again, under
// the same message id, and never checks a partition twice.
type readyState struct {
	// Next is where the next partition to check starts.
	Next time.Time `json:"next"`
	// Pending is the partition found complete and not yet announced.
	Pending *readyPartition `json:"pending,omitempty"`
	// Last is the last partition announced; Seq counts them.
	Last *readyPartition `json:"last,omitempty"`
	Seq  int64           `json:"seq"`
}

// readyPartition is one partition found complete.
type readyPartition struct {
	Window protocol.Window `json:"window"`
	// Partition is the partition as the source names it (a directory).
	Partition string `json:"partition"`
	// Seq numbers the pipeline's partitions announced from 1.
	Seq       int64     `json:"seq"`
	Found     time.Time `json:"found"`
	Announced time.Time `json:"announced,omitzero"`
	// Snapshot, for a pipeline watching a table's snapshots, is the
	// snapshot's id (Window.From its commit time), Summary its summary.
	Snapshot string            `json:"snapshot,omitempty"`
	Summary  map[string]string `json:"summary,omitempty"`
}

// msgID is the message id of the partition's ready event.
func (r readyPartition) msgID(pipeline string) string {
	if r.Snapshot != "" {
		return protocol.ReadySnapshotMsgID(pipeline, r.Snapshot)
	}
	return protocol.ReadyMsgID(pipeline, r.Window.From)
}

// is reports whether r is the partition from (a time partition), or the
// snapshot id.
func (r *readyPartition) is(from time.Time, snapshot string) bool {
	if r == nil {
		return false
	}
	if snapshot != "" || r.Snapshot != "" {
		return r.Snapshot == snapshot
	}
	return r.Window.From.Equal(from)
}

func (r *readyState) clone() *readyState {
	c := *r
	if r.Pending != nil {
		p := *r.Pending
		c.Pending = &p
	}
	if r.Last != nil {
		l := *r.Last
		c.Last = &l
	}
	return &c
}

// readyNext returns where the next partition to check starts: after the last
// one found, or the spec's readiness.start.
func (p *pipelineState) readyNext() time.Time {
	if p.Ready != nil && !p.Ready.Next.IsZero() {
		return p.Ready.Next
	}
	if p.Spec.Readiness != nil {
		return p.Spec.Readiness.Start
	}
	return time.Time{}
}

// readyFoundCmd records that the partition Window of readiness pipeline
// Pipeline is complete: the next one to check, found at Time. With
// Snapshot set, it records instead that the table the pipeline watches
// has the new snapshot Snapshot, committed at Window.From, the next to
// announce.
type readyFoundCmd struct {
	Pipeline  string            `json:"pipeline"`
	Window    protocol.Window   `json:"window"`
	Partition string            `json:"partition"`
	Time      time.Time         `json:"time"`
	Snapshot  string            `json:"snapshot,omitempty"`
	Summary   map[string]string `json:"summary,omitempty"`
}

func (readyFoundCmd) cmdType() cmdType { return cmdReadyFound }

// applyTo makes the partition pending. The same partition found again
// (a leader that retried the entry) changes nothing; any other partition
// than the next is refused.
func (c readyFoundCmd) applyTo(s *state) (noReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return noReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	if p.Spec.Pattern != protocol.PatternReadiness {
		return noReply{}, refuse(refusedInvalid, "pipeline %q is of pattern %s: only a readiness pipeline announces partitions", c.Pipeline, p.Spec.Pattern)
	}
	if p.Ready != nil && p.Ready.Pending != nil {
		if p.Ready.Pending.is(c.Window.From, c.Snapshot) {
			return noReply{}, nil
		}
		return noReply{}, refuse(refusedConflict, "pipeline %q: partition %s is still to be announced", c.Pipeline, p.Ready.Pending.Partition)
	}
	if c.Snapshot != "" {
		// Snapshots come in the order of the table's lineage, each once.
		if p.Ready != nil && p.Ready.Last.is(c.Window.From, c.Snapshot) {
			return noReply{}, nil
		}
		if next := p.readyNext(); c.Window.From.Before(next) {
			return noReply{}, refuse(refusedConflict, "pipeline %q: snapshot %s was committed at %s, before the last announced (%s)", c.Pipeline, c.Snapshot, c.Window.From.Format(time.RFC3339Nano), next.Format(time.RFC3339Nano))
		}
		if p.Ready == nil {
			p.Ready = &readyState{}
		}
		p.Ready.Pending = &readyPartition{Window: c.Window, Partition: c.Partition, Seq: p.Ready.Seq + 1, Found: c.Time,
			Snapshot: c.Snapshot, Summary: c.Summary}
		p.Ready.Next = c.Window.From
		return noReply{}, nil
	}
	if next := p.readyNext(); !c.Window.From.Equal(next) {
		return noReply{}, refuse(refusedConflict, "pipeline %q: partition %s is not the next to announce (from %s)", c.Pipeline, c.Window, next.Format(time.RFC3339Nano))
	}
	if p.Ready == nil {
		p.Ready = &readyState{}
	}
	p.Ready.Pending = &readyPartition{Window: c.Window, Partition: c.Partition, Seq: p.Ready.Seq + 1, Found: c.Time}
	p.Ready.Next = c.Window.To
	return noReply{}, nil
}

// readyAnnouncedCmd records that the ready event of the pending partition
// starting at From (the pending snapshot Snapshot, when set) is
// published.
type readyAnnouncedCmd struct {
	Pipeline string    `json:"pipeline"`
	From     time.Time `json:"from"`
	Time     time.Time `json:"time"`
	Snapshot string    `json:"snapshot,omitempty"`
}

func (readyAnnouncedCmd) cmdType() cmdType { return cmdReadyAnnounced }

// applyTo moves the pending partition to Last. Announcing the last
// partition again changes nothing.
func (c readyAnnouncedCmd) applyTo(s *state) (noReply, error) {
	p, ok := s.live(c.Pipeline)
	if !ok {
		return noReply{}, refuse(refusedNotFound, "pipeline %q not found", c.Pipeline)
	}
	r := p.Ready
	switch {
	case r != nil && r.Pending.is(c.From, c.Snapshot):
	case r != nil && r.Last.is(c.From, c.Snapshot):
		return noReply{}, nil
	default:
		return noReply{}, refuse(refusedConflict, "pipeline %q: no partition from %s is pending", c.Pipeline, c.From.Format(time.RFC3339Nano))
	}
	r.Last, r.Pending = r.Pending, nil
	r.Last.Announced = c.Time
	r.Seq = r.Last.Seq
	return noReply{}, nil
}
