package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runCheck compares an incremental pipeline's source and target window by
// window: the leader counts and checksums each side's rows of every
// window of [from, to) and lists the windows that differ; with --repair
// it loads them again in a backfill, which is then followed.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "check <pipeline> --from T1 --to T2 [--repair] [--concurrency N] [--all]", stderr)
	var cf clientFlags
	cf.register(fs)
	fromS := fs.String("from", "", "start of the range, RFC 3339 (inclusive), or an integer for integer windows")
	toS := fs.String("to", "", "end of the range, RFC 3339 (exclusive; at most the watermark), or an integer")
	repair := fs.Bool("repair", false, "load the windows that differ again (a backfill that replaces or merges them) and wait for it")
	conc := fs.Int("concurrency", 2, "with --repair: windows loading at once")
	all := fs.Bool("all", false, "list every window checked, not only those that differ")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if name == "" {
		return errors.New("check: name the pipeline: sluice check <pipeline> --from T1 --to T2")
	}
	req := protocol.CheckRequest{Pipeline: name, Repair: *repair, Concurrency: *conc}
	var err error
	if req.From, req.To, req.Range, err = parseRange(*fromS, *toS); err != nil {
		return err
	}
	nc, err := cf.connect("sluice-check")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)
	res, err := c.Check(ctx, req)
	if err != nil {
		return fmt.Errorf("check %s: %w", name, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WINDOW\tSOURCE ROWS\tTARGET ROWS\tSOURCE SUM\tTARGET SUM\tSAME")
	for _, w := range res.Windows {
		if w.Same && !*all {
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
		if res.Differ > 0 && !*repair {
			return fmt.Errorf("check %s: %d window(s) differ; load them again with --repair", name, res.Differ)
		}
		return nil
	}
	fmt.Fprintf(stdout, "repair: backfill %s loads them again\n", res.Backfill)
	p := &backfillProgress{w: stdout, start: time.Now()}
	st, err := c.WaitBackfill(ctx, res.Backfill, 500*time.Millisecond, p.update)
	p.done()
	if err != nil {
		return err
	}
	return printBackfillOutcome(stdout, st)
}
