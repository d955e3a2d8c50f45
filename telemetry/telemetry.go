package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer name and stable span names.
const (
	TracerName = "github.com/sluicehq/sluice"
	SpanRun    = "run"
	SpanPlan   = "plan"
	SpanTask   = "task"
	SpanCommit = "commit"
	// SpanCDCBatch is one batch of change events a cdc pipeline's reader
	// published to SLUICE_CDC; SpanApplyBatch one batch a cdc_apply
	// pipeline applied. Both link to the trace of the cdc pipeline's
	// snapshot run.
	SpanCDCBatch   = "cdc_batch"
	SpanApplyBatch = "apply_batch"
)

// Link kinds (the AttrLink attribute of a span link).
const (
	// LinkUpstream links a run started by `after:` to its upstream run.
	LinkUpstream = "upstream"
	// LinkSnapshot links a CDC batch to the snapshot run of its pipeline.
	LinkSnapshot = "snapshot"
)

// Attribute keys, in one place.
var (
	AttrPipeline  = attribute.Key("sluice.pipeline")
	AttrRun       = attribute.Key("sluice.run")
	AttrTask      = attribute.Key("sluice.task")
	AttrPartition = attribute.Key("sluice.partition")
	AttrAttempt   = attribute.Key("sluice.attempt")
	AttrWorker    = attribute.Key("sluice.worker")
	AttrRows      = attribute.Key("sluice.rows")
	AttrBytes     = attribute.Key("sluice.bytes")
	AttrTasks     = attribute.Key("sluice.tasks")
	AttrVersion   = attribute.Key("sluice.dataset_version")
	AttrLink      = attribute.Key("sluice.link")
	AttrEvents    = attribute.Key("sluice.events")
	AttrSlot      = attribute.Key("sluice.slot")
	AttrSeq       = attribute.Key("sluice.stream_seq")
)

// Propagator is the W3C trace-context propagator Sluice uses everywhere.
var propagator = propagation.TraceContext{}

// Config says where spans go.
type Config struct {
	// Service is the service.name resource attribute.
	Service string
	// File, when set, receives every span as JSON lines (used by `sluice demo`).
	File io.Writer
}

// Setup builds a tracer provider. Spans are exported with OTLP over HTTP
// when the standard OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variable is set (OTEL_TRACES_EXPORTER=none
// turns that off), and to cfg.File when set. With neither, spans are still
// created (trace ids appear in run status) but not exported. Call the
// returned provider's Shutdown to flush.
func Setup(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(semconv.ServiceName(cfg.Service)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if otlpWanted() {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if cfg.File != nil {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(cfg.File))
		if err != nil {
			return nil, fmt.Errorf("file exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func otlpWanted() bool {
	if strings.EqualFold(os.Getenv("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// HeaderCarrier adapts nats.Header to the propagation API with the W3C
// lower-case keys ("traceparent", "tracestate"). propagation.HeaderCarrier
// would canonicalise them to "Traceparent", and nats.Header.Get is
// case-sensitive, so other W3C-aware NATS clients would not find them.
type HeaderCarrier nats.Header

// Get returns the value of key.
func (c HeaderCarrier) Get(key string) string {
	v := nats.Header(c)[strings.ToLower(key)]
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Set sets key, lower-cased.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c)[strings.ToLower(key)] = []string{value} }

// Keys lists the keys.
func (c HeaderCarrier) Keys() []string {
	ks := make([]string, 0, len(c))
	for k := range c {
		ks = append(ks, k)
	}
	return ks
}

// Inject writes the span context of ctx into a NATS header.
func Inject(ctx context.Context, h nats.Header) { propagator.Inject(ctx, HeaderCarrier(h)) }

// Extract returns ctx with the remote span context found in a NATS header.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// InjectMap writes the span context of ctx into a map (for state kept in
// Raft and for task payloads).
func InjectMap(ctx context.Context) map[string]string {
	m := map[string]string{}
	propagator.Inject(ctx, propagation.MapCarrier(m))
	return m
}

// ExtractMap returns ctx with the remote span context found in m.
func ExtractMap(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(m))
}

// TraceID returns the trace id of the span context in m, or "".
func TraceID(m map[string]string) string {
	sc := trace.SpanContextFromContext(ExtractMap(context.Background(), m))
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
