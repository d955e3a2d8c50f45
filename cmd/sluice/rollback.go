package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// newRollbackCmd asks the cluster's leader to expose an earlier kept
// version of a full load's dataset again. The leader serialises it with
// the pipeline's commits and records it in Raft, so `sluice status` shows
// the version at once.
func newRollbackCmd() *cobra.Command {
	var (
		cf clientFlags
		to int64
	)
	cmd := &cobra.Command{
		Use:               "rollback <pipeline> [--to N]",
		Short:             "expose an earlier kept dataset version again (default: the previous one)",
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("to") && to < 1 {
				return &usageError{err: fmt.Errorf("--to %d: want a version number of at least 1", to), path: cmd.CommandPath()}
			}
			return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
				// The leader's refusals name the pipeline and the kept versions.
				res, err := cl.client.Rollback(ctx, protocol.RollbackRequest{Pipeline: args[0], To: to})
				if err != nil {
					return err
				}
				printRollback(cmd.OutOrStdout(), res)
				return nil
			})
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().Int64Var(&to, "to", 0, "the kept version to expose (default: the newest kept version older than the exposed one)")
	return cmd
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
