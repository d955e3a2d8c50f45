package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/protocol"
)

// completeTimeout bounds how long shell completion waits for the cluster.
const completeTimeout = 2 * time.Second

// completePipelines completes the first argument with the names of the
// cluster's pipelines, asked of the cluster the flags name (silently
// nothing when it does not answer in time).
func completePipelines(cf *clientFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		askCluster(cmd.Context(), cf, func(ctx context.Context, cl *cluster) error {
			ps, err := cl.client.Pipelines(ctx)
			for _, p := range ps {
				if strings.HasPrefix(p.Name, toComplete) {
					names = append(names, p.Name+"\t"+string(p.Pattern))
				}
			}
			return err
		})
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeRuns completes a run id with the cluster's newest runs.
func completeRuns(cf *clientFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var ids []string
		req := protocol.StatusRequest{Limit: 50}
		if len(args) > 0 {
			req.Pipeline = args[0]
		}
		askCluster(cmd.Context(), cf, func(ctx context.Context, cl *cluster) error {
			st, err := cl.client.Status(ctx, req)
			for _, r := range st.Runs {
				if strings.HasPrefix(r.RunID, toComplete) {
					ids = append(ids, r.RunID+"\t"+string(r.State))
				}
			}
			return err
		})
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

// askCluster connects to the cluster quietly and calls fn within
// completeTimeout; failures are ignored: a completion must never print
// errors into the user's command line.
func askCluster(ctx context.Context, cf *clientFlags, fn func(ctx context.Context, cl *cluster) error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl, err := cf.connect("sluice-complete", nil)
		if err != nil {
			return
		}
		defer cl.Close()
		_ = fn(ctx, cl)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
