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

	"github.com/sluicehq/sluice/coordinator"
)

// runDLQ browses and acts on the dead-letter stream SLUICE_DLQ.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usageLine = "dlq list [--limit N] | show <seq> | replay <seq> | purge (--all | <seq>)"
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stderr, "Usage: sluice %s\n", usageLine)
		return errors.New("dlq: give a subcommand: list, show, replay or purge")
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("dlq "+sub, usageLine, stderr)
	var cf clientFlags
	cf.register(fs)
	limit := fs.Int("limit", 100, "list: dead letters to list, oldest first (0: all)")
	all := fs.Bool("all", false, "purge: delete every dead letter")
	var pos []string
	for len(args) > 0 {
		if err := parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	seqArg := func() (uint64, error) {
		if len(pos) != 1 {
			return 0, fmt.Errorf("dlq %s: give one dead letter sequence (see sluice dlq list)", sub)
		}
		n, err := strconv.ParseUint(pos[0], 10, 64)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("dlq %s: %q is not a sequence number", sub, pos[0])
		}
		return n, nil
	}
	nc, err := cf.connect("sluice-dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	switch sub {
	case "list":
		dls, err := coordinator.ListDLQ(ctx, js, *limit)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tKIND\tPIPELINE\tATTEMPTS\tTIME\tREASON")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", d.Seq, d.Kind, d.Pipeline, d.Attempts,
				d.Time.Local().Format(time.DateTime), truncate(d.Reason, 100))
		}
		return tw.Flush()
	case "show":
		seq, err := seqArg()
		if err != nil {
			return err
		}
		d, err := coordinator.GetDLQ(ctx, js, seq)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "seq:      %d\nsubject:  %s\nkind:     %s\npipeline: %s\ntime:     %s\nattempts: %d\nreason:   %s\nheaders:\n",
			d.Seq, d.Subject, d.Kind, d.Pipeline, d.Time.Format(time.RFC3339Nano), d.Attempts, d.Reason)
		keys := make([]string, 0, len(d.Header))
		for k := range d.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range d.Header[k] {
				fmt.Fprintf(stdout, "  %s: %s\n", k, v)
			}
		}
		fmt.Fprintln(stdout, "payload:")
		var pretty bytes.Buffer
		if json.Indent(&pretty, d.Data, "  ", "  ") == nil {
			fmt.Fprintf(stdout, "  %s\n", pretty.String())
		} else {
			fmt.Fprintf(stdout, "  %q\n", d.Data)
		}
		return nil
	case "replay":
		seq, err := seqArg()
		if err != nil {
			return err
		}
		rep, err := coordinator.ReplayDLQ(ctx, js, coordinator.NewClient(nc), seq)
		if err != nil {
			return err
		}
		if rep.Subject != "" {
			fmt.Fprintf(stdout, "trigger %d re-published on %s (seq %d, msg id %s); the dead letter stays: purge it with sluice dlq purge %d\n",
				seq, rep.Subject, rep.Seq, rep.MsgID, seq)
		} else {
			fmt.Fprintf(stdout, "dead task %d replayed as a new run %s (%d tasks); the dead letter stays: purge it with sluice dlq purge %d\n",
				seq, rep.Run.RunID, rep.Run.Tasks, seq)
		}
		return nil
	case "purge":
		var seq uint64
		if *all {
			if len(pos) > 0 {
				return errors.New("dlq purge: give --all or one sequence, not both")
			}
		} else if seq, err = seqArg(); err != nil {
			return err
		}
		if err := coordinator.PurgeDLQ(ctx, js, seq); err != nil {
			return err
		}
		if *all {
			fmt.Fprintln(stdout, "every dead letter purged")
		} else {
			fmt.Fprintf(stdout, "dead letter %d purged\n", seq)
		}
		return nil
	}
	return fmt.Errorf("dlq: unknown subcommand %q (want list, show, replay or purge)", sub)
}
