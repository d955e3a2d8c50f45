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

// target is one of the benchmark's targets and whether this run met it.
type target struct {
	Name     string  `json:"name"`
	Sluice   string  `json:"sluice"`
	Baseline string  `json:"baseline"`
	MinRatio float64 `json:"min_ratio"`
	Ratio    float64 `json:"ratio"`
	Met      bool    `json:"met"`
}

// results are what a run writes to --out.
type results struct {
	harness.Header
	Rows           int64                           `json:"rows"`
	Columns        int                             `json:"columns"`
	SourceCSVBytes int64                           `json:"source_csv_bytes"`
	Reps           int                             `json:"reps"`
	Cluster        map[string]any                  `json:"cluster"`
	Measurements   map[string]*measure.Measurement `json:"measurements"`
	Ratios         map[string]float64              `json:"ratios"`
	Targets        []target                        `json:"targets"`
	TotalSeconds   float64                         `json:"total_seconds"`
}

// writeResults computes the best figures and ratios, prints them and
// writes them to cfg.out.
func writeResults(cfg config, stdout io.Writer, hdr harness.Header, ms map[string]*measure.Measurement, csvBytes int64, began time.Time) error {
	for k, m := range ms {
		if len(m.Seconds) == 0 {
			delete(ms, k) // not timed (--only)
			continue
		}
		m.Finish(cfg.rows, csvBytes)
	}
	res := results{
		Header: hdr,
		Rows:   cfg.rows, Columns: 7, SourceCSVBytes: csvBytes, Reps: cfg.reps,
		Cluster: map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots,
			"target_rows": cfg.targetRows},
		Measurements: ms,
		Ratios:       map[string]float64{},
	}
	for _, t := range []target{
		{Name: "PG -> CSV files vs psql \\copy", Sluice: "sluice_pg_to_csv", Baseline: "psql_copy_to_csv", MinRatio: targetCSV},
		{Name: "PG -> PG vs piped COPY", Sluice: "sluice_pg_to_pg", Baseline: "piped_copy_pg_to_pg", MinRatio: targetPG},
		{Name: "PG -> JSONL files vs psql \\copy", Sluice: "sluice_pg_to_jsonl", Baseline: "psql_copy_to_csv", MinRatio: targetJSONL},
	} {
		if ms[t.Baseline] == nil || ms[t.Sluice] == nil {
			continue
		}
		res.Cluster["tasks"] = ms[t.Sluice].Tasks
		t.Ratio = measure.Round(ms[t.Baseline].BestSeconds/ms[t.Sluice].BestSeconds, 3)
		t.Met = t.Ratio >= t.MinRatio
		res.Ratios[t.Sluice+"_vs_"+t.Baseline] = t.Ratio
		res.Targets = append(res.Targets, t)
	}
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	report(stdout, res)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", cfg.out)
	return nil
}

// report prints the results.
func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\nfullload: %d rows x %d columns, %.1f MB as CSV; %d CPUs, %s, PostgreSQL %s, %s\n",
		r.Rows, r.Columns, float64(r.SourceCSVBytes)/1e6, r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trows/s\tMB/s\tclient CPU s\tserver CPU s\tall reps (s)\t")
	for _, k := range []string{"psql_copy_to_csv", "sluice_pg_to_csv", "sluice_pg_to_jsonl", "piped_copy_pg_to_pg", "sluice_pg_to_pg"} {
		m := r.Measurements[k]
		if m == nil {
			continue
		}
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		server := "-"
		if m.ServerCPU > 0 {
			server = fmt.Sprintf("%.1f", m.ServerCPU)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%s\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.RowsPerSec), m.MBPerSec, m.ClientCPU, server, strings.Join(reps, " "))
	}
	tw.Flush()
	for _, k := range []string{"sluice_pg_to_csv", "sluice_pg_to_jsonl", "sluice_pg_to_pg"} {
		if m := r.Measurements[k]; m != nil && m.Phases != nil {
			p := m.Phases
			fmt.Fprintf(w, "%s, best run: plan %.2fs, %d tasks %.2fs, commit %.2fs\n", r.Measurements[k].Label, p.Plan, r.Measurements[k].Tasks, p.Tasks, p.Commit)
		}
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-32s %.2fx (target >= %.1fx): %s\n", t.Name, t.Ratio, t.MinRatio, verdict)
	}
	fmt.Fprintln(w, "every Sluice output was verified against the source (row count and checksum);")
	fmt.Fprintln(w, "client CPU: psql, or this process (cluster, Go pipe); server CPU: every postgres process on the machine")
}
