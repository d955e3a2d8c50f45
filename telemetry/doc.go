// Package telemetry sets up OpenTelemetry tracing for Sluice processes and
// carries trace context across NATS messages. One trace covers one run: the
// leader's run, plan and commit spans and every worker's task span share it.
// It also holds the Prometheus metrics of a process (Metrics, metrics.go)
// and serves them at /metrics (ServeMetrics).
package telemetry
