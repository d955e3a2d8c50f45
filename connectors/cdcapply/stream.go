package cdcapply

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Stream is a Runner as the connectors.Stream of a cdc_apply pipeline: the
// stream a worker holds under the pipeline's lease.
type Stream struct {
	r *Runner
	a Applier
}

var _ connectors.Stream = (*Stream)(nil)

// NewStream returns the stream applying cfg.Upstream's events to a. The
// stream owns a: its Run closes it, and so does NewStream when it fails.
func NewStream(js jetstream.JetStream, cfg Config, a Applier, log *slog.Logger) (*Stream, error) {
	r, err := NewRunner(js, cfg, a, log)
	if err != nil {
		a.Close()
		return nil, err
	}
	return &Stream{r: r, a: a}, nil
}

// Run applies events until ctx ends (it returns nil) or an error stops it
// (see Runner.Run), then closes the Applier.
func (s *Stream) Run(ctx context.Context) error {
	defer s.a.Close()
	return s.r.Run(ctx)
}

// Status reports the stream sequence applied last, the messages pending,
// the events applied, the lag in time (the age of the last event applied
// while events are pending), and the tables an Applier that is a
// connectors.TableReporter reports.
func (s *Stream) Status(context.Context) protocol.StreamStatus {
	st := s.r.Status()
	out := protocol.StreamStatus{
		State: protocol.StreamStreaming, Applied: st.Applied, Pending: st.Pending,
		Events: int64(st.Events), LastCommit: st.CommitTime, Time: time.Now().UTC(),
	}
	if !st.CaughtUp && st.Pending > 0 && !st.CommitTime.IsZero() {
		out.LagTime = time.Since(st.CommitTime)
	}
	if tr, ok := s.a.(connectors.TableReporter); ok {
		out.Tables = tr.TableStatus()
	}
	return out
}
