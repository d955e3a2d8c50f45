package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runRollback asks the cluster's leader to expose an earlier kept version
// of a full load's dataset again. The leader serialises it with the
// pipeline's commits and records it in Raft, so `sluice status` shows the
// version at once.
func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("rollback", "rollback <pipeline> [--to N]", stderr)
	var cf clientFlags
	cf.register(flags)
	to := flags.Int64("to", 0, "the kept version to expose (default: the newest kept version older than the exposed one)")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(flags, args); err != nil {
		return err
	}
	if name == "" && flags.NArg() > 0 {
		name = flags.Arg(0)
	}
	if name == "" {
		return errors.New("rollback: name the pipeline: sluice rollback <pipeline> [--to N]")
	}
	toGiven := false
	flags.Visit(func(f *flag.Flag) { toGiven = toGiven || f.Name == "to" })
	if *to < 0 || (*to == 0 && toGiven) {
		return fmt.Errorf("rollback: --to %d: want a version number of at least 1", *to)
	}
	nc, err := cf.connect("sluice-rollback")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	// The leader's refusals name the pipeline and the kept versions.
	res, err := coordinator.NewClient(nc).Rollback(ctx, protocol.RollbackRequest{Pipeline: name, To: *to})
	if err != nil {
		return err
	}
	printRollback(stdout, res)
	return nil
}

// printRollback prints what a rollback exposed, where it lies, and the
// versions kept.
func printRollback(w io.Writer, r protocol.RollbackReply) {
	if r.From == r.Version {
		fmt.Fprintf(w, "%s: already exposes version %d\n", r.Pipeline, r.Version)
	} else {
		fmt.Fprintf(w, "%s: exposed version %d -> %d\n", r.Pipeline, r.From, r.Version)
	}
	for _, v := range r.Versions {
		if v.Version == r.Version {
			fmt.Fprintf(w, "  data: %s (run %s, %d rows)\n", dash(v.Location), dash(v.Run), v.Rows)
		}
	}
	fmt.Fprintf(w, "  %s\n", connectors.DescribeKept(r.Versions))
}
