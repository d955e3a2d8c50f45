package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/protocol"
)

// newCDCWaitCmd is `sluice cdc wait <pipeline>`: it waits until a cdc
// pipeline has every change committed at its source before the wait began
// in SLUICE_CDC, or a cdc_apply pipeline has applied them.
func newCDCWaitCmd(cf *clientFlags) *cobra.Command {
	var maxWait time.Duration
	cmd := &cobra.Command{
		Use:   "wait <pipeline>",
		Short: "wait until a cdc or cdc_apply pipeline has caught up with what its source committed so far",
		Long: `Wait waits until a cdc pipeline's initial snapshot is done and its stream
has captured every change its source committed before the wait began; for a
cdc_apply pipeline, until its cdc pipeline has, and it has applied all of it.
It notices a lost cluster as run --wait does.`,
		Example:           `  sluice cdc wait shop-replica && psql -c "SELECT count(*) FROM replica.shop_orders"`,
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.connect("sluice-cdc-wait", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer cl.Close()
			js, err := jetstream.New(cl.nc)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if maxWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeoutCause(ctx, maxWait, fmt.Errorf("not caught up within --max-wait %s", maxWait))
				defer cancel()
			}
			w := &cdcWaiter{cl: cl, js: js, line: newLiveLine(cmd.OutOrStdout()), began: time.Now()}
			err = cl.follow(ctx, cf.lostAfter, 250*time.Millisecond, "pipeline "+args[0], "sluice cdc wait "+args[0]+cf.again(),
				func(ctx context.Context) (bool, error) { return w.poll(ctx, args[0]) })
			w.line.end()
			if err != nil {
				if c := context.Cause(ctx); c != nil && cmd.Context().Err() == nil {
					return fmt.Errorf("%s: %w (%s)", args[0], c, w.last)
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), w.last)
			return nil
		},
	}
	cmd.Flags().DurationVar(&maxWait, "max-wait", 10*time.Minute, "give up (exit 1) when not caught up by then; 0: no limit")
	return cmd
}

// cdcWaiter follows a stream until it caught up with its source as of
// began.
type cdcWaiter struct {
	cl    *cluster
	js    jetstream.JetStream
	line  *liveLine
	began time.Time
	// target is the source position to reach (a cdc pipeline's, or a
	// cdc_apply pipeline's upstream's): learnt from the first status
	// measured after began.
	target string
	// upstreamDone is when the upstream of a cdc_apply pipeline was seen
	// caught up.
	upstreamDone time.Time
	last         string
}

func (w *cdcWaiter) say(format string, args ...any) {
	w.last = fmt.Sprintf(format, args...)
	w.line.show(w.last, false)
}

// poll looks at the streams once and reports whether name caught up.
func (w *cdcWaiter) poll(ctx context.Context, name string) (bool, error) {
	st, err := w.cl.client.CDCStatus(ctx)
	if err != nil {
		return false, err
	}
	s := streamsOf(st.Streams, name)
	if len(s) == 0 {
		return false, fmt.Errorf("no cdc or cdc_apply pipeline %q (sluice cdc status lists them)", name)
	}
	if s[0].Pattern == protocol.PatternCDC {
		return w.captured(s[0]), nil
	}
	up := streamsOf(st.Streams, s[0].Upstream)
	if len(up) == 0 {
		w.say("%s: its cdc pipeline %s is not there", name, s[0].Upstream)
		return false, nil
	}
	if w.upstreamDone.IsZero() {
		if !w.captured(up[0]) {
			return false, nil
		}
		w.upstreamDone = time.Now()
	}
	return w.applied(ctx, s[0])
}

// captured reports whether a cdc pipeline's reader confirmed the source's
// position as of began: its snapshot is done, and a status measured after
// began shows the position, which the confirmed one then reaches.
func (w *cdcWaiter) captured(s protocol.StreamInfo) bool {
	name, st := s.Pipeline, s.Status
	switch {
	case s.Phase == "snapshot":
		if sp := s.Snapshot; sp != nil {
			w.say("%s: %s", name, describeSnapshot(sp))
		} else {
			w.say("%s: the initial snapshot is starting", name)
		}
		return false
	case s.Worker == "" || st.State != protocol.StreamStreaming:
		w.say("%s: waiting for a worker to stream it (%s)", name, dash(st.State))
		return false
	}
	if w.target == "" {
		if st.LagAt.Before(w.began) || st.SourceLSN == "" {
			w.say("%s: streaming, waiting for its position at the source", name)
			return false
		}
		w.target = st.SourceLSN
	}
	got, err1 := parseLSN(st.ConfirmedLSN)
	want, err2 := parseLSN(w.target)
	if err1 != nil || err2 != nil || got < want {
		w.say("%s: confirmed %s of %s", name, dash(st.ConfirmedLSN), w.target)
		return false
	}
	w.say("%s is caught up: every change its source committed before %s is in %s (confirmed %s)",
		name, w.began.Format(time.TimeOnly), protocol.StreamCDC, st.ConfirmedLSN)
	return true
}

// applied reports whether a cdc_apply pipeline applied every message of
// SLUICE_CDC stored before its upstream was seen caught up: its consumer,
// asked after that, has nothing left to deliver or to acknowledge (a
// message is acknowledged once applied).
func (w *cdcWaiter) applied(ctx context.Context, s protocol.StreamInfo) (bool, error) {
	if s.Worker == "" || s.Status.State != protocol.StreamStreaming {
		w.say("%s: waiting for a worker to apply it (%s)", s.Pipeline, dash(s.Status.State))
		return false, nil
	}
	c, err := w.js.Consumer(ctx, protocol.StreamCDC, protocol.CDCApplyConsumer(s.Pipeline))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		w.say("%s: its consumer is not there yet", s.Pipeline)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, err
	}
	if info.NumPending > 0 || info.NumAckPending > 0 {
		w.say("%s: %d messages of %s to apply", s.Pipeline, info.NumPending+uint64(info.NumAckPending), s.Upstream)
		return false, nil
	}
	w.say("%s is caught up: it applied every change %s captured before %s (stream sequence %d)",
		s.Pipeline, s.Upstream, w.began.Format(time.TimeOnly), info.AckFloor.Stream)
	return true, nil
}

// parseLSN parses a PostgreSQL LSN written X/Y (hexadecimal).
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%q is not an LSN", s)
	}
	return h<<32 | l, nil
}
