package telemetry

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

func TestHeaderCarrierKeepsW3CKeys(t *testing.T) {
	tp, err := Setup(context.Background(), Config{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer(TracerName).Start(context.Background(), SpanRun)
	defer span.End()

	h := nats.Header{}
	Inject(ctx, h)
	// Other W3C-aware NATS clients read the lower-case key with the
	// case-sensitive nats.Header.Get.
	if h.Get("traceparent") == "" {
		t.Fatalf("no lower-case traceparent header: %v", h)
	}
	if h.Get("Traceparent") != "" {
		t.Fatalf("canonicalised key written: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("extracted %v, want %v", got, span.SpanContext())
	}

	m := InjectMap(ctx)
	if TraceID(m) != span.SpanContext().TraceID().String() {
		t.Fatalf("TraceID(%v) = %q", m, TraceID(m))
	}
	if TraceID(nil) != "" || TraceID(map[string]string{"traceparent": "garbage"}) != "" {
		t.Fatal("TraceID of no or bad context must be empty")
	}
}

func TestFileExporterWritesSpans(t *testing.T) {
	var buf bytes.Buffer
	tp, err := Setup(context.Background(), Config{Service: "test", File: &buf})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer(TracerName).Start(context.Background(), SpanCommit)
	span.SetAttributes(AttrRun.String("r-1"))
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"Name":"commit"`) || !strings.Contains(buf.String(), "r-1") {
		t.Fatalf("exported spans: %s", buf.String())
	}
}
