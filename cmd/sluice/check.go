package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/protocol"
)

// newCheckCmd is `sluice check`: it compares an incremental pipeline's
// source and target window by window: the leader counts and checksums
// each side's rows of every window of [from, to) and lists the windows
// that differ; with --repair it loads them again in a backfill, which is
// then followed.
func newCheckCmd() *cobra.Command {
	var (
		cf          clientFlags
		fromS, toS  string
		repair, all bool
		conc        int
		out         *outputFlag
	)
	cmd := &cobra.Command{
		Use:   "check <pipeline> --from T1 --to T2",
		Short: "compare an incremental pipeline's source and target window by window; --repair loads the windows that differ again",
		Long: `Check counts and checksums the source's and the target's rows of each window
of [--from, --to) (at most the watermark) of an incremental pipeline and lists
the windows that differ. With --repair it loads exactly those windows again in
a backfill (replacing or merging them, as the pipeline does) and follows it.
With -o json it prints every window checked (and, with --repair, the
backfill's outcome once it is done) as one JSON document; the exit status
is the same as without it.`,
		Example: `  sluice check events-incr --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z
  sluice check orders-by-id --from 0 --to 5000000 --repair
  sluice check events-incr --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z -o json`,
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, stdout := args[0], cmd.OutOrStdout()
			req := protocol.CheckRequest{Pipeline: name, Repair: repair, Concurrency: conc}
			var err error
			if req.From, req.To, req.Range, err = parseRange(fromS, toS); err != nil {
				return err
			}
			cl, err := cf.connect("sluice-check", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			res, err := cl.client.Check(ctx, req)
			if err != nil {
				return fmt.Errorf("check %s: %w", name, err)
			}
			if out.isJSON() {
				return checkJSON(ctx, cl, &cf, stdout, cmd.ErrOrStderr(), res, repair)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WINDOW\tSOURCE ROWS\tTARGET ROWS\tSOURCE SUM\tTARGET SUM\tSAME")
			for _, w := range res.Windows {
				if w.Same && !all {
					continue
				}
				same := "no"
				switch {
				case w.Same && w.ChecksumsCompared:
					same = "yes"
				case w.Same:
					same = "rows only"
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", w.Window, w.SourceRows, w.TargetRows, w.SourceChecksum, w.TargetChecksum, same)
			}
			tw.Flush()
			fmt.Fprintf(stdout, "%d of %d windows differ\n", res.Differ, len(res.Windows))
			if res.Backfill == "" {
				return checkOutcome(name, res, repair)
			}
			fmt.Fprintf(stdout, "repair: backfill %s loads them again\n", res.Backfill)
			return followBackfill(ctx, cl, &cf, stdout, protocol.BackfillStatus{ID: res.Backfill})
		},
	}
	out = addOutputFlag(cmd)
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&fromS, "from", "", "start of the range, RFC 3339 (inclusive), or an integer for integer windows")
	fs.StringVar(&toS, "to", "", "end of the range, RFC 3339 (exclusive; at most the watermark), or an integer")
	fs.BoolVar(&repair, "repair", false, "load the windows that differ again (a backfill that replaces or merges them) and wait for it")
	fs.IntVar(&conc, "concurrency", 2, "with --repair: windows loading at once")
	fs.BoolVar(&all, "all", false, "list every window checked, not only those that differ")
	return cmd
}

// checkOutcome is the exit status of a check without a repair: windows
// that differ are an error, so that a script can act on it.
func checkOutcome(name string, res protocol.CheckReply, repair bool) error {
	if res.Differ > 0 && !repair {
		return fmt.Errorf("check %s: %d window(s) differ; load them again with --repair", name, res.Differ)
	}
	return nil
}

// checkReport is what check -o json prints: the check, and with --repair
// the repair backfill as it ended.
type checkReport struct {
	protocol.CheckReply
	Repair *protocol.BackfillStatus `json:"repair,omitempty"`
}

// checkJSON prints res as JSON; with a repair backfill it waits for the
// backfill first (its progress on stderr) and reports how it ended.
func checkJSON(ctx context.Context, cl *cluster, cf *clientFlags, stdout, stderr io.Writer, res protocol.CheckReply, repair bool) error {
	rep := checkReport{CheckReply: res}
	if res.Backfill == "" {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
		return checkOutcome(res.Pipeline, res, repair)
	}
	st, err := waitBackfill(ctx, cl, cf, stderr, res.Backfill)
	if err != nil {
		return err
	}
	rep.Repair = &st
	if err := printJSON(stdout, rep); err != nil {
		return err
	}
	if st.Failed > 0 {
		return fmt.Errorf("backfill %s: %d window(s) failed; run the same backfill again to load them (committed windows are skipped)", st.ID, st.Failed)
	}
	return nil
}
