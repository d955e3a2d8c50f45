package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// newCompactCmd compacts a dataset through the cluster: a run of a compact
// pipeline, or a compaction of the dataset another pipeline writes. With
// --dry-run the leader only plans it and the groups are listed.
func newCompactCmd() *cobra.Command {
	var (
		cf     clientFlags
		dry    bool
		noWait bool
	)
	cmd := &cobra.Command{
		Use:   "compact <pipeline> [--dry-run] [--no-wait]",
		Short: "rewrite a dataset's small files into fewer, larger ones",
		Example: `  sluice compact events-compact --dry-run
  sluice compact events-full`,
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return runCompact(cmd.Context(), &cf, out, args[0], dry, noWait, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.BoolVar(&dry, "dry-run", false, "list the rewrite groups the compaction would have, change nothing")
	fs.BoolVar(&noWait, "no-wait", false, "return once the compaction is planned")
	return cmd
}

// runCompact asks for the compaction and, unless noWait, follows it to its
// end. With -o json it prints the dry run's reply, or the run's last
// status, as JSON (progress on stderr).
func runCompact(ctx context.Context, cf *clientFlags, out *outputFlag, name string, dry, noWait bool, stdout, stderr io.Writer) error {
	cl, err := cf.connect("sluice-compact", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	res, err := cl.client.Compact(rctx, protocol.CompactRequest{Pipeline: name, DryRun: dry})
	cancel()
	if err != nil {
		return fmt.Errorf("compact %s: %w", name, err)
	}
	if dry || noWait || len(res.Groups) == 0 && res.RunID == "" {
		return out.print(stdout, res, func(w io.Writer) {
			if dry {
				printGroups(w, res)
			} else {
				fmt.Fprintf(w, "compaction %s started: %d rewrite groups\n", res.RunID, len(res.Groups))
			}
		})
	}
	progress := stdout
	if out.isJSON() {
		progress = stderr
	}
	fmt.Fprintf(progress, "compaction %s started: %d rewrite groups\n", res.RunID, len(res.Groups))
	st, err := followRun(ctx, cf, cl, res.RunID, progress)
	if err != nil {
		return err
	}
	if out.isJSON() {
		if err := printJSON(stdout, redactRun(st)); err != nil {
			return err
		}
	}
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("compaction %s %s: %s", st.RunID, st.State, st.Error)
	}
	if out.isJSON() {
		return nil
	}
	fmt.Fprintf(stdout, "compaction %s committed: %d groups, %d rows rewritten into %s\n  data: %s\n", st.RunID, st.Tasks, st.Rows, humanBytes(st.Bytes), st.Location)
	return nil
}

// printGroups lists a dry run's rewrite groups.
func printGroups(w io.Writer, res protocol.CompactReply) {
	var files int
	var bytes int64
	for _, g := range res.Groups {
		files += g.Files
		bytes += g.Bytes
	}
	if len(res.Groups) == 0 {
		fmt.Fprintf(w, "%s: nothing to compact in %s\n", res.Pipeline, dash(res.Dataset))
		return
	}
	fmt.Fprintf(w, "%s: %d rewrite groups in %s, %d files, %s (dry run: nothing changed)\n", res.Pipeline, len(res.Groups), res.Dataset, files, humanBytes(bytes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GROUP\tFILES\tSIZE")
	for _, g := range res.Groups {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", g.Key, g.Files, humanBytes(g.Bytes))
	}
	tw.Flush()
}

// newVacuumCmd asks the leader to vacuum a pipeline's dataset: what
// compactions replaced and what failed runs left, beyond the retention and
// outside the rollback window. --dry-run lists what would go, with sizes.
func newVacuumCmd() *cobra.Command {
	var (
		cf  clientFlags
		dry bool
	)
	cmd := &cobra.Command{
		Use:               "vacuum <pipeline> [--dry-run]",
		Short:             "remove what compactions replaced and failed runs left, outside the rollback window",
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			res, err := cl.client.Vacuum(ctx, protocol.VacuumRequest{Pipeline: args[0], DryRun: dry})
			if err != nil {
				return fmt.Errorf("vacuum %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), res, func(w io.Writer) { printVacuum(w, res) })
		})
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.BoolVar(&dry, "dry-run", false, "list what would be removed, with sizes; remove nothing")
	// A vacuum of a large dataset lists and deletes for a while.
	_ = fs.Set("timeout", "10m")
	fs.Lookup("timeout").DefValue = "10m0s"
	return cmd
}

// printVacuum lists what a vacuum removed, or would remove.
func printVacuum(w io.Writer, r protocol.VacuumReply) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s: %s %d items, %d files, %s\n", r.Pipeline, verb, len(r.Removed), r.Files, humanBytes(r.Bytes))
	if len(r.Removed) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PATH\tFILES\tSIZE\tWHY")
		for _, it := range r.Removed {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", it.Path, it.Files, humanBytes(it.Bytes), it.Why)
		}
		tw.Flush()
	}
	if len(r.Kept) > 0 {
		fmt.Fprintf(w, "  rollback window (never removed): %s\n", connectors.DescribeKept(r.Kept))
	}
}
