package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// runBackfill starts a backfill of an incremental pipeline and follows it:
// the leader splits [from, to) into the pipeline's windows and runs at
// most --concurrency of them at once; windows committed before are
// skipped (and listed) unless --replace.
func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", "backfill <pipeline> --from T1 --to T2 [--concurrency N] [--replace] [--no-wait]", stderr)
	var cf clientFlags
	cf.register(fs)
	fromS := fs.String("from", "", "start of the range, RFC 3339 (inclusive), or an integer for integer windows")
	toS := fs.String("to", "", "end of the range, RFC 3339 (exclusive), or an integer for integer windows")
	conc := fs.Int("concurrency", 2, "windows loading at once (the leader enforces it)")
	replace := fs.Bool("replace", false, "load windows committed before again, replacing their rows")
	noWait := fs.Bool("no-wait", false, "start the backfill and return; follow it with 'sluice backfill --id ID'")
	id := fs.String("id", "", "follow a backfill started before instead of starting one")
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
	nc, err := cf.connect("sluice-backfill")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := coordinator.NewClient(nc)

	var st protocol.BackfillStatus
	if *id != "" {
		rctx, cancel := context.WithTimeout(ctx, cf.timeout)
		st, err = c.GetBackfill(rctx, *id)
		cancel()
		if err != nil {
			return err
		}
	} else {
		if name == "" {
			return errors.New("backfill: name the pipeline: sluice backfill <pipeline> --from T1 --to T2")
		}
		req := protocol.BackfillRequest{Pipeline: name, Concurrency: *conc, Replace: *replace}
		if req.From, req.To, req.Range, err = parseRange(*fromS, *toS); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, cf.timeout)
		st, err = c.Backfill(rctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("backfill %s: %w", name, err)
		}
		if st.Range != nil {
			fmt.Fprintf(stdout, "backfill %s of %s: %s in %d windows of %d values, %d at once\n", st.ID, st.Pipeline, st.Range, st.Total, st.Span, st.Concurrency)
		} else {
			fmt.Fprintf(stdout, "backfill %s of %s: [%s, %s) in %d windows of %s, %d at once\n", st.ID, st.Pipeline,
				st.From.Format(time.RFC3339), st.To.Format(time.RFC3339), st.Total, st.Window, st.Concurrency)
		}
		printSkipped(stdout, st)
	}
	if *noWait {
		return nil
	}
	p := &backfillProgress{w: stdout, start: time.Now()}
	st, err = c.WaitBackfill(ctx, st.ID, 500*time.Millisecond, p.update)
	p.done()
	if err != nil {
		return err
	}
	return printBackfillOutcome(stdout, st)
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

// backfillProgress draws one line that updates in place.
type backfillProgress struct {
	w     io.Writer
	start time.Time
	last  int
}

func (p *backfillProgress) update(st protocol.BackfillStatus) {
	const width = 24
	todo := st.Total - st.Skipped
	done := st.Committed + st.Failed
	filled := width
	if todo > 0 {
		filled = width * done / todo
	}
	line := fmt.Sprintf("\r[%s%s] windows %d/%d done  %d running  %d queued  %d failed  %d rows  %.1fs",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, todo, st.Running, st.Queued, st.Failed, st.Rows,
		time.Since(p.start).Seconds())
	pad := ""
	if len(line) < p.last {
		pad = strings.Repeat(" ", p.last-len(line))
	}
	p.last = len(line)
	fmt.Fprint(p.w, line+pad)
}

func (p *backfillProgress) done() { fmt.Fprintln(p.w) }
