package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// summaryEvery is how often a progress line is printed when the output is
// not a terminal (a log, a pipe): one line per interval, never redrawn.
const summaryEvery = 5 * time.Second

// liveLine shows a changing status: redrawn in place on a terminal, else
// printed as a whole line at most every summaryEvery (and on demand).
type liveLine struct {
	w        io.Writer
	tty      bool
	last     int // width of the line drawn last (terminal)
	printed  time.Time
	lastLine string
}

func newLiveLine(w io.Writer) *liveLine { return &liveLine{w: w, tty: isTerminal(w)} }

// show shows line; force prints it even within the interval elsewhere.
func (l *liveLine) show(line string, force bool) {
	if l.tty {
		pad := ""
		if len(line) < l.last {
			pad = strings.Repeat(" ", l.last-len(line))
		}
		l.last = len(line)
		fmt.Fprint(l.w, "\r"+line+pad)
		return
	}
	if line == l.lastLine || (!force && !l.printed.IsZero() && time.Since(l.printed) < summaryEvery) {
		return
	}
	fmt.Fprintln(l.w, line)
	l.printed, l.lastLine = time.Now(), line
}

// end ends the redrawn line on a terminal.
func (l *liveLine) end() {
	if l.tty && l.last > 0 {
		fmt.Fprintln(l.w)
		l.last = 0
	}
}

// bar draws done of total; nothing to do is an empty bar.
func bar(done, total int) string {
	const width = 24
	filled := 0
	if total > 0 {
		filled = min(width, width*done/total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// progress shows a run's progress.
type progress struct {
	line  *liveLine
	start time.Time
	state string
}

func newProgress(w io.Writer) *progress { return &progress{line: newLiveLine(w), start: time.Now()} }

func (p *progress) update(st protocol.RunStatus) {
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(st.Rows) / secs
	}
	unit := unitOf(st)
	line := fmt.Sprintf("%s %s %d/%d tasks  %d %s  %s  %.0f %s/s  %.1fs", bar(st.TasksDone, st.Tasks),
		st.State, st.TasksDone, st.Tasks, st.Rows, unit, humanBytes(st.Bytes), rate, unit, secs)
	// A change of state is worth a line of its own in a log.
	p.line.show(line, st.State != p.state)
	p.state = st.State
}

func (p *progress) done() { p.line.end() }

// unitOf is what a run's Rows counts: rows, or the units of a passthrough
// run (files, records).
func unitOf(st protocol.RunStatus) string {
	if st.Unit != "" {
		return st.Unit
	}
	return "rows"
}

// backfillProgress shows a backfill's progress.
type backfillProgress struct {
	line  *liveLine
	start time.Time
	shown bool
}

func newBackfillProgress(w io.Writer) *backfillProgress {
	return &backfillProgress{line: newLiveLine(w), start: time.Now()}
}

func (p *backfillProgress) update(st protocol.BackfillStatus) {
	todo := st.Total - st.Skipped
	done := st.Committed + st.Failed
	b := bar(done, todo)
	if todo == 0 {
		b = bar(1, 1) // every window was committed before
	}
	line := fmt.Sprintf("%s windows %d/%d done  %d running  %d queued  %d failed  %d rows  %.1fs",
		b, done, todo, st.Running, st.Queued, st.Failed, st.Rows, time.Since(p.start).Seconds())
	p.line.show(line, !p.shown)
	p.shown = true
}

func (p *backfillProgress) done() { p.line.end() }
