package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every metric follows the Prometheus naming conventions (promlint) and
// carries the sluice_ prefix; a nil *Metrics records nothing and does not
// panic.
func TestMetricsNamingAndNil(t *testing.T) {
	m := NewMetrics()
	m.RunEnded("p", "committed", time.Second, 10, 100, []int{1, 2})
	m.RaftCommitted("task result", time.Millisecond)
	m.LeaderChanged()
	m.TaskAttempt("p", TaskSucceeded, time.Second, 10, 100)
	m.WorkerSlots("w", 2, 1)
	m.CDCStatus("p", "s", 10, time.Second, 3)
	m.ApplyStatus("q", time.Second, 2, 3)
	if err := m.ObserveCluster(func(context.Context) ClusterState {
		return ClusterState{Leading: true, Streams: map[string]uint64{"SLUICE_TASKS": 3}, ActiveRuns: map[string]int{"p": 1}}
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.ObserveCluster(func(context.Context) ClusterState { return ClusterState{} }); err == nil {
		t.Fatal("a second cluster source was accepted")
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		n++
		if !strings.HasPrefix(name, "sluice_") {
			t.Errorf("metric %s lacks the sluice_ prefix", name)
		}
	}
	if n < 20 {
		t.Errorf("%d sluice metrics gathered, want every one recorded above", n)
	}

	var nilm *Metrics
	nilm.RunEnded("p", "failed", 0, 0, 0, nil)
	nilm.TaskAttempt("p", TaskFailed, 0, 0, 0)
	nilm.WorkerSlots("w", 1, 0)
	nilm.WorkerGone("w")
	nilm.CDCStatus("p", "s", 0, 0, 0)
	nilm.ApplyStatus("p", 0, 0, 0)
	nilm.StreamGone("p", "s")
	nilm.RaftCommitted("x", 0)
	nilm.LeaderChanged()
	if err := nilm.ObserveCluster(nil); err != nil {
		t.Fatal(err)
	}
}
