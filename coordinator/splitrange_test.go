package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// TestSplitRangeBound checks the bound on a backfill's windows: a range of
// exactly maxBackfillWindows windows is split, one window more is refused
// with the bound in the message, for windows of values and of time.
func TestSplitRangeBound(t *testing.T) {
	values := func(hi int64) backfillCmd {
		r := protocol.ValueWindow(0, hi)
		return backfillCmd{Pipeline: "p", Range: &r}
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	times := func(n int64) backfillCmd {
		return backfillCmd{Pipeline: "p", From: from, To: from.Add(time.Duration(n) * time.Minute)}
	}
	for _, c := range []struct {
		name string
		cmd  backfillCmd
		size time.Duration
		span int64
	}{
		{"values", values(2 * maxBackfillWindows), 0, 2},
		{"time", times(maxBackfillWindows), time.Minute, 0},
	} {
		ws, err := splitRange(c.cmd, c.size, c.span)
		if err != nil || len(ws) != maxBackfillWindows {
			t.Fatalf("%s: %d windows, %v; want %d", c.name, len(ws), err, maxBackfillWindows)
		}
	}
	for _, c := range []struct {
		name string
		cmd  backfillCmd
		size time.Duration
		span int64
	}{
		{"values", values(2*maxBackfillWindows + 1), 0, 2},
		{"time", times(maxBackfillWindows + 1), time.Minute, 0},
	} {
		_, err := splitRange(c.cmd, c.size, c.span)
		if err == nil || !strings.Contains(err.Error(), "more than 100000 windows") {
			t.Fatalf("%s: %v; want a refusal naming the bound", c.name, err)
		}
	}
}
