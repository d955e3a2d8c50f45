package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/protocol"
)

func newBackfillCmd() *cobra.Command {
	var (
		cf              clientFlags
		fromS, toS, id  string
		conc            int
		replace, noWait bool
	)
	cmd := &cobra.Command{
		Use:   "backfill <pipeline> --from T1 --to T2",
		Short: "load a time range of an incremental pipeline in windows, and follow it",
		Long: `Backfill loads [--from, --to) of an incremental pipeline: the leader splits it
into the pipeline's windows and runs at most --concurrency of them at once.
Windows committed before are skipped (and listed) unless --replace.`,
		Example: `  sluice backfill events-incr --from 2026-11-01T00:00:00Z --to 2026-11-03T00:00:00Z --concurrency 4
  sluice backfill status events-incr-bf0001 -o json`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			if id == "" && len(args) == 0 {
				return &usageError{err: errors.New("name the pipeline: sluice backfill <pipeline> --from T1 --to T2"), path: cmd.CommandPath()}
			}
			cl, err := cf.connect("sluice-backfill", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			var st protocol.BackfillStatus
			if id != "" {
				rctx, cancel := context.WithTimeout(ctx, cf.timeout)
				st, err = cl.client.GetBackfill(rctx, id)
				cancel()
				if err != nil {
					return err
				}
			} else {
				name := args[0]
				req := protocol.BackfillRequest{Pipeline: name, Concurrency: conc, Replace: replace}
				if req.From, req.To, req.Range, err = parseRange(fromS, toS); err != nil {
					return err
				}
				rctx, cancel := context.WithTimeout(ctx, cf.timeout)
				st, err = cl.client.Backfill(rctx, req)
				cancel()
				if err != nil {
					return fmt.Errorf("backfill %s: %w", name, err)
				}
				fmt.Fprintf(stdout, "backfill %s of %s: %s, %d at once\n", st.ID, st.Pipeline, backfillWindows(st), st.Concurrency)
				printSkipped(stdout, st)
			}
			if noWait {
				fmt.Fprintf(stdout, "follow it with: sluice backfill --id %s%s\n", st.ID, cf.again())
				return nil
			}
			return followBackfill(ctx, cl, &cf, stdout, st)
		},
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&fromS, "from", "", "start of the range, RFC 3339 (inclusive), or an integer for integer windows")
	fs.StringVar(&toS, "to", "", "end of the range, RFC 3339 (exclusive), or an integer for integer windows")
	fs.IntVar(&conc, "concurrency", 2, "windows loading at once (the leader enforces it)")
	fs.BoolVar(&replace, "replace", false, "load windows committed before again, replacing their rows")
	fs.BoolVar(&noWait, "no-wait", false, "start the backfill and return; follow it with 'sluice backfill --id ID'")
	fs.StringVar(&id, "id", "", "follow a backfill started before instead of starting one")
	cmd.AddCommand(newBackfillStatusCmd())
	return cmd
}

// newBackfillStatusCmd is `sluice backfill status <id>`: one backfill with
// its windows.
func newBackfillStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status <backfill-id>",
		Short: "show a backfill and its windows",
		Args:  pipelineArg("backfill id"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			st, err := cl.client.GetBackfill(ctx, args[0])
			if err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), st, func(w io.Writer) { printBackfill(w, st) })
		})
	}
	cf.register(cmd.Flags())
	return cmd
}

// printBackfill shows a backfill and its windows.
func printBackfill(w io.Writer, st protocol.BackfillStatus) {
	replacing := ""
	if st.Replace {
		replacing = ", replacing committed windows"
	}
	fmt.Fprintf(w, "backfill %s of %s: %s, %s, %d at once%s\n", st.ID, st.Pipeline, st.State, backfillWindows(st), st.Concurrency, replacing)
	fmt.Fprintf(w, "  %d committed (%d rows), %d running, %d queued, %d skipped, %d failed\n", st.Committed, st.Rows, st.Running, st.Queued, st.Skipped, st.Failed)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WINDOW\tSTATE\tRUN\tROWS\tERROR")
	for _, win := range st.Windows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", win.Window, win.State, dash(win.Run), win.Rows, dash(truncate(win.Error, 80)))
	}
	tw.Flush()
}

// followBackfill follows backfill st to its end, showing its progress,
// and prints its outcome.
func followBackfill(ctx context.Context, cl *cluster, cf *clientFlags, stdout io.Writer, st protocol.BackfillStatus) error {
	st, err := waitBackfill(ctx, cl, cf, stdout, st.ID)
	if err != nil {
		return err
	}
	return printBackfillOutcome(stdout, st)
}

// waitBackfill waits for backfill id to be done, showing its progress on
// w, and returns how it ended.
func waitBackfill(ctx context.Context, cl *cluster, cf *clientFlags, w io.Writer, id string) (protocol.BackfillStatus, error) {
	st := protocol.BackfillStatus{ID: id}
	p := newBackfillProgress(w)
	err := cl.follow(ctx, cf.lostAfter, 500*time.Millisecond, "backfill "+id, "sluice backfill --id "+id+cf.again(),
		func(ctx context.Context) (bool, error) {
			s, err := cl.client.GetBackfill(ctx, id)
			if err != nil {
				return false, err
			}
			st = s
			p.update(s)
			return s.State == protocol.BackfillDone, nil
		})
	p.done()
	return st, err
}

// backfillWindows says which range a backfill loads and in how many
// windows: of time, or of integer values.
func backfillWindows(st protocol.BackfillStatus) string {
	if st.Range != nil {
		return fmt.Sprintf("%s in %d windows of %d values", st.Range, st.Total, st.Span)
	}
	return fmt.Sprintf("[%s, %s) in %d windows of %s", st.From.Format(time.RFC3339), st.To.Format(time.RFC3339), st.Total, st.Window)
}

// parseRange parses --from and --to: two RFC 3339 times, or two integers
// (a range of values of an integer delta column).
func parseRange(fromS, toS string) (from, to time.Time, values *protocol.Window, err error) {
	if w, ok := valueRange(fromS, toS); ok {
		return from, to, &w, nil
	}
	if from, err = parseTimeFlag("from", fromS); err != nil {
		return from, to, nil, err
	}
	to, err = parseTimeFlag("to", toS)
	return from, to, nil, err
}

// valueRange returns the window [from, to) when both are integers: a
// range of values of an integer delta column.
func valueRange(from, to string) (protocol.Window, bool) {
	lo, err1 := strconv.ParseInt(strings.TrimSpace(from), 10, 64)
	hi, err2 := strconv.ParseInt(strings.TrimSpace(to), 10, 64)
	return protocol.ValueWindow(lo, hi), err1 == nil && err2 == nil
}

func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, fmt.Errorf("--%s is required (RFC 3339, such as 2026-01-01T00:00:00Z)", name)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want RFC 3339, such as 2026-01-01T00:00:00Z", name, v)
	}
	return t, nil
}

// printSkipped says which windows a backfill skipped as committed before,
// as ranges of consecutive windows.
func printSkipped(w io.Writer, st protocol.BackfillStatus) {
	if st.Skipped == 0 {
		return
	}
	fmt.Fprintf(w, "skipping %d of %d windows already committed (give --replace to load them again):\n", st.Skipped, st.Total)
	var from, to time.Time
	flush := func() {
		if !from.IsZero() {
			fmt.Fprintf(w, "  [%s, %s)\n", from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		from = time.Time{}
	}
	for _, win := range st.Windows {
		if win.State != protocol.WindowSkipped {
			flush()
			continue
		}
		if from.IsZero() || !win.From.Equal(to) {
			flush()
			from = win.From
		}
		to = win.To
	}
	flush()
}

func printBackfillOutcome(w io.Writer, st protocol.BackfillStatus) error {
	fmt.Fprintf(w, "backfill %s done: %d windows committed (%d rows), %d skipped, %d failed, of %d\n",
		st.ID, st.Committed, st.Rows, st.Skipped, st.Failed, st.Total)
	if st.Failed == 0 {
		return nil
	}
	for _, win := range st.Windows {
		if win.State == protocol.WindowFailed {
			fmt.Fprintf(w, "  failed %s run %s: %s\n", win.Window, win.Run, truncate(win.Error, 120))
		}
	}
	return fmt.Errorf("backfill %s: %d window(s) failed; run the same backfill again to load them (committed windows are skipped)", st.ID, st.Failed)
}
