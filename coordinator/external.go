package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// External triggers. A pipeline whose trigger names a subject of another
// system (trigger: {subject: s3.events}) or a feed (trigger: {kafka:
// {...}}) starts runs on that system's events, whatever their payload:
// the leader reads them (holding no worker slot), applies the trigger's
// filter (an event it rejects is counted and acknowledged), maps payload
// fields to run parameters, and starts the run with the event's identity
// as request id, so an event delivered twice starts one run. A payload
// that cannot be read, lacks a mapped field, or whose parameters the
// pipeline's source refuses (a file outside its path) is dead-lettered
// with the reason, as a bad trigger is.
//
// A subject is read from the stream that captures it: one of the user's,
// or SLUICE_EXTERNAL, whose subjects the leader keeps to those that no
// other stream captures, plus sluice.external.>, where a dead-lettered
// feed event is published again by `sluice dlq replay`. Each pipeline has
// a durable consumer of its own (sluice-ext-<pipeline>), created to
// deliver only events published from then on.

// externalEvery is how often the leader reconciles the external triggers
// with the pipelines.
const externalEvery = 2 * time.Second

// externalStats counts the events of each pipeline's external trigger.
type externalStats struct {
	mu sync.Mutex
	by map[string]*protocol.TriggerEvents
}

func (s *externalStats) update(pipeline string, f func(*protocol.TriggerEvents)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[string]*protocol.TriggerEvents{}
	}
	e, ok := s.by[pipeline]
	if !ok {
		e = &protocol.TriggerEvents{}
		s.by[pipeline] = e
	}
	f(e)
}

// get returns a copy of the counts of pipeline, nil when it has none.
func (s *externalStats) get(pipeline string) *protocol.TriggerEvents {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.by[pipeline]; ok {
		c := *e
		return &c
	}
	return nil
}

// extRunner reads the events of one pipeline revision's trigger.
type extRunner struct {
	revision int64
	subject  string
	cancel   context.CancelFunc
	done     chan struct{}
}

// externalTriggers runs a reader per pipeline with an external trigger,
// for the term: started when the pipeline is, restarted when its spec
// changes, stopped when it is deleted.
func (t *leaderTerm) externalTriggers(ctx context.Context) {
	running := map[string]*extRunner{}
	defer func() {
		for _, r := range running {
			r.cancel()
			<-r.done
		}
	}()
	log := t.c.log.With("role", "leader")
	for {
		want := map[string]*pipelineState{}
		for _, p := range t.c.fsm.pipelines() {
			if p.Spec.Trigger.External() {
				want[p.Spec.Name] = p
			}
		}
		for name, r := range running {
			if p, ok := want[name]; !ok || p.Revision != r.revision {
				r.cancel()
				<-r.done
				delete(running, name)
				if !ok {
					t.dropExternal(ctx, log, name, r.subject)
				}
			}
		}
		if len(want) > 0 {
			if err := t.ensureExternalStream(ctx, want); err != nil && ctx.Err() == nil {
				log.Warn("ensure the stream of external triggers", "err", err)
			}
		}
		for name, p := range want {
			if _, ok := running[name]; ok {
				continue
			}
			rctx, cancel := context.WithCancel(ctx)
			r := &extRunner{revision: p.Revision, subject: p.Spec.Trigger.Subject, cancel: cancel, done: make(chan struct{})}
			spec, since := p.Spec, p.Updated
			if !t.spawn(func() {
				defer close(r.done)
				t.readExternal(rctx, log.With("pipeline", name), spec, since)
			}) {
				cancel()
				return
			}
			running[name] = r
		}
		if !sleep(ctx, externalEvery) {
			return
		}
	}
}

// dropExternal deletes the consumers of a pipeline whose external trigger
// is gone: a consumer left on a user's stream would keep its messages.
func (t *leaderTerm) dropExternal(ctx context.Context, log *slog.Logger, name, subject string) {
	js := t.c.js
	drop := func(stream, consumer string) {
		if err := js.DeleteConsumer(ctx, stream, consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			log.Warn("delete the consumer of a trigger gone", "pipeline", name, "consumer", consumer, "err", err)
		}
	}
	drop(protocol.StreamExternal, protocol.ExternalConsumer(name)+"-replay")
	if subject != "" {
		if stream, err := js.StreamNameBySubject(ctx, subject); err == nil {
			drop(stream, protocol.ExternalConsumer(name))
		}
	}
	t.ext.mu.Lock()
	delete(t.ext.by, name)
	t.ext.mu.Unlock()
}

// ensureExternalStream keeps SLUICE_EXTERNAL capturing sluice.external.>
// and every trigger subject no other stream captures.
func (t *leaderTerm) ensureExternalStream(ctx context.Context, want map[string]*pipelineState) error {
	js := t.c.js
	subjects := []string{protocol.SubjectExternalAll}
	for _, p := range want {
		s := p.Spec.Trigger.Subject
		if s == "" || slices.Contains(subjects, s) {
			continue
		}
		name, err := js.StreamNameBySubject(ctx, s)
		if err == nil && name != protocol.StreamExternal {
			continue // the user's stream captures it
		}
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("find the stream of %s: %w", s, err)
		}
		subjects = append(subjects, s)
	}
	slices.Sort(subjects[1:])
	cfg := jetstream.StreamConfig{
		Name:        protocol.StreamExternal,
		Description: "Events of other systems that start Sluice runs (pipelines' trigger subjects), and replayed trigger events.",
		Subjects:    subjects,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      triggersMaxAge,
		Duplicates:  2 * time.Minute,
		Replicas:    max(t.c.cfg.StreamReplicas, 1),
		// Full, it refuses new events, as SLUICE_TRIGGERS does: the
		// other system's publisher gets the error, no event is dropped.
		MaxBytes: cmp.Or(t.c.cfg.StreamMaxBytes, DefaultStreamMaxBytes),
		Discard:  jetstream.DiscardNew,
	}
	if s, err := js.Stream(ctx, protocol.StreamExternal); err == nil {
		if have := s.CachedInfo().Config; slices.Equal(have.Subjects, subjects) && have.MaxBytes == cfg.MaxBytes && have.Discard == cfg.Discard {
			return nil
		}
	}
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	return err
}

// readExternal reads the events of spec's trigger until ctx ends: its
// subject (or feed) and its replayed events, one at a time each.
func (t *leaderTerm) readExternal(ctx context.Context, log *slog.Logger, spec pipeline.Spec, since time.Time) {
	tr := spec.Trigger
	source := "subject " + tr.Subject
	if tr.Feed != nil {
		source = tr.Feed.Kind + " feed"
	}
	t.ext.update(spec.Name, func(e *protocol.TriggerEvents) { e.Source, e.Error = source, "" })
	var wg sync.WaitGroup
	defer wg.Wait()
	consume := func(stream, consumer, subject string) {
		wg.Go(func() { t.consumeExternal(ctx, log, spec, since, stream, consumer, subject) })
	}
	consume(protocol.StreamExternal, protocol.ExternalConsumer(spec.Name)+"-replay", protocol.ExternalSubject(spec.Name))
	if tr.Subject != "" {
		stream := protocol.StreamExternal
		for ctx.Err() == nil {
			name, err := t.c.js.StreamNameBySubject(ctx, tr.Subject)
			if err == nil {
				stream = name
				break
			}
			t.extError(spec.Name, fmt.Errorf("no stream captures %s yet: %w", tr.Subject, err))
			if !sleep(ctx, externalEvery) {
				return
			}
		}
		consume(stream, protocol.ExternalConsumer(spec.Name), tr.Subject)
		return
	}
	wg.Go(func() { t.readFeed(ctx, log, spec) })
}

func (t *leaderTerm) extError(pipeline string, err error) {
	t.ext.update(pipeline, func(e *protocol.TriggerEvents) { e.Error = err.Error() })
}

// consumeExternal handles the messages of subject in stream through the
// durable consumer: the one a leader created before, which goes on where
// it is, or a new one delivering what the stream stored since the
// pipeline's revision was applied (since). A consumer of another subject
// (the spec changed it) is replaced.
func (t *leaderTerm) consumeExternal(ctx context.Context, log *slog.Logger, spec pipeline.Spec, since time.Time, stream, consumer, subject string) {
	js := t.c.js
	for ctx.Err() == nil {
		cons, err := js.Consumer(ctx, stream, consumer)
		if err == nil && cons.CachedInfo().Config.FilterSubject != subject {
			if err = js.DeleteConsumer(ctx, stream, consumer); err == nil {
				err = jetstream.ErrConsumerNotFound
			}
		}
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
				Durable: consumer, FilterSubject: subject, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: triggerBackOff[0], MaxDeliver: TriggerMaxDeliver,
				Description: "Sluice leader: the events of pipeline " + spec.Name + "'s trigger",
			})
		}
		var cc jetstream.ConsumeContext
		if err == nil {
			cc, err = cons.Consume(func(m jetstream.Msg) { t.onExternalMsg(ctx, log, spec, m) },
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { log.Debug("consume trigger events", "err", err) }))
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("read trigger events", "stream", stream, "subject", subject, "err", err)
				t.extError(spec.Name, fmt.Errorf("read %s from %s: %w", subject, stream, err))
			}
			if !sleep(ctx, externalEvery) {
				return
			}
			continue
		}
		<-ctx.Done()
		cc.Stop()
		<-cc.Closed()
		return
	}
}

// externalEvent is one event of an external trigger, however it came.
type externalEvent struct {
	// ID identifies the event: a message's Nats-Msg-Id, or its stream and
	// sequence; a feed event's own.
	ID, Subject string
	Seq         uint64
	Data        []byte
	Headers     map[string]string
	Published   time.Time
	Deliveries  int
	// Replay is the subject `sluice dlq replay` publishes the event on.
	Replay string
}

// errTransient marks a failure to handle an event that a later attempt
// may not have: it is delivered again.
type errTransient struct{ error }

func (e errTransient) Unwrap() error { return e.error }

func (t *leaderTerm) onExternalMsg(ctx context.Context, log *slog.Logger, spec pipeline.Spec, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		m.Term()
		return
	}
	ev := externalEvent{Subject: m.Subject(), Seq: md.Sequence.Stream, Data: m.Data(), Headers: map[string]string{},
		Published: md.Timestamp.UTC(), Deliveries: int(md.NumDelivered), Replay: m.Subject()}
	for k, v := range m.Headers() {
		if len(v) > 0 {
			ev.Headers[k] = v[0]
		}
	}
	ev.ID = ev.Headers[protocol.HeaderMsgID]
	if ev.ID == "" {
		ev.ID = md.Stream + ":" + strconv.FormatUint(ev.Seq, 10)
	}
	err = t.handleExternal(ctx, log, spec, ev)
	var tr errTransient
	switch {
	case err == nil:
		m.Ack()
	case errors.As(err, &tr) && ev.Deliveries < TriggerMaxDeliver:
		log.Warn("trigger event failed; delivered again later", "seq", ev.Seq, "err", err)
		m.NakWithDelay(triggerBackOff[min(ev.Deliveries, len(triggerBackOff))-1])
	default:
		if errors.As(err, &tr) {
			err = fmt.Errorf("failed %d deliveries; last: %w", ev.Deliveries, err)
		}
		if derr := t.deadLetterExternal(ctx, spec.Name, ev, err.Error()); derr != nil {
			log.Warn("dead-letter trigger event", "err", derr)
			m.NakWithDelay(triggerBackOff[0])
			return
		}
		m.Term()
	}
}

// readFeed reads the events of spec's trigger feed; an event is marked
// done once handled (a run started for it, or it was filtered or
// dead-lettered), and tried again while handling it fails transiently.
func (t *leaderTerm) readFeed(ctx context.Context, log *slog.Logger, spec pipeline.Spec) {
	f := spec.Trigger.Feed
	var feed connectors.Feed
	for feed == nil {
		var err error
		feed, err = t.c.reg.OpenFeed(ctx, f.Kind, f.Config, "sluice.trigger."+spec.Name)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("open the trigger feed", "kind", f.Kind, "err", err)
			t.extError(spec.Name, fmt.Errorf("open the %s feed: %w", f.Kind, err))
			if !sleep(ctx, externalEvery) {
				return
			}
		}
	}
	defer feed.Close()
	for ctx.Err() == nil {
		fe, err := feed.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.extError(spec.Name, fmt.Errorf("read the %s feed: %w", f.Kind, err))
				sleep(ctx, time.Second)
			}
			continue
		}
		ev := externalEvent{ID: fe.ID, Subject: fe.Source, Data: fe.Data, Headers: fe.Headers, Published: fe.Time,
			Replay: protocol.ExternalSubject(spec.Name)}
		for attempt := 1; ctx.Err() == nil; attempt++ {
			ev.Deliveries = attempt
			err := t.handleExternal(ctx, log, spec, ev)
			var tr errTransient
			if err != nil && errors.As(err, &tr) && attempt < TriggerMaxDeliver {
				log.Warn("trigger event failed; tried again", "event", ev.ID, "err", err)
				sleep(ctx, triggerBackOff[min(attempt, len(triggerBackOff))-1])
				continue
			}
			if err != nil {
				if derr := t.deadLetterExternal(ctx, spec.Name, ev, err.Error()); derr != nil {
					log.Warn("dead-letter trigger event", "err", derr)
					sleep(ctx, time.Second)
					continue
				}
			}
			if err := feed.Done(ctx, fe); err != nil && ctx.Err() == nil {
				log.Warn("mark a trigger event done", "event", ev.ID, "err", err)
			}
			break
		}
	}
}

// handleExternal applies spec's trigger to one event and starts its run.
// A nil error means handled (a run started or found, or the event
// filtered); errTransient means try again; any other error dead-letters
// the event with it as the reason.
func (t *leaderTerm) handleExternal(ctx context.Context, log *slog.Logger, spec pipeline.Spec, ev externalEvent) error {
	tr := spec.Trigger
	out, err := tr.Evaluate(ev.Data)
	if err != nil {
		return err
	}
	if !out.Matched {
		t.ext.update(spec.Name, func(e *protocol.TriggerEvents) { e.Filtered++; e.Last = now() })
		log.Debug("trigger event filtered out", "event", ev.ID)
		return nil
	}
	id := ev.ID
	if out.ID != "" {
		id = "id:" + out.ID
	}
	trig := &protocol.TriggerContext{
		Subject: ev.Subject, MsgID: ev.ID, StreamSeq: ev.Seq, Headers: t.c.cfg.recordedHeaders(ev.Headers),
		Source: "trigger of " + spec.Name, EventTime: out.Time, PublishTime: ev.Published, Deliveries: ev.Deliveries,
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := ev.Headers[k]; v != "" {
			if trig.Trace == nil {
				trig.Trace = map[string]string{}
			}
			trig.Trace[k] = v
		}
	}
	req := protocol.RunRequest{Pipeline: spec.Name, Params: out.Params, RequestID: "ext:" + spec.Name + ":" + id}
	runID, upToDate, err := t.startRun(ctx, req, trig)
	if err != nil {
		if rf := refusalOf(err); rf != nil && (rf.code == refusedInvalid || rf.code == refusedNotFound) {
			return errors.New(rf.msg)
		}
		return errTransient{err}
	}
	t.ext.update(spec.Name, func(e *protocol.TriggerEvents) { e.Runs++; e.Last = now() })
	if upToDate != nil {
		log.Info("trigger event: pipeline up to date, no run", "event", ev.ID)
		return nil
	}
	log.Info("run triggered by an event", "run", runID, "event", ev.ID, "params", out.Params)
	return nil
}

// deadLetterExternal keeps an event the trigger could not use in
// SLUICE_DLQ with its payload, headers and the reason; `sluice dlq
// replay` publishes it again on ev.Replay.
func (t *leaderTerm) deadLetterExternal(ctx context.Context, pipelineName string, ev externalEvent, reason string) error {
	m := nats.NewMsg(protocol.DLQSubject("trigger", pipelineName))
	m.Data = ev.Data
	for k, v := range ev.Headers {
		if k == protocol.HeaderMsgID {
			m.Header.Set(protocol.HeaderOrigMsgID, v)
			continue
		}
		m.Header.Set(k, v)
	}
	m.Header.Set(protocol.HeaderMsgID, "dlq:ext:"+pipelineName+":"+ev.ID)
	m.Header.Set(protocol.HeaderReason, reason)
	m.Header.Set(protocol.HeaderAttempts, strconv.Itoa(max(ev.Deliveries, 1)))
	m.Header.Set(protocol.HeaderOrigSubject, ev.Replay)
	if ev.Seq > 0 {
		m.Header.Set(protocol.HeaderOrigSeq, strconv.FormatUint(ev.Seq, 10))
	}
	if tp := ev.Headers["traceparent"]; len(tp) >= 35 {
		m.Header.Set(protocol.HeaderTraceID, tp[3:35])
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := t.c.js.PublishMsg(pctx, m); err != nil {
		return err
	}
	t.ext.update(pipelineName, func(e *protocol.TriggerEvents) { e.DeadLettered++; e.Last = now() })
	t.c.log.Warn("trigger event dead-lettered", "pipeline", pipelineName, "event", ev.ID, "reason", reason)
	return nil
}
