package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
)

// measurement is one load, repeated.
type measurement struct {
	Key   string `json:"-"`
	Label string `json:"label"`
	// Seconds are the wall times of each repetition, from the run request
	// to the commit.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	RowsPerSec  float64   `json:"rows_per_sec"`
	// ClientCPU is this process's CPU time in the best repetition (the
	// whole cluster: coordinator, workers, NATS); ServerCPU is every
	// PostgreSQL process's, when readable from /proc.
	ClientCPU float64 `json:"client_cpu_seconds"`
	ServerCPU float64 `json:"server_cpu_seconds,omitempty"`
	Tasks     int     `json:"tasks"`
	cpu       [][2]float64
}

// add records a repetition.
func (m *measurement) add(secs float64, cpu [2]float64, tasks int) {
	m.Seconds = append(m.Seconds, measure.Round(secs, 3))
	m.cpu = append(m.cpu, cpu)
	m.Tasks = tasks
}

// target is the contract's cost on one sink, and whether this run met
// the target.
type target struct {
	Name      string  `json:"name"`
	Transform string  `json:"transform"`
	Baseline  string  `json:"baseline"`
	MinRatio  float64 `json:"min_ratio"`
	Ratio     float64 `json:"ratio"`
	// Cost is 1 - Ratio: the share of the baseline's rate the contract
	// costs.
	Cost float64 `json:"cost"`
	Met  bool    `json:"met"`
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Rows         int64                   `json:"rows"`
	Columns      int                     `json:"columns"`
	Contract     string                  `json:"contract"`
	Reps         int                     `json:"reps"`
	Cluster      map[string]any          `json:"cluster"`
	Measurements map[string]*measurement `json:"measurements"`
	Targets      []target                `json:"targets"`
	Verified     string                  `json:"verified"`
	TotalSeconds float64                 `json:"total_seconds"`
}

// writeResults computes the best figures and the ratios, prints them and
// writes them to cfg.out. ms are the loads in the order (a) to (d).
func writeResults(cfg config, stdout io.Writer, hdr harness.Header, ms []*measurement, began time.Time) error {
	res := results{
		Header: hdr, Rows: cfg.rows, Columns: 7, Contract: contractYAML, Reps: cfg.reps,
		Cluster: map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots,
			"target_rows": cfg.targetRows},
		Measurements: map[string]*measurement{},
		Verified: "full_load outputs: row count and checksum equal the source's; transform outputs: row count and checksum equal those of " +
			"the source read and transformed by the contract in the benchmark's process; one hashed value of the PostgreSQL copy equals " +
			"the HMAC-SHA256 of the source's, computed with crypto/hmac",
	}
	for _, m := range ms {
		i := measure.Best(m.Seconds)
		m.BestSeconds = m.Seconds[i]
		m.RowsPerSec = measure.Round(float64(cfg.rows)/m.BestSeconds, 0)
		m.ClientCPU, m.ServerCPU = measure.Round(m.cpu[i][0], 2), measure.Round(m.cpu[i][1], 2)
		res.Measurements[m.Key] = m
	}
	for _, t := range []target{
		{Name: "PG -> CSV files: transform vs full_load", Transform: ms[1].Key, Baseline: ms[0].Key},
		{Name: "PG -> PG: transform vs full_load", Transform: ms[4].Key, Baseline: ms[2].Key},
		{Name: "PG -> PG: transform vs passthrough", Transform: ms[4].Key, Baseline: ms[3].Key},
	} {
		t.MinRatio = minRatio
		t.Ratio = measure.Round(res.Measurements[t.Baseline].BestSeconds/res.Measurements[t.Transform].BestSeconds, 3)
		t.Cost = measure.Round(1-t.Ratio, 3)
		t.Met = t.Ratio >= t.MinRatio
		res.Targets = append(res.Targets, t)
	}
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	report(stdout, res, ms)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}

// report prints the results.
func report(w io.Writer, r results, ms []*measurement) {
	fmt.Fprintf(w, "\ncontract: %d rows x %d columns; %d CPUs, %s, PostgreSQL %s, %s\n",
		r.Rows, r.Columns, r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "load\tbest s\trows/s\tclient CPU s\tserver CPU s\ttasks\tall reps (s)\t")
	for _, m := range ms {
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%d\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), m.ClientCPU, m.ServerCPU, m.Tasks, strings.Join(reps, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-40s %.2fx, cost %.0f%% (target: cost <= %.0f%%): %s\n", t.Name, t.Ratio, 100*t.Cost, 100*(1-t.MinRatio), verdict)
	}
	fmt.Fprintln(w, "verified:", r.Verified)
}
