package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/protocol"
)

func newRunCmd() *cobra.Command {
	var (
		cf      clientFlags
		params  []string
		wait    bool
		logical string
		window  string
	)
	cmd := &cobra.Command{
		Use:   "run <pipeline>",
		Short: "start a run of a pipeline; --wait follows it to its end",
		Example: `  sluice run events-full --wait
  sluice run events-incr --window 2026-11-01T00:00:00Z,2026-11-01T01:00:00Z --wait`,
		Args:              pipelineArg("pipeline"),
		ValidArgsFunction: completePipelines(&cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			req := protocol.RunRequest{Pipeline: name, Params: map[string]string{}}
			if err := parseParams(params, req.Params); err != nil {
				return err
			}
			if logical != "" {
				t, err := time.Parse(time.RFC3339, logical)
				if err != nil {
					return fmt.Errorf("--logical-time %q: want RFC 3339, such as 2026-01-01T00:00:00Z", logical)
				}
				req.LogicalTime = t
			}
			if window != "" {
				a, b, ok := strings.Cut(window, ",")
				from, err1 := time.Parse(time.RFC3339Nano, strings.TrimSpace(a))
				to, err2 := time.Parse(time.RFC3339Nano, strings.TrimSpace(b))
				if w, values := valueRange(a, b); ok && values {
					req.Window = &w
				} else if !ok || err1 != nil || err2 != nil {
					return fmt.Errorf("--window %q: want FROM,TO in RFC 3339, or two integers", window)
				} else {
					req.Window = &protocol.Window{From: from, To: to}
				}
			}
			return runRun(cmd.Context(), &cf, req, wait, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringArrayVar(&params, "param", nil, "run parameter `k=v`; repeat for several")
	fs.BoolVar(&wait, "wait", false, "wait for the run to end, showing progress")
	fs.StringVar(&logical, "logical-time", "", "the run's logical time, RFC 3339 (windowed and partitioned patterns)")
	fs.StringVar(&window, "window", "", "incremental pipelines: load exactly `FROM,TO` (RFC 3339, or two integers) again, replacing its rows; the watermark stays")
	return cmd
}

// parseParams adds the k=v flags to m.
func parseParams(params []string, m map[string]string) error {
	for _, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fmt.Errorf("--param %q: want key=value", p)
		}
		m[k] = v
	}
	return nil
}

func runRun(ctx context.Context, cf *clientFlags, req protocol.RunRequest, wait bool, stdout, stderr io.Writer) error {
	cl, err := cf.connect("sluice-run", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	res, err := cl.client.Run(rctx, req)
	cancel()
	if err != nil {
		return fmt.Errorf("run %s: %w", req.Pipeline, err)
	}
	if res.UpToDate {
		fmt.Fprintf(stdout, "pipeline %s is up to date: the watermark %s has reached now - lag; no run\n", req.Pipeline, res.Window.From.Format(time.RFC3339Nano))
		return nil
	}
	if res.WaitingFor != "" {
		fmt.Fprintf(stdout, "run %s waiting for its source input: %s (window %s); no task until it is ready\n", res.RunID, res.WaitingFor, res.Window)
	} else if res.Window != nil {
		fmt.Fprintf(stdout, "run %s started: %d tasks, window %s\n", res.RunID, res.Tasks, res.Window)
	} else {
		fmt.Fprintf(stdout, "run %s started: %d tasks\n", res.RunID, res.Tasks)
	}
	if !wait {
		return nil
	}
	st, err := followRun(ctx, cf, cl, res.RunID, stdout)
	if err != nil {
		return err
	}
	return printOutcome(stdout, st)
}

// followRun shows a run's progress on w until it ends and returns its last
// status.
func followRun(ctx context.Context, cf *clientFlags, cl *cluster, runID string, w io.Writer) (protocol.RunStatus, error) {
	p := newProgress(w)
	var st protocol.RunStatus
	err := cl.follow(ctx, cf.lostAfter, 250*time.Millisecond, "run "+runID, "sluice status --run "+runID+" --wait"+cf.again(),
		func(ctx context.Context) (bool, error) {
			s, err := cl.client.GetRun(ctx, runID)
			if err != nil {
				return false, err
			}
			st = s
			p.update(s)
			return s.State == protocol.RunCommitted || s.State == protocol.RunFailed, nil
		})
	p.done()
	return st, err
}

// runFailed is the error of a run that did not commit.
func runFailed(st protocol.RunStatus) error {
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return nil
}

// statusWait is `sluice status --run ID --wait`: it follows the run, then
// shows it; a failed run is an error.
func statusWait(cmd *cobra.Command, cf *clientFlags, out *outputFlag, runID string) error {
	cl, err := cf.connect("sluice-status", cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer cl.Close()
	stdout, progress := cmd.OutOrStdout(), cmd.OutOrStdout()
	if out.isJSON() {
		progress = cmd.ErrOrStderr()
	}
	st, err := followRun(cmd.Context(), cf, cl, runID, progress)
	if err != nil {
		return err
	}
	if !out.isJSON() {
		return printOutcome(stdout, st)
	}
	if err := printJSON(stdout, redactRun(st)); err != nil {
		return err
	}
	return runFailed(st)
}

// again is the cluster flags to repeat in a command this one suggests.
func (c *clientFlags) again() string {
	s := ""
	if c.natsURL != "" {
		s += " --nats " + c.natsURL
	}
	if c.dataDir != ".sluice" && c.natsURL == "" {
		s += " --data-dir " + c.dataDir
	}
	return s
}

func printOutcome(w io.Writer, st protocol.RunStatus) error {
	if err := runFailed(st); err != nil {
		return err
	}
	fmt.Fprintf(w, "run %s committed: %d %s, %s, dataset version %d\n  data:   %s\n", st.RunID, st.Rows, unitOf(st), humanBytes(st.Bytes), st.Version, dash(st.Location))
	if st.Window != nil {
		fmt.Fprintf(w, "  window: %s\n", st.Window)
	}
	if st.Reaches != "" {
		fmt.Fprintf(w, "  position: %s -> %s\n", dash(st.Since), st.Reaches)
	}
	if st.Marker != "" {
		fmt.Fprintf(w, "  marker: %s\n", st.Marker)
	}
	if st.TraceID != "" {
		fmt.Fprintf(w, "  trace:  %s\n", st.TraceID)
	}
	return nil
}

func newStatusCmd() *cobra.Command {
	var (
		cf    clientFlags
		runID string
		wait  bool
		limit int
	)
	cmd := &cobra.Command{
		Use:   "status [pipeline]",
		Short: "show pipelines, runs and workers, or one run with its tasks (--run)",
		Example: `  sluice status
  sluice status events-full -o json
  sluice status --run events-full-000001 --wait`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completePipelines(&cf),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if wait && runID == "" {
			return &usageError{err: errors.New("--wait follows one run: give --run ID"), path: cmd.CommandPath()}
		}
		stdout := cmd.OutOrStdout()
		if wait {
			return statusWait(cmd, &cf, out, runID)
		}
		return cf.session(cmd, func(ctx context.Context, cl *cluster) error {
			if runID != "" {
				st, err := cl.client.GetRun(ctx, runID)
				if err != nil {
					return err
				}
				st = redactRun(st)
				return out.print(stdout, st, func(w io.Writer) { printRun(w, st) })
			}
			req := protocol.StatusRequest{Limit: limit}
			if len(args) > 0 {
				req.Pipeline = args[0]
			}
			st, err := cl.client.Status(ctx, req)
			if err != nil {
				return err
			}
			st = redactStatus(st)
			return out.print(stdout, st, func(w io.Writer) { printStatus(w, st) })
		})
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&runID, "run", "", "show one run with its tasks")
	fs.BoolVar(&wait, "wait", false, "with --run: follow the run until it ends, then show it")
	fs.IntVar(&limit, "limit", 10, "runs to list")
	_ = cmd.RegisterFlagCompletionFunc("run", completeRuns(&cf))
	return cmd
}

func printStatus(w io.Writer, st protocol.StatusReply) {
	fmt.Fprintf(w, "leader: %s\n", st.Leader)
	for _, n := range st.Nodes {
		mark := ""
		if n.Leader {
			mark = " (leader)"
		}
		fmt.Fprintf(w, "  node %s %s %s%s\n", n.ID, n.Address, n.Suffrage, mark)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPIPELINE\tPATTERN\tREVISION\tVERSION\tLAST RUN\tSTARTS ON\tWATERMARK\tLAG")
	for _, p := range st.Pipelines {
		version := fmt.Sprint(p.Version)
		if p.RollbackTo != 0 {
			version += fmt.Sprintf(" (rolling back to %d)", p.RollbackTo)
		}
		lag := ""
		switch {
		case p.Lag != nil:
			lag = fmt.Sprint(*p.Lag)
		case p.LagError != "":
			lag = "? (" + truncate(p.LagError, 40) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Pattern, p.Revision, version, dash(p.LastRun), dash(startsOn(p)), dash(truncate(p.Watermark, 40)), dash(lag))
	}
	fmt.Fprintln(tw, "\nRUN\tSTATE\tTASKS\tROWS\tBYTES\tVERSION\tCREATED\tERROR")
	for _, r := range st.Runs {
		note := r.Error
		switch {
		case r.WaitingFor != "":
			note = "waiting for " + r.WaitingFor
		case note == "" && r.Attempt > 1:
			note = fmt.Sprintf("attempt %d (planned again)", r.Attempt)
		}
		rows := fmt.Sprint(r.Rows)
		if r.Unit != "" {
			rows += " " + r.Unit
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%d\t%s\t%s\n", r.RunID, r.State, r.TasksDone, r.Tasks, rows, humanBytes(r.Bytes), r.Version,
			r.Created.Local().Format(time.DateTime), dash(truncate(note, 60)))
	}
	fmt.Fprintln(tw, "\nWORKER\tHOST\tBUSY\tDONE\tFAILED\tLAST SEEN")
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].Worker < st.Workers[j].Worker })
	for _, wk := range st.Workers {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%s ago\n", wk.Worker, wk.Host, wk.Busy, wk.Slots, wk.Done, wk.Failed, time.Since(wk.Time).Round(time.Second))
	}
	tw.Flush()
}

// startsOn says what starts runs of p besides a trigger message: its
// schedule (with its next tick), the pipeline it runs after, and the
// events of an external trigger with what became of them.
func startsOn(p protocol.PipelineStatus) string {
	var parts []string
	if p.Schedule != "" {
		s := p.Schedule
		if !p.NextTick.IsZero() {
			s += " (next " + p.NextTick.UTC().Format(time.RFC3339) + ")"
		}
		parts = append(parts, s)
	}
	if p.After != "" {
		parts = append(parts, "after "+p.After)
	}
	if e := p.Events; e != nil {
		s := fmt.Sprintf("%s (%d runs, %d filtered, %d dead-lettered)", e.Source, e.Runs, e.Filtered, e.DeadLettered)
		if e.Error != "" {
			s += ": " + e.Error
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func printRun(w io.Writer, r protocol.RunStatus) {
	fmt.Fprintf(w, "run %s (%s): %s, %d/%d tasks, %d %s, %s\n", r.RunID, r.Pipeline, r.State, r.TasksDone, r.Tasks, r.Rows, unitOf(r), humanBytes(r.Bytes))
	if tr := r.Trigger; tr != nil {
		switch {
		case tr.After != nil:
			fmt.Fprintf(w, "  after:  %s run %s (version %d, %s)\n", tr.After.Pipeline, tr.After.RunID, tr.After.Version, dash(tr.After.Location))
		case tr.Schedule != "":
			fmt.Fprintf(w, "  schedule: %s, tick %s\n", tr.Schedule, r.LogicalTime.UTC().Format(time.RFC3339))
		case tr.Subject != "":
			fmt.Fprintf(w, "  trigger: %s msg %s\n", tr.Subject, dash(tr.MsgID))
		}
	}
	for _, rp := range r.Replans {
		fmt.Fprintf(w, "  attempt %d given up at %s: %s\n", rp.Attempt, rp.Time.Local().Format(time.DateTime), rp.Reason)
	}
	if r.Attempt > 1 {
		fmt.Fprintf(w, "  attempt: %d, planned again (the tasks below are its own)\n", r.Attempt)
	}
	if r.Location != "" {
		fmt.Fprintf(w, "  data:   %s (version %d)\n", r.Location, r.Version)
	}
	if r.Window != nil {
		kind := "explicit window: the watermark stays"
		switch {
		case r.Live:
			kind = "live: its commit moves the watermark"
		case r.Backfill != "":
			kind = "backfill " + r.Backfill
		}
		fmt.Fprintf(w, "  window: %s (%s)\n", r.Window, kind)
	}
	if r.Live && r.Window == nil && (r.Since != "" || r.Reaches != "") {
		fmt.Fprintf(w, "  position: from %s to %s (its commit moves the watermark)\n", dash(r.Since), dash(r.Reaches))
	}
	if r.WaitingFor != "" {
		until := "no ready timeout"
		if !r.ReadyDeadline.IsZero() {
			until = "fails at " + r.ReadyDeadline.Local().Format(time.DateTime) + " if still not ready"
		}
		fmt.Fprintf(w, "  waiting: %s, since %s (%s)\n", r.WaitingFor, r.WaitingSince.Local().Format(time.DateTime), until)
	}
	if r.Marker != "" {
		fmt.Fprintf(w, "  marker: %s\n", r.Marker)
	}
	if r.TraceID != "" {
		fmt.Fprintf(w, "  trace:  %s\n", r.TraceID)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error:  %s\n", r.Error)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tPARTITION\tSTATE\tATTEMPTS\tWORKER\tROWS\tERROR")
	for _, t := range r.TaskList {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\n", t.TaskID, truncate(t.Partition, 40), t.State, t.Attempts, dash(t.Worker), t.Rows, dash(truncate(t.Error, 60)))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
