package worker

import (
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
