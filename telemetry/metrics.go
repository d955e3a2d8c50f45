package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric label names. Every label has few values: pipeline names, run
// outcomes, slots, Raft command types, worker ids. Run and task ids are
// never labels.
const (
	LabelPipeline = "pipeline"
	LabelOutcome  = "outcome"
	LabelSlot     = "slot"
	LabelCommand  = "command"
	LabelWorker   = "worker"
	LabelStream   = "stream"
)

// Task attempt outcomes (the outcome label of the task metrics).
const (
	TaskSucceeded   = "succeeded"
	TaskRetried     = "retried"     // failed; JetStream delivers it again
	TaskFailed      = "failed"      // failed for good: permanent, last attempt, or the run is planned again
	TaskInterrupted = "interrupted" // cut short by the worker's shutdown; handed back
)

// Metrics are the Prometheus metrics of one Sluice process: a coordinator,
// a worker, or `sluice dev` with both. A nil *Metrics records nothing, so
// components take one optionally. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	runs         *prometheus.CounterVec
	runDuration  *prometheus.HistogramVec
	runRows      *prometheus.CounterVec
	runBytes     *prometheus.CounterVec
	taskAttempts *prometheus.HistogramVec

	raftCommit    *prometheus.HistogramVec
	leaderChanges prometheus.Counter

	tasks        *prometheus.CounterVec
	taskDuration *prometheus.HistogramVec
	taskRows     *prometheus.CounterVec
	taskBytes    *prometheus.CounterVec
	slots        *prometheus.GaugeVec
	slotsBusy    *prometheus.GaugeVec

	cdcLagBytes    *prometheus.GaugeVec
	cdcLagSeconds  *prometheus.GaugeVec
	cdcEvents      *prometheus.CounterVec
	applyLag       *prometheus.GaugeVec
	applyPending   *prometheus.GaugeVec
	appliedEvents  *prometheus.CounterVec
	clusterMu      sync.Mutex
	clusterSources int
}

// durationBuckets span a tiny task to a long load: 10ms to about 45min.
var durationBuckets = prometheus.ExponentialBuckets(0.01, 3, 13)

// NewMetrics returns the metrics of a process, registered with a registry
// of their own together with the Go runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)).(*prometheus.CounterVec)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return f(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)).(*prometheus.GaugeVec)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)).(*prometheus.HistogramVec)
	}
	m := &Metrics{reg: reg}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.runs = counter("sluice_runs_total", "Runs finished, by outcome (committed or failed); counted by the Raft leader when it announces the run's end.", LabelPipeline, LabelOutcome)
	m.runDuration = histogram("sluice_run_duration_seconds", "Time from a run's creation to its end, by outcome.", durationBuckets, LabelPipeline, LabelOutcome)
	m.runRows = counter("sluice_run_rows_total", "Rows (units for a passthrough) written by the tasks of committed runs: each task counted once, however many attempts it took.", LabelPipeline)
	m.runBytes = counter("sluice_run_bytes_total", "Bytes written by the tasks of committed runs, each task counted once.", LabelPipeline)
	m.taskAttempts = histogram("sluice_run_task_attempts", "Attempts each task of a finished run took (1: no retry).", []float64{1, 2, 3, 5, 10}, LabelPipeline)

	m.raftCommit = histogram("sluice_raft_commit_seconds", "Time from handing a command to Raft to its commit and application by the leader's FSM.",
		prometheus.ExponentialBuckets(0.0005, 2, 14), LabelCommand)
	m.leaderChanges = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_raft_leader_changes_total",
		Help: "Times this coordinator saw the Raft leader change (an election won by any node, this one included)."})).(prometheus.Counter)

	m.tasks = counter("sluice_task_attempts_total", "Task attempts this worker ran, by outcome (succeeded, retried, failed, interrupted).", LabelPipeline, LabelOutcome)
	m.taskDuration = histogram("sluice_task_duration_seconds", "Time one task attempt ran on a worker, by outcome.", durationBuckets, LabelPipeline, LabelOutcome)
	m.taskRows = counter("sluice_task_rows_total", "Rows written by succeeded task attempts on this worker (a task run twice counts twice).", LabelPipeline)
	m.taskBytes = counter("sluice_task_bytes_total", "Bytes written by succeeded task attempts on this worker.", LabelPipeline)
	m.slots = gauge("sluice_worker_slots", "Task slots of a worker.", LabelWorker)
	m.slotsBusy = gauge("sluice_worker_slots_busy", "Task slots of a worker running a task now.", LabelWorker)

	m.cdcLagBytes = gauge("sluice_cdc_lag_bytes", "WAL the source retains for a cdc pipeline's slot beyond the position confirmed (everything before it is in SLUICE_CDC); reported by the worker holding the stream.", LabelPipeline, LabelSlot)
	m.cdcLagSeconds = gauge("sluice_cdc_lag_seconds", "Age of the oldest transaction a cdc pipeline's reader received and has not confirmed yet (0: caught up).", LabelPipeline, LabelSlot)
	m.cdcEvents = counter("sluice_cdc_events_total", "Change events a cdc pipeline's reader published to SLUICE_CDC on this worker.", LabelPipeline, LabelSlot)
	m.applyLag = gauge("sluice_cdc_apply_lag_seconds", "Age of the last event a cdc_apply pipeline applied while events are pending (0: caught up).", LabelPipeline)
	m.applyPending = gauge("sluice_cdc_apply_pending_messages", "SLUICE_CDC messages a cdc_apply pipeline has not applied yet.", LabelPipeline)
	m.appliedEvents = counter("sluice_cdc_applied_events_total", "Change events a cdc_apply pipeline applied on this worker.", LabelPipeline)
	return m
}

// Registry is the registry the metrics are gathered from.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// RunEnded records a run's end: its outcome, its time from creation to
// end, and, for a committed run, the rows and bytes its tasks wrote;
// attempts are the attempts of each task.
func (m *Metrics) RunEnded(pipeline, outcome string, d time.Duration, rows, bytes int64, attempts []int) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(pipeline, outcome).Inc()
	m.runDuration.WithLabelValues(pipeline, outcome).Observe(d.Seconds())
	if outcome == "committed" {
		m.runRows.WithLabelValues(pipeline).Add(float64(rows))
		m.runBytes.WithLabelValues(pipeline).Add(float64(bytes))
	}
	h := m.taskAttempts.WithLabelValues(pipeline)
	for _, a := range attempts {
		h.Observe(float64(a))
	}
}

// RaftCommitted records the time one Raft command of type command took to
// commit and apply.
func (m *Metrics) RaftCommitted(command string, d time.Duration) {
	if m == nil {
		return
	}
	m.raftCommit.WithLabelValues(command).Observe(d.Seconds())
}

// LeaderChanged counts a change of Raft leader.
func (m *Metrics) LeaderChanged() {
	if m == nil {
		return
	}
	m.leaderChanges.Inc()
}

// TaskAttempt records one task attempt run by a worker. rows and bytes
// count only for a succeeded attempt.
func (m *Metrics) TaskAttempt(pipeline, outcome string, d time.Duration, rows, bytes int64) {
	if m == nil {
		return
	}
	m.tasks.WithLabelValues(pipeline, outcome).Inc()
	m.taskDuration.WithLabelValues(pipeline, outcome).Observe(d.Seconds())
	if outcome == TaskSucceeded {
		m.taskRows.WithLabelValues(pipeline).Add(float64(rows))
		m.taskBytes.WithLabelValues(pipeline).Add(float64(bytes))
	}
}

// WorkerSlots sets a worker's slots and how many are busy; forget removes
// the worker's series (when it stops).
func (m *Metrics) WorkerSlots(worker string, slots, busy int) {
	if m == nil {
		return
	}
	m.slots.WithLabelValues(worker).Set(float64(slots))
	m.slotsBusy.WithLabelValues(worker).Set(float64(busy))
}

// WorkerGone removes the series of a stopped worker.
func (m *Metrics) WorkerGone(worker string) {
	if m == nil {
		return
	}
	m.slots.DeleteLabelValues(worker)
	m.slotsBusy.DeleteLabelValues(worker)
}

// CDCStatus records what the reader of a cdc pipeline reported: the
// slot's lag in bytes and in time, and events, the events it published
// since the last report.
func (m *Metrics) CDCStatus(pipeline, slot string, lagBytes int64, lag time.Duration, events int64) {
	if m == nil {
		return
	}
	m.cdcLagBytes.WithLabelValues(pipeline, slot).Set(float64(lagBytes))
	m.cdcLagSeconds.WithLabelValues(pipeline, slot).Set(lag.Seconds())
	if events > 0 {
		m.cdcEvents.WithLabelValues(pipeline, slot).Add(float64(events))
	}
}

// ApplyStatus records what a cdc_apply pipeline reported: its lag, the
// messages pending, and events, the events it applied since the last
// report.
func (m *Metrics) ApplyStatus(pipeline string, lag time.Duration, pending uint64, events int64) {
	if m == nil {
		return
	}
	m.applyLag.WithLabelValues(pipeline).Set(lag.Seconds())
	m.applyPending.WithLabelValues(pipeline).Set(float64(pending))
	if events > 0 {
		m.appliedEvents.WithLabelValues(pipeline).Add(float64(events))
	}
}

// StreamGone removes the lag gauges of a stream this process no longer
// holds (the next holder reports them).
func (m *Metrics) StreamGone(pipeline, slot string) {
	if m == nil {
		return
	}
	if slot != "" {
		m.cdcLagBytes.DeleteLabelValues(pipeline, slot)
		m.cdcLagSeconds.DeleteLabelValues(pipeline, slot)
	}
	m.applyLag.DeleteLabelValues(pipeline)
	m.applyPending.DeleteLabelValues(pipeline)
}

// ClusterState is what a coordinator reports at each scrape. Only the Raft
// leader reports the cluster-wide values (Leading true), so that a sum over
// the coordinators counts each once.
type ClusterState struct {
	Leading bool
	// Streams are the messages held by each Sluice JetStream stream, by
	// name (SLUICE_TASKS: the queue of tasks not yet done; SLUICE_DLQ: the
	// dead letters).
	Streams map[string]uint64
	// ActiveRuns are the runs not finished, by pipeline.
	ActiveRuns map[string]int
	// Workers is the number of live workers, Slots and Busy their slots.
	Workers, Slots, Busy int
}

var (
	descLeader     = prometheus.NewDesc("sluice_raft_leader", "1 on the coordinator that is the Raft leader, else 0.", nil, nil)
	descStreamMsgs = prometheus.NewDesc("sluice_stream_messages", "Messages in a Sluice JetStream stream (SLUICE_TASKS: tasks queued or running; SLUICE_DLQ: dead letters); reported by the leader.", []string{LabelStream}, nil)
	descActiveRuns = prometheus.NewDesc("sluice_runs_active", "Runs not finished (planning, waiting, running or committing); reported by the leader.", []string{LabelPipeline}, nil)
	descWorkers    = prometheus.NewDesc("sluice_workers", "Workers the leader heard a heartbeat from within the liveness window.", nil, nil)
	descSlots      = prometheus.NewDesc("sluice_cluster_slots", "Task slots of the live workers, as their heartbeats report them.", nil, nil)
	descSlotsBusy  = prometheus.NewDesc("sluice_cluster_slots_busy", "Task slots of the live workers running a task, as their last heartbeats report them.", nil, nil)
)

// clusterCollector asks a coordinator for its ClusterState at each scrape.
type clusterCollector struct {
	state   func(ctx context.Context) ClusterState
	timeout time.Duration
}

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descStreamMsgs, descActiveRuns, descWorkers, descSlots, descSlotsBusy} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s := c.state(ctx)
	leader := 0.0
	if s.Leading {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	if !s.Leading {
		return
	}
	for name, n := range s.Streams {
		ch <- prometheus.MustNewConstMetric(descStreamMsgs, prometheus.GaugeValue, float64(n), name)
	}
	for p, n := range s.ActiveRuns {
		ch <- prometheus.MustNewConstMetric(descActiveRuns, prometheus.GaugeValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(s.Workers))
	ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(s.Slots))
	ch <- prometheus.MustNewConstMetric(descSlotsBusy, prometheus.GaugeValue, float64(s.Busy))
}

// ObserveCluster makes each scrape ask state for the cluster's state (the
// coordinator calls it once, when it starts). One process reports one
// coordinator: a second call is an error.
func (m *Metrics) ObserveCluster(state func(ctx context.Context) ClusterState) error {
	if m == nil {
		return nil
	}
	m.clusterMu.Lock()
	defer m.clusterMu.Unlock()
	if m.clusterSources > 0 {
		return errors.New("metrics: a coordinator already reports its cluster state here")
	}
	if err := m.reg.Register(clusterCollector{state: state, timeout: 3 * time.Second}); err != nil {
		return fmt.Errorf("metrics: register the cluster collector: %w", err)
	}
	m.clusterSources++
	return nil
}

// ServeMetrics serves m at /metrics on ln until ctx ends.
func ServeMetrics(ctx context.Context, ln net.Listener, m *Metrics, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && log != nil {
			log.Warn("stop the metrics server", "err", err)
		}
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}
