package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cdcapply"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/signing"
)

// openStream opens the stream of an assignment through the registry: the
// change reader of a cdc pipeline's source kind, or the Applier of a
// cdc_apply pipeline's sink kind run by the generic runner. ctx bounds the
// opening only.
func (w *Worker) openStream(ctx context.Context, a protocol.StreamAssignment, log *slog.Logger) (connectors.Stream, error) {
	req := connectors.StreamRequest{Pipeline: a.Pipeline, Settings: a.Settings, JS: w.js, Log: log, Trace: w.batchTrace(a)}
	switch a.Pattern {
	case protocol.PatternCDC:
		req.Config = a.Source.Config
		if len(a.Contract) > 0 {
			if !w.reg.CDCSourceAppliesContract(a.Source.Kind) {
				return nil, fmt.Errorf("stream %s: a cdc source of kind %q cannot apply the pipeline's contract", a.Pipeline, a.Source.Kind)
			}
			req.Contract = a.Contract
		}
		return w.reg.OpenCDCSource(ctx, a.Source.Kind, req)
	case protocol.PatternCDCApply:
		req.Config = a.Sink.Config
		req.Purge = func(ctx context.Context, subject string) error { return w.purge(ctx, a, subject) }
		cfg := cdcapply.Config{Pipeline: a.Pipeline, Upstream: a.Settings.Upstream, Trace: req.Trace,
			Consumer: func(ctx context.Context, maxAckPending int, recreate bool) error {
				return w.consumer(ctx, a, maxAckPending, recreate)
			}}
		if len(a.Contract) > 0 {
			// The events are transformed before the applier sees them.
			ct, err := contract.Open(a.Contract)
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", a.Pipeline, err)
			}
			cfg.Transform = ct.Events().Apply
		}
		ap, err := w.reg.OpenApplier(ctx, a.Sink.Kind, req)
		if err != nil {
			return nil, err
		}
		return cdcapply.NewStream(w.js, cfg, ap, log)
	}
	return nil, fmt.Errorf("stream %s: pattern %s does not stream", a.Pipeline, a.Pattern)
}

// held is a stream this worker holds.
type held struct {
	epoch  uint64
	cancel context.CancelFunc
	done   chan struct{}
}

// onAssign takes a stream assignment from the coordinator leader: it stops
// an older epoch of the same pipeline, starts holding the new one and
// replies at once.
func (w *Worker) onAssign(base context.Context, m *nats.Msg) {
	reply := func(err error) {
		r := protocol.AssignReply{OK: err == nil}
		if err != nil {
			r.Error = w.reg.Scrub(err.Error())
		}
		b, _ := json.Marshal(r)
		_ = m.Respond(b)
	}
	if err := w.verify(signing.KindAssign, m.Subject, m.Data, m.Header, &w.forged.assignments); err != nil {
		w.log.Warn("refuse forged stream assignment", "err", err)
		reply(err)
		return
	}
	a, err := protocol.Decode[protocol.StreamAssignment](m.Data)
	if err != nil {
		reply(err)
		return
	}
	w.mu.Lock()
	old := w.streams[a.Pipeline]
	if old != nil && old.epoch >= a.Epoch {
		w.mu.Unlock()
		reply(nil) // a repeated assignment
		return
	}
	ctx, cancel := context.WithCancel(base)
	h := &held{epoch: a.Epoch, cancel: cancel, done: make(chan struct{})}
	w.streams[a.Pipeline] = h
	w.mu.Unlock()
	reply(nil)
	go func() {
		defer close(h.done)
		if old != nil {
			old.cancel()
			<-old.done
		}
		w.hold(ctx, a)
		w.mu.Lock()
		if w.streams[a.Pipeline] == h {
			delete(w.streams, a.Pipeline)
		}
		w.mu.Unlock()
	}()
}

// hold runs the stream of a while the lease lasts: it renews the lease
// every third of it, stops when a renewal is refused or none succeeded for
// two thirds of it (the leader waits a whole lease after the last renewal
// it saw before granting the stream to another worker), and restarts the
// stream after an error with a backoff.
func (w *Worker) hold(ctx context.Context, a protocol.StreamAssignment) {
	log := w.log.With("pipeline", a.Pipeline, "epoch", a.Epoch)
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		mu      sync.Mutex // guards cur and lastErr
		cur     connectors.Stream
		lastErr error
	)
	set := func(s connectors.Stream, err error) {
		mu.Lock()
		defer mu.Unlock()
		if s != nil {
			cur = s
		}
		lastErr = w.reg.ScrubError(err)
	}
	status := func() protocol.StreamStatus {
		mu.Lock()
		s, e := cur, lastErr
		mu.Unlock()
		var st protocol.StreamStatus
		if s != nil {
			sctx, cancel := context.WithTimeout(ctx, a.Lease/3)
			st = s.Status(sctx)
			cancel()
		} else {
			st.State = protocol.StreamStarting
		}
		if e != nil {
			st.State, st.Error = protocol.StreamRetrying, e.Error()
		}
		return st
	}
	// opened asks for a renewal at once when a stream opened, so that its
	// first status shows without waiting a third of a lease.
	opened := make(chan struct{}, 1)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		w.renewLoop(ctx, a, status, opened, stop, log)
	}()
	defer func() { <-renewed }()

	log.Info("stream lease held")
	backoff := time.Second
	for ctx.Err() == nil {
		s, err := w.openStream(ctx, a, log)
		if err == nil {
			set(s, nil)
			select {
			case opened <- struct{}{}:
			default:
			}
			started := time.Now()
			err = s.Run(ctx)
			if time.Since(started) > time.Minute {
				backoff = time.Second
			}
		}
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			err = errors.New("stream ended by itself")
		}
		set(nil, err)
		log.Warn("stream stopped: starting it again", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	log.Info("stream lease given up", "reason", context.Cause(ctx))
}

func (w *Worker) renewLoop(ctx context.Context, a protocol.StreamAssignment, status func() protocol.StreamStatus, opened <-chan struct{}, stop context.CancelCauseFunc, log *slog.Logger) {
	every := a.Lease / 3
	lastOK := time.Now()
	rec := w.streamMetrics(a)
	defer rec.forget()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-opened:
		}
		sent := time.Now()
		st := status()
		rec.record(st)
		ok, reason, err := w.renew(ctx, a, st)
		switch {
		case err != nil:
			log.Warn("renew stream lease", "err", err)
		case !ok:
			stop(fmt.Errorf("lease refused: %s", reason))
			return
		default:
			lastOK = sent
		}
		if time.Since(lastOK) > 2*a.Lease/3 {
			stop(fmt.Errorf("lease not renewed since %s", lastOK.Format(time.RFC3339Nano)))
			return
		}
	}
}

func (w *Worker) renew(ctx context.Context, a protocol.StreamAssignment, st protocol.StreamStatus) (bool, string, error) {
	data, err := json.Marshal(protocol.LeaseRenewRequest{Pipeline: a.Pipeline, Worker: w.cfg.ID, Epoch: a.Epoch, Status: st})
	if err != nil {
		return false, "", err
	}
	rctx, cancel := context.WithTimeout(ctx, a.Lease/3)
	defer cancel()
	m, err := w.nc.RequestWithContext(rctx, protocol.SubjectAPIPrefix+protocol.VerbLeaseRenew, data)
	if err != nil {
		return false, "", err
	}
	if err := w.verifyLease(data, m); err != nil {
		w.log.Warn("ignore forged lease reply", "pipeline", a.Pipeline, "err", err)
		return false, "", err
	}
	var apiErr protocol.APIError
	if json.Unmarshal(m.Data, &apiErr) == nil && apiErr.Code != "" {
		return false, "", fmt.Errorf("%s: %s", apiErr.Code, apiErr.Error)
	}
	var r protocol.LeaseRenewReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, "", fmt.Errorf("lease reply: %w", err)
	}
	return r.OK, r.Reason, nil
}

// purge has the coordinator leader purge subject from the stream the
// target of a's cdc_apply pipeline keeps: the worker's NATS user may not
// purge a stream.
func (w *Worker) purge(ctx context.Context, a protocol.StreamAssignment, subject string) error {
	err := w.askLeader(ctx, protocol.VerbStreamPurge, protocol.StreamPurgeRequest{Pipeline: a.Pipeline, Worker: w.cfg.ID, Epoch: a.Epoch, Subject: subject})
	if err != nil {
		return fmt.Errorf("purge %s: %w", subject, err)
	}
	return nil
}

// consumer has the coordinator leader create the consumer on SLUICE_CDC
// of a's cdc_apply pipeline (again when recreate is set): the worker's
// NATS user may not create or delete a consumer.
func (w *Worker) consumer(ctx context.Context, a protocol.StreamAssignment, maxAckPending int, recreate bool) error {
	return w.askLeader(ctx, protocol.VerbStreamConsumer, protocol.StreamConsumerRequest{Pipeline: a.Pipeline, Worker: w.cfg.ID, Epoch: a.Epoch,
		MaxAckPending: maxAckPending, Recreate: recreate})
}

// askLeader sends the leader a request about a stream this worker holds
// (the leader does it only for the holder of the lease) and waits for it
// to be done, asking again while no leader answers.
func (w *Worker) askLeader(ctx context.Context, verb string, req any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	delay := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, leaderRequestTimeout)
		m, err := w.nc.RequestWithContext(rctx, protocol.APISubject(verb), data)
		cancel()
		if err == nil {
			var apiErr protocol.APIError
			if json.Unmarshal(m.Data, &apiErr) == nil && apiErr.Code != "" {
				err = fmt.Errorf("%s: %s", apiErr.Code, apiErr.Error)
				if apiErr.Code != "not_leader" {
					return err
				}
			} else {
				var r protocol.StreamOpReply
				if err := json.Unmarshal(m.Data, &r); err != nil {
					return fmt.Errorf("%s reply: %w", verb, err)
				}
				if !r.OK {
					return fmt.Errorf("refused: %s", r.Reason)
				}
				return nil
			}
		}
		// No leader now (an election), or it is stepping down: again.
		if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) || !sleep(ctx, delay) {
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// leaderRequestTimeout bounds one request to the leader.
const leaderRequestTimeout = 30 * time.Second

// stopStreams stops every held stream and waits for them.
func (w *Worker) stopStreams() {
	w.mu.Lock()
	hs := make([]*held, 0, len(w.streams))
	for _, h := range w.streams {
		hs = append(hs, h)
	}
	w.mu.Unlock()
	for _, h := range hs {
		h.cancel()
		<-h.done
	}
}
