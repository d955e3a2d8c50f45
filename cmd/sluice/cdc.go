package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

func newCDCCmd() *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "cdc",
		Short: "change data capture: the streams of cdc and cdc_apply pipelines",
	}, newCDCStatusCmd(&cf), newCDCWaitCmd(&cf), newCDCResnapshotCmd(&cf))
	cf.register(cmd.PersistentFlags())
	return cmd
}

// newCDCStatusCmd is `sluice cdc status [pipeline]`.
func newCDCStatusCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "status [pipeline]",
		Short:             "each stream: its snapshot, holder, lease, position, lag and events",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completePipelines(cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			st, err := cl.client.CDCStatus(ctx)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				if st.Streams = streamsOf(st.Streams, args[0]); len(st.Streams) == 0 {
					return fmt.Errorf("no cdc or cdc_apply pipeline %q (sluice cdc status lists them)", args[0])
				}
			}
			for i := range st.Streams {
				st.Streams[i].Status.Error = connectors.Redact(st.Streams[i].Status.Error)
			}
			return out.print(cmd.OutOrStdout(), st, func(w io.Writer) { printCDCStatus(w, st, time.Now()) })
		})
	}
	return cmd
}

// newCDCResnapshotCmd is `sluice cdc resnapshot <pipeline> <table>`.
func newCDCResnapshotCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "resnapshot <pipeline> <schema.table>",
		Short: "take one table of a cdc pipeline again, in chunks interleaved with its stream (no new slot)",
		Long: `Resnapshot asks a cdc pipeline's reader for an incremental snapshot of one
of its tables: the table is read again in chunks between watermarks on the
stream while the other tables keep streaming, and cdc_apply targets start the
table over from it. sluice cdc status shows its progress.`,
		Example: `  sluice cdc resnapshot shop public.orders`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("name the pipeline and the table: %s", cmd.UseLine())
			}
			return nil
		},
		ValidArgsFunction: completePipelines(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
				reply, err := cl.client.Resnapshot(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of %s queued for %s (sluice cdc status shows its progress)\n", reply.Snapshot.ID, reply.Table, reply.Pipeline)
				return nil
			})
		},
	}
}

// describeSnapshot says how far an initial snapshot got.
func describeSnapshot(sp *protocol.SnapshotProgress) string {
	what := "snapshot"
	switch sp.State {
	case protocol.RunCommitted:
		what += " done"
	case protocol.RunFailed:
		what += " failed (started again on a new slot)"
	}
	return fmt.Sprintf("%s: %d/%d tables, %d/%d chunks, %d rows (run %s)", what, sp.TablesDone, sp.Tables, sp.ChunksDone, sp.Chunks, sp.Rows, sp.Run)
}

// streamsOf keeps the stream of pipeline name.
func streamsOf(streams []protocol.StreamInfo, name string) []protocol.StreamInfo {
	var kept []protocol.StreamInfo
	for _, s := range streams {
		if s.Pipeline == name {
			kept = append(kept, s)
		}
	}
	return kept
}

func printCDCStatus(w io.Writer, st protocol.CDCStatusReply, now time.Time) {
	defer func() {
		for _, cl := range st.Cleanups {
			fmt.Fprintf(w, "deleted %s (%s ago): removing %s\n", cl.Pipeline, now.Sub(cl.Deleted).Round(time.Second), cl.What)
		}
	}()
	if len(st.Streams) == 0 {
		fmt.Fprintln(w, "no cdc or cdc_apply pipelines")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tPATTERN\tPHASE\tWORKER (EPOCH)\tRENEWED\tSTATE\tCONFIRMED LSN\tLAG BYTES\tLAG TIME\tEVENTS\tLAST COMMIT")
	var notes []string // below the table, which they would break
	for _, s := range st.Streams {
		holder, renewed := "-", "-"
		if s.Worker != "" {
			holder = fmt.Sprintf("%s (%d)", s.Worker, s.Epoch)
		}
		if !s.Renewed.IsZero() {
			renewed = now.Sub(s.Renewed).Round(100*time.Millisecond).String() + " ago"
		}
		phase := s.Phase
		if sp := s.Snapshot; sp != nil && s.Phase == "snapshot" {
			phase += fmt.Sprintf(" %d/%d", sp.ChunksDone, sp.Chunks)
		}
		state, confirmed, lagBytes, lagTime, last := dash(s.Status.State), "-", "-", "-", "-"
		if s.Pattern == protocol.PatternCDC {
			confirmed = dash(s.Status.ConfirmedLSN)
			lagBytes = fmt.Sprint(s.Status.LagBytes)
		} else if s.Status.Applied > 0 {
			confirmed = fmt.Sprintf("seq %d (%d pending)", s.Status.Applied, s.Status.Pending)
		}
		if s.Status.State != "" {
			lagTime = s.Status.LagTime.Round(time.Millisecond).String()
		}
		if !s.Status.LastCommit.IsZero() {
			last = s.Status.LastCommit.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Pipeline, s.Pattern, phase, holder, renewed,
			state, confirmed, lagBytes, lagTime, s.Status.Events, last)
		if sp := s.Snapshot; sp != nil {
			notes = append(notes, s.Pipeline+" "+describeSnapshot(sp))
		}
		if s.Status.Error != "" {
			notes = append(notes, s.Pipeline+" last error: "+s.Status.Error)
		}
		reported, reportedTable := map[string]bool{}, map[string]bool{}
		for _, tb := range s.Status.Tables {
			reported[tb.Snapshot] = tb.Snapshot != ""
			reportedTable[tb.Table] = true
			line := "  table " + tb.Table + " " + tb.State
			if tb.Snapshot != "" {
				line += fmt.Sprintf(" (%s, %d rows)", tb.Snapshot, tb.Rows)
			}
			if tb.Seq > 0 {
				line += fmt.Sprintf(" at seq %d", tb.Seq)
			}
			if !tb.Since.IsZero() {
				line += " since " + tb.Since.UTC().Format(time.RFC3339)
			}
			if tb.Throttled > 0 {
				line += "; " + throttledText(tb)
			}
			if tb.Error != "" {
				line += ": " + tb.Error
			}
			fmt.Fprintln(tw, line)
		}
		// The last snapshot taken of each table that the holder no
		// longer reports (it restarted since), as the leader recorded it.
		for i, tb := range s.Snapshotted {
			if reportedTable[tb.Table] || slices.ContainsFunc(s.Snapshotted[i+1:], func(o protocol.TableStatus) bool { return o.Table == tb.Table }) {
				continue
			}
			if tb.State == protocol.TableNotSnapshotted {
				if slices.ContainsFunc(s.Snapshots, func(o protocol.TableSnapshot) bool { return o.Table == tb.Table }) {
					continue // a resnapshot is pending
				}
				fmt.Fprintf(tw, "  table %s %s: added %s to a pipeline of cdc.snapshot: never, streamed from then on without its rows from before (sluice cdc resnapshot %s %s reads them)\n",
					tb.Table, tb.State, tb.Since.UTC().Format(time.RFC3339), s.Pipeline, tb.Table)
				continue
			}
			line := fmt.Sprintf("  table %s %s (%s, %d rows) at %s", tb.Table, tb.State, tb.Snapshot, tb.Rows, tb.Since.UTC().Format(time.RFC3339))
			if tb.Throttled > 0 {
				line += "; " + throttledText(tb)
			}
			if tb.Error != "" {
				line += ": " + tb.Error
			}
			fmt.Fprintln(tw, line)
		}
		for _, ts := range s.Snapshots {
			if !reported[ts.ID] {
				fmt.Fprintf(tw, "  table %s %s (%s, %s)\n", ts.Table, protocol.TableSnapshotPending, ts.ID, ts.Reason)
			}
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// throttledText says how often and how long cdc.max_lag held an
// incremental snapshot back.
func throttledText(tb protocol.TableStatus) string {
	held := time.Duration(tb.ThrottledSeconds * float64(time.Second)).Round(100 * time.Millisecond)
	s := fmt.Sprintf("throttled %d times for %s in all by cdc.max_lag", tb.Throttled, held)
	if tb.Throttling {
		return s + ", held back now"
	}
	if !tb.LastThrottled.IsZero() {
		s += ", last at " + tb.LastThrottled.UTC().Format(time.RFC3339)
	}
	return s
}

// newDeleteCmd is `sluice delete <pipeline>`.
func newDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:               "delete <pipeline>",
		Short:             "delete a pipeline (a cdc pipeline's slot, publication and events go with it); its data stays",
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
				reply, err := cl.client.Delete(ctx, args[0])
				if err != nil {
					return err
				}
				stdout := cmd.OutOrStdout()
				fmt.Fprintf(stdout, "pipeline %s deleted\n", reply.Pipeline)
				if reply.Cleanup != "" {
					fmt.Fprintf(stdout, "the leader removes the %s once the stream stopped (sluice cdc status shows it until then)\n", reply.Cleanup)
				}
				return nil
			})
		},
	}
	cf.register(cmd.Flags())
	return cmd
}
