package coordinator

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
)

func TestDueTick(t *testing.T) {
	every, err := pipeline.ParseSchedule("@every 10s")
	if err != nil {
		t.Fatal(err)
	}
	hourly, err := pipeline.ParseSchedule("0 * * * *")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		sched     string
		base, now time.Time
		want      time.Time // zero: none due
	}{
		{"every: not yet", "every", t0, t0.Add(9 * time.Second), time.Time{}},
		{"every: the next", "every", t0, t0.Add(10 * time.Second), t0.Add(10 * time.Second)},
		{"every: latest missed only", "every", t0, t0.Add(95 * time.Second), t0.Add(90 * time.Second)},
		{"every: a month missed", "every", t0, t0.Add(30*24*time.Hour + 5*time.Second), t0.Add(30 * 24 * time.Hour)},
		{"cron: not yet", "hourly", t0, t0.Add(59 * time.Minute), time.Time{}},
		{"cron: latest missed only", "hourly", t0.Add(time.Minute), t0.Add(3*time.Hour + 10*time.Minute), t0.Add(3 * time.Hour)},
		{"cron: a year missed", "hourly", t0, t0.Add(365*24*time.Hour + 30*time.Minute), t0.Add(365 * 24 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := every
			if tt.sched == "hourly" {
				s = hourly
			}
			got, due := dueTick(s, tt.base, tt.now)
			if due != !tt.want.IsZero() || !got.Equal(tt.want) {
				t.Fatalf("dueTick(%s, %s) = %s, %v; want %s", tt.base, tt.now, got, due, tt.want)
			}
		})
	}
}

// A scheduled run records its tick in the entry that creates it; a tick
// never moves back, and a tick without a run is recorded too. A new
// leader's base is the recorded tick, or the spec's time for a schedule
// that has none.
func TestFSMScheduleTicks(t *testing.T) {
	f := newFSM()
	spec := testSpec("s")
	spec.Schedule = "@every 1s"
	tick := t0.Add(5 * time.Second)
	applyAll(t, f, pipelinePutCmd{Spec: spec, Time: t0})
	p, _ := f.pipeline("s")
	if !scheduleBase(p).Equal(t0) {
		t.Fatalf("base before any tick %s, want the spec's time %s", scheduleBase(p), t0)
	}
	req := scheduleRequestID("s", tick)
	res := applyAll(t, f, runCreateCmd{Pipeline: "s", RequestID: req, LogicalTime: tick, Schedule: spec.Schedule, Tick: tick, Time: tick})
	first := res.(runCreateReply).RunID
	res = applyAll(t, f, runCreateCmd{Pipeline: "s", RequestID: req, LogicalTime: tick, Schedule: spec.Schedule, Tick: tick, Time: tick})
	if r := res.(runCreateReply); !r.Reused || r.RunID != first {
		t.Fatalf("the same tick again: %+v, want run %s reused", r, first)
	}
	p, _ = f.pipeline("s")
	if !scheduleBase(p).Equal(tick) {
		t.Fatalf("base %s, want the tick %s", scheduleBase(p), tick)
	}
	applyAll(t, f, scheduleTickCmd{Pipeline: "s", Schedule: spec.Schedule, Tick: t0.Add(2 * time.Second), Time: tick})
	p, _ = f.pipeline("s")
	if !scheduleBase(p).Equal(tick) {
		t.Fatalf("base moved back to %s", scheduleBase(p))
	}
	applyAll(t, f, scheduleTickCmd{Pipeline: "s", Schedule: spec.Schedule, Tick: tick.Add(time.Second), Time: tick})
	p, _ = f.pipeline("s")
	if !scheduleBase(p).Equal(tick.Add(time.Second)) {
		t.Fatalf("base %s after a tick without a run", scheduleBase(p))
	}
	// A changed schedule starts from the time it was applied.
	spec.Schedule = "@every 2s"
	later := t0.Add(time.Minute)
	applyAll(t, f, pipelinePutCmd{Spec: spec, Time: later})
	p, _ = f.pipeline("s")
	if !scheduleBase(p).Equal(later) {
		t.Fatalf("base of a changed schedule %s, want %s", scheduleBase(p), later)
	}
}
