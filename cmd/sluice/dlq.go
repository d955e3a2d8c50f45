package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// newDLQCmd browses and acts on the dead-letter stream SLUICE_DLQ.
func newDLQCmd() *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "dlq",
		Short: "dead letters: failed tasks and bad triggers, kept for replay",
	}, newDLQListCmd(&cf), newDLQShowCmd(&cf), newDLQReplayCmd(&cf), newDLQPurgeCmd(&cf))
	cf.register(cmd.PersistentFlags())
	return cmd
}

// dlqSession is a connection to the cluster for one dlq command.
type dlqSession struct {
	cl  *cluster
	js  jetstream.JetStream
	ctx context.Context
}

// dlqRun connects and calls fn with a context bounded by --timeout.
func dlqRun(cmd *cobra.Command, cf *clientFlags, fn func(s dlqSession) error) error {
	return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
		js, err := jetstream.New(cl.nc)
		if err != nil {
			return err
		}
		return fn(dlqSession{cl: cl, js: js, ctx: ctx})
	})
}

// seqArg parses a dead letter's sequence number.
func seqArg(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a dead letter's sequence number (sluice dlq list shows them)", s)
	}
	return n, nil
}

// getDeadLetter returns dead letter seq, saying so in the user's terms when
// there is none.
func getDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (coordinator.DeadLetter, error) {
	d, err := coordinator.GetDLQ(ctx, js, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return d, fmt.Errorf("dead letter %d not found: purged, or never written (sluice dlq list shows them)", seq)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return d, fmt.Errorf("dead letter %d not found: the cluster has no %s stream yet", seq, protocol.StreamDLQ)
	}
	return d, err
}

// deadLetterView is a dead letter as shown: secrets redacted, a JSON
// payload as JSON.
type deadLetterView struct {
	Seq      uint64              `json:"seq"`
	Subject  string              `json:"subject"`
	Kind     string              `json:"kind"`
	Pipeline string              `json:"pipeline"`
	Reason   string              `json:"reason"`
	Attempts int                 `json:"attempts"`
	Time     time.Time           `json:"time"`
	Headers  map[string][]string `json:"headers,omitempty"`
	Payload  json.RawMessage     `json:"payload"`
}

func viewDeadLetter(d coordinator.DeadLetter) deadLetterView {
	v := deadLetterView{Seq: d.Seq, Subject: d.Subject, Kind: d.Kind, Pipeline: d.Pipeline,
		Reason: connectors.Redact(d.Reason), Attempts: d.Attempts, Time: d.Time}
	if len(d.Header) > 0 {
		v.Headers = map[string][]string{}
		for k, vals := range d.Header {
			for _, x := range vals {
				v.Headers[k] = append(v.Headers[k], connectors.Redact(x))
			}
		}
	}
	payload := connectors.Redact(string(d.Data))
	if json.Valid([]byte(payload)) {
		v.Payload = json.RawMessage(payload)
	} else {
		v.Payload, _ = json.Marshal(payload)
	}
	return v
}

func newDLQListCmd(cf *clientFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "list the dead letters, oldest first",
		Args:    cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "dead letters to list, oldest first (0: all)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return dlqRun(cmd, cf, func(s dlqSession) error {
			dls, err := coordinator.ListDLQ(s.ctx, s.js, limit)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				dls, err = nil, nil
			}
			if err != nil {
				return err
			}
			views := make([]deadLetterView, 0, len(dls))
			for _, d := range dls {
				views = append(views, viewDeadLetter(d))
			}
			return out.print(cmd.OutOrStdout(), views, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tKIND\tPIPELINE\tATTEMPTS\tTIME\tREASON")
				for _, d := range views {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", d.Seq, d.Kind, d.Pipeline, d.Attempts,
						d.Time.Local().Format(time.DateTime), truncate(d.Reason, 100))
				}
				tw.Flush()
			})
		})
	}
	return cmd
}

func newDLQShowCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show <seq>",
		Short: "show one dead letter: its reason, headers and payload",
		Args:  pipelineArg("dead letter sequence number"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		seq, err := seqArg(args[0])
		if err != nil {
			return err
		}
		return dlqRun(cmd, cf, func(s dlqSession) error {
			d, err := getDeadLetter(s.ctx, s.js, seq)
			if err != nil {
				return err
			}
			v := viewDeadLetter(d)
			return out.print(cmd.OutOrStdout(), v, func(w io.Writer) { printDeadLetter(w, v) })
		})
	}
	return cmd
}

func printDeadLetter(w io.Writer, d deadLetterView) {
	fmt.Fprintf(w, "seq:      %d\nsubject:  %s\nkind:     %s\npipeline: %s\ntime:     %s\nattempts: %d\nreason:   %s\nheaders:\n",
		d.Seq, d.Subject, d.Kind, d.Pipeline, d.Time.Format(time.RFC3339Nano), d.Attempts, d.Reason)
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range d.Headers[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w, "payload:")
	var pretty bytes.Buffer
	if json.Indent(&pretty, d.Payload, "  ", "  ") == nil {
		fmt.Fprintf(w, "  %s\n", pretty.String())
	} else {
		fmt.Fprintf(w, "  %s\n", d.Payload)
	}
}

func newDLQReplayCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "replay <seq>",
		Short: "replay a dead letter: a trigger is published again, a dead task starts a new run",
		Args:  pipelineArg("dead letter sequence number"),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := seqArg(args[0])
			if err != nil {
				return err
			}
			return dlqRun(cmd, cf, func(s dlqSession) error {
				if _, err := getDeadLetter(s.ctx, s.js, seq); err != nil {
					return err
				}
				rep, err := coordinator.ReplayDLQ(s.ctx, s.js, s.cl.client, seq)
				if err != nil {
					return err
				}
				stdout := cmd.OutOrStdout()
				if rep.Subject != "" {
					fmt.Fprintf(stdout, "trigger %d re-published on %s (seq %d, msg id %s); the dead letter stays: purge it with sluice dlq purge %d\n",
						seq, rep.Subject, rep.Seq, rep.MsgID, seq)
				} else {
					fmt.Fprintf(stdout, "dead task %d replayed as a new run %s (%d tasks); the dead letter stays: purge it with sluice dlq purge %d\n",
						seq, rep.Run.RunID, rep.Run.Tasks, seq)
				}
				return nil
			})
		},
	}
}

func newDLQPurgeCmd(cf *clientFlags) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "purge (--all | <seq>)",
		Short: "delete one dead letter, or every one with --all",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var seq uint64
			switch {
			case all && len(args) > 0:
				return &usageError{err: errors.New("give --all or one sequence number, not both"), path: cmd.CommandPath()}
			case !all && len(args) == 0:
				return &usageError{err: errors.New("give the dead letter's sequence number, or --all"), path: cmd.CommandPath()}
			case !all:
				n, err := seqArg(args[0])
				if err != nil {
					return err
				}
				seq = n
			}
			return dlqRun(cmd, cf, func(s dlqSession) error {
				if seq != 0 {
					if _, err := getDeadLetter(s.ctx, s.js, seq); err != nil {
						return err
					}
				}
				if err := coordinator.PurgeDLQ(s.ctx, s.js, seq); err != nil {
					return err
				}
				if all {
					fmt.Fprintln(cmd.OutOrStdout(), "every dead letter purged")
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "dead letter %d purged\n", seq)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "delete every dead letter")
	return cmd
}
