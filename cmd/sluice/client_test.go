package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// A run planned again says so in `sluice status --run` (its attempt, and
// why each earlier one was given up) and in the runs of `sluice status`.
func TestPrintRunShowsAttempts(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC)
	r := protocol.RunStatus{RunID: "orders-000001", Pipeline: "orders", State: protocol.RunRunning, Tasks: 2, Attempt: 2,
		Replans:  []protocol.Replan{{Attempt: 1, Reason: "the leader that planned attempt 1 is gone", Time: at}},
		TaskList: []protocol.TaskStatus{{TaskID: "a2-t00000", Partition: "ctid[:4)", State: protocol.TaskPending}}}
	var b bytes.Buffer
	printRun(&b, r)
	for _, want := range []string{
		"attempt 1 given up at " + at.Local().Format(time.DateTime) + ": the leader that planned attempt 1 is gone",
		"attempt: 2, planned again",
		"a2-t00000",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("run view lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printStatus(&b, protocol.StatusReply{Runs: []protocol.RunStatus{r}})
	if !strings.Contains(b.String(), "attempt 2 (planned again)") {
		t.Errorf("status lacks the run's attempt:\n%s", b.String())
	}
}

// `sluice status` shows where an external trigger's events come from and
// what became of them, and why they cannot be read.
func TestStartsOnShowsTriggerEvents(t *testing.T) {
	p := protocol.PipelineStatus{Name: "uploads", Events: &protocol.TriggerEvents{Source: "subject s3.events.landing", Runs: 2, Filtered: 1, DeadLettered: 3}}
	if got, want := startsOn(p), "subject s3.events.landing (2 runs, 1 filtered, 3 dead-lettered)"; got != want {
		t.Errorf("startsOn = %q, want %q", got, want)
	}
	p.Events.Error = "open the kafka feed: no brokers"
	if got := startsOn(p); !strings.HasSuffix(got, "dead-lettered): open the kafka feed: no brokers") {
		t.Errorf("startsOn with a read error = %q", got)
	}
}
