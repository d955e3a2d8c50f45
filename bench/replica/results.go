package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// throughputResult is one throughput measurement.
type throughputResult struct {
	Replicator    string  `json:"replicator"`
	Tables        int     `json:"tables"`
	Mode          string  `json:"mode"`
	Changes       int64   `json:"changes"`
	Seconds       float64 `json:"seconds"`
	ChangesPerSec float64 `json:"changes_per_sec"`
	// AfterLastCommit is how long after the workload's last commit the
	// replica held it.
	AfterLastCommit float64 `json:"caught_up_after_last_commit_seconds"`
	// ClientCPU is the CPU this process used (Sluice's reader, NATS server,
	// runner and applier; for native, only the polling), ServerCPU every
	// PostgreSQL process's (walsenders, apply workers, backends), from the
	// start of the replication to the replica caught up; µs per change of
	// both together.
	ClientCPU       float64 `json:"client_cpu_seconds"`
	ServerCPU       float64 `json:"server_cpu_seconds"`
	CPUMicrosChange float64 `json:"cpu_us_per_change"`
	// Verified: every replica table equals its source (count, checksum).
	Verified bool `json:"verified"`
	// AllSeconds are the times of every repetition; the best counts.
	AllSeconds []float64 `json:"all_seconds"`
}

// latencyResult is one latency measurement, in milliseconds.
type latencyResult struct {
	Replicator string  `json:"replicator"`
	Rate       int     `json:"rate_tx_per_sec"`
	Seconds    float64 `json:"seconds"`
	Rows       int     `json:"rows"`
	Missing    int     `json:"missing"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
}

// target is one of the benchmark's targets and whether this run met it.
type target struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Changes      int64              `json:"changes"`
	TxRows       int64              `json:"rows_per_transaction"`
	Reps         int                `json:"reps"`
	Throughput   []throughputResult `json:"throughput"`
	Latency      []latencyResult    `json:"latency"`
	Targets      []target           `json:"targets"`
	TotalSeconds float64            `json:"total_seconds"`
}

// keep records a repetition of a measurement: the best one (the least
// time) stands for it.
func (r *results) keep(m throughputResult) {
	best := r.find(m.Replicator, m.Tables, m.Mode)
	if best == nil {
		m.AllSeconds = []float64{m.Seconds}
		r.Throughput = append(r.Throughput, m)
		return
	}
	all := append(best.AllSeconds, m.Seconds)
	if m.Seconds < best.Seconds {
		*best = m
	}
	best.AllSeconds = all
}

// find returns a throughput measurement.
func (r *results) find(replicator string, tables int, mode string) *throughputResult {
	for i := range r.Throughput {
		if m := &r.Throughput[i]; m.Replicator == replicator && m.Tables == tables && m.Mode == mode {
			return m
		}
	}
	return nil
}

// compare computes the targets, of Sluice and of Sluice with parallel:
// tables: throughput at least 1.0x native on one
// table and 1.5x on four (backlog and live), a live replica caught up no
// later after the last commit than native's, and a latency p99 no worse
// than native's.
func (r *results) compare() {
	for _, tc := range []struct {
		tables int
		want   float64
	}{{1, 1.0}, {4, 1.5}} {
		for _, mode := range []string{"backlog", "live"} {
			for _, who := range []struct{ replicator, name string }{{"sluice", "Sluice"}, {"sluice-parallel", "Sluice parallel"}} {
				s, n := r.find(who.replicator, tc.tables, mode), r.find("native", tc.tables, mode)
				if s == nil || n == nil || n.ChangesPerSec == 0 {
					continue
				}
				ratio := measure.Round(s.ChangesPerSec/n.ChangesPerSec, 2)
				r.Targets = append(r.Targets, target{Name: fmt.Sprintf("throughput, %d table(s), %s: %s / native", tc.tables, mode, who.name),
					Want: fmt.Sprintf(">= %.1fx", tc.want), Value: ratio, Met: ratio >= tc.want})
				if mode == "live" {
					r.Targets = append(r.Targets, target{Name: fmt.Sprintf("live, %d table(s): caught up after the last commit, %s - native (s)", tc.tables, who.name),
						Want: "<= 0", Value: measure.Round(s.AfterLastCommit-n.AfterLastCommit, 3), Met: s.AfterLastCommit <= n.AfterLastCommit})
				}
			}
		}
	}
	if len(r.Latency) == 2 {
		n, s := r.Latency[0], r.Latency[1]
		r.Targets = append(r.Targets, target{Name: fmt.Sprintf("latency p99 at %d tx/s, Sluice - native (ms)", s.Rate),
			Want: "<= 0", Value: measure.Round(s.P99-n.P99, 1), Met: s.P99 <= n.P99})
	}
}

// report prints the results.
func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\nreplica: %d CPUs, %s, PostgreSQL %s, %s; load average before and after: %s, %s\n", r.NumCPU, r.GoVersion, r.PostgreSQL,
		r.Date.Format("2006-01-02T15:04:05Z"), r.LoadAverage[0], r.LoadAverage[1])
	fmt.Fprintf(w, "workload: %s changes (60%% inserts, 25%% updates, 15%% deletes) in transactions of %d rows; the best of %d repetitions\n\n",
		measure.Thousands(float64(r.Changes)), r.TxRows, r.Reps)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "replicator\ttables\tmode\tseconds\tchanges/s\tcaught up after last commit (s)\tclient CPU s\tserver CPU s\tCPU µs/change\tverified\t")
	for _, m := range r.Throughput {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.2f\t%s\t%.3f\t%.2f\t%.2f\t%.1f\t%v\t\n", m.Replicator, m.Tables, m.Mode, m.Seconds, measure.Thousands(m.ChangesPerSec),
			m.AfterLastCommit, m.ClientCPU, m.ServerCPU, m.CPUMicrosChange, m.Verified)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, l := range r.Latency {
		fmt.Fprintf(w, "latency %-7s %d tx/s for %.0f s: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", l.Replicator, l.Rate, l.Seconds, l.P50, l.P99, l.Max)
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		met := "met"
		if !t.Met {
			met = "NOT met"
		}
		fmt.Fprintf(w, "target %s: want %s, got %.2f: %s\n", t.Name, t.Want, t.Value, met)
	}
}
