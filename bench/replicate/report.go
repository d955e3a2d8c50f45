package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/files/filestest"
)

// measurement is one timed thing, repeated.
type measurement struct {
	Key   string `json:"-"`
	Label string `json:"label"`
	// Seconds are the wall times of each repetition.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	// PerSec is files/s for the trees, rows/s for the tables; MBPerSec
	// counts the tree's bytes, or the table's in COPY's binary format.
	PerSec   float64 `json:"per_sec"`
	Unit     string  `json:"unit"`
	MBPerSec float64 `json:"mb_per_sec,omitempty"`
	// ClientCPU is the CPU time of the client side in the best
	// repetition: cp and sync, or this process (the whole Sluice
	// cluster, or the Go pipe); ServerCPU is PostgreSQL's, when readable
	// from /proc: every server process, so other sessions on a shared
	// server count too.
	ClientCPU float64 `json:"client_cpu_seconds"`
	ServerCPU float64 `json:"server_cpu_seconds,omitempty"`
	Tasks     int     `json:"tasks,omitempty"`
	// Phases splits the best repetition of a Sluice run: plan (until the
	// run request returned), tasks (until every task had succeeded, as
	// polled every 20 ms) and commit (until the run was committed).
	Phases   *phases `json:"phases_seconds,omitempty"`
	Verified string  `json:"verified"`
	cpu      []cpuUse
}

// cpuUse is what one repetition used.
type cpuUse struct {
	client, server float64
	phases         *phases
}

// phases splits a Sluice run (see measurement.Phases).
type phases struct {
	Plan   float64 `json:"plan"`
	Tasks  float64 `json:"tasks"`
	Commit float64 `json:"commit"`
}

// add records a repetition.
func (m *measurement) add(secs float64, cpu cpuUse) {
	m.Seconds = append(m.Seconds, measure.Round(secs, 3))
	m.cpu = append(m.cpu, cpu)
}

// finish computes the figures of the best repetition: n units of unit,
// in bytes bytes (0: unknown).
func (m *measurement) finish(n int64, unit string, bytes int64) {
	i := measure.Best(m.Seconds)
	m.BestSeconds = m.Seconds[i]
	m.PerSec, m.Unit = measure.Round(float64(n)/m.BestSeconds, 0), unit+"/s"
	if bytes > 0 {
		m.MBPerSec = measure.Round(float64(bytes)/1e6/m.BestSeconds, 1)
	}
	m.ClientCPU, m.ServerCPU, m.Phases = measure.Round(m.cpu[i].client, 2), measure.Round(m.cpu[i].server, 2), m.cpu[i].phases
}

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
	Tree         filestest.TreeSum       `json:"tree"`
	PageCache    string                  `json:"page_cache,omitempty"`
	Rows         int64                   `json:"rows"`
	Reps         int                     `json:"reps"`
	Cluster      map[string]any          `json:"cluster"`
	Measurements map[string]*measurement `json:"measurements"`
	// Ratios are each baseline's best time over Sluice's: above 1,
	// Sluice was faster.
	Ratios       map[string]float64 `json:"ratios"`
	Targets      []target           `json:"targets"`
	TotalSeconds float64            `json:"total_seconds"`
}

// order is the order of the measurements in the report.
var order = []string{"cp_r", "cp_r_sync", "sluice_files", "piped_copy_binary", "piped_copy_then_pk", "sluice_pg_to_pg"}

// writeResults computes the best figures and ratios, prints them and
// writes them to cfg.out.
func writeResults(cfg config, stdout io.Writer, hdr harness.Header, ms map[string]*measurement, tree filestest.TreeSum, pageCache string, began time.Time) error {
	for k, m := range ms {
		switch {
		case len(m.Seconds) == 0:
			delete(ms, k) // not timed (--only)
		case strings.HasPrefix(k, "cp_") || k == "sluice_files":
			m.finish(tree.Files, "files", tree.Bytes)
		default:
			m.finish(cfg.rows, "rows", 0)
		}
	}
	res := results{
		Header: hdr, Tree: tree, PageCache: pageCache, Rows: cfg.rows, Reps: cfg.reps,
		Cluster: map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots,
			"target_bytes": cfg.targetBytes, "target_rows": cfg.targetRows},
		Measurements: ms,
		Ratios:       map[string]float64{},
	}
	ratio := func(sluice, baseline string) (float64, bool) {
		if ms[sluice] == nil || ms[baseline] == nil {
			return 0, false
		}
		r := measure.Round(ms[baseline].BestSeconds/ms[sluice].BestSeconds, 3)
		res.Ratios[sluice+"_vs_"+baseline] = r
		return r, true
	}
	ratio("sluice_files", "cp_r_sync")
	ratio("sluice_pg_to_pg", "piped_copy_then_pk")
	for _, t := range []target{
		{Name: "files passthrough vs cp -r", Sluice: "sluice_files", Baseline: "cp_r", MinRatio: targetFiles},
		{Name: "PG -> PG passthrough vs piped COPY binary", Sluice: "sluice_pg_to_pg", Baseline: "piped_copy_binary", MinRatio: targetPG},
	} {
		var ok bool
		if t.Ratio, ok = ratio(t.Sluice, t.Baseline); ok {
			t.Met = t.Ratio >= t.MinRatio
			res.Targets = append(res.Targets, t)
		}
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
	fmt.Fprintf(w, "\nreplicate: a tree of %s; a table of %d rows; %d CPUs, %s, PostgreSQL %s, %s\n",
		r.Tree, r.Rows, r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	if r.PageCache != "" {
		fmt.Fprintf(w, "page cache: %s\n", r.PageCache)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trate\tMB/s\tclient CPU s\tserver CPU s\tall reps (s)\t")
	for _, k := range order {
		m := r.Measurements[k]
		if m == nil {
			continue
		}
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		server, mb := "-", "-"
		if m.ServerCPU > 0 {
			server = fmt.Sprintf("%.1f", m.ServerCPU)
		}
		if m.MBPerSec > 0 {
			mb = fmt.Sprintf("%.1f", m.MBPerSec)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s %s\t%s\t%.1f\t%s\t%s\t\n", m.Label, m.BestSeconds, measure.Thousands(m.PerSec), m.Unit, mb, m.ClientCPU, server, strings.Join(reps, " "))
	}
	tw.Flush()
	for _, k := range []string{"sluice_files", "sluice_pg_to_pg"} {
		if m := r.Measurements[k]; m != nil && m.Phases != nil {
			p := m.Phases
			fmt.Fprintf(w, "%s, best run: plan %.2fs, %d tasks %.2fs, commit %.2fs\n", m.Label, p.Plan, m.Tasks, p.Tasks, p.Commit)
		}
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-42s %.2fx (target >= %.1fx): %s\n", t.Name, t.Ratio, t.MinRatio, verdict)
	}
	for k, v := range r.Ratios {
		if k == "sluice_files_vs_cp_r_sync" || k == "sluice_pg_to_pg_vs_piped_copy_then_pk" {
			fmt.Fprintf(w, "%-42s %.2fx (finished alike, no target)\n", k, v)
		}
	}
	fmt.Fprintln(w, "every output was verified against its source (trees: every name and byte; tables: row count and checksum);")
	fmt.Fprintln(w, "client CPU: cp and sync, or this process (cluster, Go pipe); server CPU: every postgres process on the machine")
}
