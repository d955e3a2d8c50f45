package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// triggerRunWait bounds how long `sluice trigger` waits to see the run its
// trigger started.
const triggerRunWait = 10 * time.Second

func newTriggerCmd() *cobra.Command {
	var (
		cf                     clientFlags
		params                 []string
		id, logical, event, by string
		wait                   bool
	)
	cmd := &cobra.Command{
		Use:   "trigger <pipeline>",
		Short: "publish a trigger on sluice.trigger.<pipeline>; the leader starts the run",
		Long: `Trigger publishes a trigger message on sluice.trigger.<pipeline> through
JetStream, as any producer may, and shows the run the leader starts for it.
The same --id starts one run however often it is published.`,
		Example:           `  sluice trigger events-full --param file_to_load=2026-11-25.jsonl --id upload-2026-11-25`,
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !protocol.ValidName(name) {
				return fmt.Errorf("%q is not a valid pipeline name", name)
			}
			tr := protocol.Trigger{Pipeline: name, Source: by}
			if len(params) > 0 {
				tr.Params = map[string]string{}
				if err := parseParams(params, tr.Params); err != nil {
					return err
				}
			}
			for _, f := range []struct {
				flag, v string
				dst     *time.Time
			}{{"--logical-time", logical, &tr.LogicalTime}, {"--event-time", event, &tr.EventTime}} {
				if f.v == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339Nano, f.v)
				if err != nil {
					return fmt.Errorf("%s %q: want RFC 3339, such as 2026-01-01T00:00:00Z", f.flag, f.v)
				}
				*f.dst = t
			}
			return runTrigger(cmd.Context(), &cf, tr, id, wait, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringArrayVar(&params, "param", nil, "run parameter `k=v`; repeat for several")
	fs.StringVar(&id, "id", "", "Nats-Msg-Id of the trigger: the same id gives one run")
	fs.StringVar(&logical, "logical-time", "", "the run's logical time, RFC 3339")
	fs.StringVar(&event, "event-time", "", "when the event happened, RFC 3339 (default: unset)")
	fs.StringVar(&by, "source", "sluice-cli", "who publishes the trigger, kept in the run's trigger context")
	fs.BoolVar(&wait, "wait", false, "follow the run the trigger started until it ends")
	return cmd
}

func runTrigger(ctx context.Context, cf *clientFlags, tr protocol.Trigger, id string, wait bool, stdout, stderr io.Writer) error {
	cl, err := cf.connect("sluice-trigger", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	js, err := jetstream.New(cl.nc)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	// The leader would dead-letter a trigger of an unknown pipeline; say it
	// here instead of publishing it.
	if _, err := cl.client.GetPipeline(rctx, tr.Pipeline); err != nil {
		if errors.Is(err, coordinator.ErrNotFound) {
			return fmt.Errorf("pipeline %q not found: nothing published (sluice status lists the pipelines)", tr.Pipeline)
		}
		return err
	}
	ack, err := coordinator.PublishTrigger(rctx, js, tr.Pipeline, tr, id)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("%s seq %d", protocol.TriggerSubject(tr.Pipeline), ack.Sequence)
	runID, tasks, runSeq := waitTriggeredRun(rctx, cl.client, tr.Pipeline, id, ack.Sequence, triggerRunWait)
	switch {
	case !ack.Duplicate && runID != "" && runSeq != ack.Sequence:
		fmt.Fprintf(stdout, "trigger published on %s: id %s started run %s before (trigger seq %d); no new run\n", where, id, runID, runSeq)
	case ack.Duplicate && runID != "":
		fmt.Fprintf(stdout, "duplicate trigger: id %s was published before (%s); no new run: its run is %s\n", id, where, runID)
	case ack.Duplicate:
		fmt.Fprintf(stdout, "duplicate trigger: id %s was published before (%s); no new run, and the first one has not started a run yet (see sluice status %s)\n", id, where, tr.Pipeline)
	case runID != "":
		fmt.Fprintf(stdout, "trigger published on %s: run %s started (%d tasks)\n", where, runID, tasks)
	default:
		fmt.Fprintf(stdout, "trigger published on %s: no run started within %s (a pipeline up to date starts none; a leader still electing takes the trigger later); see sluice status %s, sluice dlq list\n",
			where, triggerRunWait, tr.Pipeline)
	}
	if runID == "" {
		return nil
	}
	if !wait {
		fmt.Fprintf(stdout, "follow it with: sluice status --run %s --wait%s\n", runID, cf.again())
		return nil
	}
	st, err := followRun(ctx, cf, cl, runID, stdout)
	if err != nil {
		return err
	}
	return printOutcome(stdout, st)
}

// waitTriggeredRun waits up to d for the run the trigger with msgID (or,
// without one, stream sequence seq) started and returns it, with the
// stream sequence of the trigger that started it (another than seq when
// the id started a run before); "" when none showed (a pipeline up to
// date, or a leader still electing: the trigger stays queued and will
// start it).
func waitTriggeredRun(ctx context.Context, c *coordinator.Client, pipeline, msgID string, seq uint64, d time.Duration) (run string, tasks int, runSeq uint64) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		st, err := c.Status(ctx, protocol.StatusRequest{Pipeline: pipeline, Limit: 50})
		if err == nil {
			for _, r := range st.Runs {
				tr := r.Trigger
				if tr == nil || r.State == protocol.RunPlanning {
					continue
				}
				if (msgID != "" && tr.MsgID == msgID) || (msgID == "" && tr.MsgID == "" && tr.StreamSeq == seq) {
					return r.RunID, r.Tasks, tr.StreamSeq
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", 0, 0
		case <-time.After(100 * time.Millisecond):
		}
	}
}
