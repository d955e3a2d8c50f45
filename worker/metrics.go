package worker

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
	"github.com/sluicehq/sluice/telemetry"
)

// streamRecorder turns the statuses a held stream reports with its lease
// renewals into metrics: lag gauges and event counters.
type streamRecorder struct {
	m      *telemetry.Metrics
	a      protocol.StreamAssignment
	events int64 // Events of the last status
}

func (w *Worker) streamMetrics(a protocol.StreamAssignment) *streamRecorder {
	return &streamRecorder{m: w.cfg.Metrics, a: a}
}

// record records one status. Events counts since the stream was opened:
// a smaller count than the last means the stream was opened again.
func (r *streamRecorder) record(st protocol.StreamStatus) {
	if r.m == nil || st.State != protocol.StreamStreaming {
		return
	}
	delta := st.Events - r.events
	if delta < 0 {
		delta = st.Events
	}
	r.events = st.Events
	switch r.a.Pattern {
	case protocol.PatternCDC:
		r.m.CDCStatus(r.a.Pipeline, r.a.Settings.Slot, st.LagBytes, st.LagTime, delta)
	case protocol.PatternCDCApply:
		r.m.ApplyStatus(r.a.Pipeline, st.LagTime, st.Pending, delta)
	}
}

// forget removes the stream's gauges when the lease ends.
func (r *streamRecorder) forget() {
	if r.m == nil {
		return
	}
	r.m.StreamGone(r.a.Pipeline, r.a.Settings.Slot)
}

// batchTrace traces the batches of the stream of a: a span per batch
// published (cdc) or applied (cdc_apply), a root span linked to the trace
// of the cdc pipeline's snapshot run.
func (w *Worker) batchTrace(a protocol.StreamAssignment) connectors.BatchTrace {
	name := telemetry.SpanCDCBatch
	if a.Pattern == protocol.PatternCDCApply {
		name = telemetry.SpanApplyBatch
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer)}
	if a.Pattern == protocol.PatternCDCApply {
		opts[1] = trace.WithSpanKind(trace.SpanKindConsumer)
	}
	if sc := trace.SpanContextFromContext(telemetry.ExtractMap(context.Background(), a.Trace)); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			telemetry.AttrLink.String(telemetry.LinkSnapshot)}}))
	}
	attrs := []attribute.KeyValue{telemetry.AttrPipeline.String(a.Pipeline), telemetry.AttrWorker.String(w.cfg.ID)}
	if a.Settings.Slot != "" {
		attrs = append(attrs, telemetry.AttrSlot.String(a.Settings.Slot))
	}
	return func(ctx context.Context, b connectors.BatchInfo) (context.Context, func(error)) {
		batch := slices.Concat(attrs, []attribute.KeyValue{telemetry.AttrEvents.Int(b.Events)})
		ctx, span := w.tracer.Start(ctx, name, slices.Concat(opts, []trace.SpanStartOption{trace.WithAttributes(batch...)})...)
		if b.To > 0 {
			span.SetAttributes(telemetry.AttrSeq.Int64(int64(b.To)))
		}
		return ctx, func(err error) {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
	}
}
