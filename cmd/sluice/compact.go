package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runCompact compacts a dataset through the cluster: a run of a compact
// pipeline, or a compaction of the dataset another pipeline writes. With
// --dry-run the leader only plans it and the groups are listed.
func runCompact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("compact", "compact <pipeline> [--dry-run] [--no-wait]", stderr)
	var cf clientFlags
	cf.register(flags)
	dry := flags.Bool("dry-run", false, "list the rewrite groups the compaction would have, change nothing")
	noWait := flags.Bool("no-wait", false, "return once the compaction is planned")
	name, err := parseNamed(flags, args, "compact")
	if err != nil {
		return err
	}
	nc, err := cf.connect("sluice-compact")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	res, err := c.Compact(rctx, protocol.CompactRequest{Pipeline: name, DryRun: *dry})
	cancel()
	if err != nil {
		return fmt.Errorf("compact %s: %w", name, err)
	}
	if *dry {
		printGroups(stdout, res)
		return nil
	}
	fmt.Fprintf(stdout, "compaction %s started: %d rewrite groups\n", res.RunID, len(res.Groups))
	if *noWait || len(res.Groups) == 0 && res.RunID == "" {
		return nil
	}
	p := newProgress(stdout)
	st, err := c.WaitRun(ctx, res.RunID, 250*time.Millisecond, p.update)
	p.done()
	if err != nil {
		return err
	}
	if st.State != protocol.RunCommitted {
		return fmt.Errorf("compaction %s %s: %s", st.RunID, st.State, st.Error)
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

// runVacuum asks the leader to vacuum a pipeline's dataset: what
// compactions replaced and what failed runs left, beyond the retention and
// outside the rollback window. --dry-run lists what would go, with sizes.
func runVacuum(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("vacuum", "vacuum <pipeline> [--dry-run] [--json]", stderr)
	var cf clientFlags
	cf.register(flags)
	dry := flags.Bool("dry-run", false, "list what would be removed, with sizes; remove nothing")
	asJSON := flags.Bool("json", false, "print the reply as JSON")
	cf.timeout = 10 * time.Minute
	name, err := parseNamed(flags, args, "vacuum")
	if err != nil {
		return err
	}
	nc, err := cf.connect("sluice-vacuum")
	if err != nil {
		return err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	res, err := coordinator.NewClient(nc).Vacuum(rctx, protocol.VacuumRequest{Pipeline: name, DryRun: *dry})
	if err != nil {
		return fmt.Errorf("vacuum %s: %w", name, err)
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	printVacuum(stdout, res)
	return nil
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

// parseNamed parses the flags of a command that names one pipeline,
// before or after its flags.
func parseNamed(flags *flag.FlagSet, args []string, verb string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(flags, args); err != nil {
		return "", err
	}
	if name == "" && flags.NArg() > 0 {
		name = flags.Arg(0)
	}
	if name == "" {
		return "", errors.New(verb + ": name the pipeline: sluice " + verb + " <pipeline>")
	}
	return name, nil
}
