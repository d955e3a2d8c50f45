package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// triggerMaxDeliveriesSubject is the advisory JetStream sends when a
// trigger reached the leader's consumer's MaxDeliver without an answer (the
// leader died on its last delivery).
var triggerMaxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + protocol.StreamTriggers + "." + protocol.ConsumerTriggers

// triggerRequestID is the run request id of a trigger: its Nats-Msg-Id,
// or its stream sequence when it has none, scoped to its pipeline. The same
// message delivered again (or published again with the same id) finds the
// run the first delivery created.
func triggerRequestID(pipelineName, msgID string, seq uint64) string {
	if msgID != "" {
		return "trigger:" + pipelineName + ":" + msgID
	}
	return "trigger:" + pipelineName + ":seq:" + strconv.FormatUint(seq, 10)
}

// permanentError is a trigger that will fail on every delivery.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// onTrigger starts the run a trigger asks for and acks it after the Raft
// entry. A bad trigger is dead-lettered and terminated; one that failed for
// a transient reason is delivered again later, and dead-lettered on its
// last delivery.
func (t *leaderTerm) onTrigger(ctx context.Context, m jetstream.Msg) {
	c := t.c
	md, err := m.Metadata()
	if err != nil {
		c.log.Warn("trigger without metadata", "subject", m.Subject(), "err", err)
		m.Term()
		return
	}
	seq, attempts := md.Sequence.Stream, int(md.NumDelivered)
	log := c.log.With("subject", m.Subject(), "seq", seq, "delivery", attempts)
	runID, err := t.handleTrigger(ctx, m, seq, attempts)
	var perm *permanentError
	switch {
	case err == nil:
		if err := m.Ack(); err != nil {
			log.Warn("ack trigger", "run", runID, "err", err)
		}
		return
	case errors.As(err, &perm):
		log.Warn("bad trigger: dead-lettered", "reason", err)
	case attempts >= TriggerMaxDeliver:
		log.Warn("trigger failed on its last delivery: dead-lettered", "err", err)
		err = fmt.Errorf("failed %d deliveries; last: %w", attempts, err)
	default:
		log.Warn("trigger failed; delivered again later", "err", err)
		m.NakWithDelay(triggerBackOff[min(attempts, len(triggerBackOff))-1])
		return
	}
	if derr := t.deadLetterTrigger(ctx, m.Subject(), m.Headers(), m.Data(), seq, attempts, err.Error()); derr != nil {
		// Not terminated: it comes back, and is dead-lettered then.
		log.Warn("dead-letter trigger", "err", derr)
		m.NakWithDelay(triggerBackOff[0])
		return
	}
	if err := m.Term(); err != nil {
		log.Warn("terminate trigger", "err", err)
	}
}

// handleTrigger validates a trigger and starts its run.
func (t *leaderTerm) handleTrigger(ctx context.Context, m jetstream.Msg, seq uint64, attempts int) (string, error) {
	c := t.c
	name, ok := protocol.TriggerPipeline(m.Subject())
	if !ok {
		return "", &permanentError{fmt.Sprintf("subject %q does not name a pipeline: want sluice.trigger.<pipeline>", m.Subject())}
	}
	tr, err := protocol.ParseTrigger(m.Data())
	if err != nil {
		return "", &permanentError{"payload: " + err.Error()}
	}
	if tr.Pipeline != "" && tr.Pipeline != name {
		return "", &permanentError{fmt.Sprintf("payload: pipeline: %q differs from the subject's pipeline %q", tr.Pipeline, name)}
	}
	if _, ok := c.fsm.pipeline(name); !ok {
		// A node that lost leadership may not hold a pipeline the new
		// leader stored: the trigger is delivered again, to the leader.
		if !c.stillLeader() {
			return "", fmt.Errorf("pipeline %q unknown to this node, which no longer leads", name)
		}
		return "", &permanentError{fmt.Sprintf("pipeline %q not found", name)}
	}
	h := m.Headers()
	msgID := h.Get(protocol.HeaderMsgID)
	trig := &protocol.TriggerContext{
		Subject: m.Subject(), MsgID: msgID, StreamSeq: seq, Headers: map[string]string{},
		Source: tr.Source, EventTime: tr.EventTime, Deliveries: attempts,
	}
	if md, err := m.Metadata(); err == nil {
		trig.PublishTime = md.Timestamp.UTC()
	}
	for k, v := range h {
		if len(v) > 0 && c.cfg.recordsHeader(k) {
			trig.Headers[k] = v[0]
		}
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := (telemetry.HeaderCarrier(h)).Get(k); v != "" {
			if trig.Trace == nil {
				trig.Trace = map[string]string{}
			}
			trig.Trace[k] = v
		}
	}
	req := protocol.RunRequest{Pipeline: name, Params: tr.Params, LogicalTime: tr.LogicalTime,
		RequestID: triggerRequestID(name, msgID, seq)}
	id, upToDate, err := t.startRun(ctx, req, trig)
	if err != nil {
		if rf := refusalOf(err); rf != nil && (rf.code == refusedInvalid || rf.code == refusedNotFound) {
			return "", &permanentError{rf.msg}
		}
		return "", err // transient: no leader, a Raft error, a conflict
	}
	if upToDate != nil {
		c.log.Info("trigger: pipeline up to date, no run", "pipeline", name, "seq", seq)
		return "", nil
	}
	c.log.Info("run triggered", "run", id, "subject", m.Subject(), "msg_id", msgID)
	return id, nil
}

// deadLetterTrigger publishes a trigger to SLUICE_DLQ with its payload,
// its headers, the reason and the attempts. Its msg id derives from the
// trigger's stream sequence: dead-lettering it twice gives one record.
func (t *leaderTerm) deadLetterTrigger(ctx context.Context, subject string, h nats.Header, data []byte, seq uint64, attempts int, reason string) error {
	name, ok := protocol.TriggerPipeline(subject)
	if !ok {
		name = "_invalid"
	}
	m := nats.NewMsg(protocol.DLQSubject("trigger", name))
	m.Data = data
	for k, v := range h {
		if k == protocol.HeaderMsgID {
			m.Header.Set(protocol.HeaderOrigMsgID, v[0])
			continue
		}
		m.Header[k] = v
	}
	m.Header.Set(protocol.HeaderMsgID, "dlq:trigger:"+strconv.FormatUint(seq, 10))
	m.Header.Set(protocol.HeaderReason, reason)
	m.Header.Set(protocol.HeaderAttempts, strconv.Itoa(attempts))
	m.Header.Set(protocol.HeaderOrigSubject, subject)
	m.Header.Set(protocol.HeaderOrigSeq, strconv.FormatUint(seq, 10))
	if tp := (telemetry.HeaderCarrier(h)).Get("traceparent"); len(tp) >= 35 {
		m.Header.Set(protocol.HeaderTraceID, tp[3:35])
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := t.c.js.PublishMsg(pctx, m)
	return err
}

// onTriggerMaxDeliveries dead-letters a trigger JetStream gave up on
// without an answer from a leader.
func (t *leaderTerm) onTriggerMaxDeliveries(ctx context.Context, m *nats.Msg) {
	c := t.c
	var adv maxDeliveries
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		c.log.Warn("bad trigger max-deliveries advisory", "err", err)
		return
	}
	stream, err := c.js.Stream(ctx, protocol.StreamTriggers)
	if err != nil {
		c.log.Warn("trigger max deliveries: open stream", "err", err)
		return
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		c.log.Warn("trigger max deliveries: get message", "seq", adv.StreamSeq, "err", err)
		return
	}
	if name, ok := protocol.TriggerPipeline(raw.Subject); ok {
		if _, started := c.fsm.requestRun(triggerRequestID(name, raw.Header.Get(protocol.HeaderMsgID), adv.StreamSeq)); started {
			return // its run exists: only the ack was lost
		}
	}
	reason := fmt.Sprintf("delivered %d times without an answer from a leader", adv.Deliveries)
	if err := t.deadLetterTrigger(ctx, raw.Subject, raw.Header, raw.Data, adv.StreamSeq, adv.Deliveries, reason); err != nil {
		c.log.Warn("trigger max deliveries: dead-letter", "seq", adv.StreamSeq, "err", err)
	}
}

// afterRequestID is the run request id of the run of downstream started by
// the commit of upstream run runID: announcing that commit again, on this
// leader or the next, finds the run the first announcement created.
func afterRequestID(runID, downstream string) string {
	return "after:" + runID + ":" + downstream
}

// startDownstream starts a run of every pipeline whose trigger.after names
// the pipeline of r, a committed run, before r is marked announced. Its
// trigger context names r, its dataset location and version. A run that
// cannot be started (the downstream pipeline is invalid for it, or up to
// date) is logged and skipped; a transient error is returned, and the
// announcement is tried again.
func (t *leaderTerm) startDownstream(ctx context.Context, log *slog.Logger, r *runState) error {
	return t.startAfter(ctx, log, r.Pipeline, r.ID, protocol.TriggerContext{
		Subject: protocol.RunEventSubject(r.Pipeline, r.State), MsgID: "event:" + r.ID,
		Source: "after:" + r.Pipeline, EventTime: r.Finished,
		After: &protocol.UpstreamRun{Pipeline: r.Pipeline, RunID: r.ID, Location: r.Location, Version: r.Version},
	})
}

// startAfter starts a run of every pipeline whose trigger.after names
// upstream, each with the trigger context trig and a request id made of
// key (afterRequestID), so that starting them again finds the same runs.
func (t *leaderTerm) startAfter(ctx context.Context, log *slog.Logger, upstream, key string, trig protocol.TriggerContext) error {
	c := t.c
	for _, p := range c.fsm.pipelines() {
		if p.Spec.Trigger == nil || p.Spec.Trigger.After != upstream || p.Spec.Name == upstream {
			continue
		}
		name := p.Spec.Name
		tc := trig
		req := protocol.RunRequest{Pipeline: name, RequestID: afterRequestID(key, name)}
		id, upToDate, err := t.startRun(ctx, req, &tc)
		if err != nil {
			if refused(err, refusedInvalid, refusedNotFound) {
				log.Warn("downstream run not started", "downstream", name, "err", err)
				continue
			}
			return fmt.Errorf("start downstream run of %s: %w", name, err)
		}
		if upToDate != nil {
			log.Info("downstream pipeline up to date, no run", "downstream", name)
			continue
		}
		log.Info("downstream run started", "downstream", name, "downstream_run", id)
	}
	return nil
}
