package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("apply", "apply -f spec.yaml [-f more.yaml]", stderr)
	var cf clientFlags
	cf.register(fs)
	var paths stringList
	fs.Var(&paths, "f", "pipeline spec file (YAML); repeat for several")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(paths) == 0 {
		return errors.New("apply: give at least one spec with -f")
	}
	specs, err := loadSpecs(paths, newRegistry(), stderr)
	if err != nil {
		return err
	}
	nc, err := cf.connect("sluice-apply")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	for _, s := range specs {
		res, err := c.Apply(ctx, s)
		if err != nil {
			return fmt.Errorf("apply %s: %w", s.Name, err)
		}
		verb := "updated"
		if res.Created {
			verb = "created"
		}
		fmt.Fprintf(stdout, "pipeline %s %s (revision %d)\n", res.Pipeline, verb, res.Revision)
	}
	return nil
}

// loadSpecs parses and validates every file before anything is sent, so a
// bad file changes nothing. Relative paths resolve against the spec's
// directory.
func loadSpecs(paths []string, reg *connectors.Registry, stderr io.Writer) ([]pipeline.Spec, error) {
	var specs []pipeline.Spec
	var errs []error
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		unset := map[string]bool{}
		lookup := func(k string) (string, bool) {
			v, ok := os.LookupEnv(k)
			if !ok {
				unset[k] = true
			}
			return v, ok
		}
		s, err := pipeline.Load(data, p, reg, lookup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range sortedKeys(unset) {
			fmt.Fprintf(stderr, "note: %s: %s is not set here, so the fields using it were not checked; it must be set where the coordinator and workers run\n", p, k)
		}
		abs, err := filepath.Abs(filepath.Dir(p))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.ResolvePaths(abs); err != nil {
			errs = append(errs, err)
			continue
		}
		specs = append(specs, s)
	}
	return specs, errors.Join(errs...)
}

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run <pipeline> [--param k=v] [--wait]", stderr)
	var cf clientFlags
	cf.register(fs)
	var params stringList
	fs.Var(&params, "param", "run parameter k=v; repeat for several")
	wait := fs.Bool("wait", false, "wait for the run to end, showing progress")
	logical := fs.String("logical-time", "", "the run's logical time, RFC 3339 (windowed and partitioned patterns)")
	window := fs.String("window", "", "incremental pipelines: load exactly FROM,TO (RFC 3339) again, replacing its rows; the watermark stays")
	// Allow the pipeline name before the flags: sluice run orders --wait.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return errors.New("run: name the pipeline: sluice run <pipeline>")
	}
	req := protocol.RunRequest{Pipeline: name, Params: map[string]string{}}
	for _, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fmt.Errorf("--param %q: want key=value", p)
		}
		req.Params[k] = v
	}
	if *logical != "" {
		t, err := time.Parse(time.RFC3339, *logical)
		if err != nil {
			return fmt.Errorf("--logical-time: %w", err)
		}
		req.LogicalTime = t
	}
	if *window != "" {
		a, b, ok := strings.Cut(*window, ",")
		from, err1 := time.Parse(time.RFC3339Nano, strings.TrimSpace(a))
		to, err2 := time.Parse(time.RFC3339Nano, strings.TrimSpace(b))
		if w, values := valueRange(a, b); ok && values {
			req.Window = &w
		} else if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("--window %q: want FROM,TO in RFC 3339, or two integers", *window)
		} else {
			req.Window = &protocol.Window{From: from, To: to}
		}
	}
	nc, err := cf.connect("sluice-run")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	res, err := c.Run(rctx, req)
	cancel()
	if err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	if res.UpToDate {
		fmt.Fprintf(stdout, "pipeline %s is up to date: the watermark %s has reached now - lag; no run\n", name, res.Window.From.Format(time.RFC3339Nano))
		return nil
	}
	if res.WaitingFor != "" {
		fmt.Fprintf(stdout, "run %s waiting for its source input: %s (window %s); no task until it is ready\n", res.RunID, res.WaitingFor, res.Window)
	} else if res.Window != nil {
		fmt.Fprintf(stdout, "run %s started: %d tasks, window %s\n", res.RunID, res.Tasks, res.Window)
	} else {
		fmt.Fprintf(stdout, "run %s started: %d tasks\n", res.RunID, res.Tasks)
	}
	if !*wait {
		return nil
	}
	p := newProgress(stdout)
	st, err := c.WaitRun(ctx, res.RunID, 250*time.Millisecond, p.update)
	p.done()
	if err != nil {
		return err
	}
	return printOutcome(stdout, st)
}

func printOutcome(w io.Writer, st protocol.RunStatus) error {
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	fmt.Fprintf(w, "run %s committed: %d rows, %s, dataset version %d\n  data:   %s\n", st.RunID, st.Rows, humanBytes(st.Bytes), st.Version, st.Location)
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

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "status [pipeline] [--run ID] [--json]", stderr)
	var cf clientFlags
	cf.register(fs)
	runID := fs.String("run", "", "show one run with its tasks")
	asJSON := fs.Bool("json", false, "print JSON")
	limit := fs.Int("limit", 10, "runs to list")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, err := cf.connect("sluice-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	if *runID != "" {
		st, err := c.GetRun(ctx, *runID)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, st)
		}
		printRun(stdout, st)
		return nil
	}
	st, err := c.Status(ctx, protocol.StatusRequest{Pipeline: name, Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printStatus(stdout, st)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
	fmt.Fprintln(tw, "\nPIPELINE\tPATTERN\tREVISION\tVERSION\tLAST RUN\tSTARTS ON\tWATERMARK")
	for _, p := range st.Pipelines {
		version := fmt.Sprint(p.Version)
		if p.RollbackTo != 0 {
			version += fmt.Sprintf(" (rolling back to %d)", p.RollbackTo)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Name, p.Pattern, p.Revision, version, dash(p.LastRun), dash(startsOn(p)), dash(truncate(p.Watermark, 40)))
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
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%d\t%s\t%s\n", r.RunID, r.State, r.TasksDone, r.Tasks, r.Rows, humanBytes(r.Bytes), r.Version,
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
// schedule (with its next tick) and the pipeline it runs after.
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
	return strings.Join(parts, ", ")
}

func printRun(w io.Writer, r protocol.RunStatus) {
	fmt.Fprintf(w, "run %s (%s): %s, %d/%d tasks, %d rows, %s\n", r.RunID, r.Pipeline, r.State, r.TasksDone, r.Tasks, r.Rows, humanBytes(r.Bytes))
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

// progress draws one line that updates in place.
type progress struct {
	w     io.Writer
	start time.Time
	last  int
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) update(st protocol.RunStatus) {
	const width = 24
	filled := 0
	if st.Tasks > 0 {
		filled = width * st.TasksDone / st.Tasks
	}
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(st.Rows) / secs
	}
	line := fmt.Sprintf("\r[%s%s] %s %d/%d tasks  %d rows  %s  %.0f rows/s  %.1fs", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		st.State, st.TasksDone, st.Tasks, st.Rows, humanBytes(st.Bytes), rate, secs)
	pad := ""
	if len(line) < p.last {
		pad = strings.Repeat(" ", p.last-len(line))
	}
	p.last = len(line)
	fmt.Fprint(p.w, line+pad)
}

func (p *progress) done() { fmt.Fprintln(p.w) }

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, "${"+k+"}")
	}
	sort.Strings(ks)
	return ks
}
