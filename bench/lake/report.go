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

// measurement is one timed thing, repeated.
type measurement struct {
	Label string `json:"label"`
	// Seconds are the wall times of each repetition.
	Seconds     []float64 `json:"seconds"`
	BestSeconds float64   `json:"best_seconds"`
	// RowsPerSec is the source's rows over the best time (loads);
	// MBPerSec the bytes written (the CSV file, the Parquet files, the
	// uploaded object) over it.
	RowsPerSec float64 `json:"rows_per_sec,omitempty"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// ClientCPU is the CPU time of psql, or of this process (the whole
	// Sluice cluster, or the upload); ServerCPU is PostgreSQL's, when
	// readable from /proc (every server process).
	ClientCPU float64 `json:"client_cpu_seconds"`
	ServerCPU float64 `json:"server_cpu_seconds,omitempty"`
	Tasks     int     `json:"tasks,omitempty"`
	// Phases splits the best repetition of a Sluice load: plan (until the
	// run request returned), tasks (until every task had succeeded, as
	// polled every 20 ms) and commit (until the run was committed).
	Phases   *phases `json:"phases_seconds,omitempty"`
	Verified string  `json:"verified"`
	cpu      []cpuUse
	bytes    int64 // written by a Sluice load (its Parquet files)
}

// cpuUse is what one repetition used.
type cpuUse struct {
	client, server float64
	phases         *phases
}

// phases splits a Sluice load (see measurement.Phases).
type phases struct {
	Plan   float64 `json:"plan"`
	Tasks  float64 `json:"tasks"`
	Commit float64 `json:"commit"`
}

func (m *measurement) add(secs float64, cpu cpuUse) {
	m.Seconds = append(m.Seconds, measure.Round(secs, 3))
	m.cpu = append(m.cpu, cpu)
}

// finish computes the figures of the best repetition.
func (m *measurement) finish(rows, bytes int64) {
	i := measure.Best(m.Seconds)
	m.BestSeconds = m.Seconds[i]
	if rows > 0 {
		m.RowsPerSec = measure.Round(float64(rows)/m.BestSeconds, 0)
	}
	m.MBPerSec = measure.Round(float64(bytes)/1e6/m.BestSeconds, 2)
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
	Rows           int64                   `json:"rows"`
	Columns        int                     `json:"columns"`
	SourceCSVBytes int64                   `json:"source_csv_bytes"`
	ParquetBytes   int64                   `json:"parquet_bytes"`
	Reps           int                     `json:"reps"`
	Cluster        map[string]any          `json:"cluster"`
	Measurements   map[string]*measurement `json:"measurements"`
	// Ratios are speed ratios (baseline time / Sluice time): above 1 is
	// faster than the baseline.
	Ratios       map[string]float64 `json:"ratios"`
	Targets      []target           `json:"targets"`
	TotalSeconds float64            `json:"total_seconds"`
}

var order = []string{"psql_copy_to_csv", "sluice_iceberg_local", "sluice_iceberg_s3", "sink_s3_upload", "bare_s3_upload"}

// writeResults computes the best figures and ratios, prints them and
// writes them to --out.
func (b *bench) writeResults(hdr harness.Header, began time.Time) error {
	cfg := b.cfg
	ms := b.ms
	ms["psql_copy_to_csv"].finish(cfg.rows, b.csvBytes)
	for _, k := range []string{"sluice_iceberg_local", "sluice_iceberg_s3"} {
		ms[k].finish(cfg.rows, ms[k].bytes)
	}
	ms["sink_s3_upload"].finish(0, b.parquetBytes)
	ms["bare_s3_upload"].finish(0, b.parquetBytes)
	res := results{
		Header: hdr, Rows: cfg.rows, Columns: 7, SourceCSVBytes: b.csvBytes, ParquetBytes: b.parquetBytes, Reps: cfg.reps,
		Cluster: map[string]any{"nats": "embedded", "coordinators": 1, "workers": cfg.workers, "slots": cfg.slots,
			"target_rows": cfg.targetRows, "tasks": ms["sluice_iceberg_local"].Tasks},
		Measurements: ms, Ratios: map[string]float64{},
	}
	ratio := func(baseline, sluice string) float64 {
		return measure.Round(ms[baseline].BestSeconds/ms[sluice].BestSeconds, 3)
	}
	for _, t := range []target{
		{Name: "PG -> Iceberg (local) vs psql \\copy", Sluice: "sluice_iceberg_local", Baseline: "psql_copy_to_csv", MinRatio: targetLocal},
		{Name: "sink S3 upload vs bare multipart", Sluice: "sink_s3_upload", Baseline: "bare_s3_upload", MinRatio: targetUpload},
	} {
		t.Ratio = ratio(t.Baseline, t.Sluice)
		t.Met = t.Ratio >= t.MinRatio
		res.Ratios[t.Sluice+"_vs_"+t.Baseline] = t.Ratio
		res.Targets = append(res.Targets, t)
	}
	res.Ratios["sluice_iceberg_s3_vs_psql_copy_to_csv"] = ratio("psql_copy_to_csv", "sluice_iceberg_s3")
	res.Ratios["sluice_iceberg_s3_vs_sluice_iceberg_local"] = ratio("sluice_iceberg_local", "sluice_iceberg_s3")
	res.Finish()
	res.TotalSeconds = measure.Round(time.Since(began).Seconds(), 1)
	report(b.stdout, res)
	if err := harness.WriteJSON(cfg.out, res); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "results: %s\n", cfg.out)
	return nil
}

// report prints the results.
func report(w io.Writer, r results) {
	fmt.Fprintf(w, "\nlake: %d rows x %d columns, %.1f MB as CSV, %.1f MB as Parquet (zstd); %d CPUs, %s, PostgreSQL %s, %s\n",
		r.Rows, r.Columns, float64(r.SourceCSVBytes)/1e6, float64(r.ParquetBytes)/1e6, r.NumCPU, r.GoVersion, r.PostgreSQL, r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "%s; load average before and after: %s, %s\n\n", r.Note, r.LoadAverage[0], r.LoadAverage[1])
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tbest s\trows/s\tMB/s\tclient CPU s\tserver CPU s\tall reps (s)\t")
	for _, k := range order {
		m := r.Measurements[k]
		reps := make([]string, len(m.Seconds))
		for i, s := range m.Seconds {
			reps[i] = fmt.Sprintf("%.2f", s)
		}
		rows, server := "-", "-"
		if m.RowsPerSec > 0 {
			rows = measure.Thousands(m.RowsPerSec)
		}
		if m.ServerCPU > 0 {
			server = fmt.Sprintf("%.1f", m.ServerCPU)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.1f\t%.1f\t%s\t%s\t\n", m.Label, m.BestSeconds, rows, m.MBPerSec, m.ClientCPU, server, strings.Join(reps, " "))
	}
	tw.Flush()
	for _, k := range []string{"sluice_iceberg_local", "sluice_iceberg_s3"} {
		if m := r.Measurements[k]; m.Phases != nil {
			fmt.Fprintf(w, "%s, best run: plan %.2fs, %d tasks %.2fs, commit %.2fs\n", m.Label, m.Phases.Plan, m.Tasks, m.Phases.Tasks, m.Phases.Commit)
		}
	}
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "%-40s %.2fx (target >= %.1fx): %s\n", t.Name, t.Ratio, t.MinRatio, verdict)
	}
	fmt.Fprintf(w, "%-40s %.2fx of psql, %.2fx of the local load\n", "PG -> Iceberg on S3", r.Ratios["sluice_iceberg_s3_vs_psql_copy_to_csv"], r.Ratios["sluice_iceberg_s3_vs_sluice_iceberg_local"])
	fmt.Fprintln(w, "MB/s: psql the CSV file, Sluice loads their Parquet files, uploads the object; every output was verified")
}
